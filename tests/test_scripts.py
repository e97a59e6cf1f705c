"""train.sh and eval.sh on the CPU, on a tiny dataset in the real formats."""
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from tests.tiny_world import tiny_overrides, write_tiny_world

REPO = Path(__file__).resolve().parent.parent


def run_script(script, args, **env):
    env = {**os.environ, "PYTHON": os.environ.get("PYTHON", str(Path(os.sys.executable))), **env}
    return subprocess.run([str(REPO / script), *args], cwd=REPO, capture_output=True, text=True, timeout=1200,
                          env=env)


@pytest.mark.slow
def test_train_sh_runs_both_stages_and_eval_sh_reports(tmp_path):
    data_dir = write_tiny_world(tmp_path / "world")
    out = tmp_path / "out"
    overrides = [o for o in tiny_overrides(data_dir, out, total_steps=2, testsets="[3dpw,3dpw-oc]")
                 if not o.startswith("exp_name=")]
    result = run_script("train.sh", overrides)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    stage1 = torch.load(out / "main_train" / "checkpoint" / "last.pth.tar", weights_only=True)
    stage2 = torch.load(out / "fine_tune" / "checkpoint" / "last.pth.tar", weights_only=True)
    assert stage1["config"]["with_contrastive"] is False and stage2["config"]["with_contrastive"] is True
    # Stage 2 really started from stage 1's final weights (spec 7.4/7.5 fixed).
    assert stage2["config"]["init_ckpt"] == str(out / "main_train" / "checkpoint" / "last.pth.tar")
    assert "initial weights from" in (out / "fine_tune" / "log" / "train.log").read_text()
    assert stage2["config"]["lr"] == pytest.approx(5e-5) and stage1["config"]["lr"] == pytest.approx(1e-4)
    # Both stages use resume=auto: running train.sh again finds both finished and trains nothing.
    result = run_script("train.sh", overrides)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for stage, ckpt in (("main_train", stage1), ("fine_tune", stage2)):
        assert "this run already finished at step 2" in (out / stage / "log" / "train.log").read_text()
        assert torch.load(out / stage / "checkpoint" / "last.pth.tar", weights_only=True)["step"] == ckpt["step"]

    result = run_script("eval.sh", overrides, CKPT_DIR=str(out / "fine_tune" / "checkpoint"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "PA-MPJPE" in result.stdout and "paper" in result.stdout
    results = json.loads((out / "jotr" / "eval" / "results.json").read_text())
    assert results["3dpw"]["n"] == 4 and results["3dpw-oc"]["n"] == 1
    assert results["3dpw-oc"]["checkpoint"].endswith("3dpw-oc_best_ckpt.pth.tar")


@pytest.mark.slow
def test_eval_sh_without_checkpoints_says_where_to_get_them(tmp_path):
    data_dir = write_tiny_world(tmp_path / "world")
    result = run_script("eval.sh", tiny_overrides(data_dir, tmp_path / "out", testsets="[3dpw-oc]"),
                        CKPT_DIR=str(tmp_path / "empty"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "3dpw-oc_best_ckpt.pth.tar" in result.stderr and "JOTR README" in result.stderr
