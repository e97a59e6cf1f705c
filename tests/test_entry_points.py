"""Entry points: user errors are one message and status 2, programming errors a traceback; the preflight lists
every file a run needs that is missing or unusable, at once."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common.errors import InputError, UserError, run_entry_point
from main.config import load_config
from main.preflight import MissingFilesError, check_test_files, check_training_files
from tests.tiny_world import tiny_overrides, write_tiny_world

REPO = Path(__file__).resolve().parent.parent


def test_user_errors_exit_2_with_one_message(capsys, monkeypatch):
    monkeypatch.delenv("JOTR_DEBUG", raising=False)

    def fails(error):
        def main(argv):
            raise error
        return main

    for error in (UserError("the thing is missing"), FileNotFoundError("no such file: x.json"),
                  InputError("x.npy: expected (9, 6890)")):
        with pytest.raises(SystemExit) as stop:
            run_entry_point(fails(error), [])
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {error}\n") and "Traceback" not in err and "--debug" in err


def test_debug_shows_user_errors_and_programming_errors_propagate(monkeypatch):
    seen = []

    def main(argv):
        seen.append(argv)
        raise UserError("missing")

    monkeypatch.delenv("JOTR_DEBUG", raising=False)
    with pytest.raises(UserError):
        run_entry_point(main, ["--debug", "a=1"])
    assert seen == [["a=1"]]  # main never sees --debug
    monkeypatch.setenv("JOTR_DEBUG", "1")
    with pytest.raises(UserError):
        run_entry_point(main, [])
    monkeypatch.delenv("JOTR_DEBUG")

    def buggy(argv):
        raise TypeError("a bug")

    with pytest.raises(TypeError):
        run_entry_point(buggy, [])
    with pytest.raises(SystemExit) as stop:
        run_entry_point(lambda argv: 3, [])
    assert stop.value.code == 3


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return write_tiny_world(tmp_path_factory.mktemp("world"))


def test_preflight_lists_every_missing_and_malformed_file(world, tmp_path):
    data_dir = tmp_path / "data"
    # A copy of the tiny world's body models, 3DPW without 3DPW_oc.json, and a regressor of the wrong shape.
    data_dir.mkdir()
    subprocess.run(["cp", "-r", str(world / "body_models"), str(world / "3DPW"), str(data_dir)], check=True)
    os.remove(data_dir / "3DPW" / "3DPW_oc.json")
    np.save(data_dir / "body_models" / "J_regressor_extra.npy", np.zeros((8, 6890), np.float32))
    cfg = load_config(None, tiny_overrides(data_dir, tmp_path / "out", testsets="[3dpw,3dpw-oc]"))
    ckpt = tmp_path / "ckpt"
    with pytest.raises(MissingFilesError) as error:
        check_test_files(cfg, [ckpt / "3dpw_best_ckpt.pth.tar", ckpt / "3dpw-oc_best_ckpt.pth.tar"])
    message = str(error.value)
    assert message.startswith("4 file(s)")
    assert "malformed  " in message and "J_regressor_extra.npy" in message and "(9, 6890)" in message
    for missing in ("3DPW_oc.json", "3dpw_best_ckpt.pth.tar", "3dpw-oc_best_ckpt.pth.tar"):
        assert f"{missing}\n" in message
    assert "python -m tools.check_data" in message and "docs/DATA.md" in message

    # Training with MuCo (absent here) and the VPoser head: its annotations and VPoser are listed too.
    cfg = load_config(None, tiny_overrides(data_dir, tmp_path / "out", pose_head="vposer",
                                           vposer_path=data_dir / "body_models" / "vposer_v1_0"))
    with pytest.raises(MissingFilesError) as error:
        check_training_files(cfg)
    message = str(error.value)
    for missing in ("MuCo-3DHP.json", "smpl_param.json", "vposer_v1_0", "3DPW_oc.json", "J_regressor_extra.npy"):
        assert missing in message


def test_preflight_passes_on_complete_data(world, tmp_path):
    cfg = load_config(None, tiny_overrides(world, tmp_path / "out"))
    check_training_files(cfg)
    ckpt = tmp_path / "last.pth.tar"
    ckpt.write_bytes(b"")  # the preflight only asks that checkpoints exist; their loader checks the content
    check_test_files(cfg, [ckpt])


def test_preflight_resume_auto_needs_the_start_checkpoint_only_for_a_fresh_run(world, tmp_path):
    out = tmp_path / "out"
    cfg = load_config(None, tiny_overrides(world, out, resume="auto", init_ckpt=tmp_path / "stage1.pth.tar"))
    with pytest.raises(MissingFilesError) as error:  # nothing to continue yet: the run starts from init_ckpt
        check_training_files(cfg)
    assert str(error.value).startswith("1 file(s)") and "stage1.pth.tar" in str(error.value)
    checkpoint_dir = out / cfg.exp_name / "checkpoint"
    checkpoint_dir.mkdir(parents=True)
    (checkpoint_dir / "step_4.pth.tar").write_bytes(b"")  # the run continues from its own checkpoints
    check_training_files(cfg)


def _run(command, cwd, **env):
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(REPO), **env}
    env.pop("JOTR_DEBUG", None)
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.slow
def test_scripts_without_data_exit_2_listing_everything(tmp_path):
    empty = tmp_path / "nothing"
    paths = [f"data_dir={empty}", f"smpl_dir={empty}/smpl", f"j_regressor_extra_path={empty}/extra.npy",
             f"j_regressor_h36m_path={empty}/h36m.npy", f"vposer_path={empty}/vposer", f"output_dir={tmp_path}/out"]
    evaluation = _run([str(REPO / "eval.sh"), *paths], REPO, CKPT_DIR=str(empty))
    training = _run([str(REPO / "train.sh"), *paths], REPO)
    for result, needed in ((evaluation, ("3dpw-oc_best_ckpt.pth.tar", "3DPW_oc.json", "SMPL_FEMALE.pkl")),
                           (training, ("vposer", "MuCo-3DHP.json", "Human36M_subject1_data.json", "crowdpose_train"))):
        assert result.returncode == 2, result.stderr[-3000:]
        assert "Traceback" not in result.stderr and result.stderr.count("error:") == 1
        assert all(name in result.stderr for name in (*needed, "extra.npy", "h36m.npy", "SMPL_NEUTRAL.pkl"))
    assert not (tmp_path / "out").exists()  # nothing was started


@pytest.mark.slow
def test_programming_error_still_has_a_traceback(tmp_path):
    # main.test with its run replaced by one that fails with a bug, behind the entry-point wrapper.
    script = "import main.test as t\nt.run = lambda cfg, args: 1 / 0\nfrom common.errors import run_entry_point\n" \
             "run_entry_point(t.main)\n"
    world = write_tiny_world(tmp_path / "world")
    ckpt = tmp_path / "c.pth.tar"
    ckpt.write_bytes(b"")
    result = _run([sys.executable, "-c", script, "--ckpt", str(ckpt), *tiny_overrides(world, tmp_path / "out")], REPO)
    assert result.returncode == 1 and "Traceback" in result.stderr and "ZeroDivisionError" in result.stderr
