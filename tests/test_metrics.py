import csv
import json
import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from scipy.spatial.transform import Rotation

from common.body.joint_sets import H36M_EVAL14_IDX, H36M_ROOT_IDX
from common.evaluation.metrics import (
    MetricAccumulator,
    format_table,
    mesh_metrics,
    mpjpe,
    pa_mpjpe,
    similarity_procrustes,
    write_results_json,
    write_samples_csv,
)


def _random_joints(rng, batch, joints=14):
    return rng.normal(0, 0.3, (batch, joints, 3))


def _scipy_similarity_align(pred, gt):
    """Independent similarity alignment of one (J, 3) set: scipy's proper-rotation fit (Kabsch with its
    own reflection handling) of the centred sets, then the least-squares scale for that rotation."""
    pred_c, gt_c = pred - pred.mean(0), gt - gt.mean(0)
    rot, _ = Rotation.align_vectors(gt_c, pred_c)  # gt_c ~ rot.apply(pred_c)
    rotated = rot.apply(pred_c)
    scale = np.sum(gt_c * rotated) / np.sum(pred_c * pred_c)
    return scale * rotated + gt.mean(0)


def test_similarity_transformed_copy_has_zero_pa_mpjpe():
    rng = np.random.default_rng(0)
    gt = _random_joints(rng, 16)
    rots = Rotation.random(16, random_state=1).as_matrix()
    scales = rng.uniform(0.5, 2.0, 16)
    shifts = rng.normal(0, 1.0, (16, 1, 3))
    pred = scales[:, None, None] * np.einsum("bij,bkj->bki", rots, gt) + shifts
    pred_t, gt_t = torch.tensor(pred), torch.tensor(gt)

    assert torch.all(mpjpe(pred_t, gt_t) > 0.05)  # the copy really is moved
    np.testing.assert_allclose(pa_mpjpe(pred_t, gt_t).numpy(), 0, atol=1e-10)
    np.testing.assert_allclose(similarity_procrustes(pred_t, gt_t).numpy(), gt, atol=1e-10)


def test_mpjpe_of_known_perturbations():
    rng = np.random.default_rng(1)
    gt = _random_joints(rng, 8, 17)
    directions = rng.normal(size=gt.shape)
    directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
    lengths = rng.uniform(0.0, 0.1, gt.shape[:2])
    pred = gt + lengths[..., None] * directions
    np.testing.assert_allclose(mpjpe(torch.tensor(pred), torch.tensor(gt)).numpy(), lengths.mean(1), rtol=1e-12)
    # A pure translation by d: MPJPE d, PA-MPJPE 0.
    shifted = torch.tensor(gt) + torch.tensor([0.03, -0.04, 0.0], dtype=torch.float64)
    np.testing.assert_allclose(mpjpe(shifted, torch.tensor(gt)).numpy(), 0.05, rtol=1e-12)
    np.testing.assert_allclose(pa_mpjpe(shifted, torch.tensor(gt)).numpy(), 0, atol=1e-12)


def test_procrustes_agrees_with_scipy_including_reflection_cases():
    rng = np.random.default_rng(2)
    pred, gt = _random_joints(rng, 64), _random_joints(rng, 64)
    # Unrelated random sets: for about half of them the unconstrained fit would be a reflection.
    dets = []
    for p, g in zip(pred, gt):
        u, _, vt = np.linalg.svd((p - p.mean(0)).T @ (g - g.mean(0)))
        dets.append(np.linalg.det(vt.T @ u.T))
    assert min(dets) < 0 < max(dets)

    aligned = similarity_procrustes(torch.tensor(pred), torch.tensor(gt)).numpy()
    expected = np.stack([_scipy_similarity_align(p, g) for p, g in zip(pred, gt)])
    np.testing.assert_allclose(aligned, expected, atol=1e-9)
    expected_pa = np.linalg.norm(expected - gt, axis=-1).mean(1)
    np.testing.assert_allclose(pa_mpjpe(torch.tensor(pred), torch.tensor(gt)).numpy(), expected_pa, atol=1e-9)


def test_procrustes_keeps_dtype_and_handles_a_collapsed_prediction():
    rng = np.random.default_rng(3)
    gt = torch.tensor(_random_joints(rng, 2), dtype=torch.float32)
    pred = gt + 0.01
    pred[1] = 0.5  # every joint at one point
    aligned = similarity_procrustes(pred, gt)
    assert aligned.dtype == torch.float32
    np.testing.assert_allclose(aligned[1].numpy(), np.broadcast_to(gt[1].numpy().mean(0), (14, 3)), atol=1e-6)
    assert torch.all(pa_mpjpe(pred, gt) <= mpjpe(pred, gt) + 1e-6)


def _toy_meshes(rng, batch, n_verts=40):
    gt = rng.normal(0, 0.4, (batch, n_verts, 3)) + np.array([0.2, 0.1, 4.0])
    reg_h36m = rng.uniform(0, 1, (17, n_verts)) * (rng.uniform(0, 1, (17, n_verts)) > 0.7)
    reg_h36m /= reg_h36m.sum(1, keepdims=True)
    reg_root = rng.uniform(0, 1, n_verts)
    reg_root /= reg_root.sum()
    return gt, reg_h36m, reg_root


def _protocol_numpy(pred_mesh, gt_mesh, reg_h36m, reg_root):
    """Spec 6 written out per person with numpy and scipy."""
    out = {"mpjpe": [], "pa_mpjpe": [], "mpvpe": []}
    for pred, gt in zip(pred_mesh, gt_mesh):
        pred_j, gt_j = reg_h36m @ pred, reg_h36m @ gt
        pred_j = (pred_j - pred_j[H36M_ROOT_IDX])[H36M_EVAL14_IDX]
        gt_j = (gt_j - gt_j[H36M_ROOT_IDX])[H36M_EVAL14_IDX]
        out["mpjpe"].append(np.linalg.norm(pred_j - gt_j, axis=1).mean() * 1000)
        out["pa_mpjpe"].append(np.linalg.norm(_scipy_similarity_align(pred_j, gt_j) - gt_j, axis=1).mean() * 1000)
        pred_v, gt_v = pred - reg_root @ pred, gt - reg_root @ gt
        out["mpvpe"].append(np.linalg.norm(pred_v - gt_v, axis=1).mean() * 1000)
    return {k: np.array(v) for k, v in out.items()}


def test_mesh_metrics_matches_the_protocol_written_independently():
    rng = np.random.default_rng(4)
    gt, reg_h36m, reg_root = _toy_meshes(rng, 6)
    pred = gt - (reg_root @ gt)[:, None] + rng.normal(0, 0.03, gt.shape)
    result = mesh_metrics(torch.tensor(pred, dtype=torch.float32), torch.tensor(gt, dtype=torch.float32),
                          torch.tensor(reg_h36m), torch.tensor(reg_root[None]))
    expected = _protocol_numpy(pred.astype(np.float32), gt.astype(np.float32), reg_h36m, reg_root)
    assert set(result) == {"mpjpe", "pa_mpjpe", "mpvpe"}
    for name in expected:
        assert result[name].shape == (6,)
        np.testing.assert_allclose(result[name].numpy(), expected[name], rtol=1e-6)
        assert np.all(expected[name] > 1)  # millimetres, and the noise is really there


def test_mesh_metrics_analytical_cases():
    rng = np.random.default_rng(5)
    gt, reg_h36m, reg_root = _toy_meshes(rng, 3)
    gt_t, regs = torch.tensor(gt), (reg_h36m, reg_root)  # numpy regressors are accepted too
    root = (reg_root @ gt)[:, None]

    # Any translation of the prediction is removed by the protocol's own alignments.
    moved = mesh_metrics(gt_t + torch.tensor([0.3, -1.0, 2.0]), gt_t, *regs)
    for name in moved:
        np.testing.assert_allclose(moved[name].numpy(), 0, atol=1e-9)

    # Scaling about the root by s: MPVPE = (s - 1) * mean vertex distance to the root; MPJPE likewise
    # for the pelvis-relative joints (regressor rows sum to 1, so regression commutes with the scaling
    # about the H36M pelvis); PA-MPJPE = 0.
    s = 1.1
    scaled = (gt - root) * s
    result = mesh_metrics(torch.tensor(scaled), gt_t, *regs)
    expected_mpvpe = (s - 1) * np.linalg.norm(gt - root, axis=-1).mean(1) * 1000
    joints = np.einsum("jv,bvc->bjc", reg_h36m, gt)
    rel = (joints - joints[:, H36M_ROOT_IDX:H36M_ROOT_IDX + 1])[:, H36M_EVAL14_IDX]
    expected_mpjpe = (s - 1) * np.linalg.norm(rel, axis=-1).mean(1) * 1000
    np.testing.assert_allclose(result["mpvpe"].numpy(), expected_mpvpe, rtol=1e-9)
    np.testing.assert_allclose(result["mpjpe"].numpy(), expected_mpjpe, rtol=1e-9)
    np.testing.assert_allclose(result["pa_mpjpe"].numpy(), 0, atol=1e-9)


def test_mesh_metrics_rejects_mismatched_shapes():
    rng = np.random.default_rng(6)
    gt, reg_h36m, reg_root = _toy_meshes(rng, 2)
    with pytest.raises(ValueError, match="same shape"):
        mesh_metrics(torch.tensor(gt[:, :-1]), torch.tensor(gt), reg_h36m, reg_root)
    with pytest.raises(ValueError, match="regressors"):
        mesh_metrics(torch.tensor(gt), torch.tensor(gt), reg_h36m[:, :-1], reg_root)


def test_accumulator_counts_each_sample_once():
    acc = MetricAccumulator(expected_count=5)
    ids = torch.tensor([0, 1, 2])
    acc.add({"mpjpe": torch.tensor([1.0, 2.0, 3.0]), "mpvpe": torch.tensor([10.0, 20.0, 30.0])}, ids)
    # The second batch repeats sample 0, as a DistributedSampler's padding does.
    acc.add({"mpjpe": torch.tensor([4.0, 5.0, 1.0]), "mpvpe": torch.tensor([40.0, 50.0, 10.0])}, [3, 4, 0])
    assert acc.summary() == pytest.approx({"mpjpe": 3.0, "mpvpe": 30.0, "n": 5})


def test_accumulator_refuses_a_missing_or_foreign_sample():
    acc = MetricAccumulator(expected_count=4)
    acc.add({"mpjpe": torch.tensor([1.0, 2.0, 3.0])}, [0, 1, 3])
    with pytest.raises(ValueError, match=r"1 missing \(first: \[2\]\)"):
        acc.summary()
    acc.add({"mpjpe": torch.tensor([1.0, 1.0])}, [2, 7])
    with pytest.raises(ValueError, match=r"1 unexpected \(first: \[7\]\)"):
        acc.summary()
    with pytest.raises(ValueError, match="no sample"):
        MetricAccumulator().summary()
    with pytest.raises(ValueError, match="3 values for 2 ids"):
        MetricAccumulator().add({"mpjpe": torch.zeros(3)}, [0, 1])


def _merge_worker(rank, world_size, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    # 5 samples over 2 ranks, DistributedSampler style: rank 0 gets 0, 2, 4; rank 1 gets 1, 3 and pads with 0.
    ids = [[0, 2, 4], [1, 3, 0]][rank]
    acc = MetricAccumulator(expected_count=5)
    acc.add({"mpjpe": torch.tensor([float(10 * i) for i in ids])}, ids)
    acc.merge()
    acc.merge()  # merging again changes nothing
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(acc.summary(), f)
    dist.destroy_process_group()


def test_accumulator_merge_across_processes(tmp_path):
    mp.spawn(_merge_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        summary = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert summary == pytest.approx({"mpjpe": 20.0, "n": 5})


def test_merge_without_distributed_is_a_no_op():
    acc = MetricAccumulator()
    acc.add({"mpjpe": torch.tensor([2.0])}, [0])
    acc.merge()
    assert acc.summary() == {"mpjpe": 2.0, "n": 1}


def test_results_json_and_table(tmp_path):
    results = {"3dpw-oc": {"mpjpe": 76.04, "pa_mpjpe": 52.0, "mpvpe": 93.0, "n": 3},
               "3dpw": {"mpjpe": torch.tensor(80.0, dtype=torch.float64), "pa_mpjpe": 50.0, "mpvpe": 99.0, "n": 7}}
    path = tmp_path / "out" / "results.json"
    write_results_json(path, results)
    write_results_json(path, results)  # overwriting works and leaves no temporary file behind
    assert json.loads(path.read_text()) == {"3dpw-oc": results["3dpw-oc"],
                                            "3dpw": {"mpjpe": 80.0, "pa_mpjpe": 50.0, "mpvpe": 99.0, "n": 7}}
    assert os.listdir(path.parent) == ["results.json"]

    table = format_table(results, paper={"3dpw-oc": {"mpjpe": 75.7, "pa_mpjpe": 52.2, "mpvpe": 92.6}})
    lines = table.splitlines()
    assert lines[0].split() == ["split", "n", "MPJPE", "paper", "diff", "PA-MPJPE", "paper", "diff", "MPVPE",
                                "paper", "diff"]
    assert lines[2].split() == ["3dpw-oc", "3", "76.0", "75.7", "+0.3", "52.0", "52.2", "-0.2", "93.0", "92.6",
                                "+0.4"]
    assert lines[3].split() == ["3dpw", "7", "80.0", "n/a", "n/a", "50.0", "n/a", "n/a", "99.0", "n/a", "n/a"]
    assert format_table(results).splitlines()[0].split() == ["split", "n", "MPJPE", "PA-MPJPE", "MPVPE"]


def test_per_person_csv_lists_every_sample_in_order(tmp_path):
    acc = MetricAccumulator(expected_count=3)
    acc.add({"mpjpe": torch.tensor([3.0, 1.25]), "pa_mpjpe": torch.tensor([2.0, 0.5]),
             "mpvpe": torch.tensor([4.0, 1.0 / 3.0], dtype=torch.float64)}, [2, 0])
    acc.add({"mpjpe": torch.tensor([7.0]), "pa_mpjpe": torch.tensor([6.0]), "mpvpe": torch.tensor([8.0])}, [1])
    assert list(acc.per_sample()) == [0, 1, 2]
    people = {0: (11, "a.jpg", "openpose"), 1: (12, "b.jpg", "higherhrnet"), 2: (15, "b.jpg", "openpose")}
    path = tmp_path / "eval" / "3dpw_samples.csv"
    write_samples_csv(path, acc.per_sample(),
                      lambda i: dict(zip(("ann_id", "img_path", "pose_source"), people[i])))
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(int(r["index"]), int(r["ann_id"]), r["img_path"], r["pose_source"]) for r in rows] == [
        (i, *people[i]) for i in range(3)]
    assert [float(r["mpjpe"]) for r in rows] == [1.25, 7.0, 3.0]
    assert float(rows[0]["mpvpe"]) == 1.0 / 3.0  # written without rounding
    assert os.listdir(path.parent) == ["3dpw_samples.csv"]


def test_table_names_the_input_poses_and_the_excluded_people():
    results = {"3dpw": {"mpjpe": 80.0, "pa_mpjpe": 50.0, "mpvpe": 99.0, "n": 7, "pose_source": "openpose",
                        "excluded": {"ground-truth box with no area or outside the image": 2}},
               "3dpw-crowd": {"mpjpe": 90.0, "pa_mpjpe": 55.0, "mpvpe": 109.0, "n": 5, "pose_source": "higherhrnet",
                              "excluded": {}}}
    lines = format_table(results).splitlines()
    assert lines[0].split() == ["split", "n", "input", "MPJPE", "PA-MPJPE", "MPVPE"]
    assert lines[2].split() == ["3dpw", "7", "openpose", "80.0", "50.0", "99.0"]
    assert lines[3].split() == ["3dpw-crowd", "5", "higherhrnet", "90.0", "55.0", "109.0"]
    assert "3dpw: 2 people excluded (ground-truth box with no area or outside the image), as in the official " \
           "evaluation" in lines
