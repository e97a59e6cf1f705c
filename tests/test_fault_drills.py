"""Fault drills: real training subprocesses on the tiny world, real signals, damaged files; each checks what a user
relies on after the fault (README "Long runs and failures"). A small network (ResNet-18, 128-pixel crops, narrow
transformer) keeps each drill to a few minutes of CPU."""
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from common.training.checkpoint import LAST_NAME, PARTIAL_SUFFIX, read_training_state, step_checkpoint_name
from main import train as train_main
from tests.tiny_world import tiny_overrides, write_tiny_world

REPO = Path(__file__).resolve().parent.parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
SMALL_NET = dict(input_img_shape="[128,128]", output_hm_shape="[32,32,32]", princpt="[64.0,64.0]", enc_layers=1,
                 dec_layers=2, hidden_dim=64, dim_feedforward=128, voxel_dim_feedforward=128, testsets="[]")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_tiny_world(tmp_path_factory.mktemp("tiny_world"))


def overrides(data_dir, out, **extra):
    return tiny_overrides(data_dir, out, **{**SMALL_NET, "end_epoch": 5, **extra})


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def start(args, env=None):
    return subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, start_new_session=True)


def wait_for(condition, proc, timeout=600):
    deadline = time.time() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the run ended before the fault was injected:\n{proc.stdout.read()[-3000:]}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail("timed out waiting for the run")
        time.sleep(0.05)


def logged_steps(log):
    text = log.read_text() if log.exists() else ""
    return [int(line.split("] step ")[1].split(":")[0]) for line in text.splitlines() if "] step " in line]


def run(args, env=None):
    result = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=1200,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def assert_bitwise_equal(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_kill_9_at_a_random_step_then_resume_auto_equals_an_uninterrupted_run(data_dir, tmp_path):
    """Also: the newest checkpoint damaged after the kill, resume=auto falls back to the previous one; a kill -9
    loses at most save_every_steps steps. Weights are compared bitwise (CPU, float32)."""
    every, total = 2, 10
    common = dict(total_steps=total, save_every_steps=every, keep_last_k=2)
    run([sys.executable, "-m", "main.train", *overrides(data_dir, tmp_path, exp_name="straight", **common)])

    args = [sys.executable, "-m", "main.train", *overrides(data_dir, tmp_path, exp_name="killed", resume="auto",
                                                            **common)]
    log, folder = tmp_path / "killed" / "log" / "train.log", tmp_path / "killed" / "checkpoint"
    kill_after = random.Random().randint(5, total - 1)  # at least two step checkpoints exist by then
    proc = start(args)
    wait_for(lambda: max(logged_steps(log), default=0) >= kill_after, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    reached = max(logged_steps(log))
    # Most recently written first: step checkpoints and, past an epoch end, last.pth.tar.
    saved = sorted([p for p in folder.iterdir() if p.name.endswith(".pth.tar")], key=lambda p: p.stat().st_mtime_ns,
                   reverse=True)
    steps = [read_training_state(p)["step"] for p in saved]
    assert 0 <= reached - steps[0] <= every, (reached, steps)  # what the kill lost
    print(f"kill -9 after step {reached}; newest checkpoint at step {steps[0]}: {reached - steps[0]} steps lost")

    saved[0].write_bytes(saved[0].read_bytes()[:1000])  # damaged after the fact (a bad disk, a truncated copy)
    run(args)
    text = log.read_text()
    assert f"skipping checkpoint {saved[0]}: unreadable" in text
    assert f"resumed {saved[1]} at step {steps[1]}" in text
    straight, resumed = load(tmp_path / "straight" / "checkpoint" / LAST_NAME), load(folder / LAST_NAME)
    assert straight["step"] == resumed["step"] == total
    assert_bitwise_equal(straight["model"], resumed["model"])
    assert_bitwise_equal(straight["loss_weights"], resumed["loss_weights"])


def test_kill_9_during_a_checkpoint_write_leaves_the_previous_one_loadable(data_dir, tmp_path):
    args = [sys.executable, "-m", "main.train", *overrides(data_dir, tmp_path, exp_name="run", total_steps=3,
                                                            save_every_steps=1, resume="auto")]
    folder = tmp_path / "run" / "checkpoint"
    # The test hook holds every save for 3 s between writing the data and the rename.
    proc = start(args, env={"JOTR_TEST_PAUSE_IN_SAVE": "3"})
    wait_for(lambda: (folder / step_checkpoint_name(1)).exists()
             and any(folder.glob(f"{step_checkpoint_name(2)}.*{PARTIAL_SUFFIX}")), proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (folder / step_checkpoint_name(2)).exists()
    assert read_training_state(folder / step_checkpoint_name(1))["step"] == 1
    run(args)
    log = (tmp_path / "run" / "log" / "train.log").read_text()
    assert "the unfinished write of an interrupted save" in log
    assert f"resumed {folder / step_checkpoint_name(1)} at step 1" in log
    assert load(folder / LAST_NAME)["step"] == 3
    assert not list(folder.glob(f"*{PARTIAL_SUFFIX}"))


TWO_PROCESSES = dict(total_steps=8, train_batch_size=1, save_every_steps=2)


@pytest.fixture(scope="module")
def straight_two_processes(data_dir, tmp_path_factory):
    """An uninterrupted 2-process run; returns the folder holding each rank's final weights (rank<r>.pt)."""
    out = tmp_path_factory.mktemp("straight")
    run([*TORCHRUN, "tests/dist_train_driver.py", *overrides(data_dir, out, exp_name="run", **TWO_PROCESSES)])
    return out


def test_sigterm_to_torchrun_then_restart_continues_exactly(data_dir, tmp_path, straight_two_processes):
    """Two processes: SIGTERM to torchrun (a scheduler's preemption), then the same command again (resume=auto)
    ends with the weights of an uninterrupted 2-process run."""
    straight = straight_two_processes
    out = tmp_path / "stopped"
    args = [*TORCHRUN, "tests/dist_train_driver.py", *overrides(data_dir, out, exp_name="run", resume="auto",
                                                                  **TWO_PROCESSES)]
    log = out / "run" / "log" / "train.log"
    proc = start(args)
    wait_for(lambda: max(logged_steps(log), default=0) >= 3, proc)
    proc.send_signal(signal.SIGTERM)  # torchrun passes it on to both workers
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode != 0, output[-3000:]
    stopped_at = load(out / "run" / "checkpoint" / LAST_NAME)["step"]
    assert 3 <= stopped_at < 8 and "stopped by a signal" in log.read_text()
    run(args)
    assert f"at step {stopped_at}" in log.read_text()
    for rank in (0, 1):
        assert_bitwise_equal(load(straight / f"rank{rank}.pt"), load(out / f"rank{rank}.pt"))


def children(pid):
    """The pids of the live child processes of `pid` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds torchrun's workers through /proc")
def test_torchrun_elastic_restart_after_a_worker_is_killed_resumes_by_itself(data_dir, tmp_path,
                                                                              straight_two_processes):
    """kill -9 of one worker under torchrun --max-restarts 1: torchrun restarts both workers with the same command,
    resume=auto picks up the newest checkpoint, and the run ends with the weights of an uninterrupted one."""
    out = tmp_path / "elastic"
    args = [*TORCHRUN, "--max-restarts", "1", "tests/dist_train_driver.py",
            *overrides(data_dir, out, exp_name="run", resume="auto", **TWO_PROCESSES)]
    log = out / "run" / "log" / "train.log"
    proc = start(args)
    wait_for(lambda: max(logged_steps(log), default=0) >= 3, proc)
    workers = children(proc.pid)
    assert len(workers) == 2, workers
    os.kill(workers[1], signal.SIGKILL)
    output, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, output[-3000:]
    assert "resumed " in log.read_text()
    for rank in (0, 1):
        assert_bitwise_equal(load(straight_two_processes / f"rank{rank}.pt"), load(out / f"rank{rank}.pt"))


def test_a_corrupt_jpeg_is_skipped_counted_and_too_many_stop_the_run(data_dir, tmp_path):
    import shutil

    world = tmp_path / "data"
    shutil.copytree(data_dir, world)
    image = sorted((world / "MuCo").rglob("*.jpg"))[3]
    image.write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG" + os.urandom(64))
    # 8 training samples, one per image: 1 of them, 12.5 %, is unreadable in every epoch (4 steps of 2 samples).
    # DataLoader workers read the images: the record of skipped files must come back from them.
    base = dict(total_steps=8, num_thread=2, save_every_steps=0)
    assert train_main.main(overrides(world, tmp_path, exp_name="tolerant", max_bad_samples_fraction=0.2,
                                     **base)) == 0
    log = (tmp_path / "tolerant" / "log" / "train.log").read_text()
    skipped = [line for line in log.splitlines() if "skipped a training sample" in line]
    assert len(skipped) == 2 and all(str(image) in line for line in skipped)  # 1 per epoch, 2 epochs
    assert "(1 in epoch 1)" in skipped[-1]

    with pytest.raises(Exception, match=r"too many unreadable training samples: more than 10.00%"):
        train_main.main(overrides(world, tmp_path, exp_name="strict", max_bad_samples_fraction=0.1, **base))
    assert load(tmp_path / "tolerant" / "checkpoint" / LAST_NAME)["step"] == 8
