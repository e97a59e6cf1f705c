"""Synthetic occluded-people data, written in the real on-disk formats so the real loaders read it.

`generate(out_dir, ...)` writes a data directory (point the config's data paths there):

    <out>/body_models/smpl/SMPL_{NEUTRAL,MALE,FEMALE}.pkl   the mannequin (common.mannequin), SMPL file layout
    <out>/body_models/J_regressor_extra.npy, J_regressor_h36m_correct.npy
    <out>/3DPW/imageFiles/<sequence>/image_<n>.jpg        test and crowd images
    <out>/3DPW/3DPW_latest_test.json                      'test' split: every annotated test person (3dpw)
    <out>/3DPW/3DPW_oc.json, 3DPW_pc.json                 its people occluded by objects / by other people
    <out>/3DPW/3DPW_latest_validation.json                'crowd' split (sequences courtyard_{hug,dancing}_00_synth)
    <out>/3DPW/3DPW_validation_crowd_hhrnet_result.json   detector-like COCO-17 poses of the crowd people
    <out>/MuCo/MuCo-3DHP.json, smpl_param.json, images/   'train' split in the MuCo-3DHP format (spec 5.3)
    <out>/manifest.json                                   seed, sizes, generator version, counts, complete flag

Scenes (one image each): a pinhole camera 1.0-1.8 m above a flat floor, pitched slightly down; a procedural
background (textured floor and back wall or facade and sky, random shapes, smooth illumination, blob shadows);
1-4 people (3-4 in the crowd split) with random shapes, genders (neutral in the training split, whose loader uses
the neutral model) and plausible poses (per-joint anatomical limits, five pose families), standing on the floor at
3-10 m, often overlapping; 0-2 textured box / cylinder / panel occluders standing between the camera and a
person. Everything is rendered with the z-buffer renderer (common.renderer), so occlusion is real.

Who is annotated: in the 3DPW-style splits every person whose occlusion ratio is at most 0.85 (train: 0.7) and who
has enough visible joints; the others stay in the image as unannotated bystanders, as in real footage. The MuCo
loader keeps only the person closest to the camera, who is rarely occluded; so the training split annotates one
person per image, drawn among the annotatable ones, which gives occluded training samples too.

Per person: SMPL parameters in the camera frame (x right, y down, z forward, metres), the tight amodal box, the
z-buffer visibility of the 30 joints, occlusion ratios (hidden share of the amodal silhouette, split into hidden
by objects and by other people) and detector-like 2D poses (OpenPose-18 for 3DPW, COCO-17 for the crowd
HigherHRNet file): projected joints plus Gaussian noise scaled with the person's height; occluded joints dropped
or kept with low confidence and more noise; an occasional left/right swap; joints outside the image dropped.
With `detector_failures` (off by default), the test and crowd input poses also fail on hidden joints the way
detectors do under occlusion (occlusion_failures: reported on the occluding person's joint or on the occluding
object, missed, or the limb's left and right swapped; rates FAILURE_*); the training split has no input poses (its
loader synthesises them from the ground truth), so only the evaluation changes.
Extra fields (`synthetic` in each annotation) keep the noise-free OpenPose joints, the noise scale, swaps, failures
and occlusion numbers; the real loaders ignore them.

Determinism: image i of split s draws everything from np.random.default_rng([seed, s, i]), so changing a split's
size keeps the earlier images. The same seed gives byte-identical files (geometry in numpy float64; JPEGs from the
same OpenCV build).
"""
import colorsys
import concurrent.futures
import contextlib
import dataclasses
import functools
import json
import multiprocessing
import os
import pathlib
import shutil
import tempfile
import time
import warnings

import cv2
import numpy as np
import scipy.sparse
from scipy.spatial.transform import Rotation

from common.body_model import joint_regressor_30, load_smpl
from common.joint_sets import COCO17, H36M17, MUCO21, OPENPOSE18, SMPL30, flip_pairs
from common.mannequin import write_mannequin
from common.renderer import render

GENERATOR_NAME = "jotr-synthetic"
GENERATOR_VERSION = 1
MANIFEST_FILE = "manifest.json"
DEFAULT_IMAGE_SIZE = (240, 320)  # (H, W) pixels

# Subset rules (3DPW-OC / 3DPW-PC analogues): share of a person's amodal silhouette hidden by objects / people.
OC_MIN_OBJECT_OCCLUSION = 0.1
PC_MIN_PERSON_OCCLUSION = 0.1
OCCLUSION_LEVELS = ((0.0, 0.1), (0.1, 0.3), (0.3, 0.5), (0.5, 1.01))  # manifest counts per level
# A joint counts as occluded when another surface lies in front of it by more than this (metres).
VISIBILITY_MARGIN = 0.05
CROWD_SEQUENCES = ("courtyard_hug_00_synth", "courtyard_dancing_00_synth")  # data.pw3d.CROWD_SEQUENCES + suffix
TEST_SEQUENCE_LENGTH = 500  # images per 3DPW-style test sequence
CROWD_IMAGE_ID_OFFSET = 10_000_000
PERSON_HEIGHT = 1.7  # metres, only to choose distances from the wanted pixel height

_OPENPOSE_IN_SMPL30 = [SMPL30.index(n) for n in OPENPOSE18]
_COCO_IN_SMPL30 = [SMPL30.index(n) for n in COCO17]


@dataclasses.dataclass(frozen=True)
class SplitSpec:
    """How the scenes of one split are drawn and which people are annotated."""
    split_id: int  # second entry of the per-image seed
    people: tuple  # (min, max) people per image
    genders: tuple  # body models people are drawn from
    occluder_probs: tuple  # probabilities of 0, 1, 2 object occluders
    overlap_prob: float  # chance that a person is placed to overlap another one in the image
    max_occlusion: float  # annotated people: occlusion ratio at most this
    min_visible_joints: int  # annotated people: at least this many visible OpenPose joints inside the image


SPLITS = {
    "train": SplitSpec(0, (1, 4), ("neutral",), (0.4, 0.4, 0.2), 0.5, 0.7, 6),
    "test": SplitSpec(1, (1, 4), ("male", "female"), (0.3, 0.45, 0.25), 0.55, 0.85, 4),
    "crowd": SplitSpec(2, (3, 4), ("male", "female"), (0.5, 0.35, 0.15), 0.8, 0.85, 4),
}


# ----------------------------------------------------------------------------------------------------------------------
# Poses: per-joint anatomical limits and pose families
#
# Angles are in degrees, per joint as a scipy extrinsic Euler sequence (rotation = last axis . ... . first axis),
# in SMPL's frame (x to the person's left, y up, z forward). Left and central joints are described; a right joint
# draws with its left twin's semantics and is mirrored (axis-angle (x, y, z) -> (x, -y, -z)).
# Signs: hip flexion (thigh forward) is negative about x, the spine's forward bend and knee flexion positive;
# elbow flexion is negative about y (the left forearm lies along +x in the rest pose); the shoulder's second angle
# (elevation, about z) lowers the arm when negative, its third (swing, about x) then moves the arm forward when
# negative.

_LIMITS = {  # joint: (sequence, ((lo, hi) per angle))
    "Torso": ("yzx", ((-15, 15), (-12, 12), (-15, 35))),  # twist, side bend, forward bend
    "Spine": ("yzx", ((-15, 15), (-12, 12), (-15, 35))),
    "Chest": ("yzx", ((-15, 15), (-12, 12), (-15, 30))),
    "Neck": ("yzx", ((-30, 30), (-15, 15), (-25, 35))),
    "Head": ("yzx", ((-35, 35), (-15, 15), (-30, 30))),
    "L_Hip": ("yzx", ((-35, 35), (-15, 45), (-125, 30))),  # twist, abduction, flexion (forward < 0)
    "L_Knee": ("yxz", ((-10, 10), (0, 145), (0, 0))),  # twist, flexion (bends backwards only)
    "L_Ankle": ("zxy", ((-15, 15), (-35, 35), (-10, 10))),
    "L_Toe": ("xyz", ((-20, 35), (0, 0), (0, 0))),
    "L_Thorax": ("xyz", ((-5, 5), (-15, 15), (-10, 20))),  # collar: protraction (y), shrug (z)
    "L_Shoulder": ("xzx", ((-50, 50), (-85, 75), (-160, 45))),  # twist, elevation, swing (forward < 0)
    "L_Elbow": ("xyz", ((-30, 60), (-150, 0), (0, 0))),  # forearm twist, flexion (one way only)
    "L_Wrist": ("xyz", ((-25, 25), (-40, 40), (-30, 30))),
    "L_Hand": ("xyz", ((-10, 10), (-15, 15), (-15, 15))),
}
_DEFAULTS = {  # joint: (mean, std) of the standing pose, in the joint's angle order
    "Torso": ((0, 0, 3), (5, 3, 5)), "Spine": ((0, 0, 2), (5, 3, 5)), "Chest": ((0, 0, 0), (5, 3, 4)),
    "Neck": ((0, 0, 0), (10, 5, 8)), "Head": ((0, 0, 0), (12, 5, 8)),
    "L_Hip": ((0, 4, -4), (8, 4, 8)), "L_Knee": ((0, 8, 0), (3, 7, 0)), "L_Ankle": ((0, 0, 0), (4, 6, 2)),
    "L_Toe": ((0, 0, 0), (8, 0, 0)), "L_Thorax": ((0, 0, 0), (2, 4, 4)),
    "L_Shoulder": ((0, -72, 5), (15, 8, 12)), "L_Elbow": ((10, -20, 0), (12, 15, 0)),
    "L_Wrist": ((0, 0, 0), (10, 12, 10)), "L_Hand": ((0, 0, 0), (4, 5, 5)),
}
POSE_FAMILIES = ("standing", "walking", "reaching", "crouching", "sitting")
_FAMILY_PROBS = (0.3, 0.3, 0.15, 0.1, 0.15)


def _left_name(name):
    return "L_" + name[2:] if name.startswith("R_") else name


def _family_means(rng, family):
    """{joint name (L_/R_ explicit): (mean, std)} overriding _DEFAULTS for one pose family."""
    out = {}
    if family == "walking":
        amplitude, phase = rng.uniform(15, 32), rng.uniform(0, 2 * np.pi)
        for side, sign in (("L_", 1.0), ("R_", -1.0)):
            forward = sign * np.sin(phase)  # +1: this leg is forward
            out[side + "Hip"] = ((0, 4, -amplitude * forward), (6, 3, 5))
            out[side + "Knee"] = ((0, 10 + 22 * (1 - forward), 0), (3, 8, 0))
            out[side + "Shoulder"] = ((0, -75, 0.8 * amplitude * forward), (10, 6, 8))  # arms swing opposite
            out[side + "Elbow"] = ((10, -rng.uniform(10, 40), 0), (10, 8, 0))
    elif family == "reaching":
        sides = (("L_",), ("R_",), ("L_", "R_"))[rng.integers(3)]
        for side in sides:
            out[side + "Shoulder"] = ((0, rng.uniform(-40, 50), rng.uniform(-130, -40)), (10, 8, 10))
            out[side + "Elbow"] = ((0, rng.uniform(-60, -5), 0), (10, 10, 0))
        bend = rng.uniform(0, 25)
        out["Torso"] = ((rng.uniform(-10, 10), 0, bend / 2), (4, 3, 4))
        out["Spine"] = ((0, 0, bend / 2), (4, 3, 4))
    elif family == "crouching":
        hip, knee = rng.uniform(-120, -75), rng.uniform(85, 140)
        for side in ("L_", "R_"):
            out[side + "Hip"] = ((0, rng.uniform(8, 25), hip), (6, 4, 6))
            out[side + "Knee"] = ((0, knee, 0), (3, 8, 0))
            out[side + "Shoulder"] = ((0, -60, rng.uniform(-80, -30)), (10, 8, 10))
            out[side + "Elbow"] = ((0, rng.uniform(-90, -20), 0), (10, 10, 0))
        out["Torso"] = ((0, 0, rng.uniform(10, 25)), (4, 3, 4))
        out["Spine"] = ((0, 0, rng.uniform(5, 20)), (4, 3, 4))
    elif family == "sitting":
        for side in ("L_", "R_"):
            out[side + "Hip"] = ((0, rng.uniform(0, 15), -88), (6, 3, 5))
            out[side + "Knee"] = ((0, 88, 0), (3, 7, 0))
            out[side + "Shoulder"] = ((0, -70, rng.uniform(-45, -15)), (10, 6, 8))
            out[side + "Elbow"] = ((0, rng.uniform(-90, -50), 0), (10, 10, 0))
        out["Torso"] = ((0, 0, rng.uniform(-5, 10)), (4, 3, 4))
    elif family != "standing":
        raise ValueError(f"unknown pose family {family!r}; expected one of {POSE_FAMILIES}")
    return out


def sample_body_pose(rng, family):
    """(69,) SMPL body pose (axis-angle, joints 1-23) of `family` (one of POSE_FAMILIES), within _LIMITS."""
    means = _family_means(rng, family)
    angles = {}
    pose = np.zeros((23, 3))
    for j, name in enumerate(SMPL30[1:24]):
        left = _left_name(name)
        sequence, limits = _LIMITS[left]
        mean, std = means.get(name, _DEFAULTS[left])
        mean = np.array(mean, float)
        if left == "L_Ankle" and name not in means:
            # Keeps the foot roughly flat: the ankle undoes most of the hip and knee flexion.
            side = name[:2]
            mean[1] = -0.8 * (angles[side + "Hip"][2] + angles[side + "Knee"][1])
        lo, hi = np.array(limits, float).T
        value = np.clip(mean + np.array(std, float) * rng.standard_normal(3), lo, hi)
        angles[name] = value
        rotvec = Rotation.from_euler(sequence, value, degrees=True).as_rotvec()
        pose[j] = rotvec * np.array([1.0, -1.0, -1.0]) if name.startswith("R_") else rotvec
    return pose.reshape(-1)


def sample_betas(rng):
    """(10,) shape: N(0, 0.8) clipped to +-2.5 (common.mannequin.SHAPE_DIRECTIONS give their meaning)."""
    return np.clip(rng.normal(0.0, 0.8, 10), -2.5, 2.5)


# ----------------------------------------------------------------------------------------------------------------------
# Camera and world
#
# The "world" frame here is the camera's levelled frame: origin at the camera centre, x right, y down (gravity),
# z forward and horizontal; the floor is the plane y = camera height. Camera frame = rotation of it about x.


@dataclasses.dataclass
class Camera:
    """Pinhole camera: focal (fx = fy) and princpt (cx, cy) in pixels; height above the floor (metres); pitch
    (radians, > 0 looks down); size (H, W) pixels."""
    focal: float
    princpt: np.ndarray
    height: float
    pitch: float
    size: tuple

    @property
    def world_to_camera(self):
        """(3, 3) R with X_camera = R X_world."""
        c, s = np.cos(self.pitch), np.sin(self.pitch)
        return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])

    def project(self, points):
        """Camera-frame points (..., 3) -> pixels (..., 2)."""
        return points[..., :2] / points[..., 2:] * self.focal + self.princpt


def sample_camera(rng, image_size):
    """A Camera for an image of `image_size` (H, W): focal 1.1-1.6 x W, principal point near the centre."""
    height, width = image_size
    focal = width * rng.uniform(1.1, 1.6)
    princpt = np.array([(width - 1) / 2, (height - 1) / 2]) + rng.uniform(-0.02, 0.02, 2) * np.array([width, height])
    cam_height = rng.uniform(1.0, 1.8)
    # Aim roughly at the middle of a person ~6 m away.
    pitch = np.arctan2(cam_height - 0.9, 6.0) + np.deg2rad(rng.normal(0.0, 2.0))
    # Rounded as stored in the annotation files, so that the stored camera is the one used.
    return Camera(round(float(focal), 6), np.round(princpt, 6), float(cam_height), float(pitch),
                  (int(height), int(width)))


def _rot_y(angle):
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def global_orient(camera, yaw, tilt):
    """(3,) SMPL root axis-angle for a person standing upright in `camera`'s world, turned by `yaw` (radians,
    about the vertical) and leaning by `tilt` (3,) small axis-angle in SMPL's frame."""
    smpl_to_world = np.diag([1.0, -1.0, -1.0])  # 180 degrees about x: SMPL's y-up frame -> y down, z forward
    rotation = camera.world_to_camera @ smpl_to_world @ _rot_y(yaw) @ Rotation.from_rotvec(tilt).as_matrix()
    return Rotation.from_matrix(rotation).as_rotvec()


# ----------------------------------------------------------------------------------------------------------------------
# Bodies


# Surface regions for clothing, from each vertex's dominant skinning joint.
REGIONS = ("face", "hair", "hands", "forearms", "upper_arms", "torso", "hips_thighs", "shins", "feet")
_REGION_OF_JOINT = {
    "Head": "face", "Neck": "face", "Pelvis": "hips_thighs", "Torso": "torso", "Spine": "torso", "Chest": "torso",
    "L_Thorax": "torso", "R_Thorax": "torso", "L_Hip": "hips_thighs", "R_Hip": "hips_thighs", "L_Knee": "shins",
    "R_Knee": "shins", "L_Ankle": "feet", "R_Ankle": "feet", "L_Toe": "feet", "R_Toe": "feet",
    "L_Shoulder": "upper_arms", "R_Shoulder": "upper_arms", "L_Elbow": "forearms", "R_Elbow": "forearms",
    "L_Wrist": "hands", "R_Wrist": "hands", "L_Hand": "hands", "R_Hand": "hands",
}


class Bodies:
    """The body models of a generator run, read from SMPL files through the project's loader (common.body_model).

    layers: {gender: SMPLLayer}; j30: {gender: (30, 6890) J30 regressor}; h36m: (17, 6890); face_regions:
    {gender: (13776,) index into REGIONS}."""

    def __init__(self, smpl_dir, j_regressor_extra, h36m_regressor, genders=("neutral", "male", "female")):
        self.layers, self.j30, self.face_regions, self._models = {}, {}, {}, {}
        self.h36m = np.asarray(h36m_regressor, np.float64)
        for gender in genders:
            layer = load_smpl(smpl_dir, gender)
            self.layers[gender] = layer
            self.j30[gender] = joint_regressor_30(layer.arrays["J_regressor"], j_regressor_extra).astype(np.float64)
            self.face_regions[gender] = self._regions(layer)

    @staticmethod
    def _regions(layer):
        weights = np.asarray(layer.arrays["weights"])
        template = np.asarray(layer.arrays["v_template"], np.float64)
        vertex = np.array([REGIONS.index(_REGION_OF_JOINT[SMPL30[j]]) for j in weights.argmax(1)])
        head = np.asarray(layer.arrays["J_regressor"], np.float64)[SMPL30.index("Head")] @ template
        # Hair: the top and back of the head.
        hair = (vertex == REGIONS.index("face")) & (
            (template[:, 1] > head[1] + 0.07) | ((template[:, 2] < head[2] - 0.01) & (template[:, 1] > head[1] - 0.03)))
        vertex[hair] = REGIONS.index("hair")
        return vertex[layer.faces[:, 0]]

    def forward(self, gender, poses, betas):
        """Vertices (N, 6890, 3) float64 metres (transl 0) and J30 joints (N, 30, 3) for poses (N, 72), betas (N, 10).

        The SMPL function (shape blend, pose blend, linear blend skinning about the rest joints) evaluated in numpy
        float64 on the loaded model's arrays: for a handful of bodies faster than the torch layer, and reproducible
        bit for bit. tests/test_synthetic.py checks it against common.body_model.SMPLLayer.
        No product here goes through a multi-threaded BLAS: for these sizes its threads cost far more CPU than
        they save (einsum loops and sparse products instead)."""
        model = self._model(gender)
        poses, betas = np.asarray(poses, np.float64), np.asarray(betas, np.float64)
        n, n_verts, n_joints = len(poses), len(model["v_template"]), len(model["parents"])
        v_shaped = model["v_template"] + np.einsum("kvc,nk->nvc", model["shapedirs"][:betas.shape[1]], betas)
        rest_joints = _sparse_apply(model["J_regressor"], v_shaped)  # (N, 24, 3)
        rotations = Rotation.from_rotvec(poses.reshape(-1, 3)).as_matrix().reshape(n, n_joints, 3, 3)
        if model["posedirs"] is not None:
            features = (rotations[:, 1:] - np.eye(3)).reshape(n, -1)
            v_shaped = v_shaped + np.einsum("pvc,np->nvc", model["posedirs"], features)
        world = np.zeros((n, n_joints, 4, 4))
        world[:, :, 3, 3] = 1
        world[:, 0, :3, :3], world[:, 0, :3, 3] = rotations[:, 0], rest_joints[:, 0]
        for j in range(1, n_joints):
            parent = model["parents"][j]
            local = np.zeros((n, 4, 4))
            local[:, :3, :3], local[:, 3, 3] = rotations[:, j], 1
            local[:, :3, 3] = rest_joints[:, j] - rest_joints[:, parent]
            world[:, j] = world[:, parent] @ local
        # Skinning transforms relative to the rest pose: x -> R (x - J_rest) + t, blended per vertex.
        world[:, :, :3, 3] -= np.einsum("njab,njb->nja", world[:, :, :3, :3], rest_joints)
        blended = _sparse_apply(model["weights"], world[:, :, :3, :].reshape(n, n_joints, 12)).reshape(n, n_verts, 3, 4)
        verts = blended[..., 3] + sum(blended[..., k] * v_shaped[..., k:k + 1] for k in range(3))
        return verts, _sparse_apply(model["J30"], verts)

    def _model(self, gender):
        """The model arrays as float64 in the layouts forward() uses (cached); the regressors and skinning weights
        as sparse matrices (each row mixes a few vertices / joints)."""
        if gender not in self._models:
            arrays = self.layers[gender].arrays
            posedirs = np.asarray(arrays["posedirs"], np.float64)
            self._models[gender] = {
                "v_template": np.asarray(arrays["v_template"], np.float64),
                "shapedirs": np.ascontiguousarray(np.asarray(arrays["shapedirs"], np.float64).transpose(2, 0, 1)),
                "posedirs": np.ascontiguousarray(posedirs.transpose(2, 0, 1)) if np.any(posedirs) else None,
                "J_regressor": scipy.sparse.csr_matrix(np.asarray(arrays["J_regressor"], np.float64)),
                "J30": scipy.sparse.csr_matrix(self.j30[gender]),
                "weights": scipy.sparse.csr_matrix(np.asarray(arrays["weights"], np.float64)),
                "parents": np.asarray(arrays["kintree_table"])[0].astype(np.int64),
            }
        return self._models[gender]


def _sparse_apply(matrix, values):
    """Sparse (R, K) matrix applied to each of N stacked (K, C) arrays: (N, K, C) -> (N, R, C), in one product."""
    n, k, c = values.shape
    out = matrix @ values.transpose(1, 0, 2).reshape(k, n * c)
    return np.ascontiguousarray(out.reshape(-1, n, c).transpose(1, 0, 2))


def muco_joints(vertices, j30, h36m):
    """(21, 3) MUCO21 joints from vertices (V, 3): the H36M-regressed joint for names Human3.6M has (so that the
    MuCo loader's fit check, which uses the H36M regressor, finds the fit exact), the J30 joint for the other SMPL30
    names, and the mean of the two collars (J30 L_Thorax, R_Thorax) for Thorax. Same unit as `vertices`."""
    joints30, joints_h36m = j30 @ vertices, h36m @ vertices
    out = np.zeros((len(MUCO21), 3))
    for i, name in enumerate(MUCO21):
        if name in H36M17:
            out[i] = joints_h36m[H36M17.index(name)]
        elif name in SMPL30:
            out[i] = joints30[SMPL30.index(name)]
        else:
            out[i] = (joints30[SMPL30.index("L_Thorax")] + joints30[SMPL30.index("R_Thorax")]) / 2
    return out


@dataclasses.dataclass
class Person:
    """One person of a scene: parameters, posed geometry, appearance, and (after rendering) image-space labels."""
    gender: str
    family: str
    pose: np.ndarray  # (72,) axis-angle, camera frame root
    betas: np.ndarray  # (10,)
    trans: np.ndarray  # (3,) metres, camera frame
    vertices: np.ndarray  # (6890, 3) camera frame metres
    joints: np.ndarray  # (30, 3) J30, camera frame metres
    ground: np.ndarray  # (2,) world x, z of the pelvis on the floor
    radius: float  # horizontal reach from the pelvis, metres
    colours: dict = None  # region -> RGB in [0, 1]
    stripes: float = 0.0  # shirt stripe period (metres), 0 = plain
    # Filled after rendering:
    joints_img: np.ndarray = None  # (30, 2) pixels
    in_image: np.ndarray = None  # (30,) bool
    visible: np.ndarray = None  # (30,) bool: inside the image and not hidden by another surface
    hidden_by: np.ndarray = None  # (30,) int: the scene layer in front of a hidden joint (render_scene), else -1
    bbox: np.ndarray = None  # (4,) amodal tight box xywh, clipped to the image
    amodal_area: int = 0
    occlusion: float = 0.0  # 1 - visible / amodal pixels
    object_occlusion: float = 0.0  # share of the amodal pixels hidden by objects
    person_occlusion: float = 0.0  # share hidden by other people
    annotated: bool = False


@dataclasses.dataclass
class Occluder:
    """A textured object standing in the scene (a stool under a sitting person is one too)."""
    kind: str  # 'box', 'cylinder', 'panel', 'seat'
    vertices: np.ndarray  # (V, 3) camera frame
    faces: np.ndarray  # (F, 3)
    centre: np.ndarray  # (3,) world frame
    yaw: float
    colour: np.ndarray  # (3,) RGB [0, 1]
    texture: np.ndarray  # (64, 64) pattern in [0, 1]
    texture_scale: float  # metres per texture tile


# ----------------------------------------------------------------------------------------------------------------------
# Procedural textures and colours

TILE = 64


def _periodic_noise(rng, falloff=1.6, size=TILE):
    """(size, size) tileable noise in [0, 1] (random spectrum with 1/f^falloff amplitude)."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    amplitude = 1.0 / np.maximum(np.hypot(fx, fy), 1.0 / size) ** falloff
    spectrum = amplitude * (rng.standard_normal(amplitude.shape) + 1j * rng.standard_normal(amplitude.shape))
    spectrum[0, 0] = 0
    noise = np.fft.irfft2(spectrum, s=(size, size))
    return ((noise - noise.min()) / max(np.ptp(noise), 1e-9)).astype(np.float32)


def texture_pattern(rng, kind=None):
    """(64, 64) float32 tileable pattern in [0, 1]: checker, bricks, planks, stripes or noise."""
    kind = kind or ("checker", "bricks", "planks", "stripes", "noise")[rng.integers(5)]
    y, x = np.mgrid[:TILE, :TILE]
    noise = _periodic_noise(rng)
    if kind == "checker":
        cells = int(rng.choice([2, 4]))
        base = (((x * cells) // TILE + (y * cells) // TILE) % 2).astype(np.float32)
        grout = (((x * cells) % TILE) < 2) | (((y * cells) % TILE) < 2)
        pattern = np.where(grout, 0.15, 0.35 + 0.5 * base)
    elif kind == "bricks":
        rows = int(rng.choice([4, 8]))
        row = (y * rows) // TILE
        shifted = (x + (row % 2) * TILE // 4) % TILE
        brick = (row * 7 + (shifted * 2) // TILE * 3) % 5 / 4.0
        mortar = ((y * rows) % TILE < 3) | ((shifted * 2) % TILE < 3)
        pattern = np.where(mortar, 0.9, 0.35 + 0.3 * brick)
    elif kind == "planks":
        planks = int(rng.choice([4, 8]))
        shade = rng.uniform(0.4, 0.9, planks)[(x * planks) // TILE]
        grain = _periodic_noise(rng, falloff=1.0)[:, :1].repeat(TILE, 1) if rng.random() < 0.5 else noise
        pattern = np.where((x * planks) % TILE < 2, 0.1, shade * (0.8 + 0.2 * grain))
    elif kind == "stripes":
        stripes = int(rng.choice([2, 4, 8]))
        pattern = 0.3 + 0.6 * ((((x if rng.random() < 0.5 else y) * stripes * 2) // TILE) % 2)
    elif kind == "noise":
        pattern = noise
    else:
        raise ValueError(f"unknown texture kind {kind!r}")
    return np.clip(0.85 * pattern + 0.15 * noise, 0, 1).astype(np.float32)


def random_colour(rng, saturation=(0.1, 0.8), value=(0.3, 0.95)):
    """(3,) RGB in [0, 1]: uniform hue, saturation and value in the given ranges."""
    return np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(*saturation), rng.uniform(*value)))


_SKIN = np.array([[0.98, 0.84, 0.72], [0.93, 0.74, 0.60], [0.80, 0.60, 0.45], [0.62, 0.43, 0.30],
                  [0.45, 0.30, 0.20], [0.30, 0.20, 0.14]])
_HAIR = np.array([[0.08, 0.06, 0.05], [0.25, 0.15, 0.08], [0.55, 0.40, 0.20], [0.85, 0.75, 0.50],
                  [0.60, 0.60, 0.60]])


def person_colours(rng):
    """Region -> RGB for one person (skin, hair, shirt, trousers, shoes; short sleeves / shorts sometimes), and the
    shirt's stripe period (metres; 0 = plain)."""
    skin = np.clip(_SKIN[rng.integers(len(_SKIN))] * rng.uniform(0.92, 1.08), 0, 1)
    shirt, trousers = random_colour(rng), random_colour(rng, value=(0.15, 0.7))
    colours = {"face": skin, "hands": skin, "hair": _HAIR[rng.integers(len(_HAIR))], "torso": shirt,
               "upper_arms": shirt, "forearms": shirt if rng.random() < 0.6 else skin, "hips_thighs": trousers,
               "shins": trousers if rng.random() < 0.8 else skin, "feet": random_colour(rng, value=(0.05, 0.5))}
    return colours, (rng.uniform(0.04, 0.12) if rng.random() < 0.35 else 0.0)


# ----------------------------------------------------------------------------------------------------------------------
# Scene layout


def _place(person_vertices, person_joints, camera, ground):
    """Translation (3,) camera frame that puts the mesh (transl 0) with its pelvis above `ground` (world x, z) and
    its lowest point on the floor."""
    rotation = camera.world_to_camera
    verts_world = person_vertices @ rotation  # X_world = R^T X_camera, for row vectors
    root = person_joints[0] @ rotation
    shift = np.array([ground[0] - root[0], camera.height - verts_world[:, 1].max(), ground[1] - root[2]])
    return rotation @ shift


def _sample_people(rng, camera, bodies, spec):
    """People standing on the floor, pelvis projecting inside the image, apart from each other."""
    height, width = camera.size
    n_people = int(rng.integers(spec.people[0], spec.people[1] + 1))
    genders = [spec.genders[rng.integers(len(spec.genders))] for _ in range(n_people)]
    families = [POSE_FAMILIES[rng.choice(len(POSE_FAMILIES), p=_FAMILY_PROBS)] for _ in range(n_people)]
    poses = np.zeros((n_people, 72))
    betas = np.round(np.stack([sample_betas(rng) for _ in range(n_people)]), 6)
    for i in range(n_people):
        poses[i, 3:] = sample_body_pose(rng, families[i])
        poses[i, :3] = global_orient(camera, rng.uniform(0, 2 * np.pi), np.deg2rad(rng.normal(0, 3, 3)) * [1, 0, 1])
    poses = np.round(poses, 6)
    verts, joints = np.zeros((n_people, 6890, 3)), np.zeros((n_people, 30, 3))
    for gender in set(genders):
        rows = [i for i, g in enumerate(genders) if g == gender]
        verts[rows], joints[rows] = bodies.forward(gender, poses[rows], betas[rows])

    people = []
    rotation = camera.world_to_camera
    for i in range(n_people):
        verts_world = verts[i] @ rotation
        root_world = joints[i, 0] @ rotation
        radius = float(np.hypot(*(verts_world[:, [0, 2]] - root_world[[0, 2]]).T).max())
        for _ in range(40):
            if people and rng.random() < spec.overlap_prob:
                # Partly in front of or behind someone already placed: person-person occlusion.
                other = people[rng.integers(len(people))]
                z = other.ground[1] + rng.choice([-1, 1]) * rng.uniform(0.9, 2.5)
                z = float(np.clip(z, 3.0, 10.0))
                u_other = camera.focal * other.ground[0] / other.ground[1] + camera.princpt[0]
                width_px = 0.3 * PERSON_HEIGHT * camera.focal / other.ground[1]
                u = u_other + rng.choice([-1, 1]) * rng.uniform(0.2, 1.0) * width_px
            else:
                z = float(np.clip(PERSON_HEIGHT * camera.focal / (rng.uniform(0.3, 0.85) * height), 3.0, 10.0))
                u = rng.uniform(0.1, 0.9) * width
            ground = np.array([(u - camera.princpt[0]) / camera.focal * z, z])
            if any(np.linalg.norm(ground - p.ground) < max(0.6, 0.6 * (radius + p.radius)) for p in people):
                continue
            trans = _place(verts[i], joints[i], camera, ground)
            root_px = camera.project(joints[i, 0] + trans)
            if not (0.02 * width <= root_px[0] <= 0.98 * width and 0.02 * height <= root_px[1] <= 0.98 * height):
                continue
            colours, stripes = person_colours(rng)
            trans = np.round(trans, 6)
            people.append(Person(genders[i], families[i], poses[i], betas[i], trans, verts[i] + trans,
                                 joints[i] + trans, ground, radius, colours, stripes))
            break
    return people


def _box_mesh(half_sizes):
    """Axis-aligned box centred at the origin (8 vertices, 12 triangles)."""
    corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float) * half_sizes
    faces = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                      [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
    return corners, faces


def _cylinder_mesh(radius, half_height, sides=16):
    """Vertical prism around the origin (y axis), closed by two fans."""
    angle = 2 * np.pi * np.arange(sides) / sides
    ring = np.stack([radius * np.cos(angle), np.zeros(sides), radius * np.sin(angle)], 1)
    verts = np.concatenate([ring - [0, half_height, 0], ring + [0, half_height, 0], [[0, -half_height, 0]],
                            [[0, half_height, 0]]])
    k, k1 = np.arange(sides), (np.arange(sides) + 1) % sides
    faces = np.concatenate([np.stack([k, k1, k1 + sides], 1), np.stack([k, k1 + sides, k + sides], 1),
                            np.stack([np.full(sides, 2 * sides), k1, k], 1),
                            np.stack([np.full(sides, 2 * sides + 1), k + sides, k1 + sides], 1)])
    return verts, faces


def _make_occluder(rng, camera, kind, centre, yaw, local_verts, faces):
    verts_world = local_verts @ _rot_y(yaw).T + centre
    return Occluder(kind, verts_world @ camera.world_to_camera.T, faces, centre, float(yaw),
                    random_colour(rng, saturation=(0.05, 0.7), value=(0.25, 0.9)), texture_pattern(rng),
                    float(rng.uniform(0.3, 1.2)))


def _sample_occluders(rng, camera, people, spec):
    """0-2 objects standing on the floor between the camera and a person, not intersecting anyone."""
    occluders = []
    n_objects = int(rng.choice(len(spec.occluder_probs), p=spec.occluder_probs))
    for _ in range(n_objects):
        target = people[rng.integers(len(people))]
        for _ in range(10):
            kind = ("box", "cylinder", "panel")[rng.integers(3)]
            elevation = 0.0
            if kind == "box":
                half = np.array([rng.uniform(0.2, 0.6), rng.uniform(0.2, 0.65), rng.uniform(0.15, 0.4)])
                local, faces = _box_mesh(half)
                footprint = np.hypot(half[0], half[2])
            elif kind == "cylinder":
                pillar = rng.random() < 0.4
                radius = rng.uniform(0.12, 0.3) if pillar else rng.uniform(0.2, 0.4)
                half_height = rng.uniform(1.1, 1.75) if pillar else rng.uniform(0.25, 0.55)
                local, faces = _cylinder_mesh(radius, half_height)
                half = np.array([radius, half_height, radius])
                footprint = radius
            else:
                half = np.array([rng.uniform(0.2, 0.75), rng.uniform(0.3, 0.95), 0.02])
                local, faces = _box_mesh(half)
                footprint = half[0]
                if rng.random() < 0.3:  # a sign board above the floor
                    elevation = rng.uniform(0.5, 1.2)
            z_far = target.ground[1] - 0.5 - footprint
            z_near = max(1.8, 0.4 * target.ground[1])
            if z_far <= z_near:
                break
            z = rng.uniform(z_near, z_far)
            u_target = camera.focal * target.ground[0] / target.ground[1] + camera.princpt[0]
            width_px = 0.3 * PERSON_HEIGHT * camera.focal / target.ground[1] + 2 * half[0] * camera.focal / z
            u = u_target + rng.uniform(-0.6, 0.6) * width_px
            centre = np.array([(u - camera.princpt[0]) / camera.focal * z, camera.height - elevation - half[1], z])
            if any(np.hypot(*(centre[[0, 2]] - p.ground)) < footprint + 0.3 for p in people):
                continue
            yaw = rng.uniform(-0.5, 0.5) if kind == "panel" else rng.uniform(0, np.pi)
            occluders.append(_make_occluder(rng, camera, kind, centre, yaw, local, faces))
            break
    return occluders


def _seat(rng, camera, person):
    """A stool under a sitting person's pelvis (a box from the floor to just under the buttocks), or None."""
    rotation = camera.world_to_camera
    verts_world = person.vertices @ rotation
    pelvis = person.joints[0] @ rotation
    near = np.hypot(*(verts_world[:, [0, 2]] - pelvis[[0, 2]]).T) < 0.15
    seat_top = verts_world[near, 1].max()
    seat_height = camera.height - seat_top
    if seat_height < 0.2:
        return None
    half = np.array([0.2, seat_height / 2, 0.2])
    local, faces = _box_mesh(half)
    centre = np.array([pelvis[0], camera.height - half[1], pelvis[2]])
    return _make_occluder(rng, camera, "seat", centre, rng.uniform(0, np.pi), local, faces)


# ----------------------------------------------------------------------------------------------------------------------
# Background


def _rays_world(camera):
    """(H, W, 3) float32 ray directions (z_camera = 1) of the pixel centres, in the world frame."""
    height, width = camera.size
    v, u = np.mgrid[:height, :width].astype(np.float32)
    rays = np.stack([(u - camera.princpt[0]) / camera.focal, (v - camera.princpt[1]) / camera.focal,
                     np.ones_like(u)], -1)
    return (rays @ camera.world_to_camera).astype(np.float32)


def _sample_tile(tile_rgb, a, b, scale):
    """Texture (64, 64, 3) sampled bilinearly at surface coordinates a, b (metres), `scale` metres per tile."""
    # BORDER_WRAP repeats the tile for any coordinate; the clip only keeps cv2's fixed-point maths in range.
    map_x = np.clip(a * np.float32(TILE / scale), -1e5, 1e5).astype(np.float32)
    map_y = np.clip(b * np.float32(TILE / scale), -1e5, 1e5).astype(np.float32)
    return cv2.remap(tile_rgb, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)


def _coloured_tile(rng):
    pattern = texture_pattern(rng)
    dark, light = random_colour(rng, value=(0.15, 0.5)), random_colour(rng, value=(0.5, 0.95))
    return (dark + pattern[..., None] * (light - dark)).astype(np.float32)


def background(rng, camera, people):
    """(H, W, 3) float32 RGB in [0, 1]: floor and back wall (indoor) or facade and sky (outdoor), textured in
    perspective, with a soft shadow under each person and smooth illumination (computed at half resolution and
    upsampled, a slight defocus), then random distractor shapes at full resolution."""
    height, width = camera.size
    half = Camera(camera.focal / 2, (camera.princpt + 0.5) / 2 - 0.5, camera.height, camera.pitch,
                  ((height + 1) // 2, (width + 1) // 2))
    rays = _rays_world(half)
    far = max([p.ground[1] for p in people], default=8.0)
    indoor = rng.random() < 0.5
    wall_z = far + (rng.uniform(1.5, 8.0) if indoor else rng.uniform(15.0, 40.0))
    t_wall = wall_z / rays[..., 2]
    t_floor = np.where(rays[..., 1] > 1e-4, camera.height / np.maximum(rays[..., 1], 1e-4), np.inf)
    on_floor = t_floor < t_wall
    t_floor = np.where(on_floor, t_floor, 0.0).astype(np.float32)
    floor_x, floor_z = t_floor * rays[..., 0], t_floor * rays[..., 2]
    floor = _sample_tile(_coloured_tile(rng), floor_x, floor_z, rng.uniform(0.4, 1.5))
    # Far floor texture aliases at this resolution: fade it to its mean colour with distance.
    fade = np.clip((t_floor - 6.0) / 20.0, 0.0, 0.8)[..., None]
    floor = floor * (1 - fade) + floor.reshape(-1, 3).mean(0) * fade
    wall_height = camera.height - t_wall * rays[..., 1]
    wall_scale = rng.uniform(0.5, 3.0) * (1 if indoor else 4)
    image = np.where(on_floor[..., None], floor, _sample_tile(_coloured_tile(rng), t_wall * rays[..., 0],
                                                              wall_height, wall_scale))
    if not indoor:
        sky_top, sky_bottom = random_colour(rng, (0.2, 0.6), (0.6, 0.9)), random_colour(rng, (0.0, 0.3), (0.8, 1.0))
        level = np.linspace(0, 1, half.size[0], dtype=np.float32)[:, None, None]
        sky = sky_top + level * (sky_bottom - sky_top)
        skyline = _periodic_noise(rng)[0][np.arange(half.size[1]) * TILE // half.size[1]]
        facade_top = rng.uniform(4.0, 25.0) + 3.0 * skyline[None, :]
        image = np.where(((wall_height > facade_top) & ~on_floor)[..., None], sky, image)
    shade = cv2.resize(rng.uniform(0.75, 1.2, (3, 4)).astype(np.float32), half.size[::-1],
                       interpolation=cv2.INTER_CUBIC)
    for person in people:
        d2 = (floor_x - person.ground[0]) ** 2 + (floor_z - person.ground[1]) ** 2
        shade *= 1 - 0.45 * np.exp(-d2 / (2 * 0.3 ** 2)) * on_floor
    image = cv2.resize((image * shade[..., None]).astype(np.float32), (width, height),
                       interpolation=cv2.INTER_LINEAR)

    # Distractor shapes, each blended with its own opacity (drawn into one layer and one opacity map).
    layer, alpha = image.copy(), np.zeros((height, width), np.float32)
    for _ in range(int(rng.integers(2, 9))):
        colour = tuple(float(c) for c in random_colour(rng))
        opacity = float(rng.uniform(0.4, 1.0))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        size = int(rng.integers(4, max(5, width // 5)))
        shape = rng.integers(4)
        for target, value in ((layer, colour), (alpha, opacity)):
            if shape == 0:
                cv2.circle(target, (x, y), size, value, -1, cv2.LINE_AA)
            elif shape == 1:
                cv2.rectangle(target, (x, y), (x + size, y + size // 2 + 4), value, -1)
            elif shape == 2:
                cv2.line(target, (x, y), (x + 4 * size, y + 2 * size - 3 * y // 4), value, 1 + size % 4, cv2.LINE_AA)
            else:
                cv2.ellipse(target, (x, y), (size, size // 3 + 2), float(x % 180), 0, 360, value, -1, cv2.LINE_AA)
    image = image + alpha[..., None] * (layer - image)
    return np.clip(image, 0, 1)


# ----------------------------------------------------------------------------------------------------------------------
# Rendering and analysis


def _front_faces(vertices, faces):
    """Faces turned towards the camera at the origin. The body is a closed, outward-oriented surface, so the
    back faces are never seen; dropping them makes rendering faster without changing the image."""
    tri = vertices[faces]
    # The normal (t1 - t0) x (t2 - t0) faces the camera when its dot product with t0 is negative; that product
    # equals the triple product t0 . (t1 x t2).
    return np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])) < 0


def _unproject(camera, rows, cols, depth):
    """Camera-frame points (n, 3) of pixels (rows, cols) at camera depth `depth` (n,)."""
    return np.stack([(cols - camera.princpt[0]) / camera.focal * depth,
                     (rows - camera.princpt[1]) / camera.focal * depth, depth], 1)


def _render_person(person, faces, regions, camera, ambient):
    """The person alone: RenderResult with the clothing colours (one mesh per colour), the shirt's stripes applied."""
    front = _front_faces(person.vertices, faces)
    colours = []
    region_mesh = np.zeros(len(REGIONS), dtype=np.int64)  # region -> mesh index (regions sharing a colour merge)
    for r, name in enumerate(REGIONS):
        match = [m for m, colour in enumerate(colours) if np.array_equal(colour, person.colours[name])]
        if not match:
            colours.append(person.colours[name])
        region_mesh[r] = match[0] if match else len(colours) - 1
    face_mesh = region_mesh[regions]
    meshes = [(person.vertices, faces[front & (face_mesh == m)]) for m in range(len(colours))]
    result = render(meshes, (camera.focal, camera.focal), camera.princpt, camera.size, colors=colours,
                    ambient=ambient, smooth=False)
    if person.stripes:
        rows, cols = np.nonzero(result.person_index == region_mesh[REGIONS.index("torso")])
        y = _unproject(camera, rows, cols, result.depth[rows, cols].astype(np.float64))[:, 1]
        factor = np.where(np.sin(2 * np.pi * y / person.stripes) > 0, 1.0, 0.65)
        result.image[rows, cols] = (result.image[rows, cols] * factor[:, None]).astype(np.uint8)
    return result


def _render_objects(occluders, camera, ambient):
    """All objects together: RenderResult whose image carries each object's texture (in its own 3D coordinates)."""
    result = render([(o.vertices, o.faces) for o in occluders], (camera.focal, camera.focal), camera.princpt,
                    camera.size, colors=[o.colour for o in occluders], ambient=ambient, smooth=False)
    for k, occluder in enumerate(occluders):
        rows, cols = np.nonzero(result.person_index == k)
        if len(rows) == 0:
            continue
        points = _unproject(camera, rows, cols, result.depth[rows, cols].astype(np.float64))
        local = (points @ camera.world_to_camera - occluder.centre) @ _rot_y(occluder.yaw)
        a = (local[:, 0] + local[:, 2]) / occluder.texture_scale * TILE
        b = local[:, 1] / occluder.texture_scale * TILE
        pattern = occluder.texture[np.mod(b, TILE).astype(int), np.mod(a, TILE).astype(int)]
        result.image[rows, cols] = (result.image[rows, cols] * (0.55 + 0.45 * pattern[:, None])).astype(np.uint8)
    return result


def render_scene(rng, camera, people, occluders, bodies):
    """Compose the image and measure every person's occlusion.

    Each person is rendered alone (its amodal silhouette and depth), the objects together; the z-buffer of the
    scene is the per-pixel nearest of these layers, so the composite equals rendering everything at once.
    Fills each Person's joints_img, in_image, visible, hidden_by, bbox, amodal_area and occlusion numbers.
    Returns the (H, W, 3) uint8 RGB image and the (H, W) int map of the layer in front at each pixel: person k
    (index in `people`), len(people) for the objects, -1 for the background."""
    height, width = camera.size
    ambient = rng.uniform(0.3, 0.5)
    layers = [_render_person(p, bodies.layers[p.gender].faces, bodies.face_regions[p.gender], camera, ambient)
              for p in people]
    if occluders:
        layers.append(_render_objects(occluders, camera, ambient))
    depth = np.stack([layer.depth for layer in layers])  # (L, H, W), inf where a layer is empty
    winner = np.argmin(depth, axis=0)
    nearest = np.take_along_axis(depth, winner[None], 0)[0]
    covered = np.isfinite(nearest)
    winner = np.where(covered, winner, -1)

    image = background(rng, camera, people)
    for k, layer in enumerate(layers):
        mask = winner == k
        image[mask] = layer.image[mask].astype(np.float32) / 255.0
    noise = rng.standard_normal(image.shape, dtype=np.float32) * np.float32(rng.uniform(0.003, 0.015))
    image = image * rng.uniform(0.9, 1.1, 3).astype(np.float32) + noise
    if rng.random() < 0.3:
        image = cv2.GaussianBlur(image, (3, 3), rng.uniform(0.4, 0.9))
    image = np.clip(np.round(image * 255), 0, 255).astype(np.uint8)

    object_layer = len(people) if occluders else -2
    for k, person in enumerate(people):
        verts_px = camera.project(person.vertices)
        (x0, y0), (x1, y1) = np.clip(verts_px.min(0), 0, [width - 1, height - 1]), \
            np.clip(verts_px.max(0), 0, [width - 1, height - 1])
        person.bbox = np.array([x0, y0, x1 - x0, y1 - y0])
        # The silhouette lies inside the projected vertices' box: measure there only.
        window = (slice(int(y0), int(np.ceil(y1)) + 1), slice(int(x0), int(np.ceil(x1)) + 1))
        amodal = np.isfinite(depth[k][window])
        front = winner[window]
        hidden = amodal & (front != k)
        person.amodal_area = int(amodal.sum())
        area = max(person.amodal_area, 1)
        person.occlusion = float(hidden.sum() / area) if person.amodal_area else 1.0
        person.object_occlusion = float((hidden & (front == object_layer)).sum() / area)
        person.person_occlusion = float((hidden & (front >= 0) & (front != object_layer)).sum() / area)
        person.joints_img = camera.project(person.joints)
        cols, rows = np.round(person.joints_img).astype(int).T
        person.in_image = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
        rows, cols = np.clip(rows, 0, height - 1), np.clip(cols, 0, width - 1)
        in_front = winner[rows, cols]
        hidden_joint = (in_front >= 0) & (in_front != k) & \
            (nearest[rows, cols] < person.joints[:, 2] - VISIBILITY_MARGIN)
        person.visible = person.in_image & ~hidden_joint
        person.hidden_by = np.where(person.in_image & hidden_joint, in_front, -1)
    return image, winner


# ----------------------------------------------------------------------------------------------------------------------
# Detector-like 2D poses


def detector_pose(rng, person, joint_indices, names, image_size):
    """A detector's output for one person: (J, 3) x, y (pixels), confidence for the SMPL30 joints `joint_indices`
    (named `names`), and a record of the noise.

    Visible joints: + N(0, sigma) per coordinate (clipped at 3 sigma), sigma = 0.8-1.6 % of the person's box
    height (>= 0.5 px), confidence 0.35-0.98 (3 % are missed). Occluded joints: dropped (confidence 0) or, half of
    the time, kept with confidence 0.06-0.3 and noise up to 9 sigma. Joints outside the image, or pushed out by the
    noise, are dropped. With probability 0.08 an arm, a leg or one joint pair swaps left and right. Dropped joints
    are (0, 0, 0), as OpenPose writes them."""
    height, width = image_size
    xy = person.joints_img[joint_indices].copy()
    visible = person.visible[joint_indices]
    inside = person.in_image[joint_indices]
    sigma = max(0.5, rng.uniform(0.008, 0.016) * person.bbox[3])
    noise = np.clip(rng.standard_normal((len(xy), 2)), -3, 3) * sigma
    confidence = np.clip(rng.normal(0.75, 0.12, len(xy)), 0.35, 0.98)
    keep_occluded = rng.random(len(xy)) < 0.5
    occluded = inside & ~visible
    noise[occluded] *= 3
    confidence[occluded] = rng.uniform(0.06, 0.3, len(xy))[occluded]
    confidence[occluded & ~keep_occluded] = 0
    confidence[visible & (rng.random(len(xy)) < 0.03)] = 0
    confidence[~inside] = 0
    xy = xy + noise
    swapped = []
    if rng.random() < 0.08:
        pairs = flip_pairs(names)
        group = rng.integers(3)
        parts = (("Shoulder", "Elbow", "Wrist"), ("Hip", "Knee", "Ankle"))
        chosen = [p for p in pairs if group < 2 and names[p[0]][2:] in parts[group]] or \
            [pairs[rng.integers(len(pairs))]]
        for a, b in chosen:
            xy[[a, b]] = xy[[b, a]]
            confidence[[a, b]] = confidence[[b, a]]
            swapped += [a, b]
    outside = (xy[:, 0] < 0) | (xy[:, 0] > width - 1) | (xy[:, 1] < 0) | (xy[:, 1] > height - 1)
    confidence[outside] = 0
    xy[confidence == 0] = 0
    out = np.concatenate([xy, confidence[:, None]], 1)
    return out, {"noise_sigma_px": float(sigma), "swapped": sorted(int(i) for i in swapped)}


# Detector failures under occlusion (generate(detector_failures=True)): how real 2D detectors fail on a joint they
# cannot see, applied on top of detector_pose to every joint inside the image but hidden by another surface. The
# rates are documented choices, not measured detector statistics; they follow the kinds of error PoseFix's taxonomy
# (data.posefix) counts, made to depend on what actually hides the joint.
FAILURE_ONTO_OCCLUDER = 0.3  # the hidden joint is reported on what hides it: the occluding person's joint of the
#                              same name, or a point of the occluding object within FAILURE_RADIUS of the joint
FAILURE_MISSED = 0.4  # else with this probability it is not reported at all (confidence 0); otherwise detector_pose's
#                       output stays (itself dropped or low-confidence and noisy)
FAILURE_SWAP = 0.3  # per arm / leg with a hidden joint on either side: its left and right chains swap
FAILURE_RADIUS = 0.15  # x the person's box height
FAILURE_CONFIDENCE = (0.3, 0.8)  # a wrong detection's confidence: detectors are confident about what they do see
FAILURE_STREAM = 1  # last entry of the failures' own random stream (seed, split, image, FAILURE_STREAM)
_LIMBS = (("Shoulder", "Elbow", "Wrist"), ("Hip", "Knee", "Ankle"))


def occlusion_failures(rng, pose, person, people, front_layer, joint_indices, names):
    """Detector failures of `pose` ((J, 3) x, y pixels, confidence; detector_pose's output for `person`, joints
    `joint_indices` of SMPL30 named `names`) on the joints another surface hides: reported on the occluder (another
    person's same joint, a point of the object), missed, or left/right swapped (FAILURE_* rates). people: the scene's
    people; front_layer: render_scene's layer map. Returns the new pose and {'onto_person', 'onto_object', 'missed',
    'swapped': joint indices}."""
    pose = pose.copy()
    height, width = front_layer.shape
    hidden_by = person.hidden_by[joint_indices]
    radius = max(2.0, FAILURE_RADIUS * person.bbox[3])
    record = {"onto_person": [], "onto_object": [], "missed": [], "swapped": []}
    for j in np.flatnonzero(hidden_by >= 0):
        draw = rng.random()
        target, kind = None, None
        if draw < FAILURE_ONTO_OCCLUDER:
            layer = int(hidden_by[j])
            if layer < len(people):
                other = people[layer]
                if other.in_image[joint_indices[j]]:
                    target, kind = other.joints_img[joint_indices[j]], "onto_person"
            else:
                x, y = person.joints_img[joint_indices[j]]
                x0, y0 = int(max(0, x - radius)), int(max(0, y - radius))
                rows, cols = np.nonzero(front_layer[y0:int(min(height, y + radius + 1)),
                                                    x0:int(min(width, x + radius + 1))] == layer)
                near = np.hypot(cols + x0 - x, rows + y0 - y) <= radius
                if near.any():
                    pick = rng.integers(near.sum())
                    target, kind = np.array([cols[near][pick] + x0, rows[near][pick] + y0], float), "onto_object"
        if target is not None:
            pose[j] = [*target, rng.uniform(*FAILURE_CONFIDENCE)]
            record[kind].append(int(j))
        elif draw < FAILURE_ONTO_OCCLUDER + FAILURE_MISSED:
            pose[j] = 0
            record["missed"].append(int(j))
    pairs = flip_pairs(names)
    for limb in _LIMBS:
        chain = [(a, b) for a, b in pairs if names[a][2:] in limb]
        if any(hidden_by[a] >= 0 or hidden_by[b] >= 0 for a, b in chain) and rng.random() < FAILURE_SWAP:
            for a, b in chain:
                pose[[a, b]] = pose[[b, a]]
                record["swapped"] += [int(a), int(b)]
    outside = (pose[:, 0] < 0) | (pose[:, 0] > width - 1) | (pose[:, 1] < 0) | (pose[:, 1] > height - 1)
    pose[outside | (pose[:, 2] == 0)] = 0
    return pose, {k: sorted(v) for k, v in record.items()}


# ----------------------------------------------------------------------------------------------------------------------
# Scenes


@dataclasses.dataclass
class Scene:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    camera: Camera
    people: list  # Person
    occluders: list  # Occluder
    front_layer: np.ndarray  # (H, W) int: person index, len(people) for the objects, -1 background (render_scene)


def make_scene(rng, bodies, split, image_size=DEFAULT_IMAGE_SIZE, max_attempts=50):
    """One image of `split` ('train', 'test' or 'crowd'): draws until at least one person qualifies for annotation
    (occlusion <= spec.max_occlusion, enough visible joints, box with area); the others stay unannotated bystanders.
    """
    spec = SPLITS[split]
    for _ in range(max_attempts):
        camera = sample_camera(rng, image_size)
        people = _sample_people(rng, camera, bodies, spec)
        if len(people) < spec.people[0] or not people:
            continue
        occluders = _sample_occluders(rng, camera, people, spec)
        for person in people:
            if person.family == "sitting":
                seat = _seat(rng, camera, person)
                if seat is not None:
                    occluders.append(seat)
        image, front_layer = render_scene(rng, camera, people, occluders, bodies)
        for person in people:
            visible_joints = int(person.visible[_OPENPOSE_IN_SMPL30].sum())
            person.annotated = bool(person.occlusion <= spec.max_occlusion and visible_joints >= spec.min_visible_joints
                                    and person.bbox[2] > 1 and person.bbox[3] > 1)
        if any(p.annotated for p in people):
            return Scene(image, camera, people, occluders, front_layer)
    raise RuntimeError(f"no {split} scene with an annotatable person after {max_attempts} attempts")


def occlusion_type(person):
    """'none' (under 5 % hidden), else 'object' or 'person', whichever hides more."""
    if person.object_occlusion + person.person_occlusion < 0.05:
        return "none"
    return "object" if person.object_occlusion >= person.person_occlusion else "person"


def _round(array, decimals=6):
    return np.round(np.asarray(array, np.float64), decimals).tolist()


def _synthetic_fields(person):
    return {
        "occlusion": round(person.occlusion, 6), "object_occlusion": round(person.object_occlusion, 6),
        "person_occlusion": round(person.person_occlusion, 6), "occlusion_type": occlusion_type(person),
        "pose_family": person.family,
        "joints_img": _round(person.joints_img),  # (30, 2) noise-free J30 projection
        "joints_visible": person.visible.astype(int).tolist(),  # (30,) z-buffer visibility
    }


def pw3d_annotation(rng, person, ann_id, image_id, image_size, failures=None):
    """One 3DPW-format annotation (the fields data.pw3d reads, plus `synthetic`). failures: None, or (random
    generator, scene) to add occlusion_failures to the OpenPose result."""
    openpose, noise = detector_pose(rng, person, _OPENPOSE_IN_SMPL30, OPENPOSE18, image_size)
    if failures is not None:
        failure_rng, scene = failures
        openpose, noise["occlusion_failures"] = occlusion_failures(
            failure_rng, openpose, person, scene.people, scene.front_layer, _OPENPOSE_IN_SMPL30, OPENPOSE18)
    extra = _synthetic_fields(person)
    extra["openpose_noise"] = noise
    return {
        "id": ann_id, "image_id": image_id, "bbox": _round(person.bbox, 3),
        "smpl_param": {"pose": person.pose.tolist(), "shape": person.betas.tolist(), "trans": person.trans.tolist(),
                       "gender": person.gender},
        "openpose_result": _round(openpose.reshape(-1), 4),
        "synthetic": extra,
    }


def muco_annotation(person, ann_id, image_id, bodies, camera):
    """One MuCo-format annotation (keypoints in MUCO21 order, camera joints in mm) and its SMPL fit."""
    joints_cam = muco_joints(person.vertices, bodies.j30[person.gender], bodies.h36m) * 1000.0
    joints_cam = np.round(joints_cam, 4)
    joints_img = camera.project(joints_cam)
    ann = {"id": ann_id, "image_id": image_id, "bbox": _round(person.bbox, 3),
           "keypoints_img": _round(joints_img, 4), "keypoints_cam": joints_cam.tolist(),
           "synthetic": _synthetic_fields(person)}
    fit = {"pose": person.pose.tolist(), "shape": person.betas.tolist(), "trans": person.trans.tolist()}
    return ann, fit


def _write_jpeg(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92]):
        raise OSError(f"could not write image {path}")


def _write_json(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        json.dump(content, f)
    os.replace(tmp, path)


def _camera_fields(camera):
    return [camera.focal, camera.focal], camera.princpt.tolist()


def _scene_fields(scene, annotated):
    """The image's `synthetic` field: the object meshes (camera frame, metres) and the people not annotated in
    this file (SMPL parameters), so that the occlusion numbers can be recomputed from the files alone."""
    return {
        "occluders": [{"kind": o.kind, "vertices": _round(o.vertices), "faces": o.faces.tolist()}
                      for o in scene.occluders],
        "other_people": [{"pose": p.pose.tolist(), "shape": p.betas.tolist(), "trans": p.trans.tolist(),
                          "gender": p.gender} for k, p in enumerate(scene.people) if k not in annotated],
    }


# ----------------------------------------------------------------------------------------------------------------------
# Splits


def _write_pw3d_split(out, split, indices, seed, bodies, image_size, log, detector_failures=False):
    """Images `indices` of a 3DPW-style split (files written); returns (images, annotations, hhrnet results).
    detector_failures: add occlusion_failures to the input poses, drawn from their own random stream so that the
    images, ground truth and other noise stay what they are without them."""
    spec = SPLITS[split]
    images, annotations, hhrnet = [], [], {}
    for done, index in enumerate(indices, 1):
        rng = np.random.default_rng([seed, spec.split_id, index])
        scene = make_scene(rng, bodies, split, image_size)
        failures = None
        if detector_failures:
            failures = (np.random.default_rng([seed, spec.split_id, index, FAILURE_STREAM]), scene)
        if split == "crowd":
            image_id = CROWD_IMAGE_ID_OFFSET + index + 1
            sequence = CROWD_SEQUENCES[index % 2]
        else:
            image_id = index + 1
            sequence = f"synthetic_test_{index // TEST_SEQUENCE_LENGTH:02d}"
        file_name = f"image_{index:06d}.jpg"
        _write_jpeg(out / "3DPW" / "imageFiles" / sequence / file_name, scene.image)
        focal, princpt = _camera_fields(scene.camera)
        images.append({"id": image_id, "file_name": file_name, "sequence": sequence, "width": image_size[1],
                       "height": image_size[0], "cam_param": {"focal": focal, "princpt": princpt},
                       "synthetic": _scene_fields(scene, {k for k, p in enumerate(scene.people) if p.annotated})})
        for k, person in enumerate(scene.people):
            if not person.annotated:
                continue
            ann = pw3d_annotation(rng, person, image_id * 10 + k, image_id, image_size, failures)
            annotations.append(ann)
            if split == "crowd":
                coco, noise = detector_pose(rng, person, _COCO_IN_SMPL30, COCO17, image_size)
                if failures is not None:
                    coco, noise["occlusion_failures"] = occlusion_failures(
                        failures[0], coco, person, scene.people, scene.front_layer, _COCO_IN_SMPL30, COCO17)
                hhrnet[str(ann["id"])] = {"coco_joints": _round(coco, 4), "synthetic_noise": noise}
        if log and done % 200 == 0:
            log(f"{split}: {done}/{len(indices)} images")
    return images, annotations, hhrnet


def _coco(images, annotations):
    return {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "person"}]}


def _subset(images, annotations, keep):
    annotations = [a for a in annotations if keep(a["synthetic"])]
    used = {a["image_id"] for a in annotations}
    return _coco([i for i in images if i["id"] in used], annotations)


def _occlusion_counts(annotations):
    counts = {}
    for lo, hi in OCCLUSION_LEVELS:
        counts[f"{lo:.1f}-{min(hi, 1.0):.1f}"] = sum(lo <= a["synthetic"]["occlusion"] < hi for a in annotations)
    return counts


def _write_train_split(out, indices, seed, bodies, image_size, log):
    """Images `indices` of the MuCo-format training split (files written): one annotation per image (a random
    annotatable person, often occluded), so the loader's closest-person rule keeps it. Returns (images,
    annotations, SMPL fits by annotation id)."""
    spec = SPLITS["train"]
    images, annotations, fits = [], [], {}
    for done, index in enumerate(indices, 1):
        rng = np.random.default_rng([seed, spec.split_id, index])
        scene = make_scene(rng, bodies, "train", image_size)
        image_id = index + 1
        file_name = f"images/{index // 1000:03d}/{index:06d}.jpg"
        _write_jpeg(out / "MuCo" / file_name, scene.image)
        focal, princpt = _camera_fields(scene.camera)
        candidates = [k for k, p in enumerate(scene.people) if p.annotated]
        k = candidates[rng.integers(len(candidates))]
        images.append({"id": image_id, "file_name": file_name, "width": image_size[1], "height": image_size[0],
                       "f": focal, "c": princpt, "synthetic": _scene_fields(scene, {k})})
        ann, fit = muco_annotation(scene.people[k], image_id * 10 + k, image_id, bodies, scene.camera)
        annotations.append(ann)
        fits[str(ann["id"])] = fit
        if log and done % 200 == 0:
            log(f"train: {done}/{len(indices)} images")
    return images, annotations, fits


def _load_bodies(out):
    """The Bodies of the mannequin files under out/body_models (as write_mannequin writes them)."""
    folder = out / "body_models"
    return Bodies(folder / "smpl", np.load(folder / "J_regressor_extra.npy"),
                  np.load(folder / "J_regressor_h36m_correct.npy"))


CHUNK_IMAGES = 100  # images per task of a parallel run


def _render_chunk(task, bodies):
    """One chunk of images (files written): the results of _write_train_split or _write_pw3d_split."""
    out, split, indices, seed, image_size, detector_failures = task
    if split == "train":
        return _write_train_split(out, indices, seed, bodies, image_size, None)
    return _write_pw3d_split(out, split, indices, seed, bodies, image_size, None, detector_failures)


_worker_bodies = None  # a worker process's body models, loaded once by _init_worker


def _init_worker(out):
    """Worker process set-up: one math thread (the workers are the parallelism) and the body models."""
    import torch

    global _worker_bodies
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    _worker_bodies = _load_bodies(out)


def _chunk_in_worker(task):
    return _render_chunk(task, _worker_bodies)


def _render_chunks(out, sizes, seed, image_size, workers, log, detector_failures=False):
    """Every split's images, in `workers` processes (1 = here). Each image draws from its own RNG stream
    (seed, split, index), so the output does not depend on how the images are shared out. Returns
    {split: list of the chunks' results in index order}."""
    tasks = [(out, split, list(range(start, min(start + CHUNK_IMAGES, n))), seed, image_size, detector_failures)
             for split, n in sizes.items() for start in range(0, n, CHUNK_IMAGES)]
    by_split = {split: [] for split in sizes}
    with contextlib.ExitStack() as stack:
        if workers <= 1 or len(tasks) <= 1:
            results = map(functools.partial(_render_chunk, bodies=_load_bodies(out)), tasks)
        else:
            context = multiprocessing.get_context("spawn")  # no fork of a process that runs threaded math libraries
            pool = stack.enter_context(concurrent.futures.ProcessPoolExecutor(
                workers, mp_context=context, initializer=_init_worker, initargs=(out,)))
            results = pool.map(_chunk_in_worker, tasks)
        for (_, split, indices, *_), result in zip(tasks, results):
            by_split[split].append(result)
            if log:
                log(f"{split}: {indices[-1] + 1}/{sizes[split]} images")
    return by_split


def _merge(chunks):
    """Concatenate the chunks' lists and merge their dicts, in order."""
    merged = []
    for parts in zip(*chunks):
        if isinstance(parts[0], dict):
            merged.append({k: v for part in parts for k, v in part.items()})
        else:
            merged.append([x for part in parts for x in part])
    return merged


# ----------------------------------------------------------------------------------------------------------------------
# Entry points


def _settings(seed, n_train, n_test, n_crowd, image_size, detector_failures):
    return {"generator": GENERATOR_NAME, "generator_version": GENERATOR_VERSION, "seed": int(seed),
            "sizes": {"train": int(n_train), "test": int(n_test), "crowd": int(n_crowd)},
            "image_size": [int(image_size[0]), int(image_size[1])], "detector_failures": bool(detector_failures)}


_OUTPUTS = ("body_models", "3DPW", "MuCo")


def read_manifest(out_dir):
    """The manifest of a generated directory, or None."""
    path = pathlib.Path(out_dir) / MANIFEST_FILE
    if not path.is_file():
        return None
    with open(path) as f:
        manifest = json.load(f)
    return manifest if isinstance(manifest, dict) and manifest.get("generator") == GENERATOR_NAME else None


def _prepare(out, manifest):
    """Refuse a directory holding data the generator did not write; clear the outputs of an earlier run."""
    if out.exists() and manifest is None:
        foreign = [p.name for p in out.iterdir() if p.name in _OUTPUTS or p.name == MANIFEST_FILE]
        if foreign:
            raise FileExistsError(f"{out} already holds {', '.join(sorted(foreign))} without a synthetic-data "
                                  f"manifest ({MANIFEST_FILE}); refusing to overwrite what may be real data. Choose "
                                  f"another output directory.")
    if manifest is not None:
        for name in _OUTPUTS:
            if (out / name).exists():
                shutil.rmtree(out / name)
    out.mkdir(parents=True, exist_ok=True)


def generate(out_dir, seed=0, n_train=2000, n_test=500, n_crowd=100, image_size=DEFAULT_IMAGE_SIZE, force=False,
             log=None, workers=1, detector_failures=False):
    """Write the synthetic data directory `out_dir` (module docstring) and return its manifest.

    n_train / n_test / n_crowd: images per split (train: one annotated person each; test and crowd: every
    annotatable person); image_size (H, W) pixels. When `out_dir` already holds a complete output of the same
    settings (manifest match), nothing is regenerated unless `force`. A directory with a body_models/, 3DPW/ or
    MuCo/ that this generator did not write is refused. `log`: optional callable(str) for progress messages.
    workers: processes rendering images in parallel (the output is the same for any number).
    detector_failures: the test and crowd input poses also fail on hidden joints as detectors do
    (occlusion_failures: reported on the occluder, missed, left/right swapped); images and ground truth unchanged.
    """
    out = pathlib.Path(out_dir)
    settings = _settings(seed, n_train, n_test, n_crowd, image_size, detector_failures)
    manifest = read_manifest(out)
    if manifest is not None and not force and manifest.get("complete") and \
            all(manifest.get(k) == v for k, v in settings.items()):
        if log:
            log(f"{out} already holds this output (manifest matches); nothing to do (force=True regenerates)")
        return manifest
    _prepare(out, manifest)
    # Written first so that an interrupted run's leftovers are recognised (and replaced) by the next run.
    _write_json(out / MANIFEST_FILE, dict(settings, complete=False))
    start = time.perf_counter()
    write_mannequin(out / "body_models")
    counts = {}

    sizes = {"test": n_test, "crowd": n_crowd, "train": n_train}
    chunks = _render_chunks(out, sizes, seed, image_size, workers, log, detector_failures)
    test_images, test_anns, _ = _merge(chunks["test"]) if n_test else ([], [], {})
    pw3d = out / "3DPW"
    files = {
        "3DPW_latest_test.json": _coco(test_images, test_anns),
        "3DPW_oc.json": _subset(test_images, test_anns, lambda s: s["object_occlusion"] >= OC_MIN_OBJECT_OCCLUSION),
        "3DPW_pc.json": _subset(test_images, test_anns, lambda s: s["person_occlusion"] >= PC_MIN_PERSON_OCCLUSION),
    }
    crowd_images, crowd_anns, hhrnet = _merge(chunks["crowd"]) if n_crowd else ([], [], {})
    files["3DPW_latest_validation.json"] = _coco(crowd_images, crowd_anns)
    for name, content in files.items():
        _write_json(pw3d / name, content)
    _write_json(pw3d / "3DPW_validation_crowd_hhrnet_result.json", hhrnet)
    counts["test"] = {"images": len(test_images), "annotations": len(test_anns),
                      "3dpw-oc": len(files["3DPW_oc.json"]["annotations"]),
                      "3dpw-pc": len(files["3DPW_pc.json"]["annotations"]),
                      "occlusion_levels": _occlusion_counts(test_anns)}
    counts["crowd"] = {"images": len(crowd_images), "annotations": len(crowd_anns),
                       "occlusion_levels": _occlusion_counts(crowd_anns)}
    train_images, train_anns, fits = _merge(chunks["train"]) if n_train else ([], [], {})
    _write_json(out / "MuCo" / "MuCo-3DHP.json", _coco(train_images, train_anns))
    _write_json(out / "MuCo" / "smpl_param.json", fits)
    counts["train"] = {"images": len(train_images), "annotations": len(train_anns),
                       "occlusion_levels": _occlusion_counts(train_anns)}
    empty = [name for name, count in (("3DPW_oc.json", counts["test"]["3dpw-oc"]),
                                      ("3DPW_pc.json", counts["test"]["3dpw-pc"])) if n_test and not count]
    if empty:
        warnings.warn(f"{out}: {' and '.join(empty)} hold no person with only {n_test} test images; generate more "
                      f"test images to evaluate the occlusion subsets", stacklevel=2)

    seconds = time.perf_counter() - start
    manifest = dict(settings, complete=True, counts=counts, seconds=round(seconds, 1))
    _write_json(out / MANIFEST_FILE, manifest)
    if log:
        log(f"wrote {out}: {n_train} train, {n_test} test, {n_crowd} crowd images in {seconds:.0f} s")
    return manifest


def measure_speed(n_images=40, image_size=DEFAULT_IMAGE_SIZE, seed=0, split="test"):
    """Generation speed of `split` scenes including JPEG and annotation writing, excluding the one-off body model
    setup: {'images_per_second': wall clock, 'images_per_cpu_second': per second of this process's CPU time
    (= per core when the math libraries run single-threaded)}. For the benchmark script."""
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp)
        write_mannequin(out / "body_models")
        bodies = _load_bodies(out)
        wall, cpu = time.perf_counter(), time.process_time()
        if split == "train":
            _write_train_split(out, range(n_images), seed, bodies, image_size, None)
        else:
            _write_pw3d_split(out, split, range(n_images), seed, bodies, image_size, None)
        return {"images_per_second": n_images / (time.perf_counter() - wall),
                "images_per_cpu_second": n_images / (time.process_time() - cpu)}
