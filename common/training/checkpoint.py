"""Checkpoint I/O: official JOTR checkpoints (raw state_dict or {'network': ...} snapshot, keys `module.`-prefixed)
and our own files, through one explicit table that maps the official parameter names to ours (spec 2).
"""
import errno
import os
import tempfile
import time
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from common.errors import InputError, UserError

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
    load_model_state(model, state, path, ignored)
    return extra


def load_model_state(model, state, path, ignored=None):
    """Load `state` (our key names) into `model` strictly; an error lists every missing, unexpected or differently
    shaped key (`path` names the source in messages). `ignored`: official SMPL buffers to compare with ours."""
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
                      f"({', '.join(differing)}); the configured file is used.", stacklevel=4)


def save_atomic(obj, path):
    """torch.save to a temporary file in the same folder, fsync, then rename over `path`: a crash, a kill -9 or a full
    disk at any moment leaves either the previous file or the new one, never a truncated one.

    A failed write (full disk, quota, I/O error) raises OSError naming the file and the cause, after removing the
    temporary file. Test hook (fault drills only): JOTR_TEST_PAUSE_IN_SAVE=<seconds> sleeps after the data is
    written and before the rename, so a test can kill the process mid-save."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=PARTIAL_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        pause = float(os.environ.get("JOTR_TEST_PAUSE_IN_SAVE", "0") or 0)
        if pause > 0:
            time.sleep(pause)
        os.replace(tmp, path)
        _fsync_folder(path.parent)  # makes the rename itself durable
    except BaseException as error:
        if os.path.exists(tmp):
            os.remove(tmp)
        cause = _write_failure(error)
        if cause is not None:
            previous = "the previous file is intact" if path.exists() else "no previous file existed"
            raise CheckpointWriteError(getattr(cause, "errno", None) or errno.EIO,
                          f"could not write checkpoint {path}: {cause}; {previous}. Free disk space (or choose "
                          f"another output_dir) and resume.") from error
        raise


class CheckpointWriteError(UserError, OSError):
    """A checkpoint could not be written (a full disk, a quota, a read-only folder); the previous file is intact."""


def _write_failure(error):
    """The OSError behind a failed torch.save (it reports some write failures as RuntimeError), or None."""
    while error is not None:
        if isinstance(error, OSError):
            return error
        if isinstance(error, RuntimeError) and "write" in str(error).lower():
            return error
        error = error.__cause__ or error.__context__
    return None


def _fsync_folder(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- the checkpoints of one training run (output/<exp_name>/checkpoint/) ---------------------------------------------
# last.pth.tar: end of every epoch, end of the run, Ctrl-C/SIGTERM. step_<N>.pth.tar: every save_every_steps steps
# and/or save_every_minutes minutes, the newest keep_last_k kept. Both are resumable (model, optimiser, scaler, loss
# weights, step, RNG states); `resume=auto` takes the most recently written one that loads.
LAST_NAME = "last.pth.tar"
PARTIAL_SUFFIX = ".partial"


def step_checkpoint_name(step):
    return f"step_{step:08d}.pth.tar"


def _by_recency(paths):
    return sorted(paths, key=lambda p: p.stat().st_mtime_ns, reverse=True)


def step_checkpoints(folder):
    """The folder's step_<N>.pth.tar files, most recently written first."""
    return _by_recency(Path(folder).glob("step_*.pth.tar"))


def rotate_step_checkpoints(folder, keep):
    """Delete all but the `keep` most recently written step checkpoints; returns the deleted paths."""
    old = step_checkpoints(folder)[keep:]
    for path in old:
        path.unlink(missing_ok=True)
    return old


def remove_partial_saves(folder):
    """Delete temporary files that a save killed before its rename left behind; returns their paths."""
    partial = list(Path(folder).glob(f"*{PARTIAL_SUFFIX}")) if Path(folder).is_dir() else []
    for path in partial:
        path.unlink(missing_ok=True)
    return partial


def read_training_state(path):
    """The dict of one of our resumable checkpoints; ValueError naming the file and the reason if it is truncated,
    corrupt or not a resumable checkpoint of ours."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated zip, garbage bytes, a foreign pickle: all mean "cannot use this file"
        raise InputError(f"{path}: unreadable ({type(error).__name__}: {str(error).splitlines()[0][:200]})") from None
    missing = [k for k in RESUME_KEYS if not isinstance(state, dict) or k not in state]
    if missing or state.get("format") != FORMAT:
        raise InputError(f"{path}: not a resumable checkpoint of this code (missing {missing or ['format']})")
    return state


RESUME_KEYS = ("format", "model", "loss_weights", "optimizer", "scaler", "step", "config", "rng")


def newest_training_state(folder, log=print):
    """(path, state) of the most recently written checkpoint in `folder` (last.pth.tar or a step checkpoint) that
    loads, or (None, None) if there is none. Each unusable newer file is reported through `log` with the reason,
    and the next older one is tried."""
    folder = Path(folder)
    candidates = _by_recency([p for p in [folder / LAST_NAME, *folder.glob("step_*.pth.tar")] if p.is_file()])
    for path in candidates:
        try:
            return path, read_training_state(path)
        except ValueError as error:
            log(f"skipping checkpoint {error}; trying the previous one")
    return None, None
