"""MSCOCO training set (spec 5.3), and `KeypointDataset`, the loader it shares with CrowdPose: COCO-format 2D
keypoints plus NeuralAnnot SMPL fits.

Expected layout under `data_dir` (normally `data/`):
    MSCOCO/annotations/person_keypoints_train2017.json      COCO 2017 person keypoints: images (id, file_name,
                                                            width, height), annotations (id, image_id, keypoints
                                                            17 x 3 flat [x, y, v] image pixels, bbox [x, y, w, h],
                                                            iscrowd)
    MSCOCO/annotations/MSCOCO_train_SMPL_NeuralAnnot.json   {str(annotation id): {smpl_param: {pose 72, shape 10,
                                                            trans 3 (metres)}, cam_param: {focal [fx, fy], princpt
                                                            [cx, cy]} (image pixels)}}: SMPL fits in the frame of
                                                            that camera
    MSCOCO/images/train2017/<file_name>

Samples: every non-crowd person with at least one annotated keypoint (v > 0) and a usable box. Joint set:
COCO17 + Pelvis (the mean of the hips, valid if both are), mapped into SMPL30 by name. The NeuralAnnot fits of
MSCOCO are all used (the official fitting-error test is commented out); the fit's root-relative depth is in metres
(depth bins over bbox_3d_size metres) and fit_joint_img is the fit projected with its NeuralAnnot camera. People
without a fit get zero fit targets and is_valid_fit 0. is_3D 0.

The other annotated people of the image go to the sample builder as PoseFix "near joints" (list of (J, 3) arrays,
image pixels, the dataset's joint set, column 2 the 0/1 annotation validity; unfiltered: the PoseFix synthesis
picks the overlapping ones) when the builder accepts a `near_joints` argument.

Reproducibility and missing images: as data.muco (np.random.default_rng([seed, crc32(name), epoch, index]);
set_epoch before each epoch; a missing image is skipped with a counted warning, an error past a threshold).
"""
import os
import zlib
from dataclasses import dataclass

import numpy as np

from common.body.joint_sets import COCO17, COCO17_PELVIS, add_pelvis_neck
from common.errors import InputError
from data.muco import _array
from data.preprocessing import TEST_AUG, draw_bbox_scale, get_aug_config, process_bbox
from data.train_sample import ImageSample, SMPLFit, TrainingImages, TrainingSet, TrainSampleBuilder, read_json

NEURALANNOT_SOURCE = ("the NeuralAnnot SMPL fits (https://github.com/mks0601/NeuralAnnot_RELEASE), linked from the "
                      "3DCrowdNet README (https://github.com/hongsukchoi/3DCrowdNet_RELEASE)")


@dataclass
class KeypointSample(ImageSample):
    joints: np.ndarray  # (J, 3) x, y image pixels, 0/1 validity; the dataset's joint_set (keypoints + Pelvis)
    near_joints: list  # [(J, 3)] the other annotated people of the image, same layout
    smpl: dict | None  # {'pose' (72,), 'shape' (10,), 'trans' (3,) metres, 'focal' (2,), 'princpt' (2,)} or None
    bbox_scale: float | None  # fixed crop enlargement (update_bbox False) or None (drawn per item)


class KeypointDataset(TrainingSet):
    """A COCO-format keypoint dataset with NeuralAnnot fits (module docstring). Subclasses set the class attributes
    and may override `_image_sizes` (the size of each image) and `_fit_usable` (a filter on the fits).

    Arguments as data.muco.MuCo: data_dir (holding <name>/), body_model, joint_regressor_30 (30, 6890),
    h36m_regressor (unused: 2D sets have no 3D ground truth to check fits against; accepted so that all training
    sets share one signature), input_img_shape, output_hm_shape, bbox_3d_size (metres), update_bbox, augment, seed.
    """

    name = ""  # directory under data_dir; also salts the per-item seeds
    keypoint_set = ()  # names of the annotated keypoints, in the file's order
    joint_set = ()  # keypoint_set + ('Pelvis',)
    annotation_file = ""  # paths relative to <data_dir>/<name>
    fits_file = ""
    image_dir = ""
    sources = {}  # file name -> where it comes from (for error messages)

    def __init__(self, data_dir, body_model, joint_regressor_30, h36m_regressor=None, input_img_shape=(256, 256),
                 output_hm_shape=(64, 64, 64), bbox_3d_size=2.0, update_bbox=True, augment=True, seed=0,
                 occlusion_prob=0.0, occlusion_failures=False):
        del h36m_regressor
        self.root = os.path.join(os.fspath(data_dir), self.name)
        self.builder = TrainSampleBuilder(body_model, joint_regressor_30, input_img_shape, output_hm_shape,
                                          bbox_3d_size, occlusion_prob=occlusion_prob,
                                          occlusion_failures=occlusion_failures)
        self.update_bbox = bool(update_bbox)
        self.augment = bool(augment)
        self.seed = int(seed)
        self.seed_salt = zlib.crc32(self.name.encode())
        # Index order that makes the builder's (correct) flip reproduce another flip; see data.crowdpose.
        self.flip_input_order = None
        self.num_unusable_boxes = 0
        self.num_rejected_fits = 0
        self.samples = self._load_samples()
        if not self.samples:
            raise InputError(f"{os.path.join(self.root, self.annotation_file)}: no usable sample (no non-crowd person "
                             f"with an annotated keypoint and a box inside the image)")
        self.images = TrainingImages(self.name,
                                     where=f"{os.path.join(self.root, self.image_dir)}/<file_name> as listed in "
                                           f"{os.path.basename(self.annotation_file)}",
                                     source=self.sources["images"])

    # ---------------------------------------------------------------------------------------------------- loading

    def _load_json(self, relative_path):
        return read_json(os.path.join(self.root, relative_path), f"{self.name} annotation file",
                         f"data/{self.name}/{relative_path}", self.sources[os.path.basename(relative_path)])

    def _image_sizes(self, images, ann_path):
        """{image id: (width, height)} in image pixels."""
        del ann_path
        return {img_id: (int(img["width"]), int(img["height"])) for img_id, img in images.items()}

    def _fit_usable(self, entry, ann_id, fits_path):
        """Whether a NeuralAnnot fit entry is used (MSCOCO: always)."""
        del entry, ann_id, fits_path
        return True

    def _load_samples(self):
        ann_path = os.path.join(self.root, self.annotation_file)
        fits_path = os.path.join(self.root, self.fits_file)
        db = self._load_json(self.annotation_file)
        fits = self._load_json(self.fits_file)
        images = {img["id"]: img for img in db["images"]}
        sizes = self._image_sizes(images, ann_path)
        num_keypoints = len(self.keypoint_set)

        people = {}  # image id -> [(annotation, joints (J, 3))] of the non-crowd people with an annotated keypoint
        for ann in db["annotations"]:
            ann_id = ann.get("id")
            if ann.get("image_id") not in images:
                raise InputError(f"{ann_path}: annotation {ann_id} refers to image {ann.get('image_id')}, which is not "
                                 f"in the file's 'images'")
            if ann.get("iscrowd", 0):
                continue
            keypoints = _array(ann.get("keypoints"), (num_keypoints, 3), "keypoints", ann_id, ann_path)
            valid = (keypoints[:, 2] > 0).astype(np.float32)
            if not valid.any():
                continue
            joints = np.concatenate([keypoints[:, :2], valid[:, None]], axis=1)
            joints = add_pelvis_neck(joints, self.joint_set)  # Pelvis valid only if both hips are
            people.setdefault(ann["image_id"], []).append((ann, joints))

        rng = np.random.default_rng([self.seed, self.seed_salt])  # only for the fixed boxes of update_bbox=False
        samples = []
        for image_id, persons in people.items():
            img = images[image_id]
            width, height = sizes[image_id]
            for k, (ann, joints) in enumerate(persons):
                ann_id = ann["id"]
                bbox = _array(ann.get("bbox"), (4,), "bbox", ann_id, ann_path)
                # Dropped like the official loaders' training-mode process_bbox: no area, or nothing in the image.
                if process_bbox(bbox, width, height, scale=None, rng=np.random.default_rng(0)) is None:
                    self.num_unusable_boxes += 1
                    continue
                samples.append(KeypointSample(
                    ann_id=int(ann_id), image_id=int(image_id),
                    img_path=os.path.join(self.root, self.image_dir, img["file_name"]), img_width=width,
                    img_height=height, bbox=bbox.astype(np.float32), joints=joints,
                    near_joints=[other for j, (_, other) in enumerate(persons) if j != k],
                    smpl=self._fit(fits.get(str(ann_id)), ann_id, fits_path),
                    bbox_scale=None if self.update_bbox else draw_bbox_scale(rng)))
        return samples

    def _fit(self, entry, ann_id, fits_path):
        if entry is None:
            return None
        if not isinstance(entry, dict) or not isinstance(entry.get("smpl_param"), dict) \
                or not isinstance(entry.get("cam_param"), dict):
            raise InputError(f"{fits_path}: annotation {ann_id}: a fit must be {{'smpl_param': {{pose, shape, trans}}, "
                             f"'cam_param': {{focal, princpt}}}}")
        if not self._fit_usable(entry, ann_id, fits_path):
            self.num_rejected_fits += 1
            return None
        name = os.path.basename(fits_path)
        fit = {key: _array(entry["smpl_param"].get(key), (size,), f"{name} smpl_param '{key}'", ann_id, fits_path)
               for key, size in (("pose", 72), ("shape", 10), ("trans", 3))}
        for key in ("focal", "princpt"):
            fit[key] = _array(entry["cam_param"].get(key), (2,), f"{name} cam_param '{key}'", ann_id, fits_path)
        return fit

    # ---------------------------------------------------------------------------------------------------- items

    def item(self, index, return_geometry=False, aug=None):
        """Item `index` of the current epoch; with return_geometry also the crop's SampleGeometry; `aug` (an
        AugConfig) replaces the drawn augmentation (tests, visualisation). A missing image is a FileNotFoundError naming
        the file."""
        rng = self.rng(index)
        sample, img = self.sample_and_image(index, os.path.basename(self.annotation_file))
        joints, bbox_scale = sample.joints, sample.bbox_scale
        if self.flip_input_order is not None:
            # Draw the crop enlargement and the augmentation exactly as the builder would (same generator, same
            # order), to know before the call whether this item is flipped.
            if bbox_scale is None:
                bbox_scale = draw_bbox_scale(rng)
            if aug is None:
                aug = get_aug_config(rng) if self.augment else TEST_AUG
            if aug.do_flip:
                joints = joints[self.flip_input_order]
        fit = None
        if sample.smpl is not None:
            fit = SMPLFit(pose=sample.smpl["pose"], shape=sample.smpl["shape"], trans=sample.smpl["trans"],
                          focal=sample.smpl["focal"], princpt=sample.smpl["princpt"])
        return self.builder(img, sample.bbox, joints[:, :2], joints[:, 2], self.joint_set, rng, self.augment,
                            smpl_fit=fit, bbox_scale=bbox_scale, aug=aug, return_geometry=return_geometry,
                            near_joints=[j.copy() for j in sample.near_joints])


class MSCOCO(KeypointDataset):
    """MSCOCO 2017 training persons with NeuralAnnot fits (module docstring); items as data.train_sample
    describes (is_3D = 0)."""

    name = "MSCOCO"
    keypoint_set = COCO17
    joint_set = COCO17_PELVIS
    annotation_file = "annotations/person_keypoints_train2017.json"
    fits_file = "annotations/MSCOCO_train_SMPL_NeuralAnnot.json"
    image_dir = "images/train2017"
    sources = {
        "person_keypoints_train2017.json": "the COCO 2017 annotations (https://cocodataset.org, "
                                           "annotations_trainval2017.zip)",
        "MSCOCO_train_SMPL_NeuralAnnot.json": NEURALANNOT_SOURCE,
        "images": "the COCO 2017 train images (https://cocodataset.org, train2017.zip)",
    }
