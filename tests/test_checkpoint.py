import dataclasses
import json
import os
import pickle
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from common.training.checkpoint import (
    FORMAT,
    IGNORED_OFFICIAL_PREFIXES,
    LAST_NAME,
    OFFICIAL_TO_OURS,
    PARTIAL_SUFFIX,
    load_checkpoint,
    newest_training_state,
    official_to_ours,
    ours_to_official,
    remove_partial_saves,
    rotate_step_checkpoints,
    save_atomic,
    step_checkpoint_name,
    to_official_state_dict,
)
from main.build import build_body_model, build_model

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "parity"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def manifest():
    return json.loads((FIXTURE / "official_state_dict_manifest.json").read_text())


@pytest.fixture(scope="module")
def body_model(paper_cfg):
    return build_body_model(paper_cfg)


@pytest.fixture(scope="module")
def paper_model(paper_cfg, body_model):
    return build_model(paper_cfg, body_model=body_model)


def test_paper_model_has_exactly_the_official_keys_and_shapes(paper_model, manifest):
    ours = to_official_state_dict(paper_model)
    assert len(manifest) == 538
    assert {k: list(v.shape) for k, v in ours.items()} == {k: list(v) for k, v in manifest.items()}


def test_mapping_table_round_trips_every_official_key(paper_model, manifest):
    ours = paper_model.state_dict()
    for key in manifest:
        if key.startswith(IGNORED_OFFICIAL_PREFIXES):
            continue
        mapped = official_to_ours(key)
        assert mapped in ours, key
        assert ours_to_official(mapped) == key
    # Every table entry is used by the paper configuration (no dead rows), and the misspelt key is mapped.
    for official, _ in OFFICIAL_TO_OURS:
        assert any(k == official or k.startswith(official) for k in manifest), official
    assert official_to_ours("cascade_shaoe_out.3.weight") == "shape_head.layers.3.weight"


def randomised(model, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.state_dict().values():
            if p.is_floating_point():
                p.copy_(torch.randn_like(p))
    return model


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("layout", ["official_best", "official_snapshot", "ours"])
def test_load_each_checkpoint_format(tmp_path, paper_cfg, body_model, layout):
    cfg = dataclasses.replace(paper_cfg, resnet_type=18, enc_layers=1, dec_layers=2)
    source = randomised(build_model(cfg, body_model=body_model), seed=1)
    target = build_model(cfg, body_model=body_model)
    path = tmp_path / "ckpt.pth.tar"
    if layout == "official_best":
        torch.save(to_official_state_dict(source, module_prefix=True), path)
    elif layout == "official_snapshot":
        torch.save({"epoch": 3, "network": to_official_state_dict(source, module_prefix=True), "optimizer": {}}, path)
    else:
        save_atomic({"format": FORMAT, "model": source.state_dict(), "epoch": 7}, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # same SMPL arrays: no warning
        extra = load_checkpoint(target, path)
    assert_same_weights(source, target)
    assert extra == ({"format": FORMAT, "epoch": 7} if layout == "ours" else {})


def test_checkpoint_of_another_architecture_lists_mismatched_keys(tmp_path, paper_cfg, body_model):
    small = build_model(dataclasses.replace(paper_cfg, resnet_type=18, dec_layers=3), body_model=body_model)
    path = tmp_path / "resnet18.pth.tar"
    torch.save(to_official_state_dict(small, module_prefix=True), path)
    target = build_model(paper_cfg, body_model=body_model)
    with pytest.raises(ValueError) as info:
        load_checkpoint(target, path)
    message = str(info.value)
    assert str(path) in message
    assert "missing keys" in message and "pose_head.layers.3.weight" in message  # dec_layers 3 vs 4
    assert "shape mismatches" in message and "lift_conv.weight (2048, 512, 1, 1) vs model (2048, 2048, 1, 1)" in message
    assert "transformer.decoder.joint_regressors.3" in message


def test_unexpected_key_is_an_error(tmp_path, paper_cfg, body_model):
    cfg = dataclasses.replace(paper_cfg, resnet_type=18)
    model = build_model(cfg, body_model=body_model)
    state = to_official_state_dict(model, module_prefix=True)
    state["module.some_new_head.weight"] = torch.zeros(3)
    path = tmp_path / "extra.pth.tar"
    torch.save(state, path)
    with pytest.raises(ValueError, match="unexpected keys .*some_new_head.weight"):
        load_checkpoint(model, path)


def test_vposer_checkpoint_into_rot6d_model_is_an_error(tmp_path, paper_cfg, body_model):
    cfg = dataclasses.replace(paper_cfg, resnet_type=18)
    path = tmp_path / "vposer_model.pth.tar"
    torch.save(to_official_state_dict(build_model(cfg, body_model=body_model), module_prefix=True), path)
    with pytest.raises(ValueError, match="vposer.bodyprior_dec_out.weight"):
        load_checkpoint(build_model(dataclasses.replace(cfg, pose_head="rot6d"), body_model=body_model), path)


def test_differing_smpl_arrays_warn(tmp_path, paper_cfg, body_model):
    cfg = dataclasses.replace(paper_cfg, resnet_type=18)
    model = build_model(cfg, body_model=body_model)
    state = to_official_state_dict(model, module_prefix=True)
    state["module.human_model_layer.th_v_template"] = state["module.human_model_layer.th_v_template"] + 0.01
    path = tmp_path / "other_smpl.pth.tar"
    torch.save(state, path)
    with pytest.warns(UserWarning, match="th_v_template"):
        load_checkpoint(model, path)


class NotATensor:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_checkpoint_is_loaded_without_running_code(tmp_path, paper_cfg, body_model):
    path = tmp_path / "evil.pth.tar"
    with open(path, "wb") as f:
        pickle.dump({"module.exponent": NotATensor()}, f, protocol=2)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(build_model(dataclasses.replace(paper_cfg, resnet_type=18), body_model=body_model), path)


def test_missing_checkpoint_names_the_file(tmp_path, paper_model):
    with pytest.raises(FileNotFoundError, match="nowhere.pth.tar.*checkpoint/"):
        load_checkpoint(paper_model, tmp_path / "nowhere.pth.tar")


class FailsToSave:
    def __reduce__(self):
        raise RuntimeError("cannot be saved")


def test_save_atomic_leaves_no_partial_file(tmp_path):
    path = tmp_path / "sub" / "ckpt.pth.tar"
    save_atomic({"a": torch.ones(2)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    with pytest.raises(RuntimeError, match="cannot be saved"):
        save_atomic({"bad": FailsToSave()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2)), "old file intact"
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.pth.tar"], "no temporary left behind"


def test_exported_smpl_buffers_match_the_body_model(paper_model, body_model):
    state = to_official_state_dict(paper_model)
    np.testing.assert_array_equal(state["human_model_layer.th_v_template"][0].numpy(),
                                  np.asarray(body_model.arrays["v_template"], np.float32))
    assert state["human_model_layer.th_faces"].dtype == torch.int64


@pytest.mark.slow
def test_gated_model_exports_to_the_official_layout_exactly(tmp_path, paper_cfg, body_model):
    cfg = dataclasses.replace(paper_cfg, resnet_type=18, enc_layers=1, dec_layers=2, pose_head="rot6d",
                              input_img_shape=(128, 128), output_hm_shape=(32, 32, 32), princpt=(64.0, 64.0),
                              backbone_init="kaiming")
    torch.manual_seed(3)
    gated = build_model(dataclasses.replace(cfg, image_gate=True), body_model=body_model).eval()
    with torch.no_grad():
        gated.pose2feat.image_gate.fill_(0.37)
        gated.pose2feat.conv[0].weight.normal_(std=0.05)  # the official init (std 0.001) hides the image
    path = tmp_path / "official.pth.tar"
    torch.save(to_official_state_dict(gated), path)
    plain = build_model(cfg, body_model=body_model).eval()  # the official architecture: no gate
    load_checkpoint(plain, path)
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 3, 128, 128, generator=g)
    joints, mask = 4 + 24 * torch.rand(2, 30, 2, generator=g), torch.ones(2, 30, 1)
    with torch.no_grad():
        expected, got = gated(img, joints, mask), plain(img, joints, mask)
    torch.testing.assert_close(got["joint_img"], expected["joint_img"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got["smpl_mesh_cam"], expected["smpl_mesh_cam"], rtol=1e-4, atol=1e-5)
    with torch.no_grad():  # the gate matters: ignoring it (gate 1) would give other outputs
        gated.pose2feat.image_gate.fill_(1.0)
        assert not torch.allclose(gated(img, joints, mask)["smpl_mesh_cam"], expected["smpl_mesh_cam"], atol=1e-4)


def training_state(step):
    """A small dict in the layout of a resumable checkpoint (main.train.save_training_state)."""
    return {"format": FORMAT, "model": {"w": torch.full((3,), float(step))}, "loss_weights": {}, "optimizer": {},
            "scaler": {}, "step": step, "config": {}, "rng": []}


def test_save_atomic_reports_a_full_disk_and_keeps_the_previous_file(tmp_path):
    """A real failed write: the process may not write files larger than 200 kB (RLIMIT_FSIZE), as on a full disk."""
    script = (
        "import resource, signal, sys, torch\n"
        "from common.training.checkpoint import save_atomic\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))\n"
        "save_atomic({'a': torch.zeros(1_000_000)}, sys.argv[1])\n")
    path = tmp_path / "ckpt.pth.tar"
    save_atomic({"a": torch.ones(2)}, path)
    result = subprocess.run([sys.executable, "-c", script, str(path)], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode != 0
    assert f"could not write checkpoint {path}" in result.stderr and "the previous file is intact" in result.stderr
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth.tar"], "no partial file left behind"


def test_newest_loadable_checkpoint_skips_damaged_ones(tmp_path):
    for step in (2, 4, 6):
        save_atomic(training_state(step), tmp_path / step_checkpoint_name(step))
        time.sleep(0.01)  # distinct modification times
    newest = tmp_path / step_checkpoint_name(6)
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # truncated, e.g. copied off a full disk
    middle = tmp_path / step_checkpoint_name(4)
    torch.save({"format": FORMAT, "model": {}}, middle)  # complete, but not a resumable checkpoint
    os.utime(middle, ns=(newest.stat().st_mtime_ns - 1,) * 2)
    messages = []
    path, state = newest_training_state(tmp_path, messages.append)
    assert path == tmp_path / step_checkpoint_name(2) and state["step"] == 2
    assert len(messages) == 2
    assert str(newest) in messages[0] and "unreadable" in messages[0]
    assert str(middle) in messages[1] and "missing" in messages[1] and "optimizer" in messages[1]
    assert newest_training_state(tmp_path / "empty") == (None, None)


def test_step_checkpoint_rotation_and_partial_saves(tmp_path):
    for step in (10, 20, 30):
        save_atomic(training_state(step), tmp_path / step_checkpoint_name(step))
        time.sleep(0.01)
    save_atomic(training_state(30), tmp_path / LAST_NAME)
    partial = tmp_path / f"{step_checkpoint_name(40)}.x1y2{PARTIAL_SUFFIX}"  # what a save killed mid-write leaves
    partial.write_bytes(b"PK\x03\x04 half a file")
    assert rotate_step_checkpoints(tmp_path, keep=2) == [tmp_path / step_checkpoint_name(10)]
    assert remove_partial_saves(tmp_path) == [partial]
    assert sorted(p.name for p in tmp_path.iterdir()) == [LAST_NAME, step_checkpoint_name(20),
                                                          step_checkpoint_name(30)]
