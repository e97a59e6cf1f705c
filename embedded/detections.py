"""Detector-like 2D poses of the synthetic people: a detector's noise, and its failures under occlusion."""
import numpy as np

from common.body.joint_sets import COCO17, OPENPOSE18, SMPL30, flip_pairs
from data.occlusion_failures import LIMBS, MISSED, ONTO_OCCLUDER, RADIUS, SWAP

OPENPOSE_IN_SMPL30 = [SMPL30.index(n) for n in OPENPOSE18]
COCO_IN_SMPL30 = [SMPL30.index(n) for n in COCO17]


def outside_image(xy, image_size):
    """(J,) bool: points (J, 2+) x, y pixels outside an image of image_size (H, W), pixel centres 0..W-1, 0..H-1."""
    height, width = image_size
    return (xy[:, 0] < 0) | (xy[:, 0] > width - 1) | (xy[:, 1] < 0) | (xy[:, 1] > height - 1)


def detector_pose(rng, person, joint_indices, names, image_size):
    """A detector's output for one person: (J, 3) x, y (pixels), confidence for the SMPL30 joints `joint_indices`
    (named `names`), and a record of the noise.

    Visible joints: + N(0, sigma) per coordinate (clipped at 3 sigma), sigma = 0.8-1.6 % of the person's box
    height (>= 0.5 px), confidence 0.35-0.98 (3 % are missed). Occluded joints: dropped (confidence 0) or, half of
    the time, kept with confidence 0.06-0.3 and noise up to 9 sigma. Joints outside the image, or pushed out by the
    noise, are dropped. With probability 0.08 an arm, a leg or one joint pair swaps left and right. Dropped joints
    are (0, 0, 0), as OpenPose writes them."""
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
    confidence[outside_image(xy, image_size)] = 0
    xy[confidence == 0] = 0
    out = np.concatenate([xy, confidence[:, None]], 1)
    return out, {"noise_sigma_px": float(sigma), "swapped": sorted(int(i) for i in swapped)}


# Detector failures under occlusion (generate(detector_failures=True)): how real 2D detectors fail on a joint they
# cannot see, applied on top of detector_pose to every joint inside the image but hidden by another surface. The
# rates are documented choices, not measured detector statistics, stated once in data.occlusion_failures (training
# inputs can fail the same way under pasted occluders); here they depend on what actually hides the joint:
# FAILURE_ONTO_OCCLUDER: the hidden joint is reported on what hides it, the occluding person's joint of the same
#     name or a point of the occluding object within FAILURE_RADIUS x the person's box height of the joint;
# FAILURE_MISSED: else, with this probability, not reported at all (confidence 0); otherwise detector_pose's output
#     stays (itself dropped or low-confidence and noisy);
# FAILURE_SWAP: per arm / leg with a hidden joint on either side, its left and right chains swap.
FAILURE_ONTO_OCCLUDER, FAILURE_MISSED, FAILURE_SWAP, FAILURE_RADIUS = ONTO_OCCLUDER, MISSED, SWAP, RADIUS
FAILURE_CONFIDENCE = (0.3, 0.8)  # a wrong detection's confidence: detectors are confident about what they do see
FAILURE_STREAM = 1  # last entry of the failures' own random stream (seed, split, image, FAILURE_STREAM)


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
    for limb in LIMBS:
        chain = [(a, b) for a, b in pairs if names[a][2:] in limb]
        if any(hidden_by[a] >= 0 or hidden_by[b] >= 0 for a, b in chain) and rng.random() < FAILURE_SWAP:
            for a, b in chain:
                pose[[a, b]] = pose[[b, a]]
                record["swapped"] += [int(a), int(b)]
    pose[outside_image(pose, (height, width)) | (pose[:, 2] == 0)] = 0
    return pose, {k: sorted(v) for k, v in record.items()}
