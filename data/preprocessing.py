"""Shared sample-building geometry (spec 5.2): boxes, the crop warp, joint frames, augmentation.

Frames used below:
- image: pixels of the original image, x right, y down, (0, 0) the centre of the top-left pixel;
- crop: pixels of the network input patch (input_img_shape, 256 x 256);
- heatmap: the crop frame scaled to output_hm_shape (64 x 64 x 64; depth bins for 3D targets).

Everything here is numpy/cv2 and deterministic given its arguments; randomness comes only from the
numpy Generator a caller passes in.
"""
from dataclasses import dataclass

import cv2
import numpy as np

from common.body.joint_sets import SMPL30, flip_pairs

# Crop enlargement (spec 5.2): fixed at test time; drawn from U[TRAIN_BBOX_SCALE) per training crop (JOTR's choice,
# 3DCrowdNet used a fixed 1.25).
TEST_BBOX_SCALE = 1.1
TRAIN_BBOX_SCALE = (1.0, 1.2)
# get_bbox's enlargement of the input joints' tight box (spec 5.2, 5.4).
JOINTS_BBOX_EXTEND = 1.2


def draw_bbox_scale(rng):
    """One training crop enlargement, drawn from U[TRAIN_BBOX_SCALE) with the numpy Generator `rng`."""
    return float(rng.uniform(*TRAIN_BBOX_SCALE))


def _clip_bbox(bbox_xywh, img_width, img_height):
    """(x1, y1, w, h) of a box clipped the official way (see process_bbox); w or h <= 0 when nothing is left."""
    x, y, w, h = (float(v) for v in bbox_xywh)
    x1, y1 = max(0.0, x), max(0.0, y)
    x2 = min(img_width - 1.0, x1 + max(0.0, w - 1.0))
    y2 = min(img_height - 1.0, y1 + max(0.0, h - 1.0))
    return x1, y1, x2 - x1, y2 - y1


def bbox_is_usable(bbox_xywh, img_width, img_height):
    """Whether an annotated box passes the official training-mode test of process_bbox: it has an area (w * h > 0)
    and its clipped part is not degenerate. The official 3DPW test loader applies this test to every annotated box
    at load time and drops the people that fail it (spec 5.4, 7.24)."""
    _, _, w, h = _clip_bbox(bbox_xywh, img_width, img_height)
    return float(bbox_xywh[2]) * float(bbox_xywh[3]) > 0 and w > 0 and h > 0


def process_bbox(bbox_xywh, img_width, img_height, aspect_ratio=1.0, scale=TEST_BBOX_SCALE, rng=None):
    """Clip a box to the image, widen it to `aspect_ratio` (w / h) about its centre and enlarge it.

    bbox_xywh: (4,) x, y, w, h in image pixels.
    scale: a number selects test mode (the 3DPW protocol uses 1.1); None selects training mode, where
        the enlargement is drawn from U[1.0, 1.2) with `rng` (a numpy Generator; JOTR's choice, 3DCrowdNet
        used a fixed 1.25).
    Clipping follows the official code: x1 = max(0, x), x2 = min(W - 1, x1 + w - 1) (likewise y), so a box
    that sticks out on the left/top is moved inside rather than cut, and one that sticks out on the
    right/bottom is cut.
    Returns the (4,) float32 xywh crop box, or None when the box is unusable:
    - training mode: the box has no area (w * h <= 0) or its clipped part is degenerate (spec 5.2);
    - test mode: the clipped box has no extent at all (both sides 0, or the box lies outside the
      image). The official test mode never rejects a box, but such a box gives a zero-size crop that
      cannot be warped, so the caller must choose another box (the 3DPW loader falls back to the GT box).
      A box that is a line (one side 0) is usable in test mode: the aspect step gives it a square.
    """
    x1, y1, w, h = _clip_bbox(bbox_xywh, img_width, img_height)
    if scale is None:
        if not bbox_is_usable(bbox_xywh, img_width, img_height):
            return None
        if rng is None:
            raise ValueError("process_bbox: training mode (scale=None) needs a numpy Generator `rng`")
        scale = draw_bbox_scale(rng)
    elif w < 0 or h < 0 or w + h <= 0:
        return None

    center_x, center_y = x1 + w / 2, y1 + h / 2
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    w, h = w * scale, h * scale
    return np.array([center_x - w / 2, center_y - h / 2, w, h], dtype=np.float32)


def get_bbox(joints, valid, extend=JOINTS_BBOX_EXTEND):
    """Tight box of the valid joints, enlarged `extend` times about its centre.

    joints: (J, 2+) image pixels; valid: (J,) truthy where the joint counts.
    Returns (4,) float32 xywh. Raises ValueError when no joint is valid.
    """
    valid = np.asarray(valid).reshape(-1) > 0
    if not valid.any():
        raise ValueError("get_bbox: no valid joint to build a box from")
    xy = np.asarray(joints, dtype=np.float64)[valid, :2]
    (xmin, ymin), (xmax, ymax) = xy.min(0), xy.max(0)
    center_x, center_y = (xmin + xmax) / 2, (ymin + ymax) / 2
    w, h = (xmax - xmin) * extend, (ymax - ymin) * extend
    return np.array([center_x - w / 2, center_y - h / 2, w, h], dtype=np.float32)


def pose_crop_box(joints, valid, img_width, img_height):
    """The test-time crop box from an input 2D pose (spec 5.4): the tight box of the valid joints enlarged
    JOINTS_BBOX_EXTEND times (get_bbox), made square and enlarged TEST_BBOX_SCALE times (process_bbox in test
    mode). joints (J, 2+) image pixels, valid (J,) with at least one valid joint. Returns (4,) float32 xywh, or
    None when the box has no extent (process_bbox)."""
    return process_bbox(get_bbox(joints, valid), img_width, img_height, scale=TEST_BBOX_SCALE)


def _rotate_2d(vec, rot_rad):
    cos, sin = np.cos(rot_rad), np.sin(rot_rad)
    return np.array([vec[0] * cos - vec[1] * sin, vec[0] * sin + vec[1] * cos], dtype=np.float32)


def patch_transform(center_x, center_y, box_w, box_h, scale, rot_deg, out_shape):
    """The 2x3 affine (image -> crop) and its inverse (crop -> image) for a box and augmentation.

    Three points define it (spec 5.2): the box centre goes to the crop centre; the box's half-height
    and half-width vectors, scaled by `scale` and rotated by `rot_deg` in the image frame, go to the
    crop's half-height and half-width vectors. A positive `rot_deg` therefore turns the image content
    by -rot_deg in the crop (the 3D counterpart is a rotation by -rot_deg about the camera z axis).
    out_shape: (H, W) of the crop. Returns (img2bb (2, 3), bb2img (2, 3)) float32.
    """
    out_h, out_w = out_shape
    rot_rad = np.deg2rad(rot_deg)
    src_center = np.array([center_x, center_y], dtype=np.float32)
    src_down = _rotate_2d([0.0, box_h * scale * 0.5], rot_rad)
    src_right = _rotate_2d([box_w * scale * 0.5, 0.0], rot_rad)
    dst_center = np.array([out_w * 0.5, out_h * 0.5], dtype=np.float32)
    src = np.stack([src_center, src_center + src_down, src_center + src_right]).astype(np.float32)
    dst = np.stack([dst_center, dst_center + [0, out_h * 0.5], dst_center + [out_w * 0.5, 0]]).astype(np.float32)
    img2bb = cv2.getAffineTransform(src, dst).astype(np.float32)
    bb2img = cv2.getAffineTransform(dst, src).astype(np.float32)
    return img2bb, bb2img


def generate_patch_image(img, bbox, scale, rot_deg, do_flip, out_shape):
    """Cut the network input patch out of an image.

    img: (H_img, W_img, C) uint8 or float; bbox: (4,) xywh in image pixels (e.g. from process_bbox);
    scale, rot_deg, do_flip: augmentation (1, 0, False at test time); out_shape: (H, W) of the patch.
    When flipping, the image is mirrored first and the box centre becomes W_img - 1 - c_x, so both
    transforms refer to the MIRRORED image (mirror points with flip_joints_2d before applying img2bb).
    Bilinear sampling, black outside the image. The image is converted to float32 BEFORE the warp, as the
    official loaders do (spec 7.22): warping the uint8 image would round every interpolated pixel to an integer
    (up to 0.5 grey level, about 0.07 mm per person in the 3DPW metrics).
    Returns (patch (H, W, C) float32 in the input's value range, img2bb (2, 3), bb2img (2, 3)).
    """
    img = np.ascontiguousarray(img[:, ::-1]) if do_flip else img
    x, y, w, h = (float(v) for v in bbox)
    center_x, center_y = x + w / 2, y + h / 2
    if do_flip:
        center_x = img.shape[1] - 1 - center_x
    img2bb, bb2img = patch_transform(center_x, center_y, w, h, scale, rot_deg, out_shape)
    out_h, out_w = int(out_shape[0]), int(out_shape[1])
    # Only the part of the image the patch samples is converted to float32, so that the conversion costs the same
    # for a 1920 x 1080 photo as for a small one: every bilinear tap lies within one pixel of the image of the
    # patch's corners. The warp then uses the inverse map (the one OpenCV derives from img2bb) moved by the region's
    # integer origin, so it samples exactly the positions it would sample in the whole image.
    inverse = cv2.invertAffineTransform(img2bb.astype(np.float64))
    corners = np.array([[0, 0], [out_w, 0], [0, out_h], [out_w, out_h]], dtype=np.float64) @ inverse[:, :2].T
    corners += inverse[:, 2]
    x0, y0 = np.maximum(np.floor(corners.min(0)).astype(np.int64) - 2, 0)
    x1 = min(img.shape[1], int(np.ceil(corners[:, 0].max())) + 3)
    y1 = min(img.shape[0], int(np.ceil(corners[:, 1].max())) + 3)
    if x0 >= x1 or y0 >= y1:  # the patch lies wholly outside the image
        return np.zeros((out_h, out_w) + img.shape[2:], dtype=np.float32), img2bb, bb2img
    region = img[y0:y1, x0:x1].astype(np.float32)
    inverse[:, 2] -= (x0, y0)
    patch = cv2.warpAffine(region, inverse, (out_w, out_h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return patch, img2bb, bb2img


def affine_points(points, trans):
    """Apply a 2x3 affine to points. points: (N, 2); trans: (2, 3). Returns (N, 2) float32."""
    points = np.asarray(points, dtype=np.float32)[:, :2]
    trans = np.asarray(trans, dtype=np.float32)
    return points @ trans[:, :2].T + trans[:, 2]


def to_heatmap_frame(points_crop, input_shape, hm_shape):
    """Scale crop-pixel coordinates to the heatmap frame (e.g. 256 -> 64).

    points_crop: (N, 2+) with x, y in the first two columns (other columns are copied unchanged);
    input_shape: (H, W) of the crop; hm_shape: (H, W) or (D, H, W) of the heatmap grid.
    """
    out = np.array(points_crop, dtype=np.float32, copy=True)
    hm_h, hm_w = hm_shape[-2:]
    out[:, 0] *= hm_w / input_shape[1]
    out[:, 1] *= hm_h / input_shape[0]
    return out


def trunc_mask(joints, valid, hm_shape, check_depth):
    """Joints that are valid and inside the heatmap grid (spec 5.2 "trunc" masks).

    joints: (J, 2+) heatmap frame (x, y and, when check_depth, the depth bin z in column 2);
    valid: (J,) or (J, 1); hm_shape: (D, H, W). Returns (J, 1) float32 in {0, 1}.
    """
    joints = np.asarray(joints, dtype=np.float32)
    depth, height, width = hm_shape
    inside = (joints[:, 0] >= 0) & (joints[:, 0] < width) & (joints[:, 1] >= 0) & (joints[:, 1] < height)
    if check_depth:
        inside &= (joints[:, 2] >= 0) & (joints[:, 2] < depth)
    return (np.asarray(valid, dtype=np.float32).reshape(-1) * inside).astype(np.float32)[:, None]


def depth_to_bin(z, bbox_3d_size, depth_bins):
    """Root-relative depth -> heatmap depth bin: -size/2 -> 0, +size/2 -> depth_bins.

    z and bbox_3d_size in the same unit (2 m for SMPL-derived targets, 2000 mm for H36M/MuCo joints).
    """
    return (np.asarray(z, dtype=np.float32) / (bbox_3d_size / 2) + 1) / 2 * depth_bins


def flip_joints_2d(joints, img_width, pairs):
    """Mirror joints in the image frame: x -> W_img - 1 - x and swap the left/right pairs.

    joints: (J, C) with x in column 0 (other columns, e.g. confidence, travel with their joint);
    pairs: ((left, right), ...) indices, e.g. common.body.joint_sets.flip_pairs(joint_set).
    """
    out = np.array(joints, dtype=np.float32, copy=True)
    out[:, 0] = img_width - 1 - out[:, 0]
    for left, right in pairs:
        out[[left, right]] = out[[right, left]]
    return out


@dataclass(frozen=True)
class AugConfig:
    scale: float  # multiplies the crop box side lengths
    rot_deg: float  # see patch_transform for the sign
    color_gains: np.ndarray  # (3,) per-channel multipliers
    do_flip: bool


TEST_AUG = AugConfig(scale=1.0, rot_deg=0.0, color_gains=np.ones(3, dtype=np.float32), do_flip=False)


def get_aug_config(rng):
    """Draw one training augmentation (spec 5.2) from a numpy Generator.

    scale = 1 + 0.25 * clip(N(0,1), -1, 1); rotation = 30 deg * clip(N(0,1), -2, 2) with probability 0.6,
    else 0; colour gains U(0.8, 1.2) per channel; horizontal flip with probability 0.5.
    """
    scale = 1.0 + 0.25 * float(np.clip(rng.standard_normal(), -1.0, 1.0))
    rot_deg = 30.0 * float(np.clip(rng.standard_normal(), -2.0, 2.0)) if rng.random() <= 0.6 else 0.0
    color_gains = rng.uniform(0.8, 1.2, size=3).astype(np.float32)
    do_flip = bool(rng.random() < 0.5)
    return AugConfig(scale=scale, rot_deg=rot_deg, color_gains=color_gains, do_flip=do_flip)


def apply_color_gains(patch, gains):
    """Per-channel colour augmentation: clip(patch * gains, 0, 255). patch (H, W, 3) in [0, 255]."""
    return np.clip(patch * np.asarray(gains, dtype=np.float32).reshape(1, 1, -1), 0, 255).astype(np.float32)


def rotate_root_pose(pose, rot_deg):
    """Apply the crop rotation to an SMPL pose: the root orientation is pre-multiplied by the
    rotation by -rot_deg about the camera z axis (matching patch_transform); body joints unchanged.

    pose: (72,) axis-angle, radians, camera frame. Returns (72,) float32.
    """
    pose = np.array(pose, dtype=np.float32, copy=True)
    angle = -np.deg2rad(rot_deg)
    rot_aug = np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]])
    root, _ = cv2.Rodrigues(pose[:3].astype(np.float64))
    pose[:3] = cv2.Rodrigues(rot_aug @ root)[0][:, 0]
    return pose


# The pose vector's 24 joints are SMPL30's first 24.
SMPL24_FLIP_PAIRS = flip_pairs(SMPL30[:24])


def flip_smpl_pose(pose):
    """Mirror an SMPL pose about the camera's y-z plane: swap the left/right joints' rotations and
    negate the y and z axis-angle components (spec 5.2). pose: (72,). Returns (72,) float32.
    The translation correction needs the dataset camera and is left to the loader."""
    pose = np.array(pose, dtype=np.float32, copy=True).reshape(24, 3)
    for left, right in SMPL24_FLIP_PAIRS:
        pose[[left, right]] = pose[[right, left]]
    pose[:, 1:] *= -1
    return pose.reshape(72)
