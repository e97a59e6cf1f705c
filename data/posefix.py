"""PoseFix input-pose synthesis (spec 5.3): the ground-truth 2D pose corrupted the way 2D pose detectors err.

JOTR feeds the network a 2D pose next to the image. At training time that pose is synthesised from the ground truth
with the error model of PoseFix (Moon et al., CVPR 2019), itself built on the error taxonomy and COCO statistics of
Ronchi & Perona ("Benchmarking and error diagnosis in multi-instance pose estimation", ICCV 2017). Each annotated
COCO joint of the target becomes one of five kinds, measured with COCO's keypoint similarity
OKS = exp(-d^2 / (2 s^2 k^2)), s^2 = the person's tight-box area, k = 2 sigma (COCO_SIGMAS):

    good       within the OKS-0.85 distance of the ground truth;
    jitter     between the OKS-0.85 and OKS-0.5 distances of the ground truth;
    miss       between the OKS-0.5 and OKS-0.1 distances of a centre drawn from the candidates (the ground truth,
               the left/right counterpart, another person's same or counterpart joint): a detection that landed
               nowhere useful;
    inversion  within the OKS-0.5 distance of the same person's left/right counterpart (left knee on the right knee);
    swap       within the OKS-0.5 distance of an overlapping person's same or counterpart joint.

The distance at OKS level L is d_L = sqrt(-2 ln L) * s * k. The radius is uniform between the kind's two
distances, the direction uniform. "Overlapping people" are the other people whose tight boxes have IoU >= 0.1 with
the target's; only their annotated joints (third column > 0) are candidates. (The official code treated every
joint of a nearby person as visible, spec 7.20, so an unannotated COCO joint stored at (0, 0) could attract swaps;
for fully annotated sets such as MuCo and Human3.6M the two agree.) Unannotated joints of the target, and joints
of the dataset's set that COCO lacks (Pelvis, Neck, Head_top, ...), are left exactly as they are.

The probabilities (ERROR_TABLE and the factors below) are documented choices: the official tables are not part of
the specification this code is written from. They follow the COCO detector statistics the PoseFix paper builds on:
jitter is by far the most common error, inversions and misses are rare, swaps need a nearby person and grow with
their number; wrists and ankles fail most, the face and the torso least; every error grows when the person has few
annotated joints (truncated or occluded) or stands in a crowd. A visible joint of an uncrowded, fully annotated
person is therefore good with probability 0.81 (wrists, ankles) to 0.91 (face). The per-joint probabilities are
renormalised over the kinds that are feasible for that joint (no inversion for the nose or when the counterpart is
not annotated; no swap without an overlapping person who has the joint or its counterpart).

Everything here works in one frame, the crop frame of the sample (crop pixels), including the box area: the
builder applies it after the crop warp (data.train_sample). All randomness comes from the numpy Generator passed in.
"""
import functools
import math

import numpy as np

from common.body.joint_sets import COCO17, flip_pairs, map_joints

# COCO keypoint sigmas (cocodataset.org keypoint evaluation), per joint name.
COCO_SIGMAS = {
    "Nose": 0.026, "L_Eye": 0.025, "R_Eye": 0.025, "L_Ear": 0.035, "R_Ear": 0.035,
    "L_Shoulder": 0.079, "R_Shoulder": 0.079, "L_Elbow": 0.072, "R_Elbow": 0.072, "L_Wrist": 0.062,
    "R_Wrist": 0.062, "L_Hip": 0.107, "R_Hip": 0.107, "L_Knee": 0.087, "R_Knee": 0.087, "L_Ankle": 0.089,
    "R_Ankle": 0.089,
}
OKS_GOOD = 0.85  # good: OKS above this
OKS_JITTER = 0.5  # jitter: OKS between this and OKS_GOOD; inversion/swap: OKS above this w.r.t. the wrong joint
OKS_MISS = 0.1  # miss: OKS between this and OKS_JITTER w.r.t. its centre
MIN_IOU = 0.1  # other people whose tight box has at least this IoU with the target's are "overlapping"

ERROR_TYPES = ("good", "jitter", "miss", "inversion", "swap")
GOOD, JITTER, MISS, INVERSION, SWAP = range(len(ERROR_TYPES))
UNTOUCHED = -1  # type code of a joint PoseFix did not change (not annotated, or not a COCO joint)

JOINT_GROUPS = {
    "face": ("Nose", "L_Eye", "R_Eye", "L_Ear", "R_Ear"),
    "torso": ("L_Shoulder", "R_Shoulder", "L_Hip", "R_Hip"),
    "limb": ("L_Elbow", "R_Elbow", "L_Knee", "R_Knee"),
    "extremity": ("L_Wrist", "R_Wrist", "L_Ankle", "R_Ankle"),
}
GROUP_OF = {name: group for group, names in JOINT_GROUPS.items() for name in names}

# Error probabilities of one annotated joint of a person with at least VISIBLE_FACTORS[0][0] annotated COCO joints
# and nobody overlapping (documented choices, see the module docstring); "swap" is per overlapping person.
# good = 1 - the sum of the others (before renormalisation over the feasible kinds). The resulting probabilities are
# cached: edit the values here, not at run time.
ERROR_TABLE = {
    "face":      {"jitter": 0.06, "miss": 0.01, "inversion": 0.02, "swap": 0.03},
    "torso":     {"jitter": 0.08, "miss": 0.01, "inversion": 0.02, "swap": 0.03},
    "limb":      {"jitter": 0.10, "miss": 0.02, "inversion": 0.03, "swap": 0.05},
    "extremity": {"jitter": 0.12, "miss": 0.03, "inversion": 0.04, "swap": 0.06},
}
# Every error probability is multiplied by the factor of the first row whose minimum the number of annotated COCO
# joints of the target reaches: fewer annotated joints (truncation, occlusion) -> more errors.
VISIBLE_FACTORS = ((10, 1.0), (5, 1.5), (0, 2.0))
# Crowding: jitter, miss and inversion are multiplied by 1 + OVERLAP_STEP * min(n, MAX_OVERLAP); swap by
# min(n, MAX_OVERLAP) (the table's value is per person), n = the number of overlapping people.
OVERLAP_STEP = 0.25
MAX_OVERLAP = 2

_COCO_PARTNER = {}
for _left, _right in flip_pairs(COCO17):
    _COCO_PARTNER[_left], _COCO_PARTNER[_right] = _right, _left


def oks_distance(level, area, sigma):
    """The distance (same unit as sqrt(area)) at which COCO's OKS exp(-d^2 / (2 area (2 sigma)^2)) equals `level`.
    Works elementwise on arrays of sigmas."""
    return np.sqrt(-2.0 * np.log(level) * max(float(area), 0.0)) * 2.0 * np.asarray(sigma, dtype=np.float64)


@functools.lru_cache(maxsize=1024)
def _error_probabilities(group, num_visible, num_overlapping, can_invert, can_swap):
    rates = ERROR_TABLE[group]
    factor = next(f for minimum, f in VISIBLE_FACTORS if num_visible >= minimum)
    crowd = min(num_overlapping, MAX_OVERLAP)
    probs = np.zeros(len(ERROR_TYPES))
    probs[JITTER] = rates["jitter"] * factor * (1 + OVERLAP_STEP * crowd)
    probs[MISS] = rates["miss"] * factor * (1 + OVERLAP_STEP * crowd)
    probs[INVERSION] = rates["inversion"] * factor * (1 + OVERLAP_STEP * crowd)
    probs[SWAP] = rates["swap"] * factor * crowd
    probs[GOOD] = 1.0 - probs[1:].sum()
    if probs[GOOD] < 0:
        raise ValueError(f"PoseFix error table gives error probabilities above 1 for group {group!r}")
    if not can_invert:
        probs[INVERSION] = 0.0
    if not can_swap:
        probs[SWAP] = 0.0
    probs /= probs.sum()
    probs.flags.writeable = False  # cached: shared by every caller
    return probs


def error_probabilities(group, num_visible, num_overlapping, can_invert, can_swap):
    """(5,) probabilities of ERROR_TYPES (good, jitter, miss, inversion, swap) for one annotated joint.

    group: a JOINT_GROUPS key; num_visible: annotated COCO joints of the target; num_overlapping: overlapping people;
    can_invert / can_swap: whether an inversion / swap target exists. Infeasible kinds get 0 and the rest is
    renormalised to sum to 1. The array is read-only (shared through a cache).
    """
    return _error_probabilities(group, int(num_visible), int(num_overlapping), bool(can_invert), bool(can_swap))


def _offset(rng, inner, outer):
    """A 2D offset with uniform direction and radius uniform in [inner, outer)."""
    radius = rng.uniform(inner, outer) if outer > inner else inner
    angle = rng.uniform(0.0, 2.0 * math.pi)
    return np.array([radius * math.cos(angle), radius * math.sin(angle)])


_SIGMAS = np.array([COCO_SIGMAS[name] for name in COCO17])
_GROUPS = tuple(GROUP_OF[name] for name in COCO17)


def synthesize_pose(joints, valid, near_joints, area, rng):
    """PoseFix synthesis on the 17 COCO joints (module docstring).

    joints: (17, 2) COCO17 order, crop frame (pixels); valid: (17,) truthy where annotated;
    near_joints: list of (17, 3) COCO17 joints of the OVERLAPPING people (same frame; third column > 0 where
    annotated); area: the target's tight-box area in the same frame (pixels^2); rng: numpy Generator.
    Returns (joints (17, 2) float64, kinds (17,) int: an ERROR_TYPES index, UNTOUCHED for unannotated joints).
    """
    gt = np.asarray(joints, dtype=np.float64)[:, :2]
    valid = np.asarray(valid).reshape(-1) > 0
    if gt.shape != (len(COCO17), 2) or len(valid) != len(COCO17):
        raise ValueError(f"synthesize_pose expects (17, 2) COCO17 joints and (17,) validity, got {gt.shape} and "
                         f"{valid.shape}")
    near = [np.asarray(person, dtype=np.float64) for person in near_joints]
    for person in near:
        if person.shape != (len(COCO17), 3):
            raise ValueError(f"near joints must be (17, 3) COCO17 x, y, visibility, got {person.shape}")
    num_visible = int(valid.sum())
    good_r, jitter_r, miss_r = (oks_distance(level, area, _SIGMAS) for level in (OKS_GOOD, OKS_JITTER, OKS_MISS))
    out = gt.copy()
    kinds = np.full(len(COCO17), UNTOUCHED, dtype=np.int64)
    for j in np.flatnonzero(valid):
        partner = _COCO_PARTNER.get(j)
        inverted = gt[partner] if partner is not None and valid[partner] else None
        swaps = [person[k, :2] for person in near for k in (j, partner) if k is not None and person[k, 2] > 0]
        probs = error_probabilities(_GROUPS[j], num_visible, len(near), inverted is not None, bool(swaps))
        cumulative = np.cumsum(probs)
        # u * total < total, so a trailing zero-probability kind can never be drawn.
        kind = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
        if kind == GOOD:
            centre, inner, outer = gt[j], 0.0, good_r[j]
        elif kind == JITTER:
            centre, inner, outer = gt[j], good_r[j], jitter_r[j]
        elif kind == INVERSION:
            centre, inner, outer = inverted, 0.0, jitter_r[j]
        elif kind == SWAP:
            centre, inner, outer = swaps[rng.integers(len(swaps))], 0.0, jitter_r[j]
        else:  # miss: around the ground truth or one of the wrong joints, each feasible kind equally likely
            candidates = [[gt[j]]] + ([[inverted]] if inverted is not None else []) + ([swaps] if swaps else [])
            group = candidates[rng.integers(len(candidates))]
            centre, inner, outer = group[rng.integers(len(group))], jitter_r[j], miss_r[j]
        out[j] = centre + _offset(rng, inner, outer)
        kinds[j] = kind
    return out, kinds


def box_iou(box_a, box_b):
    """IoU of two xywh boxes (same frame). 0 when either has no area."""
    ax, ay, aw, ah = (float(v) for v in box_a)
    bx, by, bw, bh = (float(v) for v in box_b)
    inter_w = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    inter_h = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = inter_w * inter_h
    union = max(aw, 0.0) * max(ah, 0.0) + max(bw, 0.0) * max(bh, 0.0) - inter
    return inter / union if union > 0 else 0.0


def tight_box(joints):
    """xywh tight box of the annotated joints (third column > 0) of (J, 3) joints, or None if none is annotated."""
    joints = np.asarray(joints, dtype=np.float64)
    xy = joints[joints[:, 2] > 0, :2]
    if len(xy) == 0:
        return None
    (x0, y0), (x1, y1) = xy.min(0), xy.max(0)
    return np.array([x0, y0, x1 - x0, y1 - y0])


def overlapping_people(bbox, near_joints, min_iou=MIN_IOU):
    """The people of `near_joints` (list of (J, 3) x, y, visibility arrays) whose tight box of annotated joints has
    IoU >= min_iou with the target's tight box `bbox` (xywh, same frame). Returns the kept arrays, in order."""
    kept = []
    for person in near_joints:
        box = tight_box(person)
        if box is not None and box_iou(bbox, box) >= min_iou:
            kept.append(person)
    return kept


def posefix(joints, valid, joint_set, near_joints, area, rng):
    """PoseFix synthesis for any joint set: its COCO joints (by name) are synthesised, the others left unchanged.

    joints: (J, 2) crop frame in `joint_set` order; valid: (J,) or (J, 1); joint_set: tuple of J names
    (common.body.joint_sets); near_joints: list of (J, 3) joints of the overlapping people in the same set and frame
    (see overlapping_people); area: the target's tight-box area, pixels^2 of the same frame; rng: numpy Generator.
    Returns (joints (J, 2) float64, kinds (J,) int: ERROR_TYPES index or UNTOUCHED).
    """
    joints = np.asarray(joints, dtype=np.float64)[:, :2]
    valid = np.asarray(valid, dtype=np.float64).reshape(-1)
    if len(joints) != len(joint_set) or len(valid) != len(joint_set):
        raise ValueError(f"posefix: joint set has {len(joint_set)} joints, got joints {joints.shape} and validity "
                         f"{valid.shape}")
    coco = map_joints(joints, joint_set, COCO17)
    coco_valid = map_joints(valid, joint_set, COCO17)  # COCO joints the set lacks: 0, never synthesised
    near = [map_joints(np.asarray(p, dtype=np.float64)[:, :3], joint_set, COCO17) for p in near_joints]
    coco_out, coco_kinds = synthesize_pose(coco, coco_valid, near, area, rng)
    out = joints.copy()
    kinds = np.full(len(joint_set), UNTOUCHED, dtype=np.int64)
    for i, name in enumerate(joint_set):
        if name in COCO17:
            out[i] = coco_out[COCO17.index(name)]
            kinds[i] = coco_kinds[COCO17.index(name)]
    return out, kinds
