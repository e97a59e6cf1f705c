"""Generate the synthetic occluded-people data (embedded.generate) into a data directory.

    python -m tools.make_synthetic --out data_synthetic [--seed 0] [--train 2000] [--test 500] [--crowd 100]
                                   [--image-size 240 320] [--force]

Writes <out>/body_models (the mannequin), <out>/3DPW (test, -oc, -pc, -crowd in the 3DPW format), <out>/MuCo
(training split), <out>/MSCOCO (the same training people as a 2D set) and <out>/manifest.json. A second run with
the same settings finds the manifest and does nothing (--force regenerates). Prints the config overrides that point
a run at the directory.
"""
import argparse
import json
import pathlib

import cv2

from common.errors import run_entry_point
from embedded.generate import generate
from embedded.scene import DEFAULT_IMAGE_SIZE


def config_overrides(out_dir):
    """`key=value` overrides (main.config) that make a run use the generated directory."""
    out = pathlib.Path(out_dir)
    return [f"data_dir={out}", f"smpl_dir={out / 'body_models' / 'smpl'}",
            f"j_regressor_extra_path={out / 'body_models' / 'J_regressor_extra.npy'}",
            f"j_regressor_h36m_path={out / 'body_models' / 'J_regressor_h36m_correct.npy'}",
            "trainset_3d=[MuCo]", "trainset_2d=[MSCOCO]"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output data directory (created; a directory holding data "
                                                     "this tool did not write is refused)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=2000,
                        help="training images (MuCo and MSCOCO formats; default %(default)s)")
    parser.add_argument("--test", type=int, default=500, help="test images (3DPW format; default %(default)s)")
    parser.add_argument("--crowd", type=int, default=100, help="crowd images, 3-4 people each (default %(default)s)")
    parser.add_argument("--image-size", type=int, nargs=2, default=list(DEFAULT_IMAGE_SIZE), metavar=("H", "W"),
                        help="image height and width in pixels (default %(default)s)")
    parser.add_argument("--force", action="store_true", help="regenerate even if the manifest matches")
    args = parser.parse_args(argv)
    for name in ("train", "test", "crowd"):
        if getattr(args, name) < 0:
            parser.error(f"--{name} must be >= 0, got {getattr(args, name)}")
    if min(args.image_size) < 32:
        parser.error(f"--image-size must be at least 32 x 32 pixels, got {args.image_size}")

    cv2.setNumThreads(1)  # small images: OpenCV's worker threads cost more than they save
    manifest = generate(args.out, seed=args.seed, n_train=args.train, n_test=args.test, n_crowd=args.crowd,
                        image_size=tuple(args.image_size), force=args.force, log=print)
    print(json.dumps(manifest["counts"], indent=1))
    print("use it with: " + " ".join(config_overrides(args.out)))


if __name__ == "__main__":
    run_entry_point(main)
