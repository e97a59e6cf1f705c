"""MuCo-3DHP training set (spec 5.3): composited multi-person images with 3D joints and SMPL fits.

Expected layout under `data_dir` (normally `data/`):
    MuCo/MuCo-3DHP.json     COCO-style annotations (3DMPPE / RootNet release of MuCo-3DHP):
                            images: id, file_name, width, height, f [fx, fy], c [cx, cy] (image pixels);
                            annotations: id, image_id, bbox [x, y, w, h] (image pixels, tight),
                            keypoints_img 21 x 2 (image pixels), keypoints_cam 21 x 3 (camera frame, millimetres),
                            joints in common.body.joint_sets.MUCO21 order
    MuCo/smpl_param.json    {str(annotation id): {"pose": 72, "shape": 10, "trans": 3}} SMPL fits in the same camera
                            frame (metres; 3DCrowdNet / I2L-MeshNet release)
    MuCo/<file_name>        the images (augmented_set/..., unaugmented_set/...)

One sample per image: the person closest to the camera (smallest root depth), as in the official loader.

Reproducibility: item `index` of epoch `e` draws all its randomness from
np.random.default_rng([seed, crc32('MuCo'), e, index]), so a run gives the same items whatever the number of
DataLoader workers, their order or a resume mid-run. The engine calls `set_epoch(e)` before each epoch, on the
dataset the DataLoader holds, before creating the epoch's iterator (with persistent_workers=True the workers keep an
old copy of the dataset and would not see the new epoch).
"""
import math
import os
import zlib
from dataclasses import dataclass

import numpy as np

from common.body.joint_sets import H36M17, MUCO21
from common.errors import InputError
from data.preprocessing import draw_bbox_scale, process_bbox
from data.train_sample import ImageSample, SMPLFit, TrainingImages, TrainingSet, TrainSampleBuilder, read_json

ANNOTATION_FILE = "MuCo-3DHP.json"
SMPL_PARAM_FILE = "smpl_param.json"
_SOURCES = {
    ANNOTATION_FILE: "the MuCo-3DHP annotations of the 3DMPPE (RootNet / PoseNet) data release "
                     "(https://github.com/mks0601/3DMPPE_POSENET_RELEASE, 'MuCo' dataset link)",
    SMPL_PARAM_FILE: "the MuCo SMPL fits of the 3DCrowdNet / I2L-MeshNet data release "
                     "(https://github.com/hongsukchoi/3DCrowdNet_RELEASE, https://github.com/mks0601/I2L-MeshNet_RELEASE)",
}
ROOT_IDX = MUCO21.index("Pelvis")
# The H36M joints MuCo annotates (by name): compared by the fit-validity test.
FIT_CHECK_NAMES = tuple(name for name in H36M17 if name in MUCO21)
_FIT_CHECK_H36M = [H36M17.index(n) for n in FIT_CHECK_NAMES]
_FIT_CHECK_MUCO = [MUCO21.index(n) for n in FIT_CHECK_NAMES]
_SEED_SALT = zlib.crc32(b"MuCo")


@dataclass
class MuCoSample(ImageSample):
    joints_img: np.ndarray  # (21, 2) image pixels, MUCO21 order
    joints_cam: np.ndarray  # (21, 3) camera frame, millimetres
    focal: np.ndarray  # (2,) image pixels
    princpt: np.ndarray  # (2,) image pixels
    smpl: dict | None  # {'pose' (72,), 'shape' (10,), 'trans' (3,) metres} or None
    bbox_scale: float | None  # fixed crop enlargement (update_bbox False) or None (drawn per item)
    near_joints: list  # [(21, 3)] the image's other people: image pixels + visibility 1 (PoseFix swaps)


def _load_json(path):
    name = os.path.basename(path)
    return read_json(path, "MuCo annotation file", f"data/MuCo/{name}", _SOURCES[name])


def _array(value, shape, what, ann_id, path):
    """`value` as a float64 array of `shape`, or ValueError naming the annotation."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        array = None
    if array is None or array.size != math.prod(shape):
        got = "not numeric" if array is None else f"{array.size} numbers"
        raise InputError(f"{path}: annotation {ann_id}: {what} must be {' x '.join(map(str, shape))} numbers, got "
                         f"{got}")
    array = array.reshape(shape)
    if not np.all(np.isfinite(array)):
        raise InputError(f"{path}: annotation {ann_id}: {what} contains NaN or infinite values")
    return array


def fit_check_regressor(h36m_regressor):
    """The (17, V) Human3.6M regressor of the fit-validity test as float64; ValueError for another row count."""
    regressor = np.asarray(h36m_regressor, dtype=np.float64)
    if regressor.shape[0] != len(H36M17):
        raise ValueError(f"h36m_regressor must have {len(H36M17)} rows, got {regressor.shape}")
    return regressor


def fit_error_mm(h36m_joints, joints_cam_mm):
    """Mean distance (mm) between a fit's H36M-regressed joints and the MuCo ground truth (spec 5.3 fit validity).

    h36m_joints (17, 3) metres, camera frame: the H36M regressor applied to the fit's mesh; joints_cam_mm (21, 3)
    MUCO21 order, millimetres.
    Compared: the 14 H36M joints MuCo annotates (FIT_CHECK_NAMES: pelvis, hips, knees, ankles, head top, shoulders,
    elbows, wrists; MuCo has no H36M Torso, Neck or Nose), each set translated so that its mean over these joints is
    at the origin; the result is the mean Euclidean distance over them.
    """
    fit = np.asarray(h36m_joints, np.float64)[_FIT_CHECK_H36M] * 1000.0
    gt = np.asarray(joints_cam_mm, np.float64)[_FIT_CHECK_MUCO]
    fit = fit - fit.mean(0)
    gt = gt - gt.mean(0)
    return float(np.linalg.norm(fit - gt, axis=1).mean())


class MuCo(TrainingSet):
    """MuCo-3DHP training samples (module docstring); items as data.train_sample describes (is_3D = 1).

    data_dir: the directory holding MuCo/ (normally `data`); body_model: SMPL layer (common.body.body_model.SMPLLayer)
    for the fits; joint_regressor_30 (30, 6890); h36m_regressor (17, 6890) for the fit-validity test;
    input_img_shape (H, W); output_hm_shape (D, H, W); bbox_3d_size metres; update_bbox: draw a new crop enlargement
    U[1.0, 1.2) for every item (else one per sample, drawn when loading); augment: training augmentation and input
    pose corruption; seed: base seed (see module docstring).
    Joint validity: MuCo annotates all 21 joints of every person, so all are valid (truncation comes from the crop
    and the depth range).
    """

    def __init__(self, data_dir, body_model, joint_regressor_30, h36m_regressor, input_img_shape=(256, 256),
                 output_hm_shape=(64, 64, 64), bbox_3d_size=2.0, update_bbox=True, augment=True, seed=0,
                 occlusion_prob=0.0, occlusion_failures=False):
        self.root = os.path.join(os.fspath(data_dir), "MuCo")
        self.h36m_regressor = fit_check_regressor(h36m_regressor)
        self.builder = TrainSampleBuilder(body_model, joint_regressor_30, input_img_shape, output_hm_shape,
                                          bbox_3d_size, occlusion_prob=occlusion_prob,
                                          occlusion_failures=occlusion_failures)
        self.update_bbox = bool(update_bbox)
        self.augment = bool(augment)
        self.seed = int(seed)
        self.seed_salt = _SEED_SALT
        self.num_unusable_boxes = 0
        self._fit_valid = {}  # sample index -> fit validity (fit_valid)
        self.samples = self._load_samples()
        if not self.samples:
            raise InputError(f"{os.path.join(self.root, ANNOTATION_FILE)}: no usable sample (no image with a person "
                             f"whose box lies in the image)")
        self.images = TrainingImages("MuCo", where=f"{self.root}/<file_name> as listed in {ANNOTATION_FILE}",
                                     source=_SOURCES[ANNOTATION_FILE])

    def _load_samples(self):
        ann_path = os.path.join(self.root, ANNOTATION_FILE)
        smpl_path = os.path.join(self.root, SMPL_PARAM_FILE)
        db = _load_json(ann_path)
        smpl_params = _load_json(smpl_path)
        images = {img["id"]: img for img in db["images"]}
        people = {}  # image id -> [(root depth mm, annotation)]
        for ann in db["annotations"]:
            ann_id = ann.get("id")
            if ann.get("image_id") not in images:
                raise InputError(f"{ann_path}: annotation {ann_id} refers to image {ann.get('image_id')}, which is not "
                                 f"in the file's 'images'")
            arrays = {
                "joints_cam": _array(ann.get("keypoints_cam"), (len(MUCO21), 3), "keypoints_cam", ann_id, ann_path),
                "joints_img": _array(ann.get("keypoints_img"), (len(MUCO21), 2), "keypoints_img", ann_id, ann_path),
                "bbox": _array(ann.get("bbox"), (4,), "bbox", ann_id, ann_path),
            }
            people.setdefault(ann["image_id"], []).append((arrays["joints_cam"][ROOT_IDX, 2], ann, arrays))

        rng = np.random.default_rng([self.seed, self.seed_salt])  # only for the fixed boxes of update_bbox=False
        samples = []
        for image_id, candidates in people.items():
            _, ann, arrays = min(candidates, key=lambda c: c[0])
            img = images[image_id]
            ann_id = ann["id"]
            focal = _array(img.get("f"), (2,), f"image {image_id} 'f'", ann_id, ann_path)
            princpt = _array(img.get("c"), (2,), f"image {image_id} 'c'", ann_id, ann_path)
            width, height = int(img["width"]), int(img["height"])
            # The official loader drops people whose box process_bbox rejects (training mode: no area, or nothing
            # left after clipping to the image); the random enlargement drawn here plays no part in that test.
            if process_bbox(arrays["bbox"], width, height, scale=None, rng=np.random.default_rng(0)) is None:
                self.num_unusable_boxes += 1
                continue
            smpl = smpl_params.get(str(ann_id))
            if smpl is not None:
                smpl = {key: _array(smpl.get(key), (size,), f"{SMPL_PARAM_FILE} '{key}'", ann_id, smpl_path)
                        for key, size in (("pose", 72), ("shape", 10), ("trans", 3))}
            samples.append(MuCoSample(
                ann_id=int(ann_id), image_id=int(image_id), img_path=os.path.join(self.root, img["file_name"]),
                img_width=width, img_height=height, bbox=arrays["bbox"].astype(np.float32),
                joints_img=arrays["joints_img"], joints_cam=arrays["joints_cam"], focal=focal, princpt=princpt,
                smpl=smpl, bbox_scale=None if self.update_bbox else draw_bbox_scale(rng),
                near_joints=[np.concatenate([other["joints_img"], np.ones((len(MUCO21), 1))], axis=1)
                             for _, other_ann, other in candidates if other_ann is not ann]))
        return samples

    def fit_error_mm(self, index):
        """The fit-validity error (mm, see fit_error_mm) of sample `index`, or None if it has no SMPL fit. Computed
        on the mesh the items use (the fit's original betas, spec 7.23)."""
        sample = self.samples[index]
        if sample.smpl is None:
            return None
        joints = self.builder.regressed_joints(sample.smpl["pose"][None], sample.smpl["shape"], sample.smpl["trans"],
                                               regressor=self.h36m_regressor)
        return fit_error_mm(joints[0], sample.joints_cam)

    def item(self, index, return_geometry=False):
        """Item `index` of the current epoch; with return_geometry also the crop's SampleGeometry (tests, plots).
        A missing image is a FileNotFoundError naming the file."""
        rng = self.rng(index)
        sample, img = self.sample_and_image(index, ANNOTATION_FILE)
        fit = None
        if sample.smpl is not None:
            fit = SMPLFit(pose=sample.smpl["pose"], shape=sample.smpl["shape"], trans=sample.smpl["trans"],
                          focal=sample.focal, princpt=sample.princpt,
                          check=self.fit_valid(index))
        return self.builder(img, sample.bbox, sample.joints_img, np.ones(len(MUCO21)), MUCO21, rng, self.augment,
                            joints_cam=sample.joints_cam / 1000.0, smpl_fit=fit, bbox_scale=sample.bbox_scale,
                            near_joints=sample.near_joints, return_geometry=return_geometry)
