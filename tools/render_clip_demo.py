"""The README's video picture: the demo (tracking and smoothing on) on a synthetic walking clip.

    .venv/bin/python -m tools.render_clip_demo --ckpt output/embedded/checkpoint/last.pth.tar \\
        [--body-models output/synthetic/body_models] [--work output/clip_demo] [--out assets/demo_video_embedded.jpg]

Makes the clip with embedded/clip.py (two people crossing, the farther one hidden for a few frames, one
standing), runs `python -m main.demo` on it with the embedded configuration, and puts a row of input frames above
the same frames' overlays, labelled with the frame index and the people detected in it.
"""
import argparse
from pathlib import Path

import cv2
import numpy as np

from embedded.bodies import load_bodies
from embedded.clip import make_clip, write_clip
from main import demo

FRAMES = (9, 12, 14, 16, 19)  # around the moment the farther walker passes behind the nearer one


def _label(image, text):
    image = image.copy()
    cv2.putText(image, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return image


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--cfg", default="embedded")
    parser.add_argument("--body-models", default="output/synthetic/body_models")
    parser.add_argument("--work", default="output/clip_demo")
    parser.add_argument("--out", default="assets/demo_video_embedded.jpg")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    body = Path(args.body_models)
    clip = make_clip(load_bodies(body), num_frames=36, fps=12.0, seed=0)
    video, keypoints = write_clip(clip, args.work)
    out_dir = Path(args.work) / "demo"
    code = demo.main(["--input", str(video), "--keypoints", str(keypoints), "--ckpt", args.ckpt, "--out",
                      str(out_dir), "--cfg", args.cfg, f"smpl_dir={body / 'smpl'}",
                      f"j_regressor_extra_path={body / 'J_regressor_extra.npy'}", *args.overrides])
    if code:
        return code
    rows = [[], []]
    for index in FRAMES:
        ids = np.load(out_dir / f"{index:06d}_params.npz")["ids"]
        rows[0].append(_label(clip.frames[index], f"frame {index}"))
        overlay = cv2.imread(str(out_dir / f"{index:06d}_overlay.png"))[..., ::-1]
        rows[1].append(_label(overlay, "ids " + " ".join(str(i) for i in sorted(ids))))
    picture = np.concatenate([np.concatenate(row, axis=1) for row in rows], axis=0)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(args.out, np.ascontiguousarray(picture[..., ::-1]))
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
