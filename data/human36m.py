"""Human3.6M training set (spec 5.3): studio videos of single actors, with 3D joints and SMPL fits.

Expected layout under `data_dir` (normally `data/`), the I2L-MeshNet / 3DCrowdNet release of Human3.6M:
    Human36M/annotations/Human36M_subject{S}_data.json        COCO-style. images: id, file_name, width, height,
                                                              subject, action_idx, subaction_idx, frame_idx, cam_idx;
                                                              annotations: id, image_id, bbox [x, y, w, h] (tight,
                                                              image pixels)
    Human36M/annotations/Human36M_subject{S}_camera.json      {str(cam_idx): {R 3x3, t 3 (mm), f [fx, fy], c [cx, cy]}}
                                                              with camera = R @ world + t
    Human36M/annotations/Human36M_subject{S}_joint_3d.json    {str(action): {str(subaction): {str(frame): 17 x 3}}}
                                                              world frame, millimetres,
                                                              common.body.joint_sets.H36M17 order
    Human36M/annotations/Human36M_subject{S}_smpl_param.json  {str(action): {str(subaction): {str(frame): {pose 72,
                                                              shape 10, trans 3 (world frame, metres)[, ...]}}}}
    Human36M/images/<file_name>

Samples: subjects 1, 5, 6, 7, 8 (the training protocol), every 5th frame (frame_idx % 5 == 0), all cameras; one
person per image. The 2D joints are the 3D joints projected with the image's camera (Human3.6M annotates no 2D
joints); all 17 joints are valid. A frame without an SMPL fit gives a sample without fit targets (is_valid_fit 0).

The fits are expressed in the world frame; `fit_to_camera` moves them into each camera (derivation there). A fit
is valid if its H36M-regressed joints, translation-aligned, lie within 25 mm of the ground truth on average.

Reproducibility and missing images: as data.muco (np.random.default_rng([seed, crc32('Human36M'), epoch, index]);
set_epoch before each epoch; a missing image is skipped with a counted warning, an error past a threshold).
"""
import os
import zlib
from dataclasses import dataclass

import cv2
import numpy as np

from common.body.joint_sets import H36M17
from common.errors import InputError
from data.muco import _array, fit_check_regressor
from data.preprocessing import draw_bbox_scale, process_bbox
from data.train_sample import (
    SMPL30_ROOT,
    ImageSample,
    SMPLFit,
    TrainingImages,
    TrainingSet,
    TrainSampleBuilder,
    read_json,
)

TRAIN_SUBJECTS = (1, 5, 6, 7, 8)
SAMPLING_RATIO = 5  # every 5th frame
FILE_KINDS = ("data", "camera", "joint_3d", "smpl_param")
SOURCE = ("the Human3.6M annotations of the I2L-MeshNet / 3DCrowdNet data release "
          "(https://github.com/mks0601/I2L-MeshNet_RELEASE, https://github.com/hongsukchoi/3DCrowdNet_RELEASE); the "
          "images come from the Human3.6M site (http://vision.imar.ro/human3.6m/) or the same release")
_SEED_SALT = zlib.crc32(b"Human36M")


@dataclass(frozen=True)
class H36MCamera:
    rotation: np.ndarray  # (3, 3) world -> camera
    translation_mm: np.ndarray  # (3,) millimetres
    focal: np.ndarray  # (2,) image pixels
    princpt: np.ndarray  # (2,) image pixels


@dataclass
class H36MSample(ImageSample):
    subject: int
    joints_img: np.ndarray  # (17, 2) image pixels, H36M17 order (projection of joints_cam)
    joints_cam: np.ndarray  # (17, 3) camera frame, millimetres
    camera: H36MCamera
    smpl: dict | None  # world-frame fit {'pose' (72,), 'shape' (10,), 'trans' (3,) metres} or None
    bbox_scale: float | None  # fixed crop enlargement (update_bbox False) or None (drawn per item)


def annotation_path(root, subject, kind):
    """<root>/annotations/Human36M_subject{subject}_{kind}.json (root = data/Human36M)."""
    return os.path.join(root, "annotations", f"Human36M_subject{subject}_{kind}.json")


def _load_json(path):
    return read_json(path, "Human3.6M annotation file", f"data/Human36M/annotations/{os.path.basename(path)}", SOURCE)


def fit_to_camera(pose, trans, rotation, translation, rest_root):
    """Express a world-frame SMPL fit in a camera frame where camera = rotation @ world + translation.

    SMPL turns the posed body about its rest-pose root joint j (the Pelvis of the shaped template, which depends on
    the betas only) and then adds trans:  mesh = R_root (u - j) + j + trans,  u the body posed in the root's frame.
    Hence  rotation @ mesh + translation = (rotation R_root)(u - j) + j + [rotation (trans + j) + translation - j]:
    the same SMPL with root orientation rotation @ R_root and translation rotation @ (trans + j) + translation - j
    gives exactly the camera-frame mesh. (rotation @ trans + translation alone would turn the body about the SMPL
    origin instead of about j, misplacing the mesh by (rotation - I) j, about 20 cm for a rest root 0.2 m from the
    origin under a 90 degree turn.)

    pose (72,) axis-angle (root first), trans (3,) metres, rotation (3, 3), translation (3,) metres, rest_root (3,)
    metres (the SMPL root joint of the fit's betas at zero pose and zero translation).
    Returns (pose (72,) with the root orientation in the camera frame, trans (3,) metres), float64.
    """
    rotation = np.asarray(rotation, np.float64)
    rest_root = np.asarray(rest_root, np.float64).reshape(3)
    pose = np.array(pose, dtype=np.float64, copy=True).reshape(72)
    root, _ = cv2.Rodrigues(pose[:3])
    pose[:3] = cv2.Rodrigues(rotation @ root)[0][:, 0]
    trans = rotation @ (np.asarray(trans, np.float64).reshape(3) + rest_root) + np.asarray(translation).reshape(3)
    return pose, trans - rest_root


def fit_error_mm(h36m_joints, joints_cam_mm):
    """Mean distance (mm) between a fit's H36M-regressed joints and the Human3.6M ground truth (fit validity).

    h36m_joints (17, 3) metres, camera frame: the H36M regressor applied to the fit's mesh; joints_cam_mm (17, 3)
    H36M17 order, millimetres. All 17 joints are compared after translating each set so that its mean is at the
    origin (as data.muco does for the joints MuCo has).
    """
    fit = np.asarray(h36m_joints, np.float64) * 1000.0
    gt = np.asarray(joints_cam_mm, np.float64)
    return float(np.linalg.norm((fit - fit.mean(0)) - (gt - gt.mean(0)), axis=1).mean())


class Human36M(TrainingSet):
    """Human3.6M training samples (module docstring); items as data.train_sample describes (is_3D = 1).

    Arguments as data.muco.MuCo: data_dir (holding Human36M/), body_model, joint_regressor_30 (30, 6890; its rows
    0-23 must be the body model's own J_regressor, as common.body.body_model.joint_regressor_30 builds it: row 0
    gives the rest-pose root fit_to_camera needs), h36m_regressor (17, 6890) for the fit-validity test, input_img_shape,
    output_hm_shape, bbox_3d_size (metres), update_bbox, augment, seed; plus subjects and
    sampling_ratio (the training protocol by default).
    """

    def __init__(self, data_dir, body_model, joint_regressor_30, h36m_regressor, input_img_shape=(256, 256),
                 output_hm_shape=(64, 64, 64), bbox_3d_size=2.0, update_bbox=True, augment=True, seed=0,
                 subjects=TRAIN_SUBJECTS, sampling_ratio=SAMPLING_RATIO, occlusion_prob=0.0,
                 occlusion_failures=False):
        self.root = os.path.join(os.fspath(data_dir), "Human36M")
        self.h36m_regressor = fit_check_regressor(h36m_regressor)
        self.builder = TrainSampleBuilder(body_model, joint_regressor_30, input_img_shape, output_hm_shape,
                                          bbox_3d_size, occlusion_prob=occlusion_prob,
                                          occlusion_failures=occlusion_failures)
        self.subjects = tuple(int(s) for s in subjects)
        self.sampling_ratio = int(sampling_ratio)
        self.update_bbox = bool(update_bbox)
        self.augment = bool(augment)
        self.seed = int(seed)
        self.seed_salt = _SEED_SALT
        self.num_unusable_boxes = 0
        self._fit_valid = {}  # sample index -> fit validity (fit_valid)
        self.samples = []
        rng = np.random.default_rng([self.seed, self.seed_salt])  # only for the fixed boxes of update_bbox=False
        for subject in self.subjects:
            self.samples.extend(self._load_subject(subject, rng))
        if not self.samples:
            raise InputError(f"{self.root}: no usable Human3.6M sample for subjects {self.subjects}")
        self.images = TrainingImages("Human3.6M",
                                     where=f"{self.root}/images/<file_name> as listed in the "
                                           f"Human36M_subject*_data.json files",
                                     source=SOURCE)

    def _load_subject(self, subject, rng):
        paths = {kind: annotation_path(self.root, subject, kind) for kind in FILE_KINDS}
        files = {kind: _load_json(path) for kind, path in paths.items()}
        db, data_path = files["data"], paths["data"]
        images = {img["id"]: img for img in db["images"]}
        cameras = {}
        samples = []
        for ann in db["annotations"]:
            ann_id = ann.get("id")
            img = images.get(ann.get("image_id"))
            if img is None:
                raise InputError(f"{data_path}: annotation {ann_id} refers to image {ann.get('image_id')}, which is "
                                 f"not in the file's 'images'")
            if int(img["frame_idx"]) % self.sampling_ratio != 0:
                continue
            keys = [str(img[k]) for k in ("action_idx", "subaction_idx", "frame_idx")]
            cam_key = str(img["cam_idx"])
            if cam_key not in cameras:
                cameras[cam_key] = self._camera(files["camera"], cam_key, ann_id, paths["camera"])
            camera = cameras[cam_key]
            where = f"action {keys[0]}, subaction {keys[1]}, frame {keys[2]}"
            joints_world = _lookup(files["joint_3d"], keys)
            if joints_world is None:
                raise InputError(f"{paths['joint_3d']}: annotation {ann_id}: no joints for {where}")
            joints_world = _array(joints_world, (len(H36M17), 3), f"joint_3d of {where}", ann_id, paths["joint_3d"])
            joints_cam = joints_world @ camera.rotation.T + camera.translation_mm
            if np.any(joints_cam[:, 2] <= 0):
                raise InputError(f"{paths['joint_3d']}: annotation {ann_id}: joints behind camera {cam_key} (check "
                                 f"that {os.path.basename(paths['camera'])} belongs to subject {subject})")
            joints_img = joints_cam[:, :2] / joints_cam[:, 2:] * camera.focal + camera.princpt
            bbox = _array(ann.get("bbox"), (4,), "bbox", ann_id, data_path)
            width, height = int(img["width"]), int(img["height"])
            # Dropped like the official loader's training-mode process_bbox: no area, or nothing left in the image.
            if process_bbox(bbox, width, height, scale=None, rng=np.random.default_rng(0)) is None:
                self.num_unusable_boxes += 1
                continue
            smpl = _lookup(files["smpl_param"], keys)
            if smpl is not None:
                smpl = {key: _array(smpl.get(key), (size,), f"smpl_param '{key}'", ann_id, paths["smpl_param"])
                        for key, size in (("pose", 72), ("shape", 10), ("trans", 3))}
            samples.append(H36MSample(
                ann_id=int(ann_id), image_id=int(img["id"]), subject=int(img.get("subject", subject)),
                img_path=os.path.join(self.root, "images", img["file_name"]), img_width=width, img_height=height,
                bbox=bbox.astype(np.float32), joints_img=joints_img, joints_cam=joints_cam, camera=camera, smpl=smpl,
                bbox_scale=None if self.update_bbox else draw_bbox_scale(rng)))
        return samples

    @staticmethod
    def _camera(cameras, cam_key, ann_id, path):
        entry = cameras.get(cam_key)
        if entry is None:
            raise InputError(f"{path}: annotation {ann_id} uses camera {cam_key}, which the file does not have "
                             f"(cameras: {', '.join(sorted(cameras))})")
        what = f"camera {cam_key}"
        rotation = _array(entry.get("R"), (3, 3), f"{what} R", ann_id, path)
        if not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-4):
            raise InputError(f"{path}: annotation {ann_id}: {what} R is not a rotation matrix")
        return H36MCamera(rotation=rotation, translation_mm=_array(entry.get("t"), (3,), f"{what} t", ann_id, path),
                          focal=_array(entry.get("f"), (2,), f"{what} f", ann_id, path),
                          princpt=_array(entry.get("c"), (2,), f"{what} c", ann_id, path))

    def _fit_in_camera(self, index):
        """(pose (72,), shape (10,), trans (3,) metres) of sample `index`'s fit in its camera frame (fit_to_camera), or
        None if the frame has no fit. The rest-pose root that fit_to_camera needs comes from the fit's original
        betas, like the mesh (spec 7.23)."""
        sample = self.samples[index]
        if sample.smpl is None:
            return None
        shape = sample.smpl["shape"]
        rest_joints = self.builder.regressed_joints(np.zeros((1, 72)), shape, np.zeros(3))
        pose, trans = fit_to_camera(sample.smpl["pose"], sample.smpl["trans"], sample.camera.rotation,
                                    sample.camera.translation_mm / 1000.0, rest_joints[0, SMPL30_ROOT])
        return pose, shape, trans

    def camera_fit(self, index):
        """SMPLFit of sample `index` in its camera frame; None if the frame has no fit. The builder resets only the
        shape target."""
        fit = self._fit_in_camera(index)
        if fit is None:
            return None
        pose, shape, trans = fit
        camera = self.samples[index].camera
        return SMPLFit(pose=pose, shape=shape, trans=trans, focal=camera.focal, princpt=camera.princpt,
                       check=self.fit_valid(index))

    def fit_error_mm(self, index):
        """The fit-validity error (mm, see fit_error_mm) of sample `index`, or None if it has no SMPL fit."""
        fit = self._fit_in_camera(index)
        if fit is None:
            return None
        pose, shape, trans = fit
        joints = self.builder.regressed_joints(pose[None], shape, trans, regressor=self.h36m_regressor)
        return fit_error_mm(joints[0], self.samples[index].joints_cam)

    def item(self, index, return_geometry=False, aug=None):
        """Item `index` of the current epoch; with return_geometry also the crop's SampleGeometry; `aug` (an
        AugConfig) replaces the drawn augmentation (tests, visualisation). A missing image is a FileNotFoundError naming
        the file."""
        rng = self.rng(index)
        sample, img = self.sample_and_image(index, f"Human36M_subject{self.samples[index].subject}_data.json")
        return self.builder(img, sample.bbox, sample.joints_img, np.ones(len(H36M17)), H36M17, rng, self.augment,
                            joints_cam=sample.joints_cam / 1000.0, smpl_fit=self.camera_fit(index),
                            bbox_scale=sample.bbox_scale, aug=aug, return_geometry=return_geometry)


def _lookup(nested, keys):
    """nested[k0][k1][k2] or None when any level is missing."""
    for key in keys:
        if not isinstance(nested, dict) or key not in nested:
            return None
        nested = nested[key]
    return nested
