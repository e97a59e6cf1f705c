"""Writing H.264 mp4 videos that browsers and players play, through PyAV.

PyAV (the `av` package) binds FFmpeg's libraries in-process and its wheels ship them with the libx264 encoder, so
nothing else needs installing and frames go to the encoder without a pipe to a separate ffmpeg process
(imageio-ffmpeg's way); the same package reads videos back (tests check frame count and rate with it). OpenCV's
own writer only offers mp4v (MPEG-4 part 2) in its wheels, which browsers do not play.

Frames are stored as yuv420p (what players expect), which needs even sizes: an odd width or height is padded by
repeating the last column or row, so no picture content is lost.
"""
from fractions import Fraction

import numpy as np

DEFAULT_CRF = 20  # x264 constant quality: 0 lossless ... 51 worst; about 18-23 looks clean


def frame_rate(fps):
    """The stream's rational frame rate for `fps` (e.g. 29.97 -> 30000/1001)."""
    if not fps or not np.isfinite(fps) or fps <= 0:
        raise ValueError(f"video frame rate must be a positive number, got {fps}")
    return Fraction(fps).limit_denominator(1001)


class H264Writer:
    """Context manager writing (H, W, 3) uint8 RGB frames of one size to an H.264 mp4 at `fps` frames per second."""

    def __init__(self, path, fps, crf=DEFAULT_CRF):
        import av  # imported here so that the rest of the project works without it

        self.path, self.rate, self.crf = str(path), frame_rate(fps), crf
        self._av = av
        self._container = av.open(self.path, mode="w")
        self._stream = None
        self.size = None

    def write(self, image):
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"{self.path}: frames must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
        if self._stream is None:
            self.size = image.shape[:2]
            stream = self._container.add_stream("libx264", rate=self.rate)
            stream.height, stream.width = (s + s % 2 for s in self.size)
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(self.crf)}
            self._stream = stream
        elif image.shape[:2] != self.size:
            raise ValueError(f"{self.path}: frame size {image.shape[:2]} differs from the first frame's {self.size}")
        height, width = self.size
        image = np.pad(image, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
        frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self):
        if self._container is None:
            return
        if self._stream is not None:
            for packet in self._stream.encode():  # flush the encoder's delayed frames
                self._container.mux(packet)
        self._container.close()
        self._container = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def video_info(path):
    """(number of decoded frames, frame rate as a Fraction, (height, width)) of a video file, read with PyAV."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        count = sum(1 for _ in container.decode(stream))
        return count, stream.average_rate, (stream.codec_context.height, stream.codec_context.width)
