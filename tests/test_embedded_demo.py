"""`make demo`'s pipeline end to end at toy size: synthetic data -> training -> evaluation beside the baseline ->
results.json and overlays; a second run reuses what exists."""
import json

import pytest
import torch

from embedded import demo


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("embedded")
    args = ["--n-train", "8", "--n-test", "16", "--n-crowd", "4", f"data_dir={root / 'synthetic'}",
            f"output_dir={root / 'out'}", "total_steps=2", "train_batch_size=2", "test_batch_size=8", "num_thread=0",
            "device=cpu"]
    assert demo.main(args) == 0
    return root, args


@pytest.mark.slow
def test_results_per_subset_beside_the_baseline(first_run):
    root, _ = first_run
    stored = json.loads((root / "out" / "embedded" / "results.json").read_text())
    results = stored["test_sets"]
    assert set(results) == {"3dpw", "3dpw-oc", "3dpw-pc", "3dpw-crowd"}
    test_people = len(json.loads((root / "synthetic" / "3DPW" / "3DPW_latest_test.json").read_text())["annotations"])
    assert results["3dpw"]["model"]["n"] == results["3dpw"]["baseline"]["n"] == test_people
    for entry in results.values():
        for label in ("model", "baseline", "model_blanked_image"):
            assert set(entry[label]) == {"mpjpe", "pa_mpjpe", "mpvpe", "n"}
            assert 0 < entry[label]["pa_mpjpe"] <= entry[label]["mpjpe"]
        assert entry["model_blanked_image"]["n"] == entry["model"]["n"]
    # The ratios checked against the targets are the stored numbers' own.
    for name, ratios in stored["ratios_to_baseline"].items():
        for metric, ratio in ratios.items():
            assert ratio == pytest.approx(results[name]["model"][metric] / results[name]["baseline"][metric])
    assert set(stored["target_ratios"]) == {"mpjpe", "pa_mpjpe"}
    # The preset gates the image; the gate's value and what "blanked" means are stored beside the numbers.
    assert isinstance(stored["image_use"]["gate"], float) and stored["image_use"]["blanked_image"]
    assert all(0 <= c <= 1 for c in stored["image_use"]["blanked_fill_rgb"])
    assert stored["machine"]["cpu_model"] and "AVX-512 BF16" in stored["machine"]["isa"]
    stages = stored["timing"]["stage_seconds"]
    assert {"data_generation", "training", "evaluation", "blanked_image_evaluation", "overlays"} <= set(stages)
    assert all(seconds >= 0 for seconds in stages.values())
    assert sum(stages.values()) <= stored["timing"]["total_seconds"]
    overlays = list((root / "out" / "embedded" / "overlays").rglob("*_overlay.png"))
    assert overlays


def test_blanking_removes_every_image_difference():
    """Two different images give the same prediction once blanked: the model sees only the fill colour."""
    from embedded.demo import BlankedImage

    seen = []

    class Recorder(torch.nn.Module):
        joint_regressor = torch.zeros(1, 3)

        def forward(self, img, joints, joints_mask, bbox=None):
            seen.append(img.clone())
            return img.mean()

    blanked = BlankedImage(Recorder(), [0.2, 0.4, 0.6])
    joints, mask = torch.zeros(2, 30, 2), torch.ones(2, 30, 1)
    blanked(torch.rand(2, 3, 8, 8), joints, mask)
    blanked(torch.rand(2, 3, 8, 8), joints, mask)
    assert torch.equal(seen[0], seen[1]) and seen[0].shape == (2, 3, 8, 8)
    torch.testing.assert_close(seen[0][1, :, 5, 3], torch.tensor([0.2, 0.4, 0.6]))


@pytest.mark.slow
def test_second_run_reuses_data_and_training(first_run, capsys):
    root, args = first_run
    checkpoint = root / "out" / "embedded" / "checkpoint" / "last.pth.tar"
    before = checkpoint.stat().st_mtime_ns
    assert demo.main(args) == 0
    out = capsys.readouterr().out
    assert "nothing to do" in out and "reusing the finished run" in out
    assert "image gate after training: " in out  # the preset gates the image features; the demo reports the gate
    assert checkpoint.stat().st_mtime_ns == before
    assert torch.load(checkpoint, weights_only=True)["step"] == 2


def test_baseline_predicts_the_mean_pose_for_everyone():
    from embedded.baseline import mean_smpl_params

    poses = torch.zeros(5, 72)
    poses[:, 5] = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5])  # rotations about one axis: the mean angle is 0.3
    shapes = torch.arange(50.0).reshape(5, 10)
    pose, shape = mean_smpl_params(poses, shapes)
    torch.testing.assert_close(pose[5], torch.tensor(0.3), atol=2e-3, rtol=0)
    assert pose.abs().sum() - pose[5].abs() < 1e-6
    torch.testing.assert_close(shape, shapes.mean(0))
