"""Plausible SMPL body poses and shapes for the synthetic scenes: per-joint anatomical limits and five pose families.

Angles are in degrees, per joint as a scipy extrinsic Euler sequence (rotation = last axis . ... . first axis),
in SMPL's frame (x to the person's left, y up, z forward). Left and central joints are described; a right joint
draws with its left twin's semantics and is mirrored (axis-angle (x, y, z) -> (x, -y, -z)).
Signs: hip flexion (thigh forward) is negative about x, the spine's forward bend and knee flexion positive;
elbow flexion is negative about y (the left forearm lies along +x in the rest pose); the shoulder's second angle
(elevation, about z) lowers the arm when negative, its third (swing, about x) then moves the arm forward when
negative.
"""
import numpy as np
from scipy.spatial.transform import Rotation

from common.body.joint_sets import SMPL30

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
FAMILY_PROBS = (0.3, 0.3, 0.15, 0.1, 0.15)  # how often a scene's person takes each family


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
    """(10,) shape: N(0, 0.8) clipped to +-2.5 (embedded.mannequin.SHAPE_DIRECTIONS give their meaning)."""
    return np.clip(rng.normal(0.0, 0.8, 10), -2.5, 2.5)
