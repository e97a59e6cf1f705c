import numpy as np

from common.body.joint_sets import SMPL30
from data.occlusion_failures import MISSED, ONTO_OCCLUDER, RADIUS, SWAP, hidden_joints, occlusion_failures

L_WRIST, R_WRIST = SMPL30.index("L_Wrist"), SMPL30.index("R_Wrist")
ARM = [SMPL30.index(f"{side}_{part}") for part in ("Shoulder", "Elbow", "Wrist") for side in "LR"]
PELVIS = SMPL30.index("Pelvis")


def _pose(rng):
    return rng.uniform(10, 90, (len(SMPL30), 2))


def _square(centre, half):
    """(N, 2) x, y of the integer pixels of a square of side 2 * half + 1 around centre."""
    xs, ys = np.meshgrid(np.arange(-half, half + 1), np.arange(-half, half + 1))
    return np.stack([xs.ravel(), ys.ravel()], 1) + np.round(centre)


def _fail_one_joint(seed, joint, half):
    """occlusion_failures on a random pose with only `joint` hidden, under a square occluder of side 2 * half + 1
    around its true position, box height 40. Returns (joints, truth, occluder points, the function's output)."""
    rng = np.random.default_rng(seed)
    joints, truth = _pose(rng), _pose(rng)
    hidden = np.zeros(len(SMPL30), bool)
    hidden[joint] = True
    points = _square(truth[joint], half)
    mask = np.ones(len(SMPL30), np.float32)
    return joints, truth, points, occlusion_failures(joints, mask, truth, hidden, points, 40.0, SMPL30, rng)


def test_hidden_joints_are_the_annotated_joints_on_covered_pixels():
    coverage = np.zeros((20, 30), np.float32)
    coverage[5:10, 10:20] = 1.0
    coverage[12, 3] = 0.4  # a soft edge below the threshold
    joints = np.array([[12.0, 6.0], [12.0, 6.0], [3.0, 12.0], [25.0, 6.0], [-4.0, 6.0], [19.4, 9.4]])
    valid = np.array([1, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(hidden_joints(joints, valid, coverage),
                                  [True, False, False, False, False, True])


def test_hidden_joints_fail_at_the_documented_rates_and_the_others_stay():
    counts = {"onto_occluder": 0, "missed": 0, "swapped": 0}
    draws = 3000
    for seed in range(draws):
        joints, truth, points, (out, out_mask, record) = _fail_one_joint(seed, PELVIS, 6)
        others = np.arange(len(SMPL30)) != PELVIS
        np.testing.assert_array_equal(out[others], joints[others])  # no limb hidden: nothing else moves
        np.testing.assert_array_equal(out_mask[others], 1)
        for kind in counts:
            counts[kind] += len(record[kind])
        if record["onto_occluder"]:
            # A point of the occluder within RADIUS x the box height of the true joint, still given to the network.
            assert any((out[PELVIS] == p).all() for p in points)
            assert np.hypot(*(out[PELVIS] - truth[PELVIS])) <= RADIUS * 40.0
            assert out_mask[PELVIS] == 1
        elif record["missed"]:
            assert out_mask[PELVIS] == 0 and (out[PELVIS] == 0).all()
        else:
            np.testing.assert_array_equal(out[PELVIS], joints[PELVIS])
    assert abs(counts["onto_occluder"] / draws - ONTO_OCCLUDER) < 0.03
    assert abs(counts["missed"] / draws - MISSED) < 0.03
    assert counts["swapped"] == 0


def test_a_hidden_wrist_swaps_its_arm_and_only_its_arm():
    swaps = 0
    draws = 2000
    for seed in range(draws):
        joints, _, _, (out, _, record) = _fail_one_joint(seed, L_WRIST, 3)
        untouched = [j for j in range(len(SMPL30)) if j not in ARM]
        np.testing.assert_array_equal(out[untouched], joints[untouched])
        if record["swapped"]:
            swaps += 1
            assert sorted(record["swapped"]) == sorted(ARM)
            for left, right in zip(ARM[::2], ARM[1::2]):
                if left != L_WRIST:  # the wrist itself may also have failed before the swap
                    np.testing.assert_array_equal(out[[left, right]], joints[[right, left]])
            if not (record["onto_occluder"] or record["missed"]):
                np.testing.assert_array_equal(out[R_WRIST], joints[L_WRIST])
        else:
            np.testing.assert_array_equal(out[ARM[:4]], joints[ARM[:4]])
    assert abs(swaps / draws - SWAP) < 0.03


def test_nothing_hidden_changes_nothing():
    rng = np.random.default_rng(0)
    joints, truth = _pose(rng), _pose(rng)
    mask = np.ones(len(SMPL30), np.float32)
    out, out_mask, record = occlusion_failures(joints, mask, truth, np.zeros(len(SMPL30), bool),
                                               _square(truth[0], 5), 40.0, SMPL30, rng)
    np.testing.assert_array_equal(out, joints)
    np.testing.assert_array_equal(out_mask, mask)
    assert record == {"onto_occluder": [], "missed": [], "swapped": []}
