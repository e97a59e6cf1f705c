"""3DOH50K test set (spec 5.5), evaluated like 3DPW (spec 6).

Expected layout of `data_dir` (= data/OH3D):
    3doh_test_annots_scale_1.json   {image path: {hrnet_results 17 x 3 (COCO17 x, y, confidence, image pixels),
                                    bbox 4, pose 72, shape 10, trans 3 (metres), scale}}, one person per image
    images/<image>                  the test images
    J_regressor_h36m_correct.npy    the (17, 6890) H36M regressor distributed with the set (optional here: if
                                    present it is loaded as `h36m_regressor` for the evaluation to prefer)

Image paths: a key starting with 'images/' is relative to data/OH3D; any other relative key is relative to
data/OH3D/images; an absolute key (from the machine the file was made on) is replaced by its file name under
data/OH3D/images. `scale` is not used (the file name says the images are at scale 1).

Input pose: the HRNet COCO17 result + Pelvis + Neck (the means of the hips / shoulders, confidence the product),
mapped into SMPL30 by name; joints with confidence <= 0.05 are invalid (as 3DPW). Crop box: tight box of the valid
input joints x1.2, made square and enlarged x1.1 (the 3DPW test protocol). Ground truth: the NEUTRAL SMPL mesh of
(pose, shape, trans); gender code 0.

Bounding box (spec 5.5 ambiguity): when no input joint is valid the crop comes from the annotated `bbox`, which the
official code's comment calls x1, y1, x2, y2 but which the official code used as x, y, w, h. Here it is read as the
comment says, x1, y1, x2, y2 (corner pixels, so the width is x2 - x1 + 1; also accepted as [[x1, y1], [x2, y2]]);
bbox_format='xywh' restores the official use.
No sample is dropped; such crops are counted in `num_gt_bbox_crops` and flagged in meta['bbox_from_gt'].
A missing or unreadable image is an error (evaluation must see every sample).
"""
import json
import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from common.body.joint_sets import COCO17, COCO17_PELVIS_NECK, SMPL30, add_pelvis_neck, map_joints
from common.errors import InputError
from data.muco import _array
from data.preprocessing import TEST_BBOX_SCALE, pose_crop_box, process_bbox
from data.pw3d import GENDER_CODES, MIN_JOINT_CONFIDENCE, evaluation_item
from data.train_sample import read_rgb

ANNOTATION_FILE = "3doh_test_annots_scale_1.json"
REGRESSOR_FILE = "J_regressor_h36m_correct.npy"
SOURCE = ("the 3DOH50K test set (Zhang et al., 'Object-Occluded Human Shape and Pose Estimation from a Single Color "
          "Image', CVPR 2020) in the form the JOTR authors distribute with their evaluation data")
BBOX_FORMATS = ("xyxy", "xywh")
POSE_SOURCE = "hrnet"  # the input poses are the annotation file's hrnet_results


@dataclass
class OH3DSample:
    key: str  # the annotation file's key
    img_path: str
    joints: np.ndarray  # (30, 3) input pose in SMPL30 order, image pixels + detector confidence
    joints_valid: np.ndarray  # (30,) float32 in {0, 1}
    gt_bbox: np.ndarray  # (4,) annotated box as xywh image pixels (after the bbox_format conversion)
    smpl_pose: np.ndarray  # (72,) axis-angle
    smpl_shape: np.ndarray  # (10,)
    smpl_trans: np.ndarray  # (3,) metres


def image_path(root, key):
    """Where the image of annotation key `key` lives (module docstring)."""
    normalised = key.replace("\\", "/")
    if os.path.isabs(normalised) or normalised.startswith("/"):
        return os.path.join(root, "images", os.path.basename(normalised))
    if normalised.startswith("images/"):
        return os.path.join(root, normalised)
    return os.path.join(root, "images", normalised)


class OH3D(torch.utils.data.Dataset):
    """The 3DOH50K evaluation set. Items as data.pw3d.PW3D (so common.training.engine.evaluate works unchanged):

    inputs:  img (3, H, W) float32 RGB in [0, 1]; joints (30, 3) input pose, x, y heatmap frame + confidence;
             joints_mask (30, 1) valid (confidence > 0.05) and inside the heatmap grid.
    targets: smpl_pose (72,), smpl_shape (10,), smpl_trans (3,) metres, gender (int64 0 = neutral); with
             `smpl_fn_by_gender` ({'neutral': fn, ...}) also smpl_mesh_cam (V, 3).
    meta:    bb2img_trans, img2bb_trans (2, 3) between crop and image pixels; bbox (4,) crop box xywh, image pixels;
             idx (sample id = position in the annotation file); ann_id (= idx); bbox_from_gt (bool).

    data_dir: data/OH3D; variant: '3doh' (the registry's name); bbox_format: how the annotated `bbox` is read,
    'xyxy' (default) or 'xywh' (the official code's use). Attribute h36m_regressor: (17, V) float32 from
    J_regressor_h36m_correct.npy in data_dir, or None when the file is absent.
    """

    def __init__(self, data_dir, variant="3doh", input_img_shape=(256, 256), output_hm_shape=(64, 64, 64),
                 smpl_fn_by_gender=None, bbox_format="xyxy"):
        if bbox_format not in BBOX_FORMATS:
            raise ValueError(f"bbox_format must be one of {BBOX_FORMATS}, got {bbox_format!r}")
        self.data_dir = os.fspath(data_dir)
        self.variant = variant
        self.input_img_shape = tuple(input_img_shape)
        self.output_hm_shape = tuple(output_hm_shape)
        self.smpl_fn_by_gender = smpl_fn_by_gender
        self.bbox_format = bbox_format
        self.samples = self._load_samples()
        if not self.samples:
            raise InputError(f"{os.path.join(self.data_dir, ANNOTATION_FILE)}: no annotation")
        self.num_gt_bbox_crops = sum(not s.joints_valid.any() for s in self.samples)
        if self.num_gt_bbox_crops:
            warnings.warn(f"{variant}: {self.num_gt_bbox_crops} of {len(self.samples)} people have no usable input "
                          f"joints; they are cropped from their annotated box", stacklevel=2)
        self.h36m_regressor = self._load_regressor()

    def _load_samples(self):
        path = os.path.join(self.data_dir, ANNOTATION_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"3DOH50K annotation file not found: {path}. It belongs in data/OH3D/"
                                    f"{ANNOTATION_FILE}; it comes from {SOURCE}.")
        with open(path) as f:
            db = json.load(f)
        if not isinstance(db, dict):
            raise InputError(f"{path}: expected a JSON object {{image path: annotation}}, got {type(db).__name__}")
        samples = []
        for key, ann in db.items():
            if not isinstance(ann, dict):
                raise InputError(f"{path}: annotation {key}: expected an object with hrnet_results, bbox, pose, "
                                 f"shape, trans")
            hrnet = _array(ann.get("hrnet_results"), (len(COCO17), 3), "hrnet_results", key, path)
            joints = map_joints(add_pelvis_neck(hrnet.astype(np.float32), COCO17_PELVIS_NECK), COCO17_PELVIS_NECK,
                                SMPL30)
            bbox = _array(ann.get("bbox"), (4,), "bbox", key, path).astype(np.float32)
            if self.bbox_format == "xyxy":
                # Corners are pixels of the box (process_bbox's convention x2 = x + w - 1): w = x2 - x1 + 1.
                bbox = np.array([bbox[0], bbox[1], bbox[2] - bbox[0] + 1, bbox[3] - bbox[1] + 1], dtype=np.float32)
            samples.append(OH3DSample(
                key=key, img_path=image_path(self.data_dir, key), joints=joints,
                joints_valid=(joints[:, 2] > MIN_JOINT_CONFIDENCE).astype(np.float32), gt_bbox=bbox,
                smpl_pose=_array(ann.get("pose"), (72,), "pose", key, path).astype(np.float32),
                smpl_shape=_array(ann.get("shape"), (10,), "shape", key, path).astype(np.float32),
                smpl_trans=_array(ann.get("trans"), (3,), "trans", key, path).astype(np.float32)))
        return samples

    def _load_regressor(self):
        path = os.path.join(self.data_dir, REGRESSOR_FILE)
        if not os.path.isfile(path):
            warnings.warn(f"{path} not found: 3DOH50K will be evaluated with the configured H36M regressor",
                          stacklevel=3)
            return None
        try:
            regressor = np.load(path, allow_pickle=False)
        except Exception as err:
            raise InputError(f"{path} is not a readable .npy regressor ({type(err).__name__}: {err}); it comes "
                             f"from {SOURCE}") from err
        if regressor.ndim != 2 or regressor.shape[0] != 17:
            raise InputError(f"{path}: the H36M regressor must be (17, V), got {regressor.shape}")
        return regressor.astype(np.float32)

    def __len__(self):
        return len(self.samples)

    def report(self):
        """What the results were computed from (as data.pw3d.PW3D.report): input pose source, people left out (none)
        and people cropped from their annotated box."""
        return {"pose_source": POSE_SOURCE, "excluded": {}, "excluded_ann_ids": {},
                "bbox_from_gt": self.num_gt_bbox_crops}

    def describe(self, idx):
        """{'ann_id' (= idx), 'img_path', 'pose_source'} of sample `idx` (the per-person results' columns)."""
        return {"ann_id": idx, "img_path": self.samples[idx].img_path, "pose_source": POSE_SOURCE}

    def _read_image(self, sample):
        return read_rgb(sample.img_path, "3DOH50K image", f" (annotation {sample.key}); the images belong in "
                        f"{self.data_dir}/images and come from {SOURCE}")

    def crop_box(self, sample, img_width, img_height):
        """(crop box (4,) xywh image pixels, from_gt): from the valid input joints, else from the annotated box."""
        if sample.joints_valid.any():
            bbox = pose_crop_box(sample.joints, sample.joints_valid, img_width, img_height)
            if bbox is not None:
                return bbox, False
        bbox = process_bbox(sample.gt_bbox, img_width, img_height, scale=TEST_BBOX_SCALE)
        if bbox is None:
            raise InputError(f"{os.path.join(self.data_dir, ANNOTATION_FILE)}: annotation {sample.key} has neither "
                             f"usable input joints nor a usable bbox ({sample.gt_bbox.tolist()} as xywh, read as "
                             f"{self.bbox_format}) inside its {img_width}x{img_height} image")
        return bbox, True

    def __getitem__(self, idx):
        sample = self.samples[idx]
        img = self._read_image(sample)
        bbox, bbox_from_gt = self.crop_box(sample, img.shape[1], img.shape[0])
        # The GT mesh comes from the neutral SMPL (spec 5.5).
        return evaluation_item(img, bbox, sample.joints, sample.joints_valid,
                         (sample.smpl_pose, sample.smpl_shape, sample.smpl_trans, GENDER_CODES["neutral"]),
                         idx=idx, ann_id=idx, bbox_from_gt=bbox_from_gt, input_img_shape=self.input_img_shape,
                         output_hm_shape=self.output_hm_shape, smpl_fn_by_gender=self.smpl_fn_by_gender)
