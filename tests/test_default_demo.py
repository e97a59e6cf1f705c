"""`make demo`'s pipeline end to end at toy size: synthetic data -> training -> evaluation beside the baseline ->
results.json and overlays; a second run reuses what exists."""
import json

import pytest
import torch

from main import default_demo


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("embedded")
    args = ["--n-train", "8", "--n-test", "16", "--n-crowd", "4", f"data_dir={root / 'synthetic'}",
            f"output_dir={root / 'out'}", "total_steps=2", "train_batch_size=2", "test_batch_size=8", "num_thread=0",
            "device=cpu"]
    assert default_demo.main(args) == 0
    return root, args


@pytest.mark.slow
def test_results_per_subset_beside_the_baseline(first_run):
    root, _ = first_run
    results = json.loads((root / "out" / "embedded" / "results.json").read_text())
    assert set(results) == {"3dpw", "3dpw-oc", "3dpw-pc", "3dpw-crowd"}
    test_people = len(json.loads((root / "synthetic" / "3DPW" / "3DPW_latest_test.json").read_text())["annotations"])
    assert results["3dpw"]["model"]["n"] == results["3dpw"]["baseline"]["n"] == test_people
    for entry in results.values():
        for label in ("model", "baseline"):
            assert set(entry[label]) == {"mpjpe", "pa_mpjpe", "mpvpe", "n"}
            assert 0 < entry[label]["pa_mpjpe"] <= entry[label]["mpjpe"]
    overlays = list((root / "out" / "embedded" / "overlays").rglob("*_overlay.png"))
    assert overlays


@pytest.mark.slow
def test_second_run_reuses_data_and_training(first_run, capsys):
    root, args = first_run
    checkpoint = root / "out" / "embedded" / "checkpoint" / "last.pth.tar"
    before = checkpoint.stat().st_mtime_ns
    assert default_demo.main(args) == 0
    out = capsys.readouterr().out
    assert "nothing to do" in out and "reusing the finished run" in out
    assert "image gate after training: " in out  # the preset gates the image features; the demo reports the gate
    assert checkpoint.stat().st_mtime_ns == before
    assert torch.load(checkpoint, weights_only=True)["step"] == 2


def test_baseline_predicts_the_mean_pose_for_everyone():
    from common.baseline import mean_smpl_params

    poses = torch.zeros(5, 72)
    poses[:, 5] = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5])  # rotations about one axis: the mean angle is 0.3
    shapes = torch.arange(50.0).reshape(5, 10)
    pose, shape = mean_smpl_params(poses, shapes)
    torch.testing.assert_close(pose[5], torch.tensor(0.3), atol=2e-3, rtol=0)
    assert pose.abs().sum() - pose[5].abs() < 1e-6
    torch.testing.assert_close(shape, shapes.mean(0))
