"""Test helper: a complete tiny data folder in the real formats (mannequin body models, MuCo training set, 3DPW
test sets) and the config overrides that point a run at it, for end-to-end tests of training and evaluation."""
from pathlib import Path

import numpy as np
import torch

from common.body.body_model import joint_regressor_30, load_regressor, load_smpl
from embedded.mannequin import write_mannequin
from tests.muco_format import write_tiny_muco
from tests.pw3d_format import write_tiny_pw3d


def write_tiny_world(root):
    """Write root/data/{body_models, MuCo, 3DPW}; return root/data."""
    root = Path(root)
    data_dir = root / "data"
    body_dir = data_dir / "body_models"
    write_mannequin(body_dir)
    extra = load_regressor(body_dir / "J_regressor_extra.npy", (9, 6890), "extra", "mannequin")
    h36m = load_regressor(body_dir / "J_regressor_h36m_correct.npy", (17, 6890), "h36m", "mannequin")
    models = {g: load_smpl(body_dir / "smpl", g) for g in ("neutral", "male", "female")}
    j30 = joint_regressor_30(models["neutral"].arrays["J_regressor"], extra)
    write_tiny_muco(root, models["neutral"], j30, h36m, n_images=8, people_per_image=2)

    def joints_fn(pose, shape, trans, gender):
        with torch.no_grad():
            verts = models[gender](*(torch.tensor(v, dtype=torch.float32)[None] for v in (pose, shape, trans)))
        return j30 @ verts[0].double().numpy()

    write_tiny_pw3d(root, joints_fn)
    return data_dir


def tiny_overrides(data_dir, output_dir, **extra):
    """key=value overrides for a CPU-sized run on the tiny world."""
    data_dir = Path(data_dir)
    values = {
        "data_dir": data_dir, "smpl_dir": data_dir / "body_models" / "smpl",
        "j_regressor_extra_path": data_dir / "body_models" / "J_regressor_extra.npy",
        "j_regressor_h36m_path": data_dir / "body_models" / "J_regressor_h36m_correct.npy",
        "output_dir": output_dir, "trainset_3d": "[MuCo]", "trainset_2d": "[]", "testsets": "[3dpw,3dpw-oc]",
        "resnet_type": 18, "pose_head": "rot6d", "train_batch_size": 2, "test_batch_size": 2, "num_thread": 0,
        "end_epoch": 1, "print_every": 1, "device": "cpu",
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def assert_same_state(a, b, atol=0.0):
    assert a.keys() == b.keys()
    for k in a:
        if a[k].is_floating_point():
            np.testing.assert_allclose(a[k].numpy(), b[k].numpy(), atol=atol, rtol=0, err_msg=k)
        else:
            assert torch.equal(a[k], b[k]), k
