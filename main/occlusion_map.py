"""Occlusion sensitivity of JOTR for one person: where an occluder hurts the 3D pose, per body part.

    python -m main.occlusion_map --input photo.jpg --keypoints poses.json --ckpt checkpoint/3dpw_best_ckpt.pth.tar
    python -m main.occlusion_map --input photo.jpg --person 1 --patch 0.25 --drop-occluded-joints \\
        --ckpt output/embedded/checkpoint/last.pth.tar --cfg embedded

The person's crop (as main.demo builds it) is fed once as it is and then once per position of a grey square
(--patch: side as a fraction of the crop; moved by --stride, default half the side). At each position the 3D joints
(root-relative, SMPL-30) are compared with the unoccluded prediction: the mean distance (mm) of the joints of each
group (head and torso, arms, legs) and of all joints. Each crop pixel gets the mean over the patches covering it,
drawn over the crop, one panel per group, with a shared colour scale (mm) beside them.

The 2D pose stays as given unless --drop-occluded-joints: then joints under the patch are removed from the input
too, as a 2D detector would lose them, which shows the joint-guided path's share.

Writes --out (default <output_dir>/occlusion_map/<image stem>_person<k>.png) and, beside it, the same name .npz:
errors (positions_y, positions_x, groups) mm, groups (names), top_left (positions_y, positions_x, 2) crop pixels
(x, y), patch (pixels), crop (H, W, 3) uint8, joints_crop (30, 3) the input 2D joints in crop pixels + confidence
(0: not used).
"""
import argparse
from pathlib import Path

import cv2
import numpy as np

from common.body.joint_sets import SMPL30
from common.errors import run_entry_point
from common.speed import inference_model, setup_cpu_process
from common.training.checkpoint import load_checkpoint
from data.keypoints_io import (
    KEYPOINT_RCNN_DEFAULT_THRESHOLD,
    KeypointRCNNDetector,
    read_keypoint_file,
)
from main.build import build_model, resolve_device
from main.config import add_config_args, config_from_args
from main.demo import (
    DEFAULT_CKPT,
    DemoError,
    Frame,
    missing_checkpoint_message,
    people_from_detector,
    people_from_keypoint_file,
    predict,
    prepare_person,
    read_image,
)

GREY = 0.5  # the occluder's value in the model's [0, 1] input
DEFAULT_PATCH = 0.25
PANEL_SCALE = 2  # panels are drawn at twice the crop's size
_ARMS = ("Thorax", "Shoulder", "Elbow", "Wrist", "Hand")
_LEGS = ("Hip", "Knee", "Ankle", "Toe")
GROUPS = {
    "all joints": tuple(range(len(SMPL30))),
    "head and torso": tuple(i for i, n in enumerate(SMPL30) if not any(p in n for p in _ARMS + _LEGS)),
    "arms": tuple(i for i, n in enumerate(SMPL30) if any(p in n for p in _ARMS)),
    "legs": tuple(i for i, n in enumerate(SMPL30) if any(p in n for p in _LEGS)),
}


def patch_positions(crop_size, patch, stride):
    """Top-left corners (x, y) of the patch positions covering a crop of `crop_size` (H, W): (ny, nx, 2)."""
    height, width = crop_size
    ys = np.arange(0, max(height - patch, 0) + 1, stride)
    xs = np.arange(0, max(width - patch, 0) + 1, stride)
    return np.stack(np.meshgrid(xs, ys), axis=-1)


def input_joints_in_crop(model, prepared):
    """The input 2D joints (30, 3) in crop pixels (x, y) + confidence (0 where not valid)."""
    crop_size = prepared["img"].shape[1:]
    hm_to_crop = np.array(crop_size[::-1], np.float64) / np.array(model.output_hm_shape[:0:-1], np.float64)
    valid = prepared["joints_mask"][:, 0] > 0
    return np.concatenate([prepared["joints"][:, :2] * hm_to_crop, (prepared["joints"][:, 2] * valid)[:, None]], 1)


def occlusion_errors(model, prepared, device, patch, stride, drop_occluded_joints=False, batch_size=16):
    """The error grid: (ny, nx, len(GROUPS)) mm, and the top-left corners (ny, nx, 2), for one prepare_person
    dict; see the module docstring."""
    crop_size = prepared["img"].shape[1:]
    corners = patch_positions(crop_size, patch, stride)
    base = predict(model, [prepared], device, batch_size)["joint_cam"][0]
    joints_px = input_joints_in_crop(model, prepared)[:, :2]
    inputs = []
    for x, y in corners.reshape(-1, 2):
        item = dict(prepared, img=prepared["img"].copy())
        item["img"][:, y:y + patch, x:x + patch] = GREY
        if drop_occluded_joints:
            inside = np.all((joints_px >= [x, y]) & (joints_px < [x + patch, y + patch]), axis=1)
            item["joints_mask"] = prepared["joints_mask"] * ~inside[:, None]
            item["joints"] = prepared["joints"].copy()
            item["joints"][inside, 2] = 0
        inputs.append(item)
    joints = predict(model, inputs, device, batch_size)["joint_cam"]
    per_joint = np.linalg.norm(joints - base, axis=-1) * 1000  # (positions, 30) mm
    errors = np.stack([per_joint[:, list(idx)].mean(1) for idx in GROUPS.values()], axis=-1)
    return errors.reshape(*corners.shape[:2], len(GROUPS)), corners


def pixel_maps(errors, corners, patch, crop_size):
    """(groups, H, W): each crop pixel's mean error over the patches covering it (0 where none does)."""
    total = np.zeros((errors.shape[-1], *crop_size))
    count = np.zeros(crop_size)
    for (x, y), error in zip(corners.reshape(-1, 2), errors.reshape(-1, errors.shape[-1])):
        total[:, y:y + patch, x:x + patch] += error[:, None, None]
        count[y:y + patch, x:x + patch] += 1
    return total / np.maximum(count, 1)


def _text(image, text, origin, scale=0.45):
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 2, cv2.LINE_AA)
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)


def draw_map(crop, maps, names, patch):
    """The picture (RGB uint8): per group the crop with its error map over it (turbo colours, one scale for all
    panels), then a colour bar in mm."""
    vmax = max(float(maps.max()), 1e-6)
    height, width = (s * PANEL_SCALE for s in crop.shape[:2])
    crop_big = cv2.resize(crop, (width, height), interpolation=cv2.INTER_LINEAR)
    panels = []
    for error_map, name in zip(maps, names):
        level = np.clip(error_map / vmax * 255, 0, 255).astype(np.uint8)
        level = cv2.resize(level, (width, height), interpolation=cv2.INTER_LINEAR)
        colour = cv2.applyColorMap(level, cv2.COLORMAP_TURBO)[..., ::-1]
        panel = (0.45 * crop_big + 0.55 * colour).astype(np.uint8)
        _text(panel, name, (6, 18))
        _text(panel, f"mean {error_map.mean():.3g} mm", (6, height - 8))
        panels.append(panel)
    bar = np.zeros((height, 70, 3), np.uint8)
    levels = np.linspace(255, 0, height - 40).astype(np.uint8)[:, None]
    bar[20:height - 20, 8:26] = cv2.applyColorMap(np.repeat(levels, 18, axis=1), cv2.COLORMAP_TURBO)[..., ::-1]
    bar[:] = np.where(bar.any(-1, keepdims=True), bar, 40)
    _text(bar, f"{vmax:.3g}", (28, 28), 0.4)
    _text(bar, "0 mm", (28, height - 18), 0.4)
    picture = np.concatenate([*panels, bar], axis=1)
    footer = np.full((24, picture.shape[1], 3), 40, np.uint8)
    _text(footer, f"3D joint error vs. the unoccluded prediction, grey {patch}px patch", (6, 16), 0.42)
    return np.concatenate([picture, footer], axis=0)


def run(args, cfg):
    image = read_image(args.input)
    ckpt = Path(args.ckpt)
    if not ckpt.is_file():
        raise DemoError(missing_checkpoint_message(ckpt))
    device = resolve_device(cfg.device)
    setup_cpu_process(cfg.reuse_cpu_memory)
    frame = Frame(Path(args.input).stem, image)
    if args.keypoints:
        people = people_from_keypoint_file(read_keypoint_file(args.keypoints), single_image=True)(frame)
    else:
        people = people_from_detector(KeypointRCNNDetector(device, args.det_threshold))(frame)
    if not 0 <= args.person < len(people):
        raise DemoError(f"--person {args.person}: {args.input} has {len(people)} person(s) with a usable 2D pose "
                        f"(numbered 0.. in the order of {'--keypoints' if args.keypoints else 'the detector'})")
    model = build_model(cfg)
    load_checkpoint(model, ckpt)
    model = inference_model(model.to(device).eval(), fuse=cfg.fast_inference)
    prepared = prepare_person(image, people[args.person], model.input_img_shape, model.output_hm_shape)
    crop_size = prepared["img"].shape[1:]
    patch = int(round(args.patch * min(crop_size))) if args.patch <= 1 else int(args.patch)
    if not 1 <= patch <= min(crop_size):
        raise DemoError(f"--patch {args.patch}: gives a {patch} px patch; the crop is {crop_size[1]}x{crop_size[0]} "
                        f"px (give a fraction in (0, 1] of its side or pixels)")
    stride = args.stride or max(patch // 2, 1)
    errors, corners = occlusion_errors(model, prepared, device, patch, stride, args.drop_occluded_joints)
    crop = np.round(prepared["img"].transpose(1, 2, 0) * 255).astype(np.uint8)
    maps = pixel_maps(errors, corners, patch, crop_size)
    out = Path(args.out) if args.out else (Path(cfg.output_dir) / "occlusion_map"
                                           / f"{Path(args.input).stem}_person{args.person}.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    picture = draw_map(crop, maps, list(GROUPS), patch)
    if not cv2.imwrite(str(out), picture[..., ::-1]):
        raise DemoError(f"cannot write {out}")
    np.savez(out.with_suffix(".npz"), errors=errors, groups=np.array(list(GROUPS)), top_left=corners, patch=patch,
             crop=crop, joints_crop=input_joints_in_crop(model, prepared))
    print(f"{out} ({len(corners.reshape(-1, 2))} patch positions; largest mean error "
          f"{errors[..., 0].max():.1f} mm)")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="an image")
    parser.add_argument("--keypoints", help="2D poses for the image, as for main.demo (default: Keypoint R-CNN)")
    parser.add_argument("--person", type=int, default=0, help="which person of the image (default 0)")
    parser.add_argument("--ckpt", default=DEFAULT_CKPT, help=f"model weights (default {DEFAULT_CKPT})")
    parser.add_argument("--patch", type=float, default=DEFAULT_PATCH,
                        help=f"occluder side: a fraction of the crop's side (<= 1) or pixels (default {DEFAULT_PATCH})")
    parser.add_argument("--stride", type=int, help="patch step in crop pixels (default half the patch)")
    parser.add_argument("--drop-occluded-joints", action="store_true",
                        help="also remove the 2D joints under the patch from the input")
    parser.add_argument("--out", help="output PNG (default <output_dir>/occlusion_map/<stem>_person<k>.png)")
    parser.add_argument("--det-threshold", type=float, default=KEYPOINT_RCNN_DEFAULT_THRESHOLD,
                        help="Keypoint R-CNN person score threshold")
    add_config_args(parser)
    args = parser.parse_intermixed_args(argv)
    run(args, config_from_args(args))
    return 0


if __name__ == "__main__":
    run_entry_point(main)
