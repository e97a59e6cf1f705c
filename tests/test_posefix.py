import numpy as np
import pytest

from common.body.joint_sets import COCO17, MUCO21
from data.posefix import (
    ERROR_TABLE,
    ERROR_TYPES,
    UNTOUCHED,
    box_iou,
    error_probabilities,
    oks_distance,
    overlapping_people,
    posefix,
    synthesize_pose,
)

AREA = 120.0 * 220.0  # crop pixels^2: a person filling much of a 256 x 256 crop
# COCO sigmas as published with the COCO keypoint evaluation.
SIGMA = {"Nose": 0.026, "Eye": 0.025, "Ear": 0.035, "Shoulder": 0.079, "Elbow": 0.072, "Wrist": 0.062, "Hip": 0.107,
         "Knee": 0.087, "Ankle": 0.089}
KIND = {name: i for i, name in enumerate(ERROR_TYPES)}


def _sigma(name):
    return SIGMA[name.split("_")[-1]]


def _oks(pred, centre, name, area=AREA):
    """COCO's keypoint similarity, computed here from its definition."""
    d2 = np.sum((np.asarray(pred) - np.asarray(centre)) ** 2, axis=-1)
    return np.exp(-d2 / (2 * area * (2 * _sigma(name)) ** 2))


def _partner(name):
    if name.startswith("L_"):
        return "R_" + name[2:]
    if name.startswith("R_"):
        return "L_" + name[2:]
    return None


def _person(seed=0, offset=(0.0, 0.0)):
    """(17, 2) COCO17 joints of a roughly person-shaped layout in a 256 crop."""
    rng = np.random.default_rng(seed)
    layout = {"Nose": (128, 40), "L_Eye": (134, 35), "R_Eye": (122, 35), "L_Ear": (140, 38), "R_Ear": (116, 38),
              "L_Shoulder": (155, 70), "R_Shoulder": (101, 70), "L_Elbow": (165, 110), "R_Elbow": (91, 110),
              "L_Wrist": (170, 145), "R_Wrist": (86, 145), "L_Hip": (145, 150), "R_Hip": (111, 150),
              "L_Knee": (147, 200), "R_Knee": (109, 200), "L_Ankle": (148, 245), "R_Ankle": (108, 245)}
    joints = np.array([layout[name] for name in COCO17], dtype=np.float64)
    return joints + rng.normal(0.0, 2.0, joints.shape) + np.asarray(offset)


def _visible(person, valid=None):
    valid = np.ones(len(person)) if valid is None else np.asarray(valid, np.float64)
    return np.concatenate([person, valid[:, None]], axis=1)


def _frequencies(names, valid, near, draws, seed=0):
    """Observed frequency of each kind, pooled over the joints `names`."""
    rng = np.random.default_rng(seed)
    gt = _person()
    rows = [COCO17.index(n) for n in names]
    counts = np.zeros(len(ERROR_TYPES))
    for _ in range(draws):
        _, kinds = synthesize_pose(gt, valid, near, AREA, rng)
        counts += np.bincount(kinds[rows], minlength=len(ERROR_TYPES))
    return counts / counts.sum()


# The documented probabilities (data/posefix.py), written out per case:
# good, jitter, miss, inversion, swap.
CASES = {
    # Fully annotated person, nobody near: the table's base rates; no swap possible.
    "wrists, uncrowded": (("L_Wrist", "R_Wrist"), 17, 0, (0.81, 0.12, 0.03, 0.04, 0.0)),
    "knees, uncrowded": (("L_Knee", "R_Knee"), 17, 0, (0.85, 0.10, 0.02, 0.03, 0.0)),
    "shoulders, uncrowded": (("L_Shoulder", "R_Shoulder"), 17, 0, (0.89, 0.08, 0.01, 0.02, 0.0)),
    # The nose has no counterpart: inversion is infeasible, the rest renormalised by 0.98.
    "nose, uncrowded": (("Nose",), 17, 0, (0.91 / 0.98, 0.06 / 0.98, 0.01 / 0.98, 0.0, 0.0)),
    # Two overlapping people: jitter/miss/inversion x 1.5, swap 2 x per-person rate.
    "wrists, two people": (("L_Wrist", "R_Wrist"), 17, 2, (0.595, 0.18, 0.045, 0.06, 0.12)),
    "hips, two people": (("L_Hip", "R_Hip"), 17, 2, (0.775, 0.12, 0.015, 0.03, 0.06)),
    # Six annotated joints (factor 1.5) and one overlapping person (x 1.25; swap 1 x rate x 1.5).
    "elbows, six joints, one person": (("L_Elbow", "R_Elbow"), 6, 1, (0.64375, 0.1875, 0.0375, 0.05625, 0.075)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_error_type_occurs_at_its_documented_frequency(case):
    names, num_visible, num_near, expected = CASES[case]
    valid = np.ones(17)
    if num_visible < 17:  # keep the arms annotated, drop the rest
        arms = {"L_Shoulder", "R_Shoulder", "L_Elbow", "R_Elbow", "L_Wrist", "R_Wrist"}
        valid = np.array([name in arms for name in COCO17], dtype=np.float64)
        assert valid.sum() == num_visible
    near = [_visible(_person(seed=k + 1, offset=(10.0 * (k + 1), 5.0))) for k in range(num_near)]
    observed = _frequencies(names, valid, near, draws=3000)
    np.testing.assert_allclose(observed, expected, atol=0.025, err_msg=case)
    # The code's own table agrees with the documented numbers (so the docstring cannot drift from the code).
    group_probs = error_probabilities(_group(names[0]), num_visible, num_near, names[0] != "Nose", num_near > 0)
    np.testing.assert_allclose(group_probs, expected, atol=1e-9)


def _group(name):
    part = name.split("_")[-1]
    return {"Nose": "face", "Shoulder": "torso", "Hip": "torso", "Elbow": "limb", "Knee": "limb", "Wrist": "extremity",
            "Ankle": "extremity", "Eye": "face", "Ear": "face"}[part]


def test_inversion_needs_an_annotated_counterpart():
    valid = np.ones(17)
    valid[COCO17.index("R_Wrist")] = 0
    observed = _frequencies(("L_Wrist",), valid, [], draws=3000, seed=1)
    np.testing.assert_allclose(observed, np.array([0.81, 0.12, 0.03, 0.0, 0.0]) / 0.96, atol=0.025)


def test_probabilities_stay_valid_in_the_worst_case():
    for group in ERROR_TABLE:
        for num_near in (0, 1, 2, 5, 50):
            probs = error_probabilities(group, 0, num_near, True, True)
            assert (probs >= 0).all() and probs[0] > 0 and probs.sum() == pytest.approx(1.0)


def test_oks_distance_matches_the_coco_definition():
    for level in (0.85, 0.5, 0.1):
        d = oks_distance(level, AREA, 0.062)
        assert _oks([d, 0.0], [0.0, 0.0], "L_Wrist") == pytest.approx(level, rel=1e-9)


def test_each_error_type_lands_where_its_definition_says():
    """Placement measured with COCO's OKS against the right reference, in a MuCo joint set (mapped by name)."""
    rng = np.random.default_rng(3)
    coco_gt = _person()
    neighbour = _person(seed=7, offset=(12.0, -4.0))
    joints = np.zeros((len(MUCO21), 2))
    near = np.zeros((len(MUCO21), 3))
    for i, name in enumerate(MUCO21):
        if name in COCO17:
            joints[i] = coco_gt[COCO17.index(name)]
            near[i] = [*neighbour[COCO17.index(name)], 1.0]
    seen = set()
    for _ in range(400):
        out, kinds = posefix(joints, np.ones(len(MUCO21)), MUCO21, [near], AREA, rng)
        for i, name in enumerate(MUCO21):
            if name not in COCO17:
                continue
            kind = ERROR_TYPES[kinds[i]]
            seen.add(kind)
            gt = joints[i]
            partner = joints[MUCO21.index(_partner(name))]
            wrong = [near[i, :2], near[MUCO21.index(_partner(name)), :2]]
            if kind == "good":
                assert _oks(out[i], gt, name) >= 0.85 - 1e-9
            elif kind == "jitter":
                assert 0.5 - 1e-9 <= _oks(out[i], gt, name) <= 0.85 + 1e-9
            elif kind == "inversion":
                assert _oks(out[i], partner, name) >= 0.5 - 1e-9
            elif kind == "swap":
                assert max(_oks(out[i], w, name) for w in wrong) >= 0.5 - 1e-9
            else:  # miss: in the OKS 0.1 - 0.5 ring of one of the candidates
                ring = [0.1 - 1e-9 <= _oks(out[i], c, name) <= 0.5 + 1e-9 for c in [gt, partner] + wrong]
                assert any(ring)
    assert seen == set(ERROR_TYPES)


def test_only_annotated_coco_joints_change():
    rng = np.random.default_rng(0)
    joints = rng.uniform(20, 230, (len(MUCO21), 2))
    valid = np.ones(len(MUCO21))
    valid[MUCO21.index("L_Knee")] = 0
    changed = np.zeros(len(MUCO21), bool)
    for _ in range(50):
        out, kinds = posefix(joints, valid, MUCO21, [], AREA, rng)
        changed |= out[:, 0] != joints[:, 0]
        for i, name in enumerate(MUCO21):
            if name not in COCO17 or name == "L_Knee":
                np.testing.assert_array_equal(out[i], joints[i], err_msg=name)
                assert kinds[i] == UNTOUCHED
    touched = [i for i, n in enumerate(MUCO21) if n in COCO17 and n != "L_Knee"]
    assert changed[touched].all()


def test_unannotated_joints_of_other_people_attract_no_swap():
    # The neighbour's wrists are unannotated and stored at (0, 0), as COCO does; every other joint is annotated.
    neighbour = _visible(_person(seed=5, offset=(8.0, 3.0)))
    for name in ("L_Wrist", "R_Wrist"):
        neighbour[COCO17.index(name)] = 0.0
    rng = np.random.default_rng(2)
    wrists = [COCO17.index("L_Wrist"), COCO17.index("R_Wrist")]
    elbows = [COCO17.index("L_Elbow"), COCO17.index("R_Elbow")]
    elbow_swaps = 0
    for _ in range(1500):
        out, kinds = synthesize_pose(_person(), np.ones(17), [neighbour], AREA, rng)
        assert not (kinds[wrists] == KIND["swap"]).any()
        assert np.linalg.norm(out[wrists], axis=1).min() > 20  # nothing pulled to the image corner
        elbow_swaps += (kinds[elbows] == KIND["swap"]).sum()
    assert elbow_swaps > 0  # the neighbour does count for the joints it has


def test_overlapping_people_use_the_tight_box_of_annotated_joints():
    target = np.array([100.0, 100.0, 100.0, 100.0])  # xywh

    def person(x0, y0, x1, y1, extra=None):
        joints = np.array([[x0, y0, 1.0], [x1, y1, 1.0], [(x0 + x1) / 2, (y0 + y1) / 2, 2.0]])
        if extra is not None:
            joints = np.concatenate([joints, [extra]])
        return joints

    inside = person(120, 120, 180, 180)  # IoU 3600 / 10000 = 0.36
    edge = person(190, 100, 290, 200)  # IoU 1000 / 19000 = 0.053
    close = person(170, 100, 270, 200)  # IoU 3000 / 17000 = 0.176
    # Unannotated joint at (0, 0): ignored, otherwise the box would cover the target and IoU be large.
    far_with_zero = person(400, 400, 450, 450, extra=[0.0, 0.0, 0.0])
    assert box_iou(target, [120, 120, 60, 60]) == pytest.approx(0.36)
    kept = overlapping_people(target, [inside, edge, close, far_with_zero])
    assert [k is inside or k is close for k in kept] == [True, True] and len(kept) == 2
    assert overlapping_people(target, [edge], min_iou=0.05) == [edge]
    assert overlapping_people(target, [np.zeros((3, 3))]) == []


def test_randomness_comes_only_from_the_generator():
    state = np.random.get_state()
    near = [_visible(_person(seed=4, offset=(6.0, 0.0)))]
    first = synthesize_pose(_person(), np.ones(17), near, AREA, np.random.default_rng(11))
    again = synthesize_pose(_person(), np.ones(17), near, AREA, np.random.default_rng(11))
    other = synthesize_pose(_person(), np.ones(17), near, AREA, np.random.default_rng(12))
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state()[1:], state[1:]))
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="17, 2"):
        synthesize_pose(np.zeros((15, 2)), np.ones(15), [], AREA, np.random.default_rng(0))
    with pytest.raises(ValueError, match="near joints"):
        synthesize_pose(_person(), np.ones(17), [np.zeros((17, 2))], AREA, np.random.default_rng(0))
    with pytest.raises(ValueError, match="joint set has 21"):
        posefix(np.zeros((17, 2)), np.ones(17), MUCO21, [], AREA, np.random.default_rng(0))
