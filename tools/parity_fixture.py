"""The parity fixture's generation rule: deterministic body model, official-layout weights and inputs (numpy only).

This is the fixture's own recipe, taken verbatim from the fixture's `make_fixture.py` (the form the official
outputs in `expected.npz` were produced from), so that `tools/check_parity.py` can regenerate everything for any
fixture of that form from its `fixture.json` (salt, batch, input_seed).
"""
import math
import zlib

import numpy as np

from common.body.joint_sets import SMPL_PARENTS

NUM_VERTS, NUM_FACES, NUM_JOINTS = 6890, 13776, 24


def _sparse_regressor(rng, rows, per_row=8):
    reg = np.zeros((rows, NUM_VERTS), dtype=np.float64)
    for r in range(rows):
        idx = rng.choice(NUM_VERTS, per_row, replace=False)
        w = rng.random(per_row) + 0.1
        reg[r, idx] = w / w.sum()
    return reg.astype(np.float32)


def body_model():
    rng = np.random.default_rng(20231001)
    v_template = (rng.standard_normal((NUM_VERTS, 3)) * np.array([0.15, 0.5, 0.1])).astype(np.float32)
    shapedirs = (0.02 * rng.standard_normal((NUM_VERTS, 3, 10))).astype(np.float32)
    posedirs = (0.01 * rng.standard_normal((NUM_VERTS, 3, 207))).astype(np.float32)
    j_regressor = _sparse_regressor(rng, NUM_JOINTS)
    weights = np.zeros((NUM_VERTS, NUM_JOINTS), dtype=np.float64)
    for v in range(NUM_VERTS):
        idx = rng.choice(NUM_JOINTS, 3, replace=False)
        w = rng.random(3) + 0.1
        weights[v, idx] = w / w.sum()
    kintree = np.array([[2**32 - 1 if p < 0 else p for p in SMPL_PARENTS], list(range(NUM_JOINTS))], dtype=np.int64)
    faces = rng.integers(0, NUM_VERTS, size=(NUM_FACES, 3)).astype(np.int64)
    return {
        "v_template": v_template,
        "shapedirs": shapedirs,
        "posedirs": posedirs,
        "J_regressor": j_regressor,
        "weights": weights.astype(np.float32),
        "kintree_table": kintree,
        "f": faces,
        "J_regressor_extra": _sparse_regressor(rng, 9),
        "J_regressor_h36m": _sparse_regressor(rng, 17),
    }


def sinusoid_table(n_position=512, d_hid=256):
    pos = np.arange(n_position, dtype=np.float64)[:, None]
    j = np.arange(d_hid)
    angle = pos / np.power(10000, 2 * (j // 2) / d_hid)
    table = np.where(j % 2 == 0, np.sin(angle), np.cos(angle))
    return table.astype(np.float32)


def official_state_dict(manifest, body=None, salt=""):
    """Official key -> array. The rule per key (seeded by crc32 of salt + key; salt "" for the fixture):
    num_batches_tracked -> 0 (int64); human_model_layer.* -> the body model above;
    pos_embed_1d.pos_table -> the fixed sinusoid table; exponent -> 2.5;
    running_var -> 0.5 + U[0,1); running_mean -> 0.1 N(0,1);
    1-D '*.weight' (BatchNorm/LayerNorm scales) -> 1 + 0.1 N(0,1); other 1-D -> 0.05 N(0,1);
    >= 2-D -> N(0,1) / sqrt(fan_in), fan_in = product of all dims but the first."""
    body = body or body_model()
    smpl = {
        "human_model_layer.th_betas": np.zeros((1, 10), np.float32),
        "human_model_layer.th_shapedirs": body["shapedirs"],
        "human_model_layer.th_posedirs": body["posedirs"],
        "human_model_layer.th_v_template": body["v_template"][None],
        "human_model_layer.th_J_regressor": body["J_regressor"],
        "human_model_layer.th_weights": body["weights"],
        "human_model_layer.th_faces": body["f"],
    }
    out = {}
    for key, shape in manifest.items():
        shape = tuple(shape)
        rng = np.random.default_rng(zlib.crc32((salt + key).encode()))
        if key.endswith("num_batches_tracked"):
            arr = np.zeros(shape, np.int64)
        elif key in smpl:
            arr = smpl[key]
        elif key == "pos_embed_1d.pos_table":
            arr = sinusoid_table(*shape)
        elif key == "exponent":
            arr = np.full(shape, 2.5, np.float32)
        elif key.endswith("running_var"):
            arr = 0.5 + rng.random(shape)
        elif key.endswith("running_mean"):
            arr = 0.1 * rng.standard_normal(shape)
        elif len(shape) == 1 and key.endswith(".weight"):
            arr = 1.0 + 0.1 * rng.standard_normal(shape)
        elif len(shape) <= 1:
            arr = 0.05 * rng.standard_normal(shape)
        else:
            arr = rng.standard_normal(shape) / math.sqrt(int(np.prod(shape[1:])))
        if arr.dtype != np.int64:
            arr = arr.astype(np.float32)
        assert arr.shape == shape, (key, arr.shape, shape)
        out[key] = arr
    return out


def inputs(batch=2, seed=7):
    rng = np.random.default_rng(seed)
    img = rng.random((batch, 3, 256, 256)).astype(np.float32)
    xy = 4 + 56 * rng.random((batch, 30, 2))
    conf = rng.random((batch, 30, 1))
    joints = np.concatenate([xy, conf], axis=2).astype(np.float32)  # 64x64 heatmap frame + confidence
    mask = (rng.random((batch, 30, 1)) > 0.15).astype(np.float32)
    return {"img": img, "joints": joints, "joints_mask": mask}

