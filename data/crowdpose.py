"""CrowdPose training set (spec 5.3): crowded scenes with 14 annotated keypoints and NeuralAnnot SMPL fits.

Expected layout under `data_dir` (normally `data/`):
    CrowdPose/annotations/crowdpose_train.json                  COCO format: images (id, file_name, width, height),
                                                                annotations (id, image_id, keypoints 14 x 3 flat
                                                                [x, y, v] image pixels, bbox [x, y, w, h], iscrowd),
                                                                keypoints in common.body.joint_sets.CROWDPOSE14 order
    CrowdPose/annotations/CrowdPose_train_SMPL_NeuralAnnot.json {str(annotation id): {smpl_param: {pose, shape,
                                                                trans}, cam_param: {focal, princpt}, fit_err}}
    CrowdPose/images/<file_name>

Samples, fits and items as data.mscoco (KeypointDataset) with the joint set CROWDPOSE14 + Pelvis. Differences:

* Image size. The official train annotation file has every image's width and height swapped, and the official
  loader swaps them back. Here the loader looks at the first image it can read whose annotated width and height
  differ, and swaps the file's sizes back if that image is the annotated size transposed (`image_size_swapped`);
  if it can read none, it assumes the official file's state (swapped) and warns. Every image's real size is checked
  again when it is read.
* Flip pairs (spec 7.9). Pairs are derived from the joint names (common.body.joint_sets.flip_pairs): L_x <-> R_x. The
  official list (0,1),(1,2),(3,4),(5,6),(6,7),(8,9),(10,11), applied as swaps one after the other, scrambled the
  arms and hips of flipped samples (R_Shoulder got L_Elbow, R_Wrist got L_Hip, ...). `official_crowdpose_flip=True`
  reproduces that scrambling for exact-reproduction runs.
* Fit filter (spec 7.10). A fit is used if its NeuralAnnot fitting error `fit_err` is below 5, and the person
  otherwise keeps its 2D joints without fit targets (is_valid_fit 0). The official comparison was inverted (it kept
  the fits with fit_err >= 5 and dropped the good ones); `official_crowdpose_fit_filter=True` reproduces it.
"""
import os
import warnings

import cv2
import numpy as np

from common.body.joint_sets import CROWDPOSE14, CROWDPOSE14_PELVIS, flip_pairs
from common.errors import InputError
from data.mscoco import NEURALANNOT_SOURCE, KeypointDataset

MAX_FIT_ERROR = 5.0  # NeuralAnnot fitting error below which a fit is used
# The official (3DCrowdNet, inherited by JOTR) CrowdPose flip pairs, applied as consecutive swaps (spec 7.9).
OFFICIAL_FLIP_PAIRS = ((0, 1), (1, 2), (3, 4), (5, 6), (6, 7), (8, 9), (10, 11))


def apply_swaps(num_joints, pairs):
    """Index order produced by swapping `pairs` one after the other: joints[order] is the swapped array."""
    order = np.arange(num_joints)
    for a, b in pairs:
        order[[a, b]] = order[[b, a]]
    return order


def official_flip_input_order(joint_set=CROWDPOSE14_PELVIS):
    """Index order q such that flipping joints[q] with the correct (name-derived) pairs gives what flipping `joints`
    with the official pairs gave: correct(q) = official, i.e. q = official[correct] (correct is an involution)."""
    correct = apply_swaps(len(joint_set), flip_pairs(joint_set))
    official = apply_swaps(len(joint_set), OFFICIAL_FLIP_PAIRS)
    return official[correct]


class CrowdPose(KeypointDataset):
    """CrowdPose training persons with NeuralAnnot fits (module docstring); items as data.train_sample describes
    (is_3D = 0). Arguments as data.mscoco.KeypointDataset, plus:

    official_crowdpose_flip: reproduce the official, wrong flip pairs (spec 7.9); default False (pairs by name);
    official_crowdpose_fit_filter: reproduce the official, inverted fit filter (keep fit_err >= 5, spec 7.10);
        default False (keep fit_err < 5).
    """

    name = "CrowdPose"
    keypoint_set = CROWDPOSE14
    joint_set = CROWDPOSE14_PELVIS
    annotation_file = "annotations/crowdpose_train.json"
    fits_file = "annotations/CrowdPose_train_SMPL_NeuralAnnot.json"
    image_dir = "images"
    sources = {
        "crowdpose_train.json": "the CrowdPose annotations (https://github.com/Jeff-sjtu/CrowdPose)",
        "CrowdPose_train_SMPL_NeuralAnnot.json": NEURALANNOT_SOURCE,
        "images": "the CrowdPose images (https://github.com/Jeff-sjtu/CrowdPose)",
    }

    def __init__(self, data_dir, body_model, joint_regressor_30, h36m_regressor=None, input_img_shape=(256, 256),
                 output_hm_shape=(64, 64, 64), bbox_3d_size=2.0, update_bbox=True, augment=True, seed=0,
                 official_crowdpose_flip=False, official_crowdpose_fit_filter=False,
                 occlusion_prob=0.0, occlusion_failures=False):
        self.official_crowdpose_fit_filter = bool(official_crowdpose_fit_filter)
        self.image_size_swapped = None
        super().__init__(data_dir, body_model, joint_regressor_30, h36m_regressor, input_img_shape, output_hm_shape,
                         bbox_3d_size, update_bbox, augment, seed, occlusion_prob, occlusion_failures)
        self.official_crowdpose_flip = bool(official_crowdpose_flip)
        if self.official_crowdpose_flip:
            self.flip_input_order = official_flip_input_order(self.joint_set)

    def _fit_usable(self, entry, ann_id, fits_path):
        fit_err = entry.get("fit_err")
        if not isinstance(fit_err, (int, float)) or not np.isfinite(fit_err):
            raise InputError(f"{fits_path}: annotation {ann_id}: 'fit_err' must be a finite number, got {fit_err!r}")
        if self.official_crowdpose_fit_filter:
            return fit_err >= MAX_FIT_ERROR
        return fit_err < MAX_FIT_ERROR

    def _image_sizes(self, images, ann_path):
        self.image_size_swapped = self._detect_swapped_sizes(images, ann_path)
        sizes = {}
        for img_id, img in images.items():
            width, height = int(img["width"]), int(img["height"])
            sizes[img_id] = (height, width) if self.image_size_swapped else (width, height)
        return sizes

    def _detect_swapped_sizes(self, images, ann_path):
        for img in images.values():
            width, height = int(img["width"]), int(img["height"])
            if width == height:
                continue  # undecidable
            path = os.path.join(self.root, self.image_dir, img["file_name"])
            pixels = cv2.imread(path, cv2.IMREAD_UNCHANGED)
            if pixels is None:
                continue
            real = (pixels.shape[1], pixels.shape[0])
            if real == (width, height):
                return False
            if real == (height, width):
                return True
            raise InputError(f"{ann_path}: image {img['id']} ({path}) is {real[0]}x{real[1]}, but the annotation says "
                             f"{width}x{height} (width x height), neither that size nor its transpose")
        warnings.warn(f"{ann_path}: no readable non-square image to check the annotated image sizes against; assuming "
                      f"width and height are swapped, as in the official CrowdPose train file", stacklevel=4)
        return True
