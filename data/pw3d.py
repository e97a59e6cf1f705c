"""3DPW test sets (spec 5.4): 3dpw, 3dpw-crowd, 3dpw-pc, 3dpw-oc.

Expected layout of `data_dir` (= data/3DPW):
    3DPW_latest_test.json                          3dpw (test split)
    3DPW_latest_validation.json                    3dpw-crowd (validation split, two courtyard sequences)
    3DPW_validation_crowd_hhrnet_result.json       3dpw-crowd input poses (HigherHRNet)
    3DPW_pc.json, 3DPW_oc.json                     3dpw-pc, 3dpw-oc (subsets of the test split)
    imageFiles/<sequence>/<file_name>              the 3DPW images

The annotation files are COCO-style JSON: `images` with id, width, height, sequence, file_name;
`annotations` with id, image_id, bbox (xywh), smpl_param {pose 72, shape 10, trans 3, gender},
openpose_result (18 x 3 flat: x, y, confidence in image pixels).

One sample per annotation, in file order; sample id = position. People are selected as the official test loader
selects them (spec 5.4, 7.24): an annotation whose ground-truth box has no area or lies outside the image is left
out, and never silently: the loader warns and `excluded` ({reason: [annotation ids]}, also in `report()`, which
main.test writes into the results JSON) says who and why. A person whose input pose has no usable joint (the
official loader fails on it) is kept and cropped from its ground-truth box instead (counted in `num_gt_bbox_crops`
and flagged in meta['bbox_from_gt']). A missing or empty `openpose_result` is an empty pose (no valid joint).
"""
import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from common.body.body_model import GENDER_CODES, gendered_meshes
from common.body.joint_sets import COCO17_PELVIS_NECK, OPENPOSE18_PELVIS, SMPL30, add_pelvis_neck, map_joints
from common.errors import InputError
from data.preprocessing import (
    TEST_BBOX_SCALE,
    affine_points,
    bbox_is_usable,
    generate_patch_image,
    pose_crop_box,
    process_bbox,
    to_heatmap_frame,
    trunc_mask,
)
from data.train_sample import read_json, read_rgb

ANNOTATION_FILES = {
    "3dpw": "3DPW_latest_test.json",
    "3dpw-crowd": "3DPW_latest_validation.json",
    "3dpw-pc": "3DPW_pc.json",
    "3dpw-oc": "3DPW_oc.json",
}
HHRNET_FILE = "3DPW_validation_crowd_hhrnet_result.json"
# 3DPW-Crowd = the validation sequences whose names contain one of these (as in 3DCrowdNet).
CROWD_SEQUENCES = ("courtyard_hug_00", "courtyard_dancing_00")
# 3dpw-crowd input poses (PW3D crowd_pose_source): 'higherhrnet' is what the official loader intends (HigherHRNet
# where the results file has the person, OpenPose otherwise); 'openpose' is what it computed (spec 7.6).
CROWD_POSE_SOURCES = ("openpose", "higherhrnet")
EXCLUDED_GT_BBOX = "ground-truth box with no area or outside the image"
# Input joints with a detector confidence at or below this are invalid (spec 5.4).
MIN_JOINT_CONFIDENCE = 0.05

_SOURCES = {
    "3DPW_latest_test.json": "the 3DPW dataset (https://virtualhumans.mpi-inf.mpg.de/3DPW/) converted to COCO-style "
                             "JSON, as distributed with the 3DCrowdNet / I2L-MeshNet data release",
    "3DPW_pc.json": "the 3DPW-PC (person-occluded) subset linked from JOTR's README",
    "3DPW_oc.json": "the 3DPW-OC (object-occluded) subset linked from JOTR's README",
    HHRNET_FILE: "the HigherHRNet results for 3DPW-Crowd distributed with the 3DCrowdNet data release",
}
_SOURCES["3DPW_latest_validation.json"] = _SOURCES["3DPW_latest_test.json"]


@dataclass
class PW3DSample:
    ann_id: int
    img_path: str
    img_width: int
    img_height: int
    joints: np.ndarray  # (30, 3) input pose in SMPL30 order, image pixels + detector confidence
    joints_valid: np.ndarray  # (30,) float32 in {0, 1}
    pose_source: str  # 'openpose' or 'higherhrnet'
    bbox: np.ndarray  # (4,) crop box xywh, image pixels
    bbox_from_gt: bool  # the input pose gave no usable box; the annotated box was used
    smpl_pose: np.ndarray  # (72,) axis-angle, 3DPW camera frame
    smpl_shape: np.ndarray  # (10,)
    smpl_trans: np.ndarray  # (3,) metres
    gender: int  # GENDER_CODES


def _load_json(path, what):
    name = os.path.basename(path)
    return read_json(path, what, f"data/3DPW/{name}", _SOURCES.get(name, "the 3DPW release"))


class PW3D(torch.utils.data.Dataset):
    """One 3DPW evaluation set. Items are (inputs, targets, meta):

    inputs:  img (3, H, W) float32 RGB in [0, 1] (no mean/std normalisation);
             joints (30, 3) input 2D pose, x, y in the heatmap frame (output_hm_shape), detector confidence;
             joints_mask (30, 1) float32, valid (confidence > 0.05) and inside the heatmap grid.
    targets: smpl_pose (72,), smpl_shape (10,), smpl_trans (3,) metres (3DPW camera frame), gender (int64:
             0 neutral, 1 male, 2 female); the GT mesh comes from common.body.body_model.gendered_meshes (batched) or,
             when
             `smpl_fn_by_gender` is given, also as smpl_mesh_cam (V, 3) per item.
    meta:    bb2img_trans, img2bb_trans (2, 3) between crop and image pixels; bbox (4,) crop box xywh in image
             pixels; idx (sample id); ann_id; bbox_from_gt (bool).

    The crop follows the test protocol: tight box of the valid input joints x1.2, then made square and
    enlarged x1.1 (process_bbox test mode). No augmentation.
    crowd_pose_source (3dpw-crowd only): 'openpose' (default) gives every person its OpenPose input, as the official
    evaluation that produced the published 3DPW-Crowd numbers did; 'higherhrnet' uses each annotation's HigherHRNet
    pose when the results file has one and OpenPose otherwise, as the official code intended (it decided from a
    global flag that a later dataset reset, so it used OpenPose throughout: spec 7.6).
    """

    def __init__(self, data_dir, variant, input_img_shape=(256, 256), output_hm_shape=(64, 64, 64),
                 smpl_fn_by_gender=None, crowd_pose_source="openpose"):
        if variant not in ANNOTATION_FILES:
            raise ValueError(f"unknown 3DPW variant {variant!r}; expected one of {sorted(ANNOTATION_FILES)}")
        if crowd_pose_source not in CROWD_POSE_SOURCES:
            raise ValueError(f"crowd_pose_source must be one of {CROWD_POSE_SOURCES}, got {crowd_pose_source!r}")
        # Only 3dpw-crowd has a choice; the other sets have OpenPose input only.
        self.pose_source = crowd_pose_source if variant == "3dpw-crowd" else "openpose"
        self.data_dir = os.fspath(data_dir)
        self.variant = variant
        self.input_img_shape = tuple(input_img_shape)
        self.output_hm_shape = tuple(output_hm_shape)
        self.smpl_fn_by_gender = smpl_fn_by_gender
        self.excluded = {}  # reason -> [annotation id], people the official selection leaves out
        self.samples = self._load_samples()
        for reason, ann_ids in self.excluded.items():
            warnings.warn(f"{variant}: {len(ann_ids)} people excluded ({reason}), as in the official evaluation; "
                          f"annotation ids {ann_ids[:20]}{' ...' if len(ann_ids) > 20 else ''}", stacklevel=2)
        self.num_gt_bbox_crops = sum(s.bbox_from_gt for s in self.samples)
        if self.num_gt_bbox_crops:
            warnings.warn(f"{variant}: {self.num_gt_bbox_crops} of {len(self.samples)} people have no usable input "
                          f"joints; they are cropped from their annotated box", stacklevel=2)

    def _load_samples(self):
        ann_file = os.path.join(self.data_dir, ANNOTATION_FILES[self.variant])
        db = _load_json(ann_file, "3DPW annotation file")
        hhrnet = None
        if self.pose_source == "higherhrnet":
            hhrnet = _load_json(os.path.join(self.data_dir, HHRNET_FILE), "3DPW-Crowd HigherHRNet pose file")
        images = {img["id"]: img for img in db["images"]}
        samples = []
        for ann in db["annotations"]:
            img = images.get(ann["image_id"])
            if img is None:
                raise InputError(f"{ann_file}: annotation {ann['id']} refers to image {ann['image_id']}, "
                                 f"which is not in the file's 'images'")
            if self.variant == "3dpw-crowd" and not any(seq in img["sequence"] for seq in CROWD_SEQUENCES):
                continue
            if not bbox_is_usable(ann["bbox"], int(img["width"]), int(img["height"])):
                self.excluded.setdefault(EXCLUDED_GT_BBOX, []).append(int(ann["id"]))
                continue
            samples.append(self._make_sample(ann, img, hhrnet, ann_file))
        return samples

    def _make_sample(self, ann, img, hhrnet, ann_file):
        smpl = ann["smpl_param"]
        pose, shape, trans = (np.asarray(smpl[k], dtype=np.float32).reshape(-1) for k in ("pose", "shape", "trans"))
        if pose.shape != (72,) or shape.shape != (10,) or trans.shape != (3,) or smpl["gender"] not in GENDER_CODES:
            raise InputError(f"{ann_file}: annotation {ann['id']} has smpl_param pose {pose.shape}, shape "
                             f"{shape.shape}, trans {trans.shape}, gender {smpl['gender']!r}; expected (72,), (10,), "
                             f"(3,) and one of {sorted(GENDER_CODES)}")
        hhrnet_entry = None if hhrnet is None else hhrnet.get(str(ann["id"]))
        if hhrnet_entry is not None:
            pose_2d = add_pelvis_neck(np.asarray(hhrnet_entry["coco_joints"], np.float32).reshape(17, 3),
                                      COCO17_PELVIS_NECK)
            joints = map_joints(pose_2d, COCO17_PELVIS_NECK, SMPL30)
            pose_source = "higherhrnet"
        else:
            # A missing or empty OpenPose result is an empty pose (all invalid), not a reason to drop the person.
            openpose = np.asarray(ann.get("openpose_result") or np.zeros((18, 3)), np.float32)
            if openpose.size != 18 * 3:
                raise ValueError(f"{ann_file}: annotation {ann['id']} has an openpose_result of {openpose.size} "
                                 f"numbers; expected 18 x 3 (x, y, confidence per OpenPose joint) or an empty list")
            pose_2d = add_pelvis_neck(openpose.reshape(18, 3), OPENPOSE18_PELVIS)
            joints = map_joints(pose_2d, OPENPOSE18_PELVIS, SMPL30)
            pose_source = "openpose"
        valid = (joints[:, 2] > MIN_JOINT_CONFIDENCE).astype(np.float32)

        width, height = int(img["width"]), int(img["height"])
        bbox = None
        if valid.any():
            bbox = pose_crop_box(joints, valid, width, height)
        bbox_from_gt = bbox is None
        if bbox_from_gt:  # the load-time selection guarantees a usable annotated box
            bbox = process_bbox(ann["bbox"], width, height, scale=TEST_BBOX_SCALE)
        return PW3DSample(
            ann_id=int(ann["id"]),
            img_path=os.path.join(self.data_dir, "imageFiles", img["sequence"], img["file_name"]),
            img_width=width, img_height=height, joints=joints, joints_valid=valid, pose_source=pose_source,
            bbox=bbox, bbox_from_gt=bbox_from_gt, smpl_pose=pose, smpl_shape=shape, smpl_trans=trans,
            gender=GENDER_CODES[smpl["gender"]])

    def __len__(self):
        return len(self.samples)

    def report(self):
        """What the results of this set were computed from: {'pose_source', 'excluded' {reason: count},
        'excluded_ann_ids' {reason: [ids]}, 'bbox_from_gt' (people cropped from their annotated box)}."""
        return {"pose_source": self.pose_source,
                "excluded": {reason: len(ids) for reason, ids in self.excluded.items()},
                "excluded_ann_ids": {reason: list(ids) for reason, ids in self.excluded.items()},
                "bbox_from_gt": self.num_gt_bbox_crops}

    def describe(self, idx):
        """{'ann_id', 'img_path', 'pose_source'} of sample `idx` (the per-person results' columns)."""
        sample = self.samples[idx]
        return {"ann_id": sample.ann_id, "img_path": sample.img_path, "pose_source": sample.pose_source}

    def _read_image(self, sample):
        img = read_rgb(sample.img_path, "3DPW image", f" (annotation {sample.ann_id}); the images come from the 3DPW "
                       f"site (https://virtualhumans.mpi-inf.mpg.de/3DPW/), imageFiles/<sequence>/")
        if img.shape[:2] != (sample.img_height, sample.img_width):
            raise InputError(f"3DPW image {sample.img_path} is {img.shape[1]}x{img.shape[0]}, but its annotation "
                             f"says {sample.img_width}x{sample.img_height}")
        return img

    def __getitem__(self, idx):
        sample = self.samples[idx]
        return evaluation_item(self._read_image(sample), sample.bbox, sample.joints, sample.joints_valid,
                         (sample.smpl_pose, sample.smpl_shape, sample.smpl_trans, sample.gender),
                         idx=idx, ann_id=sample.ann_id, bbox_from_gt=sample.bbox_from_gt,
                         input_img_shape=self.input_img_shape, output_hm_shape=self.output_hm_shape,
                         smpl_fn_by_gender=self.smpl_fn_by_gender)


def evaluation_item(image, bbox, joints, joints_valid, smpl, *, idx, ann_id, bbox_from_gt, input_img_shape,
                    output_hm_shape, smpl_fn_by_gender=None):
    """One evaluation item (inputs, targets, meta) as PW3D documents it, shared by the 3DPW-style test sets.

    image (H, W, 3) uint8 RGB; bbox (4,) crop box xywh, image pixels; joints (30, 3) input pose in image pixels +
    confidence; joints_valid (30,); smpl: (pose (72,), shape (10,), trans (3,) metres, gender code)."""
    patch, img2bb, bb2img = generate_patch_image(image, bbox, 1.0, 0.0, False, input_img_shape)
    joints_hm = to_heatmap_frame(affine_points(joints[:, :2], img2bb), input_img_shape, output_hm_shape)
    joints = np.concatenate([joints_hm, joints[:, 2:]], axis=1).astype(np.float32)
    pose, shape, trans, gender = smpl
    inputs = {
        "img": torch.from_numpy(np.ascontiguousarray(patch.transpose(2, 0, 1)) / 255.0).float(),
        "joints": torch.from_numpy(joints),
        "joints_mask": torch.from_numpy(trunc_mask(joints, joints_valid, output_hm_shape, check_depth=False)),
    }
    targets = {
        "smpl_pose": torch.from_numpy(pose),
        "smpl_shape": torch.from_numpy(shape),
        "smpl_trans": torch.from_numpy(trans),
        "gender": torch.tensor(gender, dtype=torch.int64),
    }
    if smpl_fn_by_gender is not None:
        batch = {k: v[None] for k, v in targets.items()}
        with torch.no_grad():
            targets["smpl_mesh_cam"] = gendered_meshes(batch, smpl_fn_by_gender)[0]
    meta = {
        "bb2img_trans": torch.from_numpy(bb2img),
        "img2bb_trans": torch.from_numpy(img2bb),
        "bbox": torch.from_numpy(np.asarray(bbox, dtype=np.float32)),
        "idx": idx,
        "ann_id": ann_id,
        "bbox_from_gt": bbox_from_gt,
    }
    return inputs, targets, meta
