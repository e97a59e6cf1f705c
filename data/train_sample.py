"""The training sample every training loader builds (spec 5.2, 5.3): crop, augmentation and all targets.

A loader (MuCo, Human3.6M, MSCOCO, CrowdPose) reads one person's annotation and calls a
`TrainSampleBuilder`. The builder returns `(inputs, targets, meta)`, dicts of float32 numpy arrays
(0-d arrays for the scalars; the default DataLoader collate turns them into tensors):

inputs:  img (3, 256, 256) RGB in [0, 1] (no mean/std), with synthetic occluders pasted on if enabled (data.occluder);
         joints (30, 2) input 2D pose, heatmap frame: the ground truth corrupted by PoseFix synthesis (data.posefix,
         applied in the crop frame; joints COCO lacks stay exact) or a given stand-in; joints_mask (30, 1) =
         orig_joint_trunc (from the ground truth, not from the corrupted pose, spec 5.3).
targets: orig_joint_img (30, 3) heatmap frame x, y; z = depth bin for 3D sets, 0/1 visibility for 2D sets;
         fit_joint_img (30, 3) the SMPL fit's J30 joints projected with the dataset camera and cropped, z = depth
         bin; orig_joint_cam (30, 3) root-relative metres, camera frame after the rotation augmentation (zeros for
         2D sets); fit_joint_cam (30, 3) likewise for the fit; pose_param (72,) axis-angle, root orientation in the
         augmented camera frame; shape_param (10,).
meta:    orig_joint_valid (30, 1); orig_joint_trunc (30, 1) valid x inside the heatmap grid (x the +-bbox_3d_size/2
         depth range for 3D sets); fit_param_valid (72,); fit_joint_trunc (30, 1); is_valid_fit (); is_3D ().

Joints of any dataset joint set are mapped into SMPL30 by name; SMPL30 joints the set lacks are zero and invalid.
The (float64) collate promotion of the official is_valid_fit / is_3D is not reproduced: everything is float32.

Occluders change only the image: joints under them keep their targets, validity and truncation mask.

Randomness comes only from the numpy Generator passed to each call, drawn in this order: the crop-box enlargement
(when not fixed), the augmentation (when `augment` and not given), the input-pose synthesis (when `augment`), the
occluders (when `augment` and occlusion_prob > 0).
"""
import json
import os
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from common.body.joint_sets import SMPL30, SMPL30_FLIP_PAIRS, UNSUPERVISED_SMPL_JOINTS, flip_pairs, map_joints
from common.body.regressed_joints import RegressedJoints
from common.errors import InputError
from data.occluder import occlude
from data.occlusion_failures import hidden_joints, occluder_pixels, occlusion_failures
from data.posefix import overlapping_people, posefix
from data.preprocessing import (
    TEST_AUG,
    AugConfig,
    affine_points,
    apply_color_gains,
    depth_to_bin,
    flip_joints_2d,
    flip_smpl_pose,
    generate_patch_image,
    get_aug_config,
    process_bbox,
    rotate_root_pose,
    to_heatmap_frame,
    trunc_mask,
)

# Pose parameters not supervised (spec 5.3).
FIT_PARAM_VALID = np.ones((24, 3), dtype=np.float32)
FIT_PARAM_VALID[list(UNSUPERVISED_SMPL_JOINTS)] = 0
FIT_PARAM_VALID = FIT_PARAM_VALID.reshape(72)
# A fit with any |beta| above this gets the mean shape as its shape TARGET (spec 5.2); its mesh and joint targets
# still come from the original betas, as in all four official training loaders (spec 7.23).
MAX_ABS_BETA = 3.0
# A 3D set's SMPL fit is valid if its H36M-regressed joints, translation-aligned, are within this mean distance of
# the annotated joints (spec 5.3; TrainingSet.fit_valid).
FIT_ERROR_THRESHOLD_MM = 25.0
ROOT_NAME = "Pelvis"
SMPL30_ROOT = SMPL30.index(ROOT_NAME)


def shape_target(betas):
    """The shape_param target of a fit: (10,) float32 betas, all zero when any |beta| > MAX_ABS_BETA."""
    betas = np.asarray(betas, dtype=np.float32).reshape(10)
    return np.zeros_like(betas) if np.any(np.abs(betas) > MAX_ABS_BETA) else betas.copy()


@dataclass(frozen=True)
class SMPLFit:
    """A pseudo-ground-truth SMPL fit of one person, in the camera frame of the annotated image.

    pose (72,) axis-angle radians (root first); shape (10,) betas; trans (3,) metres; focal (fx, fy) and
    princpt (cx, cy) the dataset camera in image pixels. `check` decides the fit's validity: None (valid), a bool
    the dataset has already decided (the check does not depend on the augmentation, so a dataset can decide it once
    per sample; the builder then needs the fit's joints only, not its mesh), or a callable
    check(vertices (6890, 3) metres, camera frame, as annotated: unflipped, unrotated, original betas) -> bool.
    `shape` is the fit's original betas: the mesh and joint targets use them and only the shape_param target is
    reset (shape_target).
    """
    pose: np.ndarray
    shape: np.ndarray
    trans: np.ndarray
    focal: tuple
    princpt: tuple
    check: Callable[[np.ndarray], bool] | bool | None = None


@dataclass(frozen=True)
class SampleGeometry:
    """How a sample was cut (returned on request, for tests and visualisation): the crop box (4,) xywh in image
    pixels, the augmentation, and the 2x3 image <-> crop affines (image = the mirrored image when aug.do_flip);
    near_joints: the overlapping people's joints (list of (J, 3), dataset order, crop pixels, flipped with the
    sample; third column their visibility); pose_kinds: (J,) data.posefix error kind of each input joint (None
    without PoseFix); occluder_mask: (H, W) float32 coverage of the pasted occluders in the crop (None if none);
    occlusion_failures: the record of data.occlusion_failures (SMPL30 joint indices), None when not applied."""
    bbox: np.ndarray
    aug: AugConfig
    img2bb: np.ndarray
    bb2img: np.ndarray
    near_joints: tuple = ()
    pose_kinds: np.ndarray | None = None
    occluder_mask: np.ndarray | None = None
    occlusion_failures: dict | None = None


def rotation_about_camera_z(rot_deg):
    """(3, 3) rotation by -rot_deg about the camera z axis: the 3D counterpart of the crop rotation of
    data.preprocessing.patch_transform (spec 5.2 R_aug; x right, y down, z forward)."""
    angle = -np.deg2rad(rot_deg)
    cos, sin = np.cos(angle), np.sin(angle)
    return np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])


def input_pose_noise(joints, joints_valid, rng, jitter_px=1.0, miss_prob=0.05, miss_px=(4.0, 10.0), swap_prob=0.03):
    """Corrupt the ground-truth 2D pose to make the network's input pose. A SIMPLE STAND-IN for the PoseFix
    synthesis (spec 5.3, data.posefix, the builder's default), kept for ablations: TrainSampleBuilder(pose_noise=
    input_pose_noise). Any replacement takes this signature.

    * jitter: every joint moves by N(0, jitter_px^2) per axis;
    * miss: each joint, with probability miss_prob, is thrown miss_px[0]..miss_px[1] away in a uniform random
      direction (a detector's confident wrong location; it plays the part of PoseFix's "miss");
    * swap: each left/right SMPL30 pair, with probability swap_prob, exchanges positions (PoseFix's "inversion").
    A joint is never removed: the model masks 10 % of its input joints itself (spec 1.3-1) and the input joint
    mask is by definition the ground-truth truncation mask (spec 5.3), independent of this corruption.

    joints: (30, 2) SMPL30 x, y in the heatmap frame; joints_valid: (30,) or (30, 1) (unused by this stand-in,
    PoseFix needs it); rng: numpy Generator. Returns (30, 2) float32, heatmap frame.
    """
    del joints_valid
    out = np.array(joints, dtype=np.float64, copy=True)
    out += rng.normal(0.0, jitter_px, size=out.shape)
    miss = rng.random(len(out)) < miss_prob
    angle = rng.uniform(0.0, 2 * np.pi, size=len(out))
    radius = rng.uniform(miss_px[0], miss_px[1], size=len(out))
    out[miss] += (radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1))[miss]
    swap = rng.random(len(SMPL30_FLIP_PAIRS)) < swap_prob
    for (left, right), do_swap in zip(SMPL30_FLIP_PAIRS, swap):
        if do_swap:
            out[[left, right]] = out[[right, left]]
    return out.astype(np.float32)


# Dataset images are read as stored: an EXIF orientation tag is ignored, as the official loaders do (spec 7.22), so
# that the pixels match the annotations, which refer to the stored pixel grid.
DATASET_IMREAD_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION


def read_rgb_or_none(path):
    """(H, W, 3) uint8 RGB image from a file (EXIF orientation ignored), or None if it is missing or unreadable."""
    img = cv2.imread(os.fspath(path), DATASET_IMREAD_FLAGS)
    return None if img is None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_rgb(path, what="image", where=""):
    """(H, W, 3) uint8 RGB image from a file; FileNotFoundError "<what> missing or unreadable: <path><where>" if it
    is missing or unreadable (`where`: which annotation needs it and where to get it)."""
    img = read_rgb_or_none(path)
    if img is None:
        raise FileNotFoundError(f"{what} missing or unreadable: {path}{where}")
    return img


@dataclass
class ImageSample:
    """What every training sample records about its person's image (the datasets' sample classes extend it)."""
    ann_id: int
    image_id: int
    img_path: str
    img_width: int
    img_height: int
    bbox: np.ndarray  # (4,) tight box xywh, image pixels


def read_json(path, what, where, source):
    """The content of a dataset's JSON file; FileNotFoundError "<what> not found: <path>. It belongs in <where>;
    get it from <source>." if it is missing."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}. It belongs in {where}; get it from {source}.")
    with open(path) as f:
        return json.load(f)


class TrainingSet(torch.utils.data.Dataset):
    """What the training loaders share: each item draws from a Generator seeded by (seed, the set's salt, epoch,
    index), so items depend neither on the number of DataLoader workers nor on the order or a resume point
    (call set_epoch before each epoch's loader). Subclasses provide `samples`, `seed`, `seed_salt`, `images`
    (TrainingImages) and `item(index)`; sets with SMPL fits checked for validity (fit_valid) also provide
    `fit_error_mm(index)` and start with an empty `_fit_valid` dict."""

    epoch = 0

    def __len__(self):
        return len(self.samples)

    def set_epoch(self, epoch):
        """Select the epoch whose random draws the items use."""
        self.epoch = int(epoch)

    def rng(self, index):
        """The Generator item `index` of the current epoch draws from."""
        return np.random.default_rng([self.seed, self.seed_salt, self.epoch, int(index)])

    def __getitem__(self, index):
        return self.item(index)

    def fit_valid(self, index):
        """Whether sample `index`'s fit passes the validity test (fit_error_mm <= FIT_ERROR_THRESHOLD_MM). It does
        not depend on the augmentation, so it is decided once per sample and remembered."""
        if index not in self._fit_valid:
            self._fit_valid[index] = self.fit_error_mm(index) <= FIT_ERROR_THRESHOLD_MM
        return self._fit_valid[index]

    def sample_and_image(self, index, annotation_file):
        """(sample, RGB image) of item `index`; a missing image is a FileNotFoundError naming the file and the
        annotation file that lists it."""
        sample = self.samples[index]
        return sample, self.images.read(sample.img_path, sample.img_width, sample.img_height, annotation_file)


class TrainingImages:
    """Reads a training set's images. A missing or unreadable image is a FileNotFoundError that names the file, where
    the images belong and where they come from; the training loop skips such samples and counts them
    (data.skip_unreadable), evaluation sets never do.

    dataset: name for messages; where / source: the expected location and the download, for the error."""

    def __init__(self, dataset, where, source):
        self.dataset, self.where, self.source = dataset, where, source

    def read(self, path, width, height, listed_in):
        """(H, W, 3) uint8 RGB. An image whose size differs from its annotation's (width x height, listed in
        `listed_in`) is a ValueError."""
        img = read_rgb_or_none(path)
        if img is None:
            raise FileNotFoundError(f"{self.dataset} image missing or unreadable: {path}. The images belong in "
                                    f"{self.where}; get them from {self.source}.")
        if img.shape[:2] != (height, width):
            raise InputError(f"{self.dataset} image {path} is {img.shape[1]}x{img.shape[0]}, but {listed_in} says "
                             f"{width}x{height}")
        return img


def _col(x):
    return np.asarray(x, dtype=np.float32).reshape(-1, 1)


def _scalar(x):
    return np.asarray(x, dtype=np.float32).reshape(())


class TrainSampleBuilder:
    """Builds training items (module docstring) from one person's annotation.

    body_model: callable(pose (B, 72), betas (B, 10), transl (B, 3)) torch tensors -> vertices (B, V, 3) metres,
        e.g. common.body.body_model.SMPLLayer (needed only for samples with an SMPL fit);
    joint_regressor_30: (30, V) J30 regressor (common.body.body_model.joint_regressor_30);
    input_img_shape (H, W) of the crop; output_hm_shape (D, H, W) of the heatmap grid;
    bbox_3d_size: metres, the root-relative depth range (+-size/2) mapped onto the D depth bins;
    pose_noise: None (default) for PoseFix synthesis (data.posefix, in the crop frame, with the overlapping people
        of `near_joints`); or a callable with input_pose_noise's signature (SMPL30 joints, heatmap frame), e.g.
        input_pose_noise, the simple stand-in;
    occlusion_prob: chance that a training sample gets synthetic occluders pasted over its crop (data.occluder);
        0 = off (the official setting, spec 4.5);
    occlusion_failures: the input pose also fails on the joints the pasted occluders hide (reported on the
        occluder, missed, or the limb's left and right swapped: data.occlusion_failures); off by default;
    near_min_iou: other people count as overlapping (PoseFix near joints) when the tight box of their annotated
        joints has at least this IoU with the target's tight box (spec 5.3: 0.1).
    """

    def __init__(self, body_model=None, joint_regressor_30=None, input_img_shape=(256, 256),
                 output_hm_shape=(64, 64, 64), bbox_3d_size=2.0, pose_noise=None, occlusion_prob=0.0,
                 near_min_iou=0.1, occlusion_failures=False):
        self.body_model = body_model
        self.joint_regressor_30 = None if joint_regressor_30 is None else np.asarray(joint_regressor_30, np.float64)
        if self.joint_regressor_30 is not None and self.joint_regressor_30.shape[0] != len(SMPL30):
            raise ValueError(f"joint_regressor_30 must have {len(SMPL30)} rows, got {self.joint_regressor_30.shape}")
        self.input_img_shape = tuple(int(v) for v in input_img_shape)
        self.output_hm_shape = tuple(int(v) for v in output_hm_shape)
        self.bbox_3d_size = float(bbox_3d_size)
        self.pose_noise = pose_noise
        if not 0.0 <= float(occlusion_prob) <= 1.0:
            raise ValueError(f"occlusion_prob must be in [0, 1], got {occlusion_prob}")
        self.occlusion_prob = float(occlusion_prob)
        self.occlusion_failures = bool(occlusion_failures)
        self.near_min_iou = float(near_min_iou)
        self._regressed_joints = {}  # id(regressor) -> (regressor, RegressedJoints), built on first use

    def __call__(self, image, bbox, joints_img, joints_valid, joint_set, rng, augment, joints_cam=None,
                 smpl_fit=None, bbox_scale=None, aug=None, return_geometry=False, near_joints=None):
        """One training item.

        image: (H_img, W_img, 3) uint8 RGB array, or the path of an image file;
        bbox: (4,) the person's tight box xywh, image pixels (process_bbox makes the crop box from it);
        joints_img: (J, 2+) image pixels in `joint_set` order (x, y in the first two columns);
        joints_valid: (J,) or (J, 1), 1 where the joint is annotated;
        joint_set: tuple of the J joint names (common.body.joint_sets); for 3D data it must contain 'Pelvis' (the root);
        rng: numpy Generator, the only source of randomness;
        augment: draw the scale/rotation/colour/flip augmentation, corrupt the input pose and (if enabled) paste
            occluders (training); otherwise no augmentation and the input pose is the ground truth;
        joints_cam: (J, 3) camera-frame joints in METRES (absolute or root-relative) for 3D sets, None for 2D sets;
        smpl_fit: SMPLFit or None (then zero fit targets and is_valid_fit 0);
        bbox_scale: enlargement of the crop box; None draws it from U[1.0, 1.2) (update_bbox, spec 5.2);
        aug: an AugConfig to use instead of drawing one (reproduction, tests);
        return_geometry: also return a SampleGeometry;
        near_joints: the other people of the image, a list of (J, 3) arrays in `joint_set` order, image pixels, third
            column visibility/confidence (> 0 = annotated); those overlapping the target (near_min_iou) are PoseFix's
            swap candidates. Only used with the default PoseFix synthesis.
        Returns (inputs, targets, meta) [, geometry].
        """
        img = read_rgb(image) if isinstance(image, (str, os.PathLike)) else np.asarray(image)
        img_h, img_w = img.shape[:2]
        joints_img = np.asarray(joints_img, dtype=np.float64)[:, :2]
        joints_valid = np.asarray(joints_valid, dtype=np.float32).reshape(-1)
        if len(joints_img) != len(joint_set) or len(joints_valid) != len(joint_set):
            raise ValueError(f"joint set has {len(joint_set)} joints but joints_img has {len(joints_img)} and "
                             f"joints_valid {len(joints_valid)}")

        near = []
        for person in near_joints or ():
            person = np.asarray(person, dtype=np.float64)
            if person.shape != (len(joint_set), 3):
                raise ValueError(f"near_joints: each person must be ({len(joint_set)}, 3) x, y, visibility in the "
                                 f"joint set's order, got {person.shape}")
            near.append(person)
        # Overlap is decided on the boxes as annotated, in the image (a rotated crop would distort axis-aligned boxes).
        near = overlapping_people(bbox, near, self.near_min_iou)

        crop_bbox = process_bbox(bbox, img_w, img_h, scale=bbox_scale, rng=rng)
        if crop_bbox is None:
            raise ValueError(f"unusable person box {list(np.asarray(bbox).tolist())} in a {img_w}x{img_h} image "
                             f"(loaders must drop such annotations when loading)")
        if aug is None:
            aug = get_aug_config(rng) if augment else TEST_AUG
        patch, img2bb, bb2img = generate_patch_image(img, crop_bbox, aug.scale, aug.rot_deg, aug.do_flip,
                                                     self.input_img_shape)
        patch = apply_color_gains(patch, aug.color_gains)
        rot_aug = rotation_about_camera_z(aug.rot_deg)

        # Ground-truth joints, dataset order: flip in the image, warp into the crop, scale to the heatmap frame.
        pairs = flip_pairs(joint_set)
        joint_img = np.concatenate([joints_img, joints_valid[:, None]], axis=1)  # validity travels with its joint
        if aug.do_flip:
            joint_img = flip_joints_2d(joint_img, img_w, pairs)
            near = [flip_joints_2d(person, img_w, pairs) for person in near]
        valid = joint_img[:, 2].copy()
        crop_xy = affine_points(joint_img[:, :2], img2bb)
        xy = to_heatmap_frame(crop_xy, self.input_img_shape, self.output_hm_shape)
        near = [np.concatenate([affine_points(p[:, :2], img2bb), p[:, 2:3]], axis=1).astype(np.float32) for p in near]
        is_3d = joints_cam is not None
        if is_3d:
            if ROOT_NAME not in joint_set:
                raise ValueError(f"3D joints need a '{ROOT_NAME}' joint in the joint set {joint_set}")
            joint_cam = np.asarray(joints_cam, dtype=np.float64).reshape(len(joint_set), 3)
            joint_cam = joint_cam - joint_cam[joint_set.index(ROOT_NAME)]
            if aug.do_flip:  # mirror about the camera's y-z plane, then swap left and right
                joint_cam[:, 0] *= -1
                for left, right in pairs:
                    joint_cam[[left, right]] = joint_cam[[right, left]]
            depth = depth_to_bin(joint_cam[:, 2], self.bbox_3d_size, self.output_hm_shape[0])
            orig_joint_img = np.concatenate([xy, depth[:, None]], axis=1)
            orig_joint_cam = joint_cam @ rot_aug.T
        else:
            orig_joint_img = np.concatenate([xy, valid[:, None]], axis=1)
            orig_joint_cam = np.zeros((len(joint_set), 3))
        orig_joint_trunc = trunc_mask(orig_joint_img, valid, self.output_hm_shape, check_depth=is_3d)

        orig_joint_img = map_joints(orig_joint_img.astype(np.float32), joint_set, SMPL30)
        orig_joint_cam = map_joints(orig_joint_cam.astype(np.float32), joint_set, SMPL30)
        orig_joint_valid = map_joints(_col(valid), joint_set, SMPL30)
        orig_joint_trunc = map_joints(orig_joint_trunc, joint_set, SMPL30)

        fit = self._fit_targets(smpl_fit, aug, img_w, img2bb, rot_aug)

        pose_kinds = None
        if not augment:
            input_joints = orig_joint_img[:, :2].copy()
        elif self.pose_noise is not None:
            input_joints = self.pose_noise(orig_joint_img[:, :2], orig_joint_valid, rng)
        else:
            # The tight box's area in the crop frame (the affine scales areas by |det|), for PoseFix's OKS radii.
            area = abs(float(bbox[2]) * float(bbox[3]) * np.linalg.det(np.asarray(img2bb, np.float64)[:, :2]))
            crop_input, pose_kinds = posefix(crop_xy, valid, joint_set, near, area, rng)
            input_joints = map_joints(to_heatmap_frame(crop_input, self.input_img_shape, self.output_hm_shape),
                                      joint_set, SMPL30)

        joints_mask = orig_joint_trunc.copy()
        occluder_mask = failures = None
        if augment and self.occlusion_prob > 0:
            patch, occluder_mask = occlude(patch, rng, self.occlusion_prob)
        if occluder_mask is not None and self.occlusion_failures:
            # In crop pixels, where the occluder's coverage map lives.
            to_crop = np.array([self.input_img_shape[1] / self.output_hm_shape[2],
                                self.input_img_shape[0] / self.output_hm_shape[1]])
            true_xy = orig_joint_img[:, :2] * to_crop
            box_height = float(bbox[3]) * np.sqrt(abs(np.linalg.det(np.asarray(img2bb, np.float64)[:, :2])))
            input_xy, mask, failures = occlusion_failures(
                np.asarray(input_joints)[:, :2] * to_crop, joints_mask, true_xy,
                hidden_joints(true_xy, joints_mask, occluder_mask), occluder_pixels(occluder_mask), box_height,
                SMPL30, rng)
            input_joints = input_xy / to_crop
            joints_mask = mask.reshape(joints_mask.shape)

        inputs = {
            "img": np.ascontiguousarray(patch.transpose(2, 0, 1) / 255.0, dtype=np.float32),
            "joints": np.asarray(input_joints, dtype=np.float32),
            "joints_mask": joints_mask,
        }
        targets = {
            "orig_joint_img": orig_joint_img,
            "fit_joint_img": fit["joint_img"],
            "orig_joint_cam": orig_joint_cam,
            "fit_joint_cam": fit["joint_cam"],
            "pose_param": fit["pose"],
            "shape_param": fit["shape"],
        }
        meta = {
            "orig_joint_valid": orig_joint_valid,
            "orig_joint_trunc": orig_joint_trunc,
            "fit_param_valid": FIT_PARAM_VALID.copy(),
            "fit_joint_trunc": fit["joint_trunc"],
            "is_valid_fit": _scalar(fit["is_valid"]),
            "is_3D": _scalar(is_3d),
        }
        if return_geometry:
            return inputs, targets, meta, SampleGeometry(bbox=crop_bbox, aug=aug, img2bb=img2bb, bb2img=bb2img,
                                                         near_joints=tuple(near), pose_kinds=pose_kinds,
                                                         occluder_mask=occluder_mask, occlusion_failures=failures)
        return inputs, targets, meta

    def regressed_joints(self, poses, shape, trans, regressor=None):
        """regressor @ SMPL(poses, shape, trans) for one or more poses of one person, without the mesh
        (common.body.regressed_joints): poses (B, 72), shape (10,), trans (3,) metres; regressor (K, V), by default
        the J30 one -> (B, K, 3) float64 metres (for J30, as fit_joints' joints)."""
        if self.body_model is None or self.joint_regressor_30 is None:
            raise ValueError("samples with an SMPL fit need the builder's body_model and joint_regressor_30")
        regressor = self.joint_regressor_30 if regressor is None else regressor
        if not hasattr(self.body_model, "arrays"):  # a body model that is not an SMPL layer: through the mesh
            return np.matmul(regressor, self.fit_joints(poses, shape, trans)[0])
        # Keyed by the regressor's identity; the entry holds the regressor, so the identity stays its own.
        if id(regressor) not in self._regressed_joints:
            self._regressed_joints[id(regressor)] = (regressor, RegressedJoints(self.body_model.arrays, regressor))
        return self._regressed_joints[id(regressor)][1](poses, shape, trans)

    def fit_joints(self, poses, shape, trans):
        """Run the body model on one or more poses of one person: poses (B, 72), shape (10,), trans (3,) metres.
        Returns (vertices (B, V, 3), J30 joints (B, 30, 3)), float64 numpy, metres, same frame as trans."""
        if self.body_model is None or self.joint_regressor_30 is None:
            raise ValueError("samples with an SMPL fit need the builder's body_model and joint_regressor_30")
        poses = torch.as_tensor(np.asarray(poses, dtype=np.float32))
        batch = len(poses)
        betas = torch.as_tensor(np.asarray(shape, dtype=np.float32)).reshape(1, -1).expand(batch, -1)
        transl = torch.as_tensor(np.asarray(trans, dtype=np.float32)).reshape(1, 3).expand(batch, -1)
        with torch.no_grad():
            verts = self.body_model(poses, betas, transl).double().cpu().numpy()
        return verts, np.matmul(self.joint_regressor_30, verts)  # (30, V) @ (B, V, 3); BLAS, unlike np.einsum

    def _fit_targets(self, smpl_fit, aug, img_w, img2bb, rot_aug):
        num = len(SMPL30)
        if smpl_fit is None:
            return {"joint_img": np.zeros((num, 3), np.float32), "joint_cam": np.zeros((num, 3), np.float32),
                    "joint_trunc": np.zeros((num, 1), np.float32), "pose": np.zeros(72, np.float32),
                    "shape": np.zeros(10, np.float32), "is_valid": 0.0}
        pose = np.asarray(smpl_fit.pose, dtype=np.float32).reshape(72)
        shape = np.asarray(smpl_fit.shape, dtype=np.float32).reshape(10)
        focal = np.asarray(smpl_fit.focal, dtype=np.float64).reshape(2)
        princpt = np.asarray(smpl_fit.princpt, dtype=np.float64).reshape(2)

        poses = [pose, flip_smpl_pose(pose)] if aug.do_flip else [pose]
        if callable(smpl_fit.check):
            verts, joints = self.fit_joints(poses, shape, smpl_fit.trans)
            is_valid = bool(smpl_fit.check(verts[0]))
        else:
            joints = self.regressed_joints(poses, shape, smpl_fit.trans)
            is_valid = True if smpl_fit.check is None else bool(smpl_fit.check)
        joint_cam = joints[-1]
        if aug.do_flip:
            # Move the mirrored body along x so that its root appears at the mirror image (x -> W - 1 - x) of the
            # annotated root, at the mirrored root's depth (spec 5.2). The official code used the mirrored body's
            # root as a stand-in for the annotated one (equal for SMPL's kinematic root, nearly so for the
            # regressed one); using the annotated root makes flipping exactly self-inverse for any body model.
            root_x_img = focal[0] * joints[0, SMPL30_ROOT, 0] / joints[0, SMPL30_ROOT, 2] + princpt[0]
            mirrored_x = (img_w - 1 - root_x_img - princpt[0]) / focal[0] * joint_cam[SMPL30_ROOT, 2]
            joint_cam = joint_cam + np.array([mirrored_x - joint_cam[SMPL30_ROOT, 0], 0.0, 0.0])

        xy_img = joint_cam[:, :2] / joint_cam[:, 2:] * focal + princpt  # (mirrored) image pixels
        xy = to_heatmap_frame(affine_points(xy_img, img2bb), self.input_img_shape, self.output_hm_shape)
        root_relative = joint_cam - joint_cam[SMPL30_ROOT]
        depth = depth_to_bin(root_relative[:, 2], self.bbox_3d_size, self.output_hm_shape[0])
        joint_img = np.concatenate([xy, depth[:, None]], axis=1).astype(np.float32)
        return {
            "joint_img": joint_img,
            "joint_cam": (root_relative @ rot_aug.T).astype(np.float32),
            "joint_trunc": trunc_mask(joint_img, np.ones(num), self.output_hm_shape, check_depth=True),
            "pose": rotate_root_pose(poses[-1], aug.rot_deg),
            "shape": shape_target(shape),
            "is_valid": float(is_valid),
        }
