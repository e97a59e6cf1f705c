"""The mannequin: a procedurally generated human-like body model in the SMPL file layout.

The real SMPL files are licence-restricted, so the repository ships a stand-in that runs through exactly the
same code (loader, SMPL layer, J30 regressor, renderer, data generator). It is built by code, deterministically:

* 17 parts (torso, neck, head, and per side upper arm, forearm, hand, thumb, thigh, shin, foot), each a smooth
  closed surface: a loft along an axis whose cross-sections are superellipses with half-sizes interpolated
  between keyframes (PCHIP) and elliptically rounded end caps. Parts overlap at the joints (a mannequin look).
* The parts are joined into one closed genus-0 surface, as SMPL's mesh is: each parent/child pair is joined by
  a thin tube between a vertex of one part lying inside the other and vice versa (connected sum), so the tube
  and both holes are hidden inside the overlap. Hence 6890 vertices and SMPL's 13776 faces.
* SMPL conventions: metres, y up, x to the person's left, z forward, T-pose with the arms along +-x; the
  24 joints, their order and parents are SMPL's (common.body.joint_sets); rest proportions of a ~1.70 m adult.
* Skinning weights blend smoothly across each joint (smoothstep along the bone over a few centimetres), so
  the parts stay attached when joints rotate. Pose blend shapes are zero.
* 10 shape directions with a human meaning (SHAPE_DIRECTIONS), 1-5 cm per unit beta, as central differences
  of the generator's geometry in its proportions.
* J_regressor rows are convex combinations of the vertices around each joint (maximum-entropy weights) that
  reproduce the designed rest joints exactly, so regressed joints follow shape changes.
* J_regressor_extra (row 3 = head top) and the 17-joint Human3.6M regressor (common.body.joint_sets.H36M17 order);
  vertices 331, 2802, 6262, 3489, 3990 sit at the nose, left eye, right eye, left ear and right ear.

`write_mannequin(out_dir)` writes the files in the layout of `data/body_models/`.
"""
import dataclasses
import functools
import pathlib
import pickle

import numpy as np
from scipy.interpolate import PchipInterpolator
from scipy.spatial import cKDTree

from common.body.joint_sets import H36M17, SMPL30, SMPL30_FACE_VERTICES, SMPL30_FLIP_PAIRS, SMPL_PARENTS

NUM_VERTICES = 6890
NUM_JOINTS = 24
NUM_BETAS = 10
ROOT_PARENT = 2**32 - 1  # the parent of the root in SMPL's kintree_table (uint32 -1)

# What one unit of each beta does (positive direction); each moves vertices by about 1-5 cm.
SHAPE_DIRECTIONS = ("height", "girth", "leg_length", "arm_length", "shoulder_width", "hip_width",
                    "torso_length", "head_size", "chest_depth", "belly")

# Proportion offsets (in beta units) of the three files; the neutral one is the design itself.
GENDER_SHAPES = {
    "neutral": np.zeros(NUM_BETAS),
    "male": np.array([0.8, 0.3, 0.0, 0.2, 1.0, -0.6, 0.0, 0.2, 0.5, 0.0]),
    "female": np.array([-1.2, -0.4, 0.0, -0.2, -1.0, 1.0, 0.0, -0.3, -0.3, -0.3]),
}

# The designed rest joints of the neutral mannequin (metres, SMPL frame), SMPL30[:24] order. Right joints
# mirror the left ones (x -> -x).
_LEFT_JOINTS = {
    "Pelvis": (0.0, -0.225, 0.025), "L_Hip": (0.072, -0.315, 0.015), "Torso": (0.0, -0.11, 0.0),
    "L_Knee": (0.100, -0.695, 0.010), "Spine": (0.0, 0.02, 0.005), "L_Ankle": (0.090, -1.095, -0.030),
    "Chest": (0.0, 0.075, 0.025), "L_Toe": (0.115, -1.155, 0.090), "Neck": (0.0, 0.29, -0.015),
    "L_Thorax": (0.070, 0.190, -0.005), "Head": (0.0, 0.36, 0.035), "L_Shoulder": (0.175, 0.225, -0.020),
    "L_Elbow": (0.430, 0.210, -0.040), "L_Wrist": (0.680, 0.215, -0.045), "L_Hand": (0.765, 0.210, -0.055),
}


def _design_joints():
    joints = np.zeros((NUM_JOINTS, 3))
    for i, name in enumerate(SMPL30[:NUM_JOINTS]):
        if name in _LEFT_JOINTS:
            joints[i] = _LEFT_JOINTS[name]
        else:
            joints[i] = _LEFT_JOINTS["L_" + name[2:]]
            joints[i, 0] *= -1
    return joints


REST_JOINTS = _design_joints()  # (24, 3) metres, the neutral design (J_regressor @ v_template reproduces it)

# Flip permutation of the 24 SMPL joints (left <-> right).
_FLIP24 = np.arange(NUM_JOINTS)
for _a, _b in SMPL30_FLIP_PAIRS:
    if _b < NUM_JOINTS:
        _FLIP24[_a], _FLIP24[_b] = _b, _a
_J = {name: i for i, name in enumerate(SMPL30[:NUM_JOINTS])}


# ----------------------------------------------------------------------------------------------------------------------
# Lofted parts


@dataclasses.dataclass
class _Loft:
    """A smooth closed surface around the segment origin -> origin + length * axis.

    Keyframes at arc positions `s` (metres from origin) give the cross-section half-sizes along u (`half_u`)
    and v = axis x u (`half_v`) and the section centre's offsets along u and v. The section is a superellipse
    of exponent `exponent`; the ends are rounded by elliptic caps of lengths `cap0`, `cap1` (metres).
    `bumps`: (s, angle, sigma_s metres, sigma_angle radians, height metres) radial Gaussian bumps.
    """
    name: str
    origin: np.ndarray
    axis: np.ndarray
    u: np.ndarray
    length: float
    s: np.ndarray
    half_u: np.ndarray
    half_v: np.ndarray
    offset_u: np.ndarray
    offset_v: np.ndarray
    cap0: float
    cap1: float
    n_rings: int
    n_around: int
    exponent: float = 2.0
    bumps: tuple = ()

    def sections(self, s):
        """Section half-sizes and centre offsets at arc positions s (n,) -> four (n,) arrays, caps applied."""
        table = np.stack([self.half_u, self.half_v, self.offset_u, self.offset_v], axis=1)
        values = PchipInterpolator(self.s, table, axis=0)(np.clip(s, self.s[0], self.s[-1]))
        envelope = np.ones_like(s)
        lo, hi = s < self.cap0, s > self.length - self.cap1
        envelope[lo] = np.sqrt(np.clip(1 - ((self.cap0 - s[lo]) / self.cap0) ** 2, 0, 1))
        envelope[hi] *= np.sqrt(np.clip(1 - ((s[hi] - self.length + self.cap1) / self.cap1) ** 2, 0, 1))
        return values[:, 0] * envelope, values[:, 1] * envelope, values[:, 2], values[:, 3]

    def ring_positions(self):
        """Ring arc positions (metres), evenly spaced along the profile curve (so the caps get as many rings
        per centimetre as the body). Computed once on the neutral design; other shapes map them through their
        moved keyframes (`map_positions`), so that vertex i is the same surface point in all shapes."""
        s = np.linspace(0, self.length, 4001)
        half_u, half_v, _, _ = self.sections(s)
        radius = 0.5 * (half_u + half_v)
        arc = np.concatenate([[0], np.cumsum(np.hypot(np.diff(s), np.diff(radius)))])
        targets = arc[-1] * np.arange(1, self.n_rings + 1) / (self.n_rings + 1)
        return np.interp(targets, arc, s)

    def _anchors(self):
        anchors = np.concatenate([[0.0], self.s, [self.length]])
        keep = np.concatenate([[True], np.diff(anchors) > 1e-9])
        return anchors[keep], keep

    def map_positions(self, ring_s, neutral):
        """Arc positions of this loft corresponding to `ring_s` on the `neutral` loft (piecewise linear between
        the keyframes, which the shape parameters move)."""
        anchors0, keep = neutral._anchors()
        anchors = np.concatenate([[0.0], self.s, [self.length]])[keep]
        return np.interp(ring_s, anchors0, anchors)

    def vertices(self, ring_s):
        """(2 + n_rings * n_around, 3) for rings at arc positions ring_s (n_rings,) metres: pole at s = 0,
        rings (ring-major), pole at s = length."""
        axis = self.axis / np.linalg.norm(self.axis)
        u = self.u - axis * (self.u @ axis)
        u /= np.linalg.norm(u)
        v = np.cross(axis, u)
        s = np.concatenate([[0.0], ring_s, [self.length]])
        half_u, half_v, off_u, off_v = self.sections(s)
        angle = 2 * np.pi * np.arange(self.n_around) / self.n_around
        p = 2.0 / self.exponent
        cos, sin = np.cos(angle), np.sin(angle)
        cu, sv = np.sign(cos) * np.abs(cos) ** p, np.sign(sin) * np.abs(sin) ** p
        coord_u = off_u[1:-1, None] + half_u[1:-1, None] * cu
        coord_v = off_v[1:-1, None] + half_v[1:-1, None] * sv
        for s0, a0, sigma_s, sigma_a, height in self.bumps:
            d_angle = np.angle(np.exp(1j * (angle - a0)))
            bump = height * np.exp(-0.5 * ((s[1:-1, None] - s0) / sigma_s) ** 2 - 0.5 * (d_angle / sigma_a) ** 2)
            coord_u += bump * cos
            coord_v += bump * sin
        rings = (self.origin + s[1:-1, None, None] * axis + coord_u[..., None] * u + coord_v[..., None] * v)
        poles = self.origin + s[[0, -1], None] * axis + off_u[[0, -1], None] * u + off_v[[0, -1], None] * v
        return np.concatenate([poles[:1], rings.reshape(-1, 3), poles[1:]])

    def faces(self):
        """Triangles of the ring grid (consistent winding; the caller orients them outward)."""
        n, m = self.n_rings, self.n_around
        j = np.arange(m)
        jn = (j + 1) % m
        out = [np.stack([np.zeros(m, int), 1 + jn, 1 + j], 1)]
        for k in range(n - 1):
            a, b = 1 + k * m + j, 1 + k * m + jn
            c, d = a + m, b + m
            out += [np.stack([a, b, d], 1), np.stack([a, d, c], 1)]
        last = 1 + (n - 1) * m
        out.append(np.stack([np.full(m, 1 + n * m), last + j, last + jn], 1))
        return np.concatenate(out)


def _limb(name, joint_a, joint_b, pre, post, fractions, half_u, half_v, cap0, cap1, n_rings, n_around,
          up=(0.0, 1.0, 0.0), girth=1.0, exponent=2.0, offset_v=None):
    """A loft along the bone joint_a -> joint_b, from `pre` metres before joint_a to `post` metres after
    joint_b; keyframes (half sizes, optional centre offsets along v) at `fractions` of the bone length, the half
    sizes scaled by `girth`. `up` is the u direction (before orthogonalising)."""
    bone = joint_b - joint_a
    length = np.linalg.norm(bone)
    axis = bone / length
    fractions = np.asarray(fractions, float)
    zeros = np.zeros(len(fractions))
    return _Loft(name, joint_a - pre * axis, axis, np.asarray(up, float), pre + length + post,
                 pre + fractions * length, girth * np.asarray(half_u), girth * np.asarray(half_v), zeros,
                 zeros if offset_v is None else np.asarray(offset_v, float), cap0, cap1, n_rings, n_around,
                 exponent)


def _ramp(x, lo, hi):
    """Smoothstep from 0 at x = lo to 1 at x = hi."""
    t = np.clip((x - lo) / (hi - lo), 0, 1)
    return t * t * (3 - 2 * t)


def _design(shape):
    """Joints (24, 3), the part lofts (central parts, then the left limbs; the right limbs are their mirror
    images) and the face landmarks ((s, angle) on the head loft) for the proportions `shape` (10,), beta units."""
    height, girth, leg, arm, shoulder, hip, torso_len, head, chest, belly = np.asarray(shape, float)
    g = 1 + 0.07 * girth
    rest = REST_JOINTS
    pelvis_y = rest[0, 1]
    f_torso, f_arm, f_leg, s_head = 1 + 0.06 * torso_len, 1 + 0.06 * arm, 1 + 0.05 * leg, 1 + 0.06 * head

    def torso_y(y):
        y = np.asarray(y, float)
        return np.where(y > pelvis_y, pelvis_y + (y - pelvis_y) * f_torso, y)

    # Torso length stretches the spine above the pelvis; the limbs hang from their (moved) proximal joints.
    joints = rest.copy()
    for name in ("Torso", "Spine", "Chest", "Neck", "L_Thorax", "R_Thorax"):
        joints[_J[name], 1] = torso_y(rest[_J[name], 1])
    head_y0 = joints[_J["Neck"], 1] - 0.005  # bottom of the head loft (under the chin); the head scales about it
    joints[_J["Head"], 1] = head_y0 + (rest[_J["Head"], 1] - rest[_J["Neck"], 1] + 0.005) * s_head
    for side, lr in ((1, "L_"), (-1, "R_")):
        chain = [_J[lr + n] for n in ("Thorax", "Shoulder", "Elbow", "Wrist", "Hand")]
        joints[chain[0], 0] += side * 0.009 * shoulder
        joints[chain[1]] = joints[chain[0]] + rest[chain[1]] - rest[chain[0]] + [side * 0.009 * shoulder, 0, 0]
        for a, b in zip(chain[1:-1], chain[2:]):
            joints[b] = joints[a] + (rest[b] - rest[a]) * f_arm
        chain = [_J[lr + n] for n in ("Hip", "Knee", "Ankle", "Toe")]
        joints[chain[0], 0] += side * 0.012 * hip
        for a, b in zip(chain[:-1], chain[1:]):
            joints[b] = joints[a] + (rest[b] - rest[a]) * (f_leg if b != chain[-1] else 1.0)

    # ---- torso: keyframes (y, half width x, half depth z, centre z) -------------------------------------
    key_y = np.array([-0.45, -0.41, -0.36, -0.28, -0.20, -0.12, -0.04, 0.04, 0.10, 0.16, 0.21, 0.25, 0.28, 0.305])
    half_x = np.array([0.13, 0.14, 0.165, 0.172, 0.165, 0.145, 0.140, 0.150, 0.160, 0.168, 0.180, 0.150, 0.09, 0.07])
    half_z = np.array([0.08, 0.09, 0.105, 0.105, 0.100, 0.095, 0.096, 0.100, 0.105, 0.100, 0.085, 0.070, 0.06, 0.055])
    centre_z = np.array([0.0, 0.0, -0.003, 0.004, 0.012, 0.018, 0.022, 0.025, 0.024, 0.014, -0.004, -0.015, -0.02,
                         -0.02])
    shoulder_w = _ramp(key_y, 0.10, 0.21) * (1 - _ramp(key_y, 0.25, 0.29))
    hip_w = np.exp(-0.5 * ((key_y + 0.32) / 0.06) ** 2)
    chest_w = np.exp(-0.5 * ((key_y - 0.10) / 0.07) ** 2)
    belly_w = np.exp(-0.5 * ((key_y + 0.09) / 0.08) ** 2)
    half_x = g * half_x + 0.018 * shoulder * shoulder_w + 0.02 * hip * hip_w
    half_z = g * half_z + 0.012 * chest * chest_w + 0.02 * belly * belly_w
    centre_z = centre_z + 0.006 * chest * chest_w + 0.015 * belly * belly_w
    key_y = torso_y(key_y)
    torso = _Loft("torso", np.array([0.0, key_y[0], 0.0]), np.array([0.0, 1.0, 0.0]), np.array([-1.0, 0, 0]),
                  key_y[-1] - key_y[0], key_y - key_y[0], half_x, half_z, np.zeros_like(key_y), centre_z,
                  0.06, 0.035, 40, 48, exponent=2.4)

    # ---- neck and head (the head scales about its lowest point, under the chin) -----------------------------
    head_j = joints[_J["Head"]]
    neck_bottom = np.array([0.0, torso_y(0.21), -0.022])
    neck_top = np.array([0.0, head_j[1] + 0.035, 0.018])
    neck_axis = neck_top - neck_bottom
    n_len = np.linalg.norm(neck_axis)
    neck = _Loft("neck", neck_bottom, neck_axis, np.array([-1.0, 0, 0]), n_len, np.array([0, 0.5, 1]) * n_len,
                 g * np.array([0.058, 0.052, 0.050]), g * np.array([0.055, 0.050, 0.050]), np.zeros(3), np.zeros(3),
                 0.025, 0.025, 8, 16)
    hk_y = np.array([0.285, 0.30, 0.33, 0.37, 0.41, 0.45, 0.49, 0.53])
    hk_hx = np.array([0.035, 0.045, 0.062, 0.068, 0.075, 0.078, 0.074, 0.06])
    hk_hz = np.array([0.040, 0.050, 0.076, 0.092, 0.100, 0.102, 0.097, 0.08])
    hk_cz = np.array([0.085, 0.078, 0.052, 0.036, 0.026, 0.018, 0.012, 0.01])
    head_len = (hk_y[-1] - hk_y[0]) * s_head
    nose_s, eye_s, ear_s = (0.390 - 0.285) * s_head, (0.415 - 0.285) * s_head, (0.400 - 0.285) * s_head
    head_part = _Loft("head", np.array([0.0, head_y0, 0.0]), np.array([0.0, 1.0, 0.0]), np.array([-1.0, 0, 0]),
                      head_len, (hk_y - hk_y[0]) * s_head, hk_hx * s_head, hk_hz * s_head, np.zeros(8),
                      hk_cz * s_head, 0.025 * s_head, 0.07 * s_head, 25, 32, exponent=2.1,
                      bumps=((nose_s, np.pi / 2, 0.014 * s_head, 0.13, 0.020 * s_head),
                             (ear_s, 0.0, 0.020 * s_head, 0.16, 0.011 * s_head),
                             (ear_s, np.pi, 0.020 * s_head, 0.16, 0.011 * s_head),
                             (eye_s + 0.02 * s_head, np.pi / 2, 0.01 * s_head, 0.6, 0.004 * s_head)))
    landmarks = {"nose": (nose_s, np.pi / 2), "l_eye": (eye_s, np.pi / 2 + 0.42), "r_eye": (eye_s, np.pi / 2 - 0.42),
                 "l_ear": (ear_s, np.pi), "r_ear": (ear_s, 0.0)}

    # ---- left arm (T-pose, palm down, thumb forward) -----------------------------------------------------------
    sh, el, wr, hd = (joints[_J[n]] for n in ("L_Shoulder", "L_Elbow", "L_Wrist", "L_Hand"))
    upper_arm = _limb("l_upper_arm", sh, el, 0.06, 0.03, [-0.1, 0.0, 0.3, 0.6, 0.9, 1.05],
                      [0.050, 0.052, 0.047, 0.043, 0.038, 0.036], [0.052, 0.055, 0.049, 0.044, 0.040, 0.038],
                      0.05, 0.035, 18, 16, girth=g)
    forearm = _limb("l_forearm", el, wr, 0.035, 0.02, [-0.1, 0.05, 0.3, 0.7, 1.0],
                    [0.037, 0.040, 0.036, 0.027, 0.022], [0.039, 0.043, 0.040, 0.032, 0.030], 0.035, 0.025,
                    16, 16, girth=g)
    hand_len = np.linalg.norm(hd - wr)
    hand_scale = hand_len / np.linalg.norm(rest[_J["L_Hand"]] - rest[_J["L_Wrist"]])  # arm length also scales it
    hand = _limb("l_hand", wr, hd, 0.02, 0.095 * hand_scale, [-0.1, 0.3, 0.8, 1.4, 2.0],
                 [0.017, 0.018, 0.017, 0.012, 0.010], [0.030, 0.038, 0.043, 0.038, 0.032], 0.02, 0.03, 12, 14,
                 girth=np.sqrt(g), exponent=2.6)
    hand_axis = (hd - wr) / hand_len
    thumb_root = wr + 0.02 * hand_axis + np.array([0.0, -0.004, 0.031])
    thumb_tip = thumb_root + hand_scale * np.array([0.055, -0.008, 0.045])
    # The thumb starts with a bulb (the ball of the thumb) that hides its junction with the hand.
    thumb = _limb("l_thumb", thumb_root, thumb_tip, 0.02, 0.0, [-0.1, 0.2, 0.55, 1.0], [0.019, 0.015, 0.011, 0.009],
                  [0.027, 0.019, 0.012, 0.010], 0.02, 0.012, 6, 8, girth=np.sqrt(g))

    # ---- left leg ----------------------------------------------------------------------------------------------------
    hp, kn, an, to = (joints[_J[n]] for n in ("L_Hip", "L_Knee", "L_Ankle", "L_Toe"))
    thigh = _limb("l_thigh", hp, kn, 0.08, 0.04, [-0.1, 0.0, 0.25, 0.55, 0.85, 1.05],
                  [0.080, 0.084, 0.080, 0.070, 0.058, 0.052], [0.085, 0.090, 0.084, 0.072, 0.060, 0.055],
                  0.07, 0.04, 24, 24, up=(1.0, 0, 0), girth=g, offset_v=[0, 0, 0.004, 0.004, 0.002, 0])
    shin = _limb("l_shin", kn, an, 0.04, 0.025, [-0.1, 0.05, 0.28, 0.6, 0.9, 1.05],
                 [0.050, 0.050, 0.052, 0.040, 0.031, 0.030], [0.052, 0.052, 0.058, 0.042, 0.032, 0.032],
                 0.04, 0.03, 23, 20, up=(1.0, 0, 0), girth=g, offset_v=[0, 0.002, -0.008, -0.004, 0, 0])
    # The foot runs along z from the heel to the toe tip; keyframes (z, half width, half height, centre y).
    fz = np.array([-0.07, -0.02, 0.03, 0.09, 0.15])
    f_half_x = np.array([0.031, 0.035, 0.041, 0.046, 0.041])
    f_half_y = np.array([0.038, 0.047, 0.038, 0.025, 0.019])
    f_centre_y = np.array([-1.130, -1.120, -1.130, -1.145, -1.150]) - REST_JOINTS[_J["L_Ankle"], 1]
    foot_start = np.array([an[0] - 0.004, an[1], -0.095])
    foot_end = np.array([to[0] + 0.01, an[1], 0.185])
    f_len = np.linalg.norm(foot_end - foot_start)
    foot = _Loft("l_foot", foot_start, foot_end - foot_start, np.array([1.0, 0, 0]), f_len,
                 fz - foot_start[2], np.sqrt(g) * f_half_x, np.sqrt(g) * f_half_y, np.zeros(5), f_centre_y,
                 0.035, 0.03, 14, 16, exponent=2.6)

    parts = [torso, neck, head_part, upper_arm, forearm, hand, thumb, thigh, shin, foot]
    # Height scales the whole body about the pelvis.
    scale = 1 + 0.028 * height
    centre = REST_JOINTS[0]
    joints = centre + (joints - centre) * scale
    for part in parts:
        part.origin = centre + (part.origin - centre) * scale
        part.length *= scale
        part.s = part.s * scale
        part.cap0 *= scale
        part.cap1 *= scale
        for name in ("half_u", "half_v", "offset_u", "offset_v"):
            setattr(part, name, getattr(part, name) * scale)
        part.bumps = tuple((b[0] * scale, b[1], b[2] * scale, b[3], b[4] * scale) for b in part.bumps)
    landmarks = {k: (s * scale, a) for k, (s, a) in landmarks.items()}
    return joints, parts, landmarks


# ----------------------------------------------------------------------------------------------------------------------
# Topology: parts -> one closed surface with 6890 vertices and 13776 faces

_MIRRORED = ("upper_arm", "forearm", "hand", "thumb", "thigh", "shin", "foot")
PART_NAMES = ("torso", "neck", "head") + tuple("l_" + n for n in _MIRRORED) + tuple("r_" + n for n in _MIRRORED)
# Parent/child parts that overlap at a joint and are joined by a hidden tube.
_JOINS = (("torso", "neck"), ("neck", "head")) + tuple(
    (a.replace("*", side), b.replace("*", side)) for side in ("l", "r") for a, b in (
        ("torso", "*_upper_arm"), ("*_upper_arm", "*_forearm"), ("*_forearm", "*_hand"), ("*_hand", "*_thumb"),
        ("torso", "*_thigh"), ("*_thigh", "*_shin"), ("*_shin", "*_foot")))


def _part_vertices(parts, ring_s, neutral_parts=None):
    """Vertices of all 17 parts in PART_NAMES order (right limbs = mirrored left limbs), list of (n_i, 3).
    ring_s: per loft, ring positions on the neutral loft (`neutral_parts`, default: `parts` themselves)."""
    neutral_parts = parts if neutral_parts is None else neutral_parts
    verts = [part.vertices(part.map_positions(s, neutral)) for part, s, neutral in zip(parts, ring_s, neutral_parts)]
    mirror = np.array([-1.0, 1.0, 1.0])
    return verts + [v * mirror for v in verts[3:]]


def _signed_volume(verts, faces):
    return np.einsum("ij,ij->i", verts[faces[:, 0]], np.cross(verts[faces[:, 1]], verts[faces[:, 2]])).sum() / 6


def _depth_inside(points, verts, faces):
    """Distance of `points` (n, 3) to the nearest vertex of a closed, outward-oriented, smooth and locally convex
    part (verts, faces); negative for points outside it (judged by the nearest vertex's normal)."""
    tri = verts[faces]
    face_normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals = np.zeros_like(verts)
    for k in range(3):
        np.add.at(normals, faces[:, k], face_normals)
    dist, nearest = cKDTree(verts).query(points)
    outside = np.einsum("ij,ij->i", points - verts[nearest], normals[nearest]) > 0
    return np.where(outside, -dist, dist)


def _link(vertex, faces):
    """The ordered ring of neighbours of `vertex`, following the face orientation (a -> b for a face (vertex, a, b))."""
    rows = faces[(faces == vertex).any(1)]
    nxt = {}
    for face in rows:
        k = list(face).index(vertex)
        nxt[face[(k + 1) % 3]] = face[(k + 2) % 3]
    start = next(iter(nxt))
    loop = [start]
    while nxt[loop[-1]] != start:
        loop.append(nxt[loop[-1]])
    if len(loop) != len(nxt):
        raise AssertionError("vertex link is not a single cycle")
    return loop


def _bridge(loop_a, loop_b, verts):
    """Triangles joining two holes (oriented loops as returned by _link) into a tube, consistently oriented:
    each loop edge a_i -> a_i+1 is used in its own direction, walking loop_a forward and loop_b backward,
    starting from the b vertex nearest to a_0."""
    m, n = len(loop_a), len(loop_b)
    k0 = int(np.argmin(np.linalg.norm(verts[loop_b] - verts[loop_a[0]], axis=1)))
    i = j = 0
    faces = []
    while i < m or j < n:
        a_i, a_next = loop_a[i % m], loop_a[(i + 1) % m]
        b_cur, b_prev = loop_b[(k0 - j) % n], loop_b[(k0 - j - 1) % n]
        if (i + 1) * n <= (j + 1) * m:  # advance both loops evenly, so no vertex pair is joined twice
            faces.append((a_i, a_next, b_cur))
            i += 1
        else:
            faces.append((b_prev, b_cur, a_i))
            j += 1
    return np.array(faces)


@dataclasses.dataclass(frozen=True)
class _Topology:
    ring_s: tuple  # per loft: ring positions (metres along the neutral loft)
    neutral_parts: tuple  # the neutral design's lofts
    offsets: np.ndarray  # (18,) start of each part in the stacked per-part vertex array
    keep: np.ndarray  # (6890,) stacked index of each final vertex
    faces: np.ndarray  # (13776, 3) int64 final faces
    landmarks: dict  # name -> final vertex index


@functools.lru_cache(maxsize=1)
def _topology():
    """The mesh connectivity, computed once on the neutral design and shared by every shape and gender."""
    joints, parts, landmarks = _design(np.zeros(NUM_BETAS))
    ring_s = tuple(part.ring_positions() for part in parts)
    verts = _part_vertices(parts, ring_s)
    part_faces = [part.faces() for part in parts]
    part_faces += [f[:, [0, 2, 1]] for f in part_faces[3:]]  # mirroring flips the orientation
    for k, (v, f) in enumerate(zip(verts, part_faces)):
        if _signed_volume(v, f) < 0:  # outward normals
            part_faces[k] = f[:, [0, 2, 1]]
    offsets = np.concatenate([[0], np.cumsum([len(v) for v in verts])])
    stacked = np.concatenate(verts)
    faces = np.concatenate([f + o for f, o in zip(part_faces, offsets)])

    head = parts[PART_NAMES.index("head")]
    head_s = ring_s[2]
    landmark_stacked = {}
    for name, (s, angle) in landmarks.items():
        ring = int(np.argmin(np.abs(head_s - s)))
        around = int(round(angle / (2 * np.pi) * head.n_around)) % head.n_around
        landmark_stacked[name] = offsets[2] + 1 + ring * head.n_around + around

    # Connected sums: remove a vertex of each part that lies deep inside the other and bridge the two holes.
    removed, protected = set(), set(landmark_stacked.values())
    bridges = []
    for name_a, name_b in _JOINS:
        ia, ib = PART_NAMES.index(name_a), PART_NAMES.index(name_b)
        chosen = []
        for mine, other in ((ia, ib), (ib, ia)):
            # The vertex whose whole 1-ring lies deepest inside the other part: its hole stays hidden.
            idx = np.arange(offsets[mine], offsets[mine + 1])
            depth = _depth_inside(stacked[idx], verts[other], part_faces[other])
            local = part_faces[mine]
            ring_depth = depth.copy()
            for k in range(3):
                for j in range(1, 3):
                    np.minimum.at(ring_depth, local[:, k], depth[local[:, (k + j) % 3]])
            blocked = np.array([i in protected for i in idx])
            score = np.where((ring_depth > 0) & ~blocked, ring_depth, -np.inf)
            if not np.isfinite(score.max()):
                raise AssertionError(f"parts {name_a} and {name_b} do not overlap enough to be joined")
            chosen.append(int(idx[np.argmax(score)]))
        loops = [_link(v, faces) for v in chosen]
        for v, loop in zip(chosen, loops):
            removed.add(v)
            protected.update([v, *loop])
        bridges.append(_bridge(loops[0], loops[1], stacked))
    faces = faces[~np.isin(faces, list(removed)).any(1)]
    faces = np.concatenate([faces] + bridges)

    keep = np.array([i for i in range(len(stacked)) if i not in removed])
    if len(keep) != NUM_VERTICES:
        raise AssertionError(f"the parts have {len(keep)} vertices after joining, expected {NUM_VERTICES}")
    # Give the face landmarks SMPL's vertex indices (spec 1.6) by swapping them into place.
    targets = dict(zip(("nose", "l_eye", "r_eye", "l_ear", "r_ear"), SMPL30_FACE_VERTICES))
    for name, target in targets.items():
        pos = int(np.flatnonzero(keep == landmark_stacked[name])[0])
        keep[[target, pos]] = keep[[pos, target]]
    final_index = np.full(len(stacked), -1)
    final_index[keep] = np.arange(NUM_VERTICES)
    faces = final_index[faces].astype(np.int64)
    return _Topology(ring_s, tuple(parts), offsets, keep, faces, dict(targets))


def _assemble(shape):
    """Joints (24, 3), stacked per-part vertices (n, 3) and the parts for the proportions `shape` (10,)."""
    joints, parts, _ = _design(shape)
    topo = _topology()
    verts = np.concatenate(_part_vertices(parts, topo.ring_s, topo.neutral_parts))
    return joints, verts, parts


# ----------------------------------------------------------------------------------------------------------------------
# Skinning weights


def _chain_weights(s, bounds, joint_ids, half_widths):
    """Weights (n, 24) along one axis: joint_ids[k] owns the stretch between bounds[k-1] and bounds[k]; across
    each bound the weight passes smoothly (smoothstep over +-half_width) to the next joint, 50/50 at the bound."""
    weights = np.zeros((len(s), NUM_JOINTS))
    previous = np.ones(len(s))
    for k, joint in enumerate(joint_ids):
        beyond = _ramp(s, bounds[k] - half_widths[k], bounds[k] + half_widths[k]) if k < len(bounds) else 0.0
        weights[:, joint] += np.clip(previous - beyond, 0, None)
        previous = np.minimum(previous, beyond) if k < len(bounds) else previous
    return weights / weights.sum(1, keepdims=True)


def _axial(part, verts, points):
    """Arc positions along the part's axis of `verts` (n, 3) and `points` (k, 3)."""
    axis = part.axis / np.linalg.norm(part.axis)
    return (verts - part.origin) @ axis, (np.asarray(points) - part.origin) @ axis


# Per limb part: (joints owning consecutive stretches of the bone axis, half-widths of the blends in metres).
_LIMB_CHAINS = {
    "neck": (("Chest", "Neck", "Head"), (0.04, 0.035)),
    "upper_arm": (("L_Thorax", "L_Shoulder", "L_Elbow"), (0.05, 0.04)),
    "forearm": (("L_Shoulder", "L_Elbow", "L_Wrist"), (0.04, 0.03)),
    "hand": (("L_Elbow", "L_Wrist", "L_Hand"), (0.035, 0.03)),
    "thigh": (("Pelvis", "L_Hip", "L_Knee"), (0.07, 0.05)),
    "shin": (("L_Hip", "L_Knee", "L_Ankle"), (0.05, 0.035)),
    "foot": (("L_Ankle", "L_Toe"), (0.035,)),
}


def _torso_weights(verts, joints):
    """The torso follows the spine chain along y; its shoulders follow the collars (and partly the upper arms),
    its lower sides partly the hips, so the limbs stay covered when they move."""
    x, y = verts[:, 0], verts[:, 1]
    spine = [_J[n] for n in ("Pelvis", "Torso", "Spine", "Chest")]
    weights = _chain_weights(y, joints[spine[1:], 1], spine, (0.14, 0.14, 0.14))
    regions = np.zeros_like(weights)
    for side, lr in ((1, "L_"), (-1, "R_")):
        collar_y = joints[_J[lr + "Thorax"], 1]
        collar = _ramp(y, collar_y - 0.14, collar_y + 0.02) * _ramp(side * x, 0.03, 0.13)
        arm = collar * 0.5 * _ramp(side * x, 0.13, 0.19)
        regions[:, _J[lr + "Thorax"]] = collar - arm
        regions[:, _J[lr + "Shoulder"]] = arm
        hip_y = joints[_J[lr + "Hip"], 1]
        regions[:, _J[lr + "Hip"]] = 0.6 * _ramp(-y, -hip_y, -hip_y + 0.10) / (1 + np.exp(-side * x / 0.02))
    return weights * (1 - regions.sum(1, keepdims=True)) + regions


def _skinning_weights(joints, parts, verts_by_part):
    """(n_stacked, 24) weights for the stacked per-part vertices; right limbs mirror the left ones."""
    out = []
    for name, part, verts in zip(PART_NAMES, parts, verts_by_part):
        if name == "torso":
            out.append(_torso_weights(verts, joints))
        elif name == "head":
            w = np.zeros((len(verts), NUM_JOINTS))
            w[:, _J["Head"]] = 1
            out.append(w)
        else:
            # The thumb is skinned like the part of the hand it grows from (positions along the hand's axis).
            chain_part = parts[PART_NAMES.index("l_hand")] if name == "l_thumb" else part
            names, half_widths = _LIMB_CHAINS[chain_part.name.removeprefix("l_")]
            ids = [_J[n] for n in names]
            s, bounds = _axial(chain_part, verts, joints[ids[1:]])
            out.append(_chain_weights(s, bounds, ids, half_widths))
    return np.concatenate(out + [w[:, _FLIP24] for w in out[3:]])


# ----------------------------------------------------------------------------------------------------------------------
# Joint regressors


def _max_entropy_weights(points, target, prior):
    """Convex weights w (n,) over `points` (n, 3) with sum(w * points) = target and the least KL divergence from
    `prior` (w ~ prior * exp(lambda . x), Newton on the dual). None if target is not inside the points' hull."""
    x = points - target
    log_prior = np.log(prior)
    lam = np.zeros(3)

    def objective(lam):
        a = log_prior + x @ lam
        top = a.max()
        return top + np.log(np.exp(a - top).sum())

    for _ in range(60):
        a = log_prior + x @ lam
        w = np.exp(a - a.max())
        w /= w.sum()
        grad = w @ x
        if np.linalg.norm(grad) < 1e-12:
            return w
        hess = (x * w[:, None]).T @ x - np.outer(grad, grad)
        step = np.linalg.solve(hess + 1e-14 * np.eye(3), grad)
        value, t = objective(lam), 1.0
        while objective(lam - t * step) > value - 1e-4 * t * (grad @ step):
            t *= 0.5
            if t < 1e-6:  # no progress: the target is on or outside the hull
                return None
        lam = lam - t * step
        if np.linalg.norm(lam) > 1e5:  # the dual diverges when the target is outside the hull
            return None
    return None


def _regressor_row(verts, candidates, target, radius=0.05):
    """A (n_vertices,) convex combination of the candidate vertices near `target` that reproduces it exactly;
    the neighbourhood grows until the target lies inside it."""
    while radius < 0.5:
        dist = np.linalg.norm(verts[candidates] - target, axis=1)
        near = candidates[dist < radius]
        if len(near) >= 8:
            prior = np.exp(-0.5 * (dist[dist < radius] / (0.5 * radius)) ** 2)
            w = _max_entropy_weights(verts[near], target, prior)
            if w is not None:
                row = np.zeros(len(verts))
                row[near] = w
                return row
        radius *= 1.3
    raise AssertionError(f"no vertex neighbourhood encloses the joint at {target}")


def _surface_row(verts, candidates, centre, sigma):
    """A smooth (n_vertices,) average of the candidate vertices around a surface point (Gaussian, sigma metres)."""
    dist = np.linalg.norm(verts[candidates] - centre, axis=1)
    row = np.zeros(len(verts))
    row[candidates] = np.exp(-0.5 * (dist / sigma) ** 2) * (dist < 3 * sigma)
    return row / row.sum()


# Parts whose vertices define each of the 24 joints (left/central; right joints use the mirrored parts).
_JOINT_PARTS = {
    "Pelvis": ("torso",), "L_Hip": ("l_thigh",), "Torso": ("torso",), "L_Knee": ("l_thigh", "l_shin"),
    "Spine": ("torso",), "L_Ankle": ("l_shin", "l_foot"), "Chest": ("torso",), "L_Toe": ("l_foot",),
    "Neck": ("neck",), "L_Thorax": ("torso",), "Head": ("head", "neck"), "L_Shoulder": ("l_upper_arm", "torso"),
    "L_Elbow": ("l_upper_arm", "l_forearm"), "L_Wrist": ("l_forearm", "l_hand"), "L_Hand": ("l_hand",),
}


def _part_vertex_ids(names):
    """Final vertex indices of the named parts."""
    topo = _topology()
    stacked = np.concatenate([np.arange(topo.offsets[PART_NAMES.index(n)], topo.offsets[PART_NAMES.index(n) + 1])
                              for n in names])
    return np.flatnonzero(np.isin(topo.keep, stacked))


def _joint_parts(name):
    if name in _JOINT_PARTS:
        return _JOINT_PARTS[name]
    return tuple(p.replace("l_", "r_") for p in _JOINT_PARTS["L_" + name[2:]])


def _regressors(verts, joints):
    """J_regressor (24, 6890), J_regressor_extra (9, 6890) and J_regressor_h36m (17, 6890) for the rest
    vertices `verts` (6890, 3) of a mannequin whose designed joints are `joints` (24, 3)."""
    j24 = np.stack([_regressor_row(verts, _part_vertex_ids(_joint_parts(name)), joints[i])
                    for i, name in enumerate(SMPL30[:NUM_JOINTS])])
    head_ids = _part_vertex_ids(("head",))
    top = head_ids[np.argmax(verts[head_ids, 1])]
    head_top = _surface_row(verts, head_ids, verts[top], 0.012)
    nose = _surface_row(verts, head_ids, verts[SMPL30_FACE_VERTICES[0]], 0.008)
    torso_ids = _part_vertex_ids(("torso",))
    pelvis, neck, head = joints[_J["Pelvis"]], joints[_J["Neck"]], joints[_J["Head"]]
    spine_mid = _regressor_row(verts, torso_ids, 0.5 * (pelvis + neck))
    # SPIN's extra joints; only row 3 (head top) is used by this project, the others are plausible stand-ins.
    extra = []
    for side in ("R_", "L_"):  # LSP hips: a little lower and wider than SMPL's hip joints
        hip = joints[_J[side + "Hip"]] + np.array([0.012 if side == "L_" else -0.012, -0.03, 0.0])
        extra.append(_regressor_row(verts, _part_vertex_ids(_joint_parts(side + "Hip")), hip))
    extra.append(_regressor_row(verts, _part_vertex_ids(("neck",)), 0.5 * (neck + head)))  # LSP neck
    extra.append(head_top)
    extra.append(j24[_J["Pelvis"]])  # MPII pelvis
    extra.append(_regressor_row(verts, torso_ids, joints[_J["Chest"]] + 0.6 * (neck - joints[_J["Chest"]])))
    extra.append(spine_mid)  # H36M spine
    extra.append(_regressor_row(verts, head_ids, head + np.array([0.0, -0.035, 0.05])))  # jaw
    extra.append(_regressor_row(verts, head_ids, head + np.array([0.0, 0.07, -0.01])))  # H36M head centre
    h36m = {"Torso": spine_mid, "Nose": nose, "Head_top": head_top}
    h36m = np.stack([h36m[n] if n in h36m else j24[SMPL30.index(n)] for n in H36M17])
    return j24, np.stack(extra), h36m


# ----------------------------------------------------------------------------------------------------------------------
# The model


def build_mannequin(gender="neutral"):
    """The mannequin as SMPL model arrays (float64 unless noted):

    v_template (6890, 3) m; shapedirs (6890, 3, 10) m per unit beta (SHAPE_DIRECTIONS); posedirs (6890, 3, 207)
    zeros; J_regressor (24, 6890); J (24, 3) rest joints; weights (6890, 24); kintree_table (2, 24) int64 with the
    root's parent 4294967295; f (13776, 3) int64; plus J_regressor_extra (9, 6890) (row 3 = head top) and
    J_regressor_h36m (17, 6890) (common.body.joint_sets.H36M17 order). `gender`: 'neutral', 'male' or 'female'
    (slightly different proportions, same topology). Deterministic.
    """
    if gender not in GENDER_SHAPES:
        raise ValueError(f"mannequin gender must be one of {tuple(GENDER_SHAPES)}, got {gender!r}")
    topo = _topology()
    base = GENDER_SHAPES[gender]
    joints, stacked, parts = _assemble(base)
    v_template = stacked[topo.keep]
    verts_by_part = np.split(stacked, topo.offsets[1:-1])
    weights = _skinning_weights(joints, parts, verts_by_part)[topo.keep]
    shapedirs = np.zeros((NUM_VERTICES, 3, NUM_BETAS))
    for k in range(NUM_BETAS):
        step = np.eye(NUM_BETAS)[k]
        shapedirs[:, :, k] = 0.5 * (_assemble(base + step)[1] - _assemble(base - step)[1])[topo.keep]
    j24, extra, h36m = _regressors(v_template, joints)
    kintree = np.array([[ROOT_PARENT if p < 0 else p for p in SMPL_PARENTS], list(range(NUM_JOINTS))],
                       dtype=np.int64)
    return {
        "v_template": v_template,
        "shapedirs": shapedirs,
        "posedirs": np.zeros((NUM_VERTICES, 3, 9 * (NUM_JOINTS - 1))),
        "J_regressor": j24,
        "J": j24 @ v_template,
        "weights": weights,
        "kintree_table": kintree,
        "f": topo.faces.copy(),
        "J_regressor_extra": extra,
        "J_regressor_h36m": h36m,
    }


SMPL_FILE_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "J", "weights", "kintree_table", "f")


def write_mannequin(out_dir):
    """Write the mannequin in the layout of `data/body_models/`: smpl/SMPL_{NEUTRAL,MALE,FEMALE}.pkl (plain
    dicts of numpy arrays, SMPL keys), J_regressor_extra.npy and J_regressor_h36m_correct.npy (from the neutral
    model). Returns {'neutral', 'male', 'female', 'J_regressor_extra', 'J_regressor_h36m'} -> Path."""
    out_dir = pathlib.Path(out_dir)
    (out_dir / "smpl").mkdir(parents=True, exist_ok=True)
    paths = {}
    for gender in ("neutral", "male", "female"):
        model = build_mannequin(gender)
        paths[gender] = out_dir / "smpl" / f"SMPL_{gender.upper()}.pkl"
        with open(paths[gender], "wb") as f:
            # Protocol 2, as the original SMPL files: readable by every pickle-based SMPL loader.
            pickle.dump({k: model[k] for k in SMPL_FILE_KEYS}, f, protocol=2)
        if gender == "neutral":
            paths["J_regressor_extra"] = out_dir / "J_regressor_extra.npy"
            paths["J_regressor_h36m"] = out_dir / "J_regressor_h36m_correct.npy"
            np.save(paths["J_regressor_extra"], model["J_regressor_extra"])
            np.save(paths["J_regressor_h36m"], model["J_regressor_h36m"])
    return paths
