"""Detector failures on the joints a pasted occluder hides: the training input pose fails where the image shows why.

PoseFix synthesis (data.posefix) corrupts joints at rates that depend on the joint and the crowd, not on what the
image shows, so the image never tells the network which input joints to distrust. Real 2D detectors fail mostly on
the joints they cannot see: the joint is reported on whatever hides it, not reported at all, or the limb's left and
right are confused. With synthetic occluders pasted over the crop (data.occluder) the hidden joints are known
exactly, and this module makes the input pose fail on them in those three ways (an option of the training builder,
off by default; not in the official code). Only the input pose and its mask change; the targets and their
validity stay.

The rates are documented choices, the same as the synthetic benchmark's test-time failures
(embedded.detections.occlusion_failures), so that a model trained with them meets at test time what it learnt:

    ONTO_OCCLUDER  the joint is reported on a point of the occluder within RADIUS x the person's box height;
    MISSED         else, with this probability, not reported (input mask 0, coordinates 0, as a dropped detection);
                   otherwise the input keeps what PoseFix gave it;
    SWAP           per arm / leg with a hidden joint on either side: the left and right chains swap.
"""
import numpy as np

from common.body.joint_sets import flip_pairs

ONTO_OCCLUDER = 0.3
MISSED = 0.4
SWAP = 0.3
RADIUS = 0.15  # x the person's box height
COVERED = 0.5  # a pixel belongs to the occluder where the pasted alpha exceeds this
LIMBS = (("Shoulder", "Elbow", "Wrist"), ("Hip", "Knee", "Ankle"))


def occluder_pixels(coverage):
    """(N, 2) x, y of the pixels of coverage (H, W) (the pasted occluders' alpha) that belong to an occluder."""
    rows, cols = np.nonzero(coverage > COVERED)
    return np.stack([cols, rows], axis=1)


def hidden_joints(joints, valid, coverage):
    """(J,) bool: annotated joints (valid > 0) whose true position (J, 2) x, y in the coverage map's pixels lies on
    an occluder pixel of coverage (H, W) (the pasted occluders' alpha, above COVERED). Joints outside the map are
    not hidden."""
    joints = np.asarray(joints, dtype=np.float64)[:, :2]
    height, width = coverage.shape
    cols, rows = np.round(joints[:, 0]).astype(np.int64), np.round(joints[:, 1]).astype(np.int64)
    inside = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height) & (np.asarray(valid).reshape(-1) > 0)
    hidden = np.zeros(len(joints), bool)
    hidden[inside] = coverage[rows[inside], cols[inside]] > COVERED
    return hidden


def occlusion_failures(joints, mask, true_joints, hidden, occluder_points, box_height, names, rng):
    """The input pose failing on its hidden joints (module docstring).

    joints: (J, 2) input pose; mask: (J,) its validity (1 = given to the network); true_joints: (J, 2) the ground
    truth; hidden: (J,) bool, the joints the occluder hides (hidden_joints); occluder_points: (N, 2) x, y of the
    occluder's pixels; box_height: the person's box height. All in one frame. names: the J joint names (for the
    limbs' left/right pairs); rng: numpy Generator.
    Returns (joints (J, 2), mask (J,), record {'onto_occluder', 'missed', 'swapped': joint indices}).
    """
    joints = np.array(joints, dtype=np.float64, copy=True)[:, :2]
    mask = np.array(mask, dtype=np.float32, copy=True).reshape(-1)
    true_joints = np.asarray(true_joints, dtype=np.float64)[:, :2]
    points = np.asarray(occluder_points, dtype=np.float64).reshape(-1, 2)
    radius = RADIUS * float(box_height)
    record = {"onto_occluder": [], "missed": [], "swapped": []}
    for j in np.flatnonzero(hidden):
        draw = rng.random()
        if draw < ONTO_OCCLUDER:
            near = np.flatnonzero(np.hypot(*(points - true_joints[j]).T) <= radius) if len(points) else []
            if len(near):
                joints[j] = points[near[rng.integers(len(near))]]
                record["onto_occluder"].append(int(j))
                continue
        if draw < ONTO_OCCLUDER + MISSED:
            joints[j] = 0
            mask[j] = 0
            record["missed"].append(int(j))
    pairs = flip_pairs(names)
    for limb in LIMBS:
        chain = [(a, b) for a, b in pairs if names[a][2:] in limb]
        if any(hidden[a] or hidden[b] for a, b in chain) and rng.random() < SWAP:
            for a, b in chain:
                joints[[a, b]] = joints[[b, a]]
                mask[[a, b]] = mask[[b, a]]
                record["swapped"] += [int(a), int(b)]
    return joints, mask, record
