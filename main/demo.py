"""Run JOTR on your own images and videos: every person's SMPL mesh, placed in the image's camera.

    python -m main.demo --input photo.jpg                                  # people from Keypoint R-CNN
    python -m main.demo --input photos/ --keypoints person_keypoints.json  # a COCO keypoints file
    python -m main.demo --input clip.mp4 --keypoints openpose_json/ --side-view
    python -m main.demo --input photo.jpg --ckpt checkpoint/3dpw-oc_best_ckpt.pth.tar --focal 1800 device=cuda
    python -m main.demo --input photo.jpg --ckpt output/run/checkpoint/last.pth.tar --cfg output/run/config.yaml

--input is an image, a folder of images or a video. Photos are turned upright by their EXIF orientation tag (as
phones store them), so keypoint files must be in the upright image's pixels, as viewers show it.

2D poses (JOTR lifts given 2D poses to 3D, so their quality bounds the result):
* no --keypoints: torchvision's Keypoint R-CNN (weights download on first use; offline, the demo says where to put
  them). Good on a few well-separated people; weak in crowds and under heavy occlusion.
* --keypoints FILE.json in the COCO person-keypoints format: the output of any COCO keypoint estimator. For crowds
  and occlusion use a stronger one you already run, e.g. MMPose's RTMPose / ViTPose (top-down, with a person
  detector) or HigherHRNet (bottom-up, good in crowds), saved as COCO results (README, '2D poses').
* --keypoints FOLDER of OpenPose JSON (`openpose --write_json FOLDER`, BODY_25 or COCO-18): fast, multi-person.
* --keypoints a 3DPW-style annotation file (its "openpose_result" fields): the paper's evaluation inputs.

Videos (and with --track, folders of frames): people are linked across frames (common/video/tracking.py: box IoU and
2D-pose distance, Hungarian assignment; a person unseen for up to --max-missing frames keeps its id), each id keeps
its colour and file names, and with --smooth (on by default for videos) every person's rotations, shape and
translation are smoothed over time (common/video/smoothing.py: One-Euro filter, rotations in the 6D representation).

Each person is cropped and fed to JOTR exactly as in the 3DPW evaluation (data/pw3d.py); the predicted mesh is
moved from the model's crop camera into the image's camera (common/camera.py), whose focal length defaults to
sqrt(H^2 + W^2) pixels (--focal to override) with the principal point at the image centre. Each person's root
lands exactly where the crop saw it; hands and feet that stick out in depth can shift by a few pixels, because
the model's crop camera (focal 5000) is almost orthographic and the image camera is not.

Writes to --out (default output/demo/<input stem>/), per frame (<frame> = the image's stem, or the six-digit
index of a video frame):
    <frame>_overlay.png        all meshes over the image (depth-ordered, one colour per person)
    <frame>_side.png           with --side-view: the meshes turned 90 degrees about the vertical axis through
                               the people's centroid (seen from the image's right), on a grey background
    <frame>_person<k>.obj      person k's mesh: metres, image camera frame (x right, y down, z forward); k is the
                               track id when tracking, else the person's index in the frame
    <frame>_person<k>.ply/.glb with --mesh-formats obj,ply,glb: the same mesh through trimesh
    <frame>_params.json, .npz  per person: smpl_pose (72, axis-angle), smpl_shape (10), cam_trans (3: SMPL
                               translation in metres, image camera), crop_cam_trans (3: the model's, crop camera),
                               bbox (crop box xywh, image px), score (detection score or null), joints_2d_input
                               (30 x 3: SMPL-30 order, image px + confidence), joints_2d_pred (30 x 2 image px),
                               joints_3d (30 x 3 metres, image camera), focal, princpt (image camera, px)
and, when tracking, per person (track id k):
    person<k>_smpl.npz         global_orient (T, 3), body_pose (T, 69), betas (T, 10), transl (T, 3) (what
                               smplx's SMPL forward takes; image camera frame, y down), frame_ids (T,), focal,
                               princpt (2,) px, gender ('neutral'), fps
and for a video <input stem>_overlay.mp4: H.264 (browsers and players play it), the input's frame count and rate.
With smoothing, the meshes, overlays and parameters are the smoothed ones (crop_cam_trans stays the model's).
The model configuration (--cfg / key=value, as for main.train and main.test) must match the checkpoint: the
default is the paper's model with checkpoint/3dpw_best_ckpt.pth.tar and the SMPL files in data/body_models/.
The device is the config's `device` key (device=cuda, device=cpu; default auto), as for every entry point.
"""
import argparse
import dataclasses
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from common.camera import default_image_camera, translation_crop_to_image
from common.errors import UserError, run_entry_point
from common.renderer import PALETTE, overlay, project, render
from common.speed import inference_model, setup_cpu_process
from common.training.checkpoint import load_checkpoint
from common.video.export import MESH_FORMATS, write_mesh, write_smpl_sequence
from common.video.io import H264Writer
from common.video.smoothing import SmoothingSettings, SmplSmoother
from common.video.tracking import DEFAULT_MAX_MISSING, Tracker
from data.keypoints_io import (
    IMAGE_EXTENSIONS,
    KEYPOINT_RCNN_DEFAULT_THRESHOLD,
    KeypointRCNNDetector,
    image_stem,
    person_from_keypoints,
    read_keypoint_file,
)
from data.preprocessing import affine_points, generate_patch_image, to_heatmap_frame, trunc_mask
from main.build import build_model, resolve_device
from main.config import add_config_args, config_from_args

DEFAULT_CKPT = "checkpoint/3dpw_best_ckpt.pth.tar"
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
DEFAULT_BATCH_SIZE = 16
DEFAULT_VIDEO_FPS = 30.0  # when the container does not say
SIDE_VIEW_DEGREES = 90.0
SIDE_VIEW_BACKGROUND = 235  # grey level
OVERLAY_ALPHA = 0.8  # weight of the rendered mesh over the image


class DemoError(UserError):
    """Bad input to the demo; the message says what is wrong and how to fix it."""


# ----------------------------------------------------------------------------------------------------------------------
# Input


@dataclasses.dataclass
class Frame:
    """name: the output file prefix; image (H, W, 3) uint8 RGB; video_index: position in the video (None for
    images)."""
    name: str
    image: np.ndarray
    video_index: int | None = None


def read_image(path):
    """(H, W, 3) uint8 RGB, upright: OpenCV's IMREAD_COLOR applies the EXIF orientation tag (phone photos are
    stored sideways with a tag saying how to turn them). Dataset loaders must not do this: their annotations are
    in the stored pixels."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DemoError(f"cannot read image {path} (missing, or not an image OpenCV can decode)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class InputMedia:
    """An image, a folder of images (sorted by file name) or a video, iterated as Frames.

    kind: 'image', 'folder' or 'video'; stem: the input's name without extension; fps: the video's frame rate
    (None for images); len(): the number of frames (for a video, what the container reports)."""

    def __init__(self, path):
        self.path = Path(path)
        self.stem = self.path.stem if self.path.is_file() else self.path.name
        self.fps = None
        suffix = self.path.suffix.lower()
        if not self.path.exists():
            raise DemoError(f"--input {self.path} does not exist (give an image, a folder of images or a video)")
        if self.path.is_dir():
            self.kind = "folder"
            self.image_paths = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            if not self.image_paths:
                raise DemoError(f"--input {self.path}: no images ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
        elif suffix in IMAGE_EXTENSIONS:
            self.kind, self.image_paths = "image", [self.path]
        elif suffix in VIDEO_EXTENSIONS:
            self.kind, self.image_paths = "video", []
            capture = cv2.VideoCapture(str(self.path))
            if not capture.isOpened():
                raise DemoError(f"--input {self.path}: OpenCV cannot open this video")
            self.num_video_frames = max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
            fps = capture.get(cv2.CAP_PROP_FPS)
            self.fps = float(fps) if fps and np.isfinite(fps) and fps > 0 else DEFAULT_VIDEO_FPS
            capture.release()
        else:
            raise DemoError(f"--input {self.path}: unsupported file type '{suffix}'; expected an image "
                            f"({', '.join(IMAGE_EXTENSIONS)}), a video ({', '.join(VIDEO_EXTENSIONS)}) or a folder")
        self.names = _unique_names(self.image_paths)

    def __len__(self):
        return self.num_video_frames if self.kind == "video" else len(self.image_paths)

    def frame_keys(self):
        """(name, video_index) of every frame, without reading them (video: as many as the container reports)."""
        if self.kind == "video":
            return [(video_frame_name(i), i) for i in range(len(self))]
        return [(path.name, None) for path in self.image_paths]

    def __iter__(self):
        if self.kind != "video":
            for path, name in zip(self.image_paths, self.names):
                yield Frame(name, read_image(path))
            return
        capture = cv2.VideoCapture(str(self.path))
        try:
            index = 0
            while True:
                ok, bgr = capture.read()
                if not ok:
                    break
                yield Frame(video_frame_name(index), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), video_index=index)
                index += 1
        finally:
            capture.release()


def video_frame_name(index):
    return f"{index:06d}"


def _unique_names(paths):
    """Output prefixes: the image stems, with the extension kept where two images share a stem."""
    stems = [image_stem(p.name) for p in paths]
    return [f"{stem}_{p.suffix.lstrip('.')}" if stems.count(stem) > 1 else stem for stem, p in zip(stems, paths)]


def people_from_keypoint_file(keypoint_file, single_image=False):
    """A Frame -> [Person2D] function reading the frame's detections from a KeypointFile. With `single_image`, a
    file holding exactly one image's detections is used for the input image whatever its name."""
    only = next(iter(keypoint_file.entries.values())) if single_image and len(keypoint_file) == 1 else None

    def people_for(frame):
        detections = only if only is not None else keypoint_file.lookup(frame.name, frame.video_index)
        return _people(detections or [], frame.image)

    return people_for


def people_from_detector(detector):
    """A Frame -> [Person2D] function running a detector (e.g. data.keypoints_io.KeypointRCNNDetector)."""
    return lambda frame: _people(detector(frame.image), frame.image)


def _people(detections, image):
    height, width = image.shape[:2]
    people = (person_from_keypoints(d.keypoints, d.layout, width, height, d.score) for d in detections)
    return [p for p in people if p is not None]


def check_keypoint_coverage(keypoint_file, media):
    """Raise DemoError when the keypoint file has poses for none of the input's frames (a naming mismatch);
    return the number of frames without an entry."""
    if media.kind == "image" and len(keypoint_file) == 1:
        return 0
    keys = media.frame_keys()
    missing = [name for name, index in keys if keypoint_file.lookup(name, index) is None]
    if keys and len(missing) == len(keys):
        examples = ", ".join(list(keypoint_file.entries)[:3])
        raise DemoError(f"--keypoints {keypoint_file.source} has no poses for any input frame: its image names "
                        f"({examples}, ...) match none of the input's ({', '.join(n for n, _ in keys[:3])}, ...). "
                        f"Names match by file name, by name without extension, or (video) by frame index.")
    return len(missing)


# ----------------------------------------------------------------------------------------------------------------------
# Model inputs, inference and placement


def prepare_person(image, person, input_img_shape, output_hm_shape):
    """The model inputs for one person, built as data.pw3d.PW3D builds a test sample (no augmentation).

    Returns img (3, H, W) float32 RGB in [0, 1]; joints (30, 3) heatmap frame + confidence; joints_mask (30, 1);
    bbox (4,) xywh image px; bb2img (2, 3) crop -> image pixels."""
    patch, img2bb, bb2img = generate_patch_image(image, person.bbox, 1.0, 0.0, False, input_img_shape)
    joints_hm = to_heatmap_frame(affine_points(person.joints[:, :2], img2bb), input_img_shape, output_hm_shape)
    joints = np.concatenate([joints_hm, person.joints[:, 2:]], axis=1).astype(np.float32)
    return {
        "img": (patch.transpose(2, 0, 1) / 255.0).astype(np.float32),
        "joints": joints,
        "joints_mask": trunc_mask(joints, person.valid, output_hm_shape, check_depth=False),
        "bbox": np.asarray(person.bbox, dtype=np.float32),
        "bb2img": bb2img,
    }


@torch.no_grad()
def predict(model, inputs, device, batch_size):
    """Run the model over a list of prepare_person dicts in batches. Returns numpy arrays: smpl_pose (N, 72),
    smpl_shape (N, 10), cam_trans (N, 3), mesh_cam_render (N, V, 3) and joint_cam (N, 30, 3) root-relative, in
    the crop camera (metres), and root (N, 3) the root joint there."""
    outputs = []
    for start in range(0, len(inputs), batch_size):
        chunk = inputs[start:start + batch_size]
        batch = {k: torch.from_numpy(np.stack([item[k] for item in chunk])).to(device)
                 for k in ("img", "joints", "joints_mask", "bbox")}
        out = model(batch["img"], batch["joints"], batch["joints_mask"], bbox=batch["bbox"])
        arrays = {k: out[k].float().cpu().numpy() for k in
                  ("smpl_pose", "smpl_shape", "cam_trans", "mesh_cam_render", "smpl_mesh_cam", "joint_cam")}
        # smpl_mesh_cam is mesh_cam_render minus the root joint (spec 1.3-19).
        arrays["root"] = arrays["mesh_cam_render"][:, 0] - arrays.pop("smpl_mesh_cam")[:, 0]
        outputs.append(arrays)
    return {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}


def _empty_prediction():
    """predict's output for no people."""
    return {"smpl_pose": np.zeros((0, 72)), "smpl_shape": np.zeros((0, 10)), "cam_trans": np.zeros((0, 3)),
            "mesh_cam_render": np.zeros((0, 0, 3)), "joint_cam": np.zeros((0, 30, 3)), "root": np.zeros((0, 3))}


def place_in_image(pred, bb2img, crop_focal, crop_princpt, img_focal, img_princpt):
    """Move crop-camera predictions (predict's output for N people, their (N, 2, 3) bb2img) into the image camera.

    Returns cam_trans (N, 3) SMPL translation, vertices (N, V, 3), joints_3d (N, 30, 3), all metres in the image
    camera, and joints_2d (N, 30, 2) their image projections in pixels."""
    cam_trans = translation_crop_to_image(pred["cam_trans"], pred["root"], bb2img, crop_focal, crop_princpt,
                                          img_focal, img_princpt)
    shift = cam_trans - pred["cam_trans"]
    vertices = pred["mesh_cam_render"] + shift[:, None]
    joints_3d = pred["joint_cam"] + (pred["root"] + shift)[:, None]
    return {"cam_trans": cam_trans, "vertices": vertices, "joints_3d": joints_3d,
            "joints_2d": project(joints_3d, img_focal, img_princpt)}


# ----------------------------------------------------------------------------------------------------------------------
# Output


def person_colors(ids):
    """One palette colour (RGB in [0, 1]) per person id, so a tracked person keeps its colour."""
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    return PALETTE[ids % len(PALETTE)] if len(ids) else None  # None: the renderer draws nobody anyway


def render_overlay(image, vertices, faces, focal, princpt, ids=None):
    """All meshes (N, V, 3) (image camera, metres) over `image` (H, W, 3) uint8 RGB, depth-ordered by the
    z-buffer, one palette colour per person id (default 0..N-1). Returns (overlay (H, W, 3) uint8,
    common.renderer.RenderResult)."""
    ids = np.arange(len(vertices)) if ids is None else ids
    result = render([(v, faces) for v in vertices], focal, princpt, image.shape[:2], colors=person_colors(ids))
    return overlay(image, result, alpha=OVERLAY_ALPHA), result


def side_view_meshes(vertices, degrees=SIDE_VIEW_DEGREES):
    """Meshes (N, V, 3) turned by `degrees` about the camera's vertical (y) axis through the centroid of the
    people's centres: positive angles bring the far side to the right (the scene as seen from the image's right)."""
    vertices = np.asarray(vertices, dtype=np.float64)
    centre = vertices.mean(axis=1).mean(axis=0)
    angle = np.deg2rad(degrees)
    rotation = np.array([[np.cos(angle), 0.0, np.sin(angle)], [0.0, 1.0, 0.0], [-np.sin(angle), 0.0, np.cos(angle)]])
    return (vertices - centre) @ rotation.T + centre


def write_obj(path, vertices, faces):
    """A Wavefront OBJ with `v x y z` (metres) and 1-based `f a b c` lines."""
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in np.asarray(vertices, dtype=np.float64)]
    lines += [f"f {a} {b} {c}" for a, b, c in np.asarray(faces, dtype=np.int64) + 1]
    Path(path).write_text("\n".join(lines) + "\n")


def _write_png(path, rgb):
    if not cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1])):
        raise DemoError(f"cannot write {path}")


def frame_params(people, pred, placed):
    """The per-person parameter arrays written to <frame>_params.{json,npz} (see the module docstring)."""
    n = len(people)
    return {
        "smpl_pose": pred["smpl_pose"].reshape(n, 72), "smpl_shape": pred["smpl_shape"].reshape(n, 10),
        "cam_trans": placed["cam_trans"].reshape(n, 3), "crop_cam_trans": pred["cam_trans"].reshape(n, 3),
        "bbox": np.array([p.bbox for p in people], dtype=np.float32).reshape(n, 4),
        "score": np.array([np.nan if p.score is None else p.score for p in people], dtype=np.float32),
        "joints_2d_input": np.array([p.joints for p in people], dtype=np.float32).reshape(n, 30, 3),
        "joints_2d_pred": placed["joints_2d"].reshape(n, 30, 2), "joints_3d": placed["joints_3d"].reshape(n, 30, 3),
    }


def write_frame(out_dir, frame, people, pred, placed, faces, focal, princpt, with_side_view, ids=None,
                mesh_formats=("obj",)):
    """Write one frame's overlay (and side view), meshes and parameters; return (overlay image, file paths).
    ids: the people's ids (track ids; default 0..N-1), used for colours and file names."""
    name, (height, width) = frame.name, frame.image.shape[:2]
    vertices = placed["vertices"]
    ids = np.arange(len(people)) if ids is None else np.asarray(ids)
    image, _ = render_overlay(frame.image, vertices, faces, focal, princpt, ids)
    paths = {"overlay": out_dir / f"{name}_overlay.png", "side": None, "objs": [],
             "params_json": out_dir / f"{name}_params.json", "params_npz": out_dir / f"{name}_params.npz"}
    _write_png(paths["overlay"], image)
    if with_side_view:
        background = np.full((height, width, 3), SIDE_VIEW_BACKGROUND, dtype=np.uint8)
        turned = side_view_meshes(vertices) if len(vertices) else vertices
        side = render([(v, faces) for v in turned], focal, princpt, (height, width), colors=person_colors(ids),
                      background=background).image
        paths["side"] = out_dir / f"{name}_side.png"
        _write_png(paths["side"], side)
    paths["meshes"] = []
    for k, v in zip(ids, vertices):
        for fmt in mesh_formats:
            path = out_dir / f"{name}_person{k}.{fmt}"
            write_obj(path, v, faces) if fmt == "obj" else write_mesh(path, v, faces)
            (paths["objs"] if fmt == "obj" else paths["meshes"]).append(path)

    params = frame_params(people, pred, placed)
    camera = {"focal": [float(f) for f in focal], "princpt": [float(c) for c in princpt]}
    people_json = []
    for k in range(len(people)):
        person = {key: value[k].astype(np.float64).tolist() for key, value in params.items() if key != "score"}
        person["score"] = people[k].score
        person["id"] = int(ids[k])
        person.update(camera, obj=f"{name}_person{ids[k]}.obj" if "obj" in mesh_formats else None)
        people_json.append(person)
    content = {"frame": name, "image_size": [height, width], **camera,
               "units": "metres (3D, image camera: x right, y down, z forward), pixels (2D)", "people": people_json}
    paths["params_json"].write_text(json.dumps(content))
    np.savez(paths["params_npz"], **params, ids=ids.astype(np.int64), focal=np.asarray(focal, np.float64),
             princpt=np.asarray(princpt, np.float64), image_size=np.array([height, width]))
    return image, paths


@torch.no_grad()
def body_model_outputs(model, poses, betas, transl):
    """The SMPL mesh (N, V, 3) and SMPL-30 joints (N, 30, 3) of parameters (N, 72), (N, 10), (N, 3) in metres,
    from the model's own body model and joint regressor (as its forward computes them)."""
    param = next(iter(model.parameters()), torch.empty(0))
    args = (torch.as_tensor(np.asarray(a), dtype=torch.float32, device=param.device) for a in (poses, betas, transl))
    mesh = model.body_model(*args)
    joints = torch.einsum("jv,bvc->bjc", model.joint_regressor.to(mesh), mesh)
    return mesh.double().cpu().numpy(), joints.double().cpu().numpy()


class PeopleOverTime:
    """Tracking, smoothing and the per-person sequences of run_demo.

    track: link people across frames (common.video.tracking.Tracker); smoothing: SmoothingSettings, or None for no
    smoothing (needs tracking); fps: frames per second, for the filters' time steps."""

    def __init__(self, track, smoothing, fps, max_missing=DEFAULT_MAX_MISSING):
        if smoothing is not None and not track:
            raise ValueError("smoothing needs tracking (a person's frames are known only through its track)")
        self.tracker = Tracker(max_missing=max_missing) if track else None
        self.smoothing, self.fps = smoothing, fps
        self.smoothers, self.sequences = {}, {}

    def ids(self, index, people):
        if self.tracker is None:
            return np.arange(len(people))
        boxes = np.array([p.bbox for p in people], dtype=np.float64).reshape(-1, 4)
        joints = np.array([p.joints for p in people], dtype=np.float64).reshape(len(people), 30, 3)
        return self.tracker.update(index, boxes, joints)

    def smooth(self, model, index, ids, pred, placed, focal, princpt):
        """Replace the frame's poses, shapes, translations and the meshes and joints made from them by the
        smoothed ones (in place)."""
        if self.smoothing is None or not len(ids):
            return
        poses, betas, transl = [], [], []
        for k, person_id in enumerate(ids):
            smoother = self.smoothers.setdefault(int(person_id), SmplSmoother(self.smoothing))
            outputs = smoother(index / self.fps, pred["smpl_pose"][k], pred["smpl_shape"][k], placed["cam_trans"][k])
            for values, value in zip((poses, betas, transl), outputs):
                values.append(value)
        poses, betas, transl = np.stack(poses), np.stack(betas), np.stack(transl)
        vertices, joints = body_model_outputs(model, poses, betas, transl)
        pred["smpl_pose"], pred["smpl_shape"] = poses, betas
        placed.update(cam_trans=transl, vertices=vertices, joints_3d=joints, joints_2d=project(joints, focal, princpt))

    def record(self, index, ids, pred, placed, focal, princpt):
        if self.tracker is None:
            return
        for k, person_id in enumerate(ids):
            sequence = self.sequences.setdefault(int(person_id), {"frame_ids": [], "poses": [], "betas": [],
                                                                   "transl": [], "focal": focal, "princpt": princpt})
            sequence["frame_ids"].append(index)
            sequence["poses"].append(pred["smpl_pose"][k])
            sequence["betas"].append(pred["smpl_shape"][k])
            sequence["transl"].append(placed["cam_trans"][k])

    def write(self, out_dir):
        """person<id>_smpl.npz per track; returns {id: path}."""
        paths = {}
        for person_id, seq in sorted(self.sequences.items()):
            paths[person_id] = Path(out_dir) / f"person{person_id}_smpl.npz"
            write_smpl_sequence(paths[person_id], seq["frame_ids"], np.stack(seq["poses"]), np.stack(seq["betas"]),
                                np.stack(seq["transl"]), seq["focal"], seq["princpt"], fps=np.float64(self.fps))
        return paths


def run_demo(model, frames, people_per_frame, out_dir, *, device=None, batch_size=DEFAULT_BATCH_SIZE, focal=None,
             side_view=False, video_path=None, fps=DEFAULT_VIDEO_FPS, num_frames=None, progress=True, track=False,
             smoothing=None, max_missing=DEFAULT_MAX_MISSING, mesh_formats=("obj",), fast_inference=True):
    """JOTR on every person of every frame; writes the outputs listed in the module docstring.

    model: a JOTR (common.model.jotr), put in eval mode here; its crop camera (focal, princpt, input_img_shape,
        output_hm_shape), body_model and joint_regressor are used. frames: iterable of Frame, in time order.
        people_per_frame: a function Frame -> [data.keypoints_io.Person2D], or a sequence of such lists aligned
        with frames.
    device: where the model runs (default: where its parameters are). batch_size: people per forward pass
        (people of consecutive frames are batched together). focal: the image camera's focal length in pixels
        (default sqrt(H^2 + W^2)); the principal point is the image centre. video_path: also write the overlays
        as an H.264 mp4 there (fps frames per second). num_frames: for the progress bar.
    track: link people across frames (ids in file names and colours; person<id>_smpl.npz per track). smoothing:
        a common.video.smoothing.SmoothingSettings to smooth every track over time (needs track), or None.
        max_missing: frames a track survives unseen. mesh_formats: any of 'obj', 'ply', 'glb'.
    Returns one dict per frame: name, num_people, ids, overlay, side, objs, meshes, params_json, params_npz
    (paths); with track, the last one also has tracks {id: npz path}.
    """
    unknown = set(mesh_formats) - set(MESH_FORMATS)
    if unknown:
        raise DemoError(f"--mesh-formats: {', '.join(sorted(unknown))} unknown; choose from {', '.join(MESH_FORMATS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if device is None:
        device = next(iter(model.parameters()), torch.empty(0)).device
    # With fast_inference, BN folded into the convolutions (common/speed/fusion.py).
    model = inference_model(model.eval(), fuse=fast_inference)
    if callable(people_per_frame):
        people_for = people_per_frame
    else:
        people_lists = iter(people_per_frame)

        def people_for(frame):
            return next(people_lists)
    faces = np.asarray(model.body_model.faces, dtype=np.int64)
    crop_camera = (model.focal, model.princpt)
    over_time = PeopleOverTime(track, smoothing, fps, max_missing)
    writer, summaries, pending = None, [], []

    def flush():
        nonlocal writer
        inputs = [item for _, _, _, prepared in pending for item in prepared]
        pred = predict(model, inputs, device, batch_size) if inputs else _empty_prediction()
        start = 0
        for index, frame, people, prepared in pending:
            height, width = frame.image.shape[:2]
            cam_focal, princpt = default_image_camera(height, width)
            cam_focal = cam_focal if focal is None else (float(focal), float(focal))
            n = len(people)
            mine = {k: v[start:start + n] for k, v in pred.items()}
            bb2img = np.stack([item["bb2img"] for item in prepared]) if n else np.zeros((0, 2, 3))
            placed = place_in_image(mine, bb2img, *crop_camera, cam_focal, princpt)
            start += n
            ids = over_time.ids(index, people)
            over_time.smooth(model, index, ids, mine, placed, cam_focal, princpt)
            over_time.record(index, ids, mine, placed, cam_focal, princpt)
            image, paths = write_frame(out_dir, frame, people, mine, placed, faces, cam_focal, princpt, side_view,
                                       ids, mesh_formats)
            if video_path is not None:
                if writer is None:
                    writer = H264Writer(video_path, fps)
                writer.write(image)
            summaries.append({"name": frame.name, "num_people": n, "ids": [int(i) for i in ids], **paths})
        pending.clear()

    try:
        for index, frame in enumerate(tqdm(frames, total=num_frames, desc="demo", unit="frame",
                                           disable=not progress)):
            index = index if frame.video_index is None else frame.video_index
            people = people_for(frame)
            prepared = [prepare_person(frame.image, p, model.input_img_shape, model.output_hm_shape) for p in people]
            pending.append((index, frame, people, prepared))
            if sum(len(p) for _, _, p, _ in pending) >= batch_size or len(pending) >= batch_size:
                flush()
        flush()
    finally:
        if writer is not None:
            writer.close()
    if track and summaries:
        summaries[-1]["tracks"] = over_time.write(out_dir)
    return summaries


# ----------------------------------------------------------------------------------------------------------------------
# Command line


def missing_checkpoint_message(path):
    return (f"checkpoint not found: {path}. The official JOTR checkpoints (3dpw_best_ckpt.pth.tar, "
            f"3dpw-oc_best_ckpt.pth.tar, 3dpw-pc_best_ckpt.pth.tar, 3dpw-crowd_best_ckpt.pth.tar) come from the "
            f"Google Drive links in the official JOTR README (github.com/xljh0520/JOTR) and go in checkpoint/ (see "
            f"checkpoint/README.md); they fit the default configuration (the paper's model) and need the real SMPL "
            f"files in data/body_models/ (docs/DATA.md). A checkpoint of your own run is "
            f"output/<exp_name>/checkpoint/last.pth.tar: pass it with --ckpt and its config with --cfg.")


def run(args, cfg):
    media = InputMedia(args.input)
    ckpt = Path(args.ckpt)
    if not ckpt.is_file():
        raise DemoError(missing_checkpoint_message(ckpt))
    if args.batch_size < 1:
        raise DemoError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.focal is not None and not args.focal > 0:
        raise DemoError(f"--focal must be a positive focal length in pixels, got {args.focal}")
    if args.max_missing < 0:
        raise DemoError(f"--max-missing must be >= 0 frames, got {args.max_missing}")
    # Tracking and smoothing default to on for videos only: a folder may hold unrelated photos.
    smooth = media.kind == "video" if args.smooth is None else args.smooth
    track = smooth or (media.kind == "video" if args.track is None else args.track)
    device = resolve_device(cfg.device)
    setup_cpu_process(cfg.reuse_cpu_memory)
    if args.keypoints:
        keypoint_file = read_keypoint_file(args.keypoints)
        missing = check_keypoint_coverage(keypoint_file, media)
        if missing:
            print(f"note: {missing} of {len(media)} frames have no entry in {args.keypoints}; they get no meshes",
                  file=sys.stderr)
        people_for = people_from_keypoint_file(keypoint_file, single_image=media.kind == "image")
    else:
        people_for = people_from_detector(KeypointRCNNDetector(device, args.det_threshold))
    model = build_model(cfg)
    load_checkpoint(model, ckpt)
    model.to(device)
    out_dir = Path(args.out) if args.out else Path(cfg.output_dir) / "demo" / media.stem
    video_path = out_dir / f"{media.stem}_overlay.mp4" if media.kind == "video" else None
    summaries = run_demo(model, media, people_for, out_dir, device=device, batch_size=args.batch_size,
                         fast_inference=cfg.fast_inference,
                         focal=args.focal, side_view=args.side_view, video_path=video_path,
                         fps=media.fps or DEFAULT_VIDEO_FPS, num_frames=len(media) or None, track=track,
                         smoothing=SmoothingSettings() if smooth else None, max_missing=args.max_missing,
                         mesh_formats=tuple(dict.fromkeys(f.strip() for f in args.mesh_formats.split(","))))
    people = sum(s["num_people"] for s in summaries)
    print(f"{len(summaries)} frame(s), {people} person(s); results in {out_dir}"
          + (f" (video {video_path.name})" if video_path else ""))
    return summaries


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="an image, a folder of images or a video")
    parser.add_argument("--ckpt", default=DEFAULT_CKPT, help=f"model weights (default {DEFAULT_CKPT})")
    parser.add_argument("--keypoints", help="2D poses: a COCO keypoints JSON (e.g. RTMPose / ViTPose / HigherHRNet "
                                            "results: best in crowds and occlusion), a folder of OpenPose JSON, or "
                                            "a 3DPW-style annotation file (default: run Keypoint R-CNN, fine for a "
                                            "few separate people); see the list above and README '2D poses'")
    parser.add_argument("--out", help="output folder (default <output_dir>/demo/<input stem>)")
    parser.add_argument("--focal", type=float, help="image camera focal length in pixels (default sqrt(H^2 + W^2))")
    parser.add_argument("--side-view", action="store_true", help="also render the meshes turned by 90 degrees")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="people per forward pass")
    parser.add_argument("--det-threshold", type=float, default=KEYPOINT_RCNN_DEFAULT_THRESHOLD,
                        help="Keypoint R-CNN person score threshold")
    parser.add_argument("--track", action=argparse.BooleanOptionalAction, default=None,
                        help="link people across frames (default: on for videos, off for images and folders)")
    parser.add_argument("--smooth", action=argparse.BooleanOptionalAction, default=None,
                        help="smooth each tracked person over time; implies --track (default: on for videos)")
    parser.add_argument("--max-missing", type=int, default=DEFAULT_MAX_MISSING,
                        help=f"frames a tracked person may be unseen and keep its id (default {DEFAULT_MAX_MISSING})")
    parser.add_argument("--mesh-formats", default="obj",
                        help=f"mesh files per person and frame, comma-separated from {','.join(MESH_FORMATS)} "
                             "(default obj)")
    add_config_args(parser)
    args = parser.parse_intermixed_args(argv)
    run(args, config_from_args(args))
    return 0


if __name__ == "__main__":
    run_entry_point(main)
