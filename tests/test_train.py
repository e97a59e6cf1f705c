"""Training and evaluation end to end on a tiny dataset in the real formats (MuCo training set, 3DPW test sets)."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from common.training.engine import NonFiniteLossError, train_one_epoch, withhold_input_pose
from main import test as test_main
from main import train as train_main
from tests.tiny_world import assert_same_state, tiny_overrides, write_tiny_world

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_tiny_world(tmp_path_factory.mktemp("tiny_world"))


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_train_then_evaluate(data_dir, tmp_path, capsys):
    overrides = tiny_overrides(data_dir, tmp_path, total_steps=2, exp_name="run")
    assert train_main.main(overrides) == 0
    run = tmp_path / "run"
    saved_cfg = (run / "config.yaml").read_text()
    assert "total_steps: 2" in saved_cfg and "resnet_type: 18" in saved_cfg
    last = load(run / "checkpoint" / "last.pth.tar")
    assert last["step"] == 2 and set(last) >= {"model", "optimizer", "scaler", "loss_weights", "rng", "config"}
    assert (run / "log" / "train.log").read_text().count("] step 2: ") == 1
    assert any((run / "log" / "tensorboard").iterdir())
    # Training ends with an evaluation; each test set gets its best checkpoint.
    during = json.loads((run / "results" / "latest.json").read_text())
    assert during["3dpw"]["n"] == 4 and during["3dpw-oc"]["n"] == 1
    for name in ("3dpw", "3dpw-oc"):
        assert load(run / "checkpoint" / f"{name}_best_ckpt.pth.tar")["step"] == 2

    # The standalone evaluation is the same function: the same numbers from the same weights.
    out = tmp_path / "eval.json"
    assert test_main.main(["--ckpt", str(run / "checkpoint" / "last.pth.tar"), "--out", str(out)] + overrides) == 0
    standalone = json.loads(out.read_text())
    for name in ("3dpw", "3dpw-oc"):
        for metric in ("mpjpe", "pa_mpjpe", "mpvpe", "n"):
            assert standalone[name][metric] == pytest.approx(during[name][metric], rel=1e-6)
    printed = capsys.readouterr().out
    assert "3dpw-oc" in printed and "75.7" in printed  # the paper's MPJPE beside ours

    # Every person's metrics, beside the results (standalone) and in the run's results (training); the means of
    # the rows are the reported means.
    for name in ("3dpw", "3dpw-oc"):
        assert standalone[name]["pose_source"] == "openpose" and standalone[name]["excluded"] == {}
        with open(tmp_path / f"{name}_samples.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        with open(run / "results" / f"{name}_samples.csv", newline="") as f:
            rows_during = list(csv.DictReader(f))
        assert [int(r["index"]) for r in rows] == list(range(standalone[name]["n"]))
        assert [r["ann_id"] for r in rows] == [r["ann_id"] for r in rows_during]
        assert all(r["img_path"].endswith(".jpg") and r["pose_source"] == "openpose" for r in rows)
        for metric in ("mpjpe", "pa_mpjpe", "mpvpe"):
            values = [float(r[metric]) for r in rows]
            assert sum(values) / len(values) == pytest.approx(standalone[name][metric], rel=1e-9)
            assert values == pytest.approx([float(r[metric]) for r in rows_during], rel=1e-6)


@pytest.mark.slow
def test_resume_is_exact(data_dir, tmp_path):
    """6 steps in one run == 3 steps, a stop, and 3 resumed steps (crossing an epoch boundary, with dropout,
    input-joint masking and data augmentation all active)."""
    common = dict(testsets="[]", end_epoch=3)
    assert train_main.main(tiny_overrides(data_dir, tmp_path, total_steps=6, exp_name="straight", **common)) == 0
    assert train_main.main(tiny_overrides(data_dir, tmp_path, total_steps=3, exp_name="split", **common)) == 0
    first_half = tmp_path / "split" / "checkpoint" / "last.pth.tar"
    assert load(first_half)["step"] == 3
    assert train_main.main(tiny_overrides(data_dir, tmp_path, total_steps=6, exp_name="split",
                                          resume=first_half, **common)) == 0
    straight = load(tmp_path / "straight" / "checkpoint" / "last.pth.tar")
    resumed = load(tmp_path / "split" / "checkpoint" / "last.pth.tar")
    assert straight["step"] == resumed["step"] == 6
    assert_same_state(straight["model"], resumed["model"], atol=1e-6)
    assert_same_state(straight["loss_weights"], resumed["loss_weights"], atol=1e-6)


class ToyObjective(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(3))

    def forward(self, inputs, targets, meta):
        loss = (self.weight * inputs["x"]).sum()
        return loss, {"toy": loss}


def toy_loader(values):
    return [({"x": torch.tensor(v)}, {}, {}) for v in values]


def test_non_finite_loss_stops_before_the_step():
    objective = ToyObjective()
    optimizer = torch.optim.SGD(objective.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    loader = toy_loader([[1.0, 1.0, 1.0], [float("nan"), 0.0, 0.0], [1.0, 1.0, 1.0]])
    seen = []
    with pytest.raises(NonFiniteLossError, match="step 2.*toy"):
        train_one_epoch(objective, loader, optimizer, scaler, device=torch.device("cpu"), step=0,
                        on_step=lambda step, terms: seen.append(step), progress=False)
    assert seen == [1]
    torch.testing.assert_close(objective.weight.detach(), torch.full((3,), 0.9))  # only step 1 applied


def test_total_steps_cap_and_fp16_scaler_keeps_its_scale():
    objective = ToyObjective()
    optimizer = torch.optim.SGD(objective.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=1)
    step, stopped = train_one_epoch(objective, toy_loader([[1.0, 2.0, 3.0]] * 5), optimizer, scaler,
                                    device=torch.device("cpu"), step=10, total_steps=13, progress=False)
    assert (step, stopped) == (13, False)
    # Dynamic scaling: the scale grows on good steps instead of being reset every step (spec 7.7 fixed).
    assert scaler.get_scale() > 1024.0


def run_module(args, cwd=REPO, **kwargs):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=900, **kwargs)


@pytest.mark.slow
def test_sigterm_writes_a_resumable_checkpoint(data_dir, tmp_path):
    overrides = tiny_overrides(data_dir, tmp_path, testsets="[]", end_epoch=50, exp_name="stopped")
    log = tmp_path / "stopped" / "log" / "train.log"
    proc = subprocess.Popen([sys.executable, "-m", "main.train", *overrides], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (log.exists() and "] step 1: " in log.read_text()):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, output
    state = load(tmp_path / "stopped" / "checkpoint" / "last.pth.tar")
    assert 1 <= state["step"] < 50 * 4
    assert "stopped by a signal" in log.read_text()


@pytest.mark.slow
def test_torchrun_two_processes_train_and_evaluate(data_dir, tmp_path):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    overrides = tiny_overrides(data_dir, tmp_path, total_steps=2, exp_name="ddp", testsets="[3dpw]")
    result = subprocess.run([*torchrun, "tests/dist_train_driver.py", *overrides], cwd=REPO, capture_output=True,
                            text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # DDP keeps both processes' weights identical (running BatchNorm statistics are broadcast from rank 0).
    assert_same_state(load(tmp_path / "rank0.pt"), load(tmp_path / "rank1.pt"))
    during = json.loads((tmp_path / "ddp" / "results" / "latest.json").read_text())
    assert during["3dpw"]["n"] == 4

    ckpt = str(tmp_path / "ddp" / "checkpoint" / "last.pth.tar")
    single, double = tmp_path / "eval1.json", tmp_path / "eval2.json"
    res1 = run_module(["-m", "main.test", "--ckpt", ckpt, "--out", str(single), *overrides])
    assert res1.returncode == 0, res1.stderr[-3000:]
    res2 = subprocess.run([*torchrun, "-m", "main.test", "--ckpt", ckpt, "--out", str(double), *overrides], cwd=REPO,
                          capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res2.returncode == 0, res2.stderr[-3000:]
    one, two = json.loads(single.read_text())["3dpw"], json.loads(double.read_text())["3dpw"]
    assert one["n"] == two["n"] == 4
    for metric in ("mpjpe", "pa_mpjpe", "mpvpe"):
        assert two[metric] == pytest.approx(one[metric], rel=1e-5)
        assert one[metric] == pytest.approx(during["3dpw"][metric], rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_training_on_cpu(data_dir, tmp_path, amp):
    overrides = tiny_overrides(data_dir, tmp_path, total_steps=2, testsets="[3dpw-oc]", amp=amp, exp_name=amp)
    assert train_main.main(overrides) == 0
    state = load(tmp_path / amp / "checkpoint" / "last.pth.tar")
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    if amp == "fp16":
        assert state["scaler"]["scale"] > 0  # the GradScaler's dynamic state is saved for resume


@pytest.mark.slow
def test_training_on_the_official_mix_of_four_datasets(tmp_path):
    """The paper's data mix (spec 4.4: Human36M + MuCo, CrowdPose + MSCOCO) over tiny sets in their real formats,
    a few real training steps on the CPU."""
    from common.body.body_model import joint_regressor_30, load_regressor, load_smpl
    from tests.coco_format import write_tiny_crowdpose, write_tiny_mscoco
    from tests.h36m_format import write_tiny_h36m

    data_dir = write_tiny_world(tmp_path)
    body = data_dir / "body_models"
    layer = load_smpl(body / "smpl")
    j30 = joint_regressor_30(layer.arrays["J_regressor"],
                             load_regressor(body / "J_regressor_extra.npy", (9, 6890), "extra", "mannequin"))
    h36m = load_regressor(body / "J_regressor_h36m_correct.npy", (17, 6890), "h36m", "mannequin")
    write_tiny_h36m(tmp_path, layer, j30, h36m, subjects=(1, 5, 6, 7, 8), n_frames=1)
    write_tiny_crowdpose(tmp_path, layer, j30)
    write_tiny_mscoco(tmp_path, layer, j30)
    overrides = tiny_overrides(data_dir, tmp_path / "out", total_steps=3, testsets="[3dpw-oc]", exp_name="mix",
                               trainset_3d="[Human36M,MuCo]", trainset_2d="[CrowdPose,MSCOCO]", train_batch_size=4)
    assert train_main.main(overrides) == 0
    log = (tmp_path / "out" / "mix" / "log" / "train.log").read_text()
    assert "] step 3: " in log
    assert load(tmp_path / "out" / "mix" / "checkpoint" / "last.pth.tar")["step"] == 3


@pytest.mark.slow
def test_resume_is_exact_under_torchrun(data_dir, tmp_path):
    """Two processes: 4 steps in one run == 2 steps, a stop and 2 resumed steps (each process keeps its own RNG)."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "tests/dist_train_driver.py"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first_half = tmp_path / "split" / "split" / "checkpoint" / "last.pth.tar"
    runs = {"straight": ["total_steps=4"], "split": ["total_steps=2"],
            "split_resumed": ["total_steps=4", f"resume={first_half}"]}
    for name, extra in runs.items():
        out = tmp_path / name.split("_")[0]
        overrides = tiny_overrides(data_dir, out, testsets="[]", end_epoch=3, exp_name=name.split("_")[0],
                                   train_batch_size=1)
        result = subprocess.run([*torchrun, *overrides, *extra], cwd=REPO, capture_output=True, text=True,
                                timeout=900, env=env)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert_same_state(load(tmp_path / "straight" / "rank0.pt"), load(tmp_path / "split" / "rank0.pt"), atol=1e-6)
    assert len(load(first_half)["rng"]) == 2


def test_linear_warmup_scales_the_first_steps_and_resumes_by_step():
    def run(start_step, n):
        objective = ToyObjective()
        optimizer = torch.optim.SGD(objective.parameters(), lr=0.1)
        optimizer.param_groups[0]["initial_lr"] = 0.1
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        train_one_epoch(objective, toy_loader([[1.0, 1.0, 1.0]] * n), optimizer, scaler, device=torch.device("cpu"),
                        step=start_step, warmup_steps=4, progress=False)
        return 1.0 - objective.weight.detach()[0].item(), optimizer.param_groups[0]["lr"]

    # lr x 1/4, 2/4, 3/4, 1, 1 over the first five steps: total descent 0.1 x 3.5.
    descent, lr = run(0, 5)
    assert descent == pytest.approx(0.35) and lr == pytest.approx(0.1)
    # A run resumed after two steps continues with 3/4, then the full rate.
    assert run(2, 2)[0] == pytest.approx(0.1 * 1.75)


def test_optimizer_groups(paper_cfg):
    import dataclasses

    from common.training.engine import TRANSFORMER_MODULES, TrainingObjective, build_optimizer
    from main.build import build_model

    objective = TrainingObjective(build_model(dataclasses.replace(paper_cfg, resnet_type=18)))
    trainable = {id(p) for p in objective.parameters() if p.requires_grad}
    official = build_optimizer(objective, 1e-4, 2e-4, 1e-4)
    # The official layout (spec 4.2), so official optimizer states load group for group.
    assert [g["name"] for g in official.param_groups] == ["backbone", "network", "loss_weights"]
    assert all(g["fused"] for g in official.param_groups)  # on the CPU: PyTorch's fused AdamW, the fast one
    split = build_optimizer(objective, 1e-3, 1e-3, 1e-4, lr_transformer=1e-4)
    groups = {g["name"]: g for g in split.param_groups}
    assert groups["transformer"]["lr"] == 1e-4 and groups["network"]["lr"] == 1e-3
    gated = TrainingObjective(build_model(dataclasses.replace(paper_cfg, resnet_type=18, image_gate=True)))
    gate_group = build_optimizer(gated, 1e-4, 1e-4, 1e-4, lr_image_gate=1e-2).param_groups[-1]
    assert gate_group["name"] == "image_gate" and gate_group["lr"] == 1e-2 and gate_group["weight_decay"] == 0
    assert gate_group["params"] == [gated.model.pose2feat.image_gate]
    for optimizer in (official, split):
        ids = [id(p) for g in optimizer.param_groups for p in g["params"]]
        assert len(ids) == len(set(ids)) and set(ids) == trainable  # a partition of the trainable parameters
    expected = {id(p) for name, p in objective.model.named_parameters()
                if name.split(".")[0] in TRANSFORMER_MODULES and p.requires_grad}
    assert {id(p) for p in groups["transformer"]["params"]} == expected
    assert any(name.startswith("transformer.decoder") for name, _ in objective.model.named_parameters())


def test_loss_multipliers_scale_their_terms_before_the_learned_weighting(paper_cfg):
    import dataclasses

    from common.training.engine import TrainingObjective
    from main.build import build_model
    from tools.bench import random_batch

    cfg = dataclasses.replace(paper_cfg, resnet_type=18, input_img_shape=(64, 64), princpt=(32.0, 32.0),
                              output_hm_shape=(16, 16, 16), dropout=0.0)
    model = build_model(cfg).eval()
    inputs, targets, meta = random_batch(cfg, 2, torch.device("cpu"), torch.Generator().manual_seed(0))
    plain = TrainingObjective(model, hm_shape=cfg.output_hm_shape)
    scaled = TrainingObjective(model, hm_shape=cfg.output_hm_shape,
                               loss_multipliers={"smpl_shape": 3.0, "smpl_pose": 0.0})
    with torch.no_grad():
        total, terms = plain(inputs, targets, meta)
        scaled_total, scaled_terms = scaled(inputs, targets, meta)
    # The reported terms stay unweighted; with the learned weights at their start (0.5 / 1^2), the total changes by
    # 0.5 (3 - 1) L_shape + 0.5 (0 - 1) L_pose.
    assert scaled_terms["smpl_shape"] == pytest.approx(terms["smpl_shape"].item())
    expected = total + terms["smpl_shape"] - 0.5 * terms["smpl_pose"]
    assert scaled_total.item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match=r"loss_multipliers.*'smpl_shapes'.*smpl_shape"):
        TrainingObjective(model, loss_multipliers={"smpl_shapes": 1.0})


def test_resume_refuses_a_checkpoint_of_another_configuration(data_dir, tmp_path):
    import dataclasses

    from common.training.checkpoint import FORMAT, save_atomic
    from main.config import load_config

    overrides = tiny_overrides(data_dir, tmp_path, exp_name="run", testsets="[]", resume="auto")
    other = dataclasses.replace(load_config(None, overrides), dec_layers=3, trainset_3d=["MuCo", "Human36M"])
    save_atomic({"format": FORMAT, "model": {}, "loss_weights": {}, "optimizer": {}, "scaler": {}, "step": 5,
                 "config": dataclasses.asdict(other), "rng": []}, tmp_path / "run" / "checkpoint" / "last.pth.tar")
    with pytest.raises(ValueError) as info:
        train_main.main(overrides)
    message = str(info.value)
    assert "belongs to another configuration" in message and "last.pth.tar" in message
    assert "dec_layers: checkpoint 3, this run 4" in message
    assert "trainset_3d: checkpoint ['MuCo', 'Human36M'], this run ['MuCo']" in message
    assert "resnet_type" not in message  # only the differing keys are named


def test_resume_auto_without_a_checkpoint_starts_fresh_and_a_finished_run_returns_at_once(data_dir, tmp_path):
    overrides = tiny_overrides(data_dir, tmp_path, exp_name="run", testsets="[]", total_steps=1, resume="auto")
    assert train_main.main(overrides) == 0
    log = tmp_path / "run" / "log" / "train.log"
    assert "resume=auto: no checkpoint" in log.read_text()
    last = tmp_path / "run" / "checkpoint" / "last.pth.tar"
    assert load(last)["finished"] is True
    written = last.stat().st_mtime_ns
    assert train_main.main(overrides) == 0
    assert "this run already finished at step 1; nothing to do" in log.read_text()
    assert last.stat().st_mtime_ns == written


def test_save_every_minutes_writes_step_checkpoints_and_keeps_the_newest(data_dir, tmp_path):
    overrides = tiny_overrides(data_dir, tmp_path, exp_name="run", testsets="[]", total_steps=4, end_epoch=2,
                               save_every_steps=0, save_every_minutes=1e-6, keep_last_k=2)  # due after every step
    assert train_main.main(overrides) == 0
    folder = tmp_path / "run" / "checkpoint"
    # 4 steps per epoch: steps 1-3 get step checkpoints (the oldest rotated out), step 4 is the epoch's last.pth.tar.
    assert sorted(p.name for p in folder.glob("step_*")) == ["step_00000002.pth.tar", "step_00000003.pth.tar"]
    assert load(folder / "step_00000003.pth.tar")["step"] == 3 and load(folder / "last.pth.tar")["step"] == 4


@pytest.mark.slow
def test_fast_inference_off_evaluates_the_plain_model_to_the_same_metrics(data_dir, tmp_path):
    overrides = tiny_overrides(data_dir, tmp_path, total_steps=1, exp_name="run", testsets="[3dpw]")
    assert train_main.main(overrides) == 0
    ckpt = str(tmp_path / "run" / "checkpoint" / "last.pth.tar")
    results = {}
    for fast in (True, False):
        out = tmp_path / f"eval_{fast}.json"
        assert test_main.main(["--ckpt", ckpt, "--out", str(out)] + overrides + [f"fast_inference={fast}"]) == 0
        results[fast] = json.loads(out.read_text())["3dpw"]
    assert results[True]["n"] == results[False]["n"] == 4
    for metric in ("mpjpe", "pa_mpjpe", "mpvpe"):  # BN folding changes float32 rounding only
        assert results[False][metric] == pytest.approx(results[True][metric], rel=1e-5, abs=1e-3)


def test_image_only_steps_mask_the_input_pose_for_the_first_global_steps():
    class MaskRecorder(ToyObjective):
        seen = []

        def forward(self, inputs, targets, meta):
            self.seen.append(float(inputs["joints_mask"].sum()))
            return super().forward(inputs, targets, meta)

    loader = [({"x": torch.ones(3), "joints_mask": torch.ones(30, 1)}, {}, {}) for _ in range(4)]
    for start, expected in ((0, [0.0, 0.0, 30.0, 30.0]), (1, [0.0, 30.0, 30.0, 30.0])):
        objective = MaskRecorder()
        objective.seen = []
        train_one_epoch(objective, loader, torch.optim.SGD(objective.parameters(), lr=0.1),
                        torch.amp.GradScaler("cpu", enabled=False), device=torch.device("cpu"), step=start,
                        image_only_steps=2, progress=False)
        # Counted in global steps, so a resumed run continues the stage where it stopped.
        assert objective.seen == expected
        assert loader[0][0]["joints_mask"].sum() == 30  # the batch itself is not modified


def test_image_only_prob_withholds_whole_input_poses_at_its_rate():
    torch.manual_seed(5)
    inputs = {"img": torch.zeros(4000, 1), "joints_mask": torch.ones(4000, 30, 1)}
    kept = withhold_input_pose(inputs, False, 0.25)["joints_mask"].sum(dim=(1, 2))
    assert set(kept.tolist()) == {0.0, 30.0}  # a sample keeps every joint of its pose or none
    assert abs((kept == 0).float().mean().item() - 0.25) < 0.03  # 4000 draws: standard error 0.007
    assert withhold_input_pose(inputs, False, 0.0) is inputs
    assert withhold_input_pose(inputs, False, 1.0)["joints_mask"].sum() == 0
    assert inputs["joints_mask"].sum() == 4000 * 30  # the batch itself is not modified
