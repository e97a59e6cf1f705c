"""Checkpoint I/O: official JOTR checkpoints (raw state_dict or {'network': ...} snapshot, keys `module.`-prefixed)
and our own files, through one explicit table that maps the official parameter names to ours (spec 2).
"""
import os
import tempfile
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from common.errors import InputError

# (official name or prefix, our name or prefix). A prefix ends with '.'; other entries match whole keys.
# Keys not listed (backbone.*, pose2feat.*, transformer.encoder/decoder layers, ...) have the same name in both.
OFFICIAL_TO_OURS = (
    ("spose_shape_cam_param", "smpl_query_pos"),
    ("exponent", "depth_exponent"),
    ("query.", "joint_query_pos."),
    ("pos_embed_1d.pos_table", "voxel_pos_table"),
    ("down_linear.", "input_proj."),
    ("conv2d_to_3d.", "lift_conv."),
    ("conv_3d_coord.0.", "coord_conv3d."),
    ("refine_3d.", "voxel_encoder."),
    ("vposer.vposer.", "vposer."),
    ("cascade_root_pose_out.", "root_pose_head.layers."),
    ("cascade_pose_out.", "pose_head.layers."),
    ("cascade_shaoe_out.", "shape_head.layers."),  # sic: the official key is misspelt
    ("cascade_cam_out.", "cam_head.layers."),
    ("transformer.decoder.joint_img_regress.", "transformer.decoder.joint_regressors."),
    ("transformer.decoder.fc_pos_3d.", "transformer.decoder.joint_pos_embed."),
)
# Official entries we do not load: the neutral SMPL arrays (smplpytorch buffers). Ours come from the user's SMPL
# file; load_checkpoint compares the two and warns when they differ.
IGNORED_OFFICIAL_PREFIXES = ("human_model_layer.th_",)
FORMAT = "jotr-reimpl-v1"


def _rename(key, table):
    for src, dst in table:
        if key == src or (src.endswith(".") and key.startswith(src)):
            return dst + key[len(src):]
    return key


def official_to_ours(key):
    return _rename(key, OFFICIAL_TO_OURS)


def ours_to_official(key):
    return _rename(key, tuple((dst, src) for src, dst in OFFICIAL_TO_OURS))


def _official_smpl_arrays(body_model):
    """The smplpytorch buffers of an official checkpoint, rebuilt from our SMPL layer's arrays."""
    a = body_model.arrays
    return OrderedDict([
        ("th_betas", np.zeros((1, 10), np.float32)),
        ("th_shapedirs", np.asarray(a["shapedirs"])[:, :, :10]),
        ("th_posedirs", np.asarray(a["posedirs"])),
        ("th_v_template", np.asarray(a["v_template"])[None]),
        ("th_J_regressor", np.asarray(a["J_regressor"])),
        ("th_weights", np.asarray(a["weights"])),
        ("th_faces", np.asarray(a["f"]).astype(np.int64)),
    ])


def to_official_state_dict(model, module_prefix=False):
    """Our model's weights under the official names, with the official SMPL buffers (from our body model) added:
    the layout of a released JOTR checkpoint (538 entries for the paper configuration). A model with an image gate
    (config image_gate, not in the paper) is exported exactly: the gate is folded into Pose2Feat's convolution,
    whose first input channels are the gated image features."""
    state = OrderedDict()
    ours = model.state_dict()
    gate = ours.pop("pose2feat.image_gate", None)
    for key, value in ours.items():
        if gate is not None and key == "pose2feat.conv.0.weight":
            value = value.clone()
            value[:, :model.backbone.stem_channels] *= gate
        state[ours_to_official(key)] = value
    for name, array in _official_smpl_arrays(model.body_model).items():
        dtype = torch.int64 if name == "th_faces" else torch.float32
        state["human_model_layer." + name] = torch.as_tensor(array, dtype=dtype)
    if module_prefix:
        state = OrderedDict(("module." + k, v) for k, v in state.items())
    return state


def read_state_dict(path):
    """The model state_dict stored in `path` (official best checkpoint, official snapshot or our own file),
    with `module.` stripped and official names mapped to ours. Official SMPL buffers are returned separately.

    Returns (state_dict, ignored, extra): ignored maps the ignored official keys to their tensors; extra holds the
    other entries of our own format (optimizer, epoch, ...), empty for official files.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint '{path}' not found. Official JOTR checkpoints ({{3dpw,3dpw-oc,3dpw-pc,3dpw-crowd}}"
            f"_best_ckpt.pth.tar) come from the links in the JOTR README and go in checkpoint/; our own runs write "
            f"output/<exp_name>/checkpoint/.")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict):
        raise InputError(f"{path}: expected a state_dict or a dict holding one, got {type(obj).__name__}")
    extra = {}
    if obj.get("format") == FORMAT:
        state = obj["model"]
        extra = {k: v for k, v in obj.items() if k != "model"}
    elif "network" in obj and isinstance(obj["network"], dict):  # official per-epoch snapshot
        state = obj["network"]
    else:  # official best checkpoint: the raw state_dict
        state = obj
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{path}: not a model checkpoint (the state_dict holds non-tensor entries)")
    converted, ignored = OrderedDict(), {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key.startswith(IGNORED_OFFICIAL_PREFIXES):
            ignored[key] = value
        else:
            converted[official_to_ours(key)] = value
    return converted, ignored, extra


def load_checkpoint(model, path):
    """Load weights into `model` from an official JOTR checkpoint or one of ours.

    Every checkpoint key is loaded or on the explicit ignore list (the official SMPL buffers); any other missing,
    unexpected or differently shaped key is an error that lists the keys. Returns the checkpoint's non-model
    entries for our own format (optimizer, epoch, ...), else {}.
    """
    state, ignored, extra = read_state_dict(path)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k} {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
                  for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or mismatched:
        lines = [f"{path} does not match this model's architecture (check resnet_type, enc_layers, dec_layers, "
                 f"pose_head in the config):"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {', '.join(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
        if mismatched:
            lines.append(f"  shape mismatches ({len(mismatched)}): {', '.join(mismatched)}")
        raise InputError("\n".join(lines))
    model.load_state_dict(state, strict=True)
    if ignored:
        _warn_if_smpl_differs(model, ignored, path)
    return extra


def _warn_if_smpl_differs(model, ignored, path):
    ours = _official_smpl_arrays(model.body_model)
    differing = []
    for name, array in ours.items():
        theirs = ignored.get("human_model_layer." + name)
        if theirs is None or name == "th_betas":
            continue
        if theirs.shape != array.shape or not np.allclose(theirs.double().numpy(), array, atol=1e-6):
            differing.append(name)
    if differing:
        warnings.warn(f"{path} was trained with SMPL arrays that differ from the configured SMPL file "
                      f"({', '.join(differing)}); the configured file is used.", stacklevel=3)


def save_atomic(obj, path):
    """torch.save to a temporary file in the same folder, then rename: a crash never leaves a truncated file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
