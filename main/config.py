"""Every knob of a JOTR run in one dataclass, plus YAML presets and `key=value` overrides.

The defaults are the official run's values (docs/SPEC.md sections 1.1, 4.1, 4.2, 8). Precedence, lowest
first: the defaults below < a preset YAML (`--cfg main/configs/fine_tune.yaml`, a flat mapping field -> value that
states what differs from the defaults, optionally on top of another preset named by `base:`) < command-line
overrides (`lr=5e-5 trainset_2d=[MSCOCO]`).

Coupled values are derived when not given: `princpt` is the crop centre of `input_img_shape` (and must be), `sigma`
keeps the official 2.5 heatmap pixels per 64 heatmap pixels when `output_hm_shape` changes, and path values may
start with `{data_dir}` or `{output_dir}` (the body-model files default to `{data_dir}/body_models/...`).

Entry points build a `Config` (`load_config`, or `add_config_args` + `config_from_args`), write it next to the
run's outputs (`save_config`) and pass the values library code needs as arguments; no module imports a
global config.
"""
import argparse
import difflib
import functools
import math
import os
import re
import tempfile
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from common.errors import InputError
from common.model.backbone import BACKBONE_INITS, RESNET_BLOCKS
from common.model.jotr import POSE_HEADS
from data.pw3d import CROWD_POSE_SOURCES

PRESET_DIR = Path(__file__).resolve().parent / "configs"
BASE_KEY = "base"  # in a preset: the preset it starts from (a name in main/configs or a path relative to the preset)

# The official input heatmaps: a Gaussian of std 2.5 heatmap pixels on the 64-pixel grid (spec 1.1). A smaller grid
# over the same crop keeps the same width relative to the crop.
OFFICIAL_SIGMA, OFFICIAL_HM_WIDTH = 2.5, 64
# Path fields that may start with a placeholder for another field's value.
PATH_PLACEHOLDERS = ("data_dir", "output_dir")

RESNET_DEPTHS = tuple(sorted(RESNET_BLOCKS))
AMP_MODES = ("off", "bf16", "fp16")
_DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


class ConfigError(InputError):
    """A preset, an override or a field value that cannot be used; the message says which and why."""


@dataclass
class Config:
    # --- model (spec 1.1; architecture hyper-parameters hard-coded in the official Model.__init__) ---
    resnet_type: int = 50  # backbone depth; only 50 matches the released checkpoints
    input_img_shape: tuple[int, int] = (256, 256)  # (H, W) of the RGB crop, pixels
    output_hm_shape: tuple[int, int, int] = (64, 64, 64)  # (D, H, W) grid of the input heatmaps and joint_img
    # Std of the input-pose Gaussian heatmaps, heatmap pixels; unset = 2.5 * output_hm_shape W / 64 (2.5 at 64^3).
    sigma: float = None
    focal: tuple[float, float] = (5000.0, 5000.0)  # (fx, fy) of the virtual crop camera, crop pixels
    # (cx, cy) of the virtual crop camera, crop pixels: the crop centre (W/2, H/2); unset = derived, else checked.
    princpt: tuple[float, float] = None
    camera_3d_size: float = 2.5  # metres; camera depth scale k = sqrt(fx*fy*size^2 / (H*W)) = 48.828125
    bbox_3d_size: float = 2.0  # metres; root-relative depth range (+-1 m) mapped onto the D depth bins
    enc_layers: int = 2  # layers of both transformer encoders (official config.py says 3; yamls and checkpoints 2)
    dec_layers: int = 4  # decoder layers = cascade heads (official config.py says 3; yamls and checkpoints 4)
    hidden_dim: int = 256  # transformer width (d_model)
    nheads: int = 8  # attention heads
    dim_feedforward: int = 2048  # FFN width of the 2D encoder and the decoder
    voxel_dim_feedforward: int = 1024  # FFN width of the 3D (voxel) encoder, refine_3d
    dropout: float = 0.1  # every transformer layer
    # 'vposer': 32-d VPoser v1 latent decoded by the frozen VPoser (official; needed for official checkpoints);
    # 'rot6d': direct 6D rotations of the body joints, for users without the VPoser weights (the ankles, toes,
    # wrists and hands, which the pose loss does not supervise, stay at the rest pose).
    pose_head: str = "vposer"
    # Backbone initialisation when training from scratch: 'official' (convs N(0, 0.001), spec 2.4) or 'kaiming'
    # (torchvision's He init, which trains faster from scratch: the embedded default uses it).
    backbone_init: str = "official"
    # Not in the paper: the image features enter Pose2Feat through a learnable scalar gate that starts at 0, so a
    # network trained from scratch first learns from the 2D pose heatmaps (the embedded default uses it).
    image_gate: bool = False
    image_gate_init: float = 0.0  # the gate's starting value (common.model.backbone.Pose2Feat)
    input_joint_mask_prob: float = 0.1  # training only: chance that each input joint is masked out (spec 1.3-1)
    render: bool = False  # test-time bbox-dependent camera depth (spec 1.3-15); off in the official evaluation

    # --- files (relative paths are relative to the working directory, normally the repository root) ---
    # Paths may start with {data_dir} or {output_dir}, replaced by those fields' values (docs/DATA.md).
    data_dir: str = "data"  # datasets live in data/<Dataset>/
    smpl_dir: str = "{data_dir}/body_models/smpl"  # SMPL_NEUTRAL.pkl or basicModel_neutral_lbs_10_207_0_v1.0.0.pkl
    j_regressor_extra_path: str = "{data_dir}/body_models/J_regressor_extra.npy"  # SPIN, 9 x 6890; row 3 = head top
    j_regressor_h36m_path: str = "{data_dir}/body_models/J_regressor_h36m_correct.npy"  # 17 x 6890, evaluation joints
    vposer_path: str = "{data_dir}/body_models/vposer_v1_0"  # VPoser v1.0 directory with snapshots/TR00_E096.pt
    output_dir: str = "output"  # a run writes output/<exp_name>/{checkpoint,log,...}
    exp_name: str = "jotr"
    init_ckpt: str = ""  # weights to start from (stage 1's final or an official checkpoint); model only
    # A checkpoint of our own to resume exactly (model, optimiser, scaler, step); wins over init_ckpt. 'auto': the most
    # recently written checkpoint of this run's folder that loads (last.pth.tar or step_<N>.pth.tar), else a fresh
    # start (with init_ckpt, if set).
    resume: str = ""

    # --- data ---
    trainset_3d: list[str] = field(default_factory=lambda: ["Human36M", "MuCo"])  # yamls (config.py: Human36M)
    trainset_2d: list[str] = field(default_factory=lambda: ["CrowdPose", "MSCOCO"])  # yamls (config.py: MSCOCO)
    testsets: list[str] = field(default_factory=lambda: ["3dpw", "3dpw-crowd", "3dpw-pc", "3dpw-oc"])
    # Exact-reproduction switches for two inherited defects (off = fixed): the official CrowdPose flip pairs were
    # wrong (spec 7.9) and its NeuralAnnot filter kept the worse fits, fit_err >= 5 (spec 7.10).
    official_crowdpose_flip: bool = False
    official_crowdpose_fit_filter: bool = False
    # 3dpw-crowd input poses: 'openpose' is what the published 3DPW-Crowd numbers were computed with (the official
    # loader meant HigherHRNet but ended up using OpenPose, spec 7.6), so eval.sh reproduces the paper's table;
    # 'higherhrnet' is the intended input (HigherHRNet where the results file has the person, OpenPose otherwise).
    crowd_pose_source: str = "openpose"
    # Chance of pasting random textured occluders over a training crop (targets unchanged); 0 = off as in the
    # paper, main/configs/occlusion_aug.yaml turns it on for the ablation.
    synthetic_occlusion_prob: float = 0.0
    # With pasted occluders, the input pose also fails on the joints they hide, as detectors do (reported on the
    # occluder, missed, left/right swapped: data.occlusion_failures); not in the paper.
    synthetic_occlusion_failures: bool = False
    update_bbox: bool = True  # re-randomise each training box (1.0-1.2 scale) at every __getitem__ (yamls)
    num_thread: int = 4  # DataLoader workers (official yamls 24, on a multi-GPU server)
    train_batch_size: int = 32  # stage 1: official 32 per GPU; here the batch of one optimiser step
    test_batch_size: int = 32

    # --- optimisation (spec 4.1, 4.2: AdamW, betas 0.9/0.999, eps 1e-8, step schedule, no warm-up) ---
    lr: float = 1e-4  # stage 1 effective value (train.sh CLI)
    # The official set_lr overwrote every group with `lr` at each epoch start, so its lr_backbone never took
    # effect (spec 4.2); both stages use lr_backbone == lr anyway.
    lr_backbone: float = 1e-4
    # Optional: a learning rate of its own for the transformers (voxel encoder, encoder, decoder, query embeddings);
    # 0 = they train at `lr` in its group, as in the official recipe. Training from scratch, the CNN and the heads
    # need a higher rate than the transformers, which collapse to one output for every input at it.
    lr_transformer: float = 0.0
    # Optional: a learning rate of its own for the image gate (image_gate: true); 0 = `lr`, in the network's group.
    # Adam moves a parameter by about its learning rate per step, so at lr 1e-4 the gate cannot open beyond ~0.1 in
    # a run of a thousand steps.
    lr_image_gate: float = 0.0
    # Optional pretext stage for training from scratch (not in the paper): the first image_only_steps steps give the
    # network no input pose, so that the backbone learns to find the body in the image before the pose arrives.
    image_only_steps: int = 0
    # Optional (not in the paper): after that stage, each training sample's input pose is withheld with this
    # probability, so that the image stays a source of the pose throughout training.
    image_only_prob: float = 0.0
    warmup_steps: int = 0  # linear learning-rate warm-up over the first steps (0 = none, the official recipe)
    # Optional fixed multipliers of the supervised loss terms before the learned uncertainty weighting, e.g.
    # {body_joint_cam: 1.0, smpl_shape: 0.05}; a term not named keeps 1 (the official recipe: all 1). The names are
    # common.losses.SUPERVISED_KEYS.
    loss_multipliers: dict[str, float] = field(default_factory=dict)
    weight_decay: float = 1e-4  # stage 1 effective value: the CLI's 1e-4 beat the yaml's 0.01 (spec 4.1)
    lr_dec_epoch: list[int] = field(default_factory=lambda: [17])  # epochs at which lr is divided by lr_dec_factor
    lr_dec_factor: float = 1.0  # 1 => the official stage 1 lr is constant (spec 4.1)
    end_epoch: int = 18  # train epochs 0 .. end_epoch-1
    total_steps: int = 0  # stop after this many optimiser steps; 0 = no cap (stage 2 uses 10 000)
    max_norm: float = 0.0  # gradient clipping max norm; 0 = off (official default)
    # Mixed precision: 'off' | 'bf16' | 'fp16'. The official runs used fp16 autocast on GPUs; 'off' keeps CPU
    # runs exact. fp16 uses a GradScaler with dynamic scaling (the official reset the scale every step, spec 7.7).
    amp: str = "off"
    # Speed switches (common/speed/; `python -m tools.bench` measures each): NHWC memory layout for the CNN
    # parts in training and inference, and torch.compile for evaluation and the demo (compiles for minutes first).
    channels_last: bool = True
    # BN folded into the convolutions and fused residual convolutions for evaluation and the demo (common.speed.fusion);
    # false evaluates the plain model.
    fast_inference: bool = True
    # CPU training: dropout with a cheaper random mask, attention as explicit products (common.speed.dropout);
    # false: nn.Dropout and PyTorch's fused attention.
    fast_cpu_dropout: bool = True
    compile: bool = False
    # CPU processes keep freed memory for reuse instead of returning it to the kernel (common/speed/process.py
    # keep_freed_memory; Linux/glibc): large activations are then not page-faulted in again at every step. The
    # process keeps its peak memory; turn it off to give memory back between steps.
    reuse_cpu_memory: bool = True
    init_scale: float = 1024.0  # fp16 GradScaler initial loss scale
    seed: int = 42

    # --- contrastive fine-tuning (spec 3.3; stage 2 only) ---
    with_contrastive: bool = False  # add the two InfoNCE terms on the 3D feature volume
    intra_weight: float = 0.1  # joint-to-joint InfoNCE weight
    inter_weight: float = 0.1  # joint-to-non-joint InfoNCE weight
    nce_temperature: float = 0.07  # tau, divides the cosine similarities
    intra_anchors: int = 100
    intra_positives: int = 128  # per anchor
    intra_negatives: int = 256  # per anchor
    inter_anchors: int = 100
    inter_positives: int = 1024  # per anchor
    inter_negatives: int = 2048  # shared by all anchors

    # --- long runs (README "Long runs and failures") ---
    # Resumable checkpoints besides last.pth.tar (written at each epoch end): step_<N>.pth.tar every save_every_steps
    # optimiser steps and every save_every_minutes minutes since the last save, whichever comes first (0 = off), so
    # a kill -9 loses at most that much; the keep_last_k most recent step checkpoints are kept.
    save_every_steps: int = 500
    save_every_minutes: float = 15.0
    keep_last_k: int = 2
    # Training skips a sample whose image is missing or unreadable (logged with the file) and stops with an error
    # when more than this fraction of an epoch's samples were skipped. Evaluation never skips.
    max_bad_samples_fraction: float = 0.01

    # --- evaluation / logging ---
    eval_every_steps: int = 0  # evaluate the test sets every N optimiser steps; 0 = after each epoch only
    print_every: int = 50  # log the loss terms every N steps
    device: str = "auto"  # 'auto' (cuda if available, else cpu) | 'cpu' | 'cuda' | 'cuda:N' | 'mps'

    def __post_init__(self):
        types = _field_types()
        for f in fields(self):
            if f.name not in ("princpt", "sigma"):
                setattr(self, f.name, _coerce(f.name, getattr(self, f.name), types[f.name]))
        height, width = self.input_img_shape
        if self.princpt is None:
            self.princpt = (width / 2, height / 2)
        if self.sigma is None:
            self.sigma = OFFICIAL_SIGMA * self.output_hm_shape[2] / OFFICIAL_HM_WIDTH
        for name in ("princpt", "sigma"):
            setattr(self, name, _coerce(name, getattr(self, name), types[name]))
        for name in ("smpl_dir", "j_regressor_extra_path", "j_regressor_h36m_path", "vposer_path", "init_ckpt",
                     "resume"):
            setattr(self, name, self._expand(getattr(self, name)))
        self._validate()

    def _expand(self, path: str) -> str:
        """'{data_dir}/body_models/smpl' -> '<data_dir>/body_models/smpl' (placeholders only at the start)."""
        for name in PATH_PLACEHOLDERS:
            placeholder = "{" + name + "}"
            if path == placeholder:
                return getattr(self, name)
            if path.startswith(placeholder + "/"):
                return str(Path(getattr(self, name)) / path[len(placeholder) + 1:])
        return path

    def _validate(self):
        problems = []

        def need(ok, message):
            if not ok:
                problems.append(message)

        need(self.resnet_type in RESNET_DEPTHS, f"resnet_type must be one of {RESNET_DEPTHS}, got {self.resnet_type}")
        need(all(n > 0 for n in self.input_img_shape), f"input_img_shape must be positive, got {self.input_img_shape}")
        need(all(n > 0 for n in self.output_hm_shape), f"output_hm_shape must be positive, got {self.output_hm_shape}")
        for name in ("sigma", "camera_3d_size", "bbox_3d_size", "nce_temperature", "lr", "init_scale",
                     "lr_dec_factor"):
            need(getattr(self, name) > 0, f"{name} must be > 0, got {getattr(self, name)}")
        need(all(v > 0 for v in self.focal), f"focal must be positive, got {self.focal}")
        centre = (self.input_img_shape[1] / 2, self.input_img_shape[0] / 2)
        need(self.princpt == centre,
             f"princpt must be the crop centre (W/2, H/2) = {centre} of input_img_shape {self.input_img_shape}, got "
             f"{self.princpt} (leave princpt out to derive it)")
        for name in ("enc_layers", "dec_layers", "hidden_dim", "nheads", "dim_feedforward", "voxel_dim_feedforward",
                     "train_batch_size", "test_batch_size", "end_epoch", "print_every", "intra_anchors",
                     "intra_positives", "intra_negatives", "inter_anchors", "inter_positives", "inter_negatives"):
            need(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr_backbone", "lr_transformer", "lr_image_gate", "image_only_steps", "warmup_steps",
                     "weight_decay", "max_norm", "total_steps", "num_thread", "eval_every_steps", "intra_weight",
                     "inter_weight", "save_every_steps", "save_every_minutes"):
            need(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        need(all(w >= 0 for w in self.loss_multipliers.values()),
             f"loss_multipliers must be >= 0, got {self.loss_multipliers}")
        need(self.nheads >= 1 and self.hidden_dim % self.nheads == 0,
             f"hidden_dim ({self.hidden_dim}) must be divisible by nheads ({self.nheads})")
        need(self.keep_last_k >= 1, f"keep_last_k must be >= 1, got {self.keep_last_k}")
        need(0 <= self.max_bad_samples_fraction <= 1,
             f"max_bad_samples_fraction must be in [0, 1], got {self.max_bad_samples_fraction}")
        need(0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}")
        need(0 <= self.image_only_prob <= 1, f"image_only_prob must be in [0, 1], got {self.image_only_prob}")
        need(not self.synthetic_occlusion_failures or self.synthetic_occlusion_prob > 0,
             "synthetic_occlusion_failures makes the input pose fail on the joints that pasted occluders hide, so it "
             "needs synthetic_occlusion_prob > 0 (e.g. 0.5)")
        need(0 <= self.input_joint_mask_prob <= 1,
             f"input_joint_mask_prob must be in [0, 1], got {self.input_joint_mask_prob}")
        need(self.pose_head in POSE_HEADS, f"pose_head must be one of {POSE_HEADS}, got {self.pose_head!r}")
        need(self.crowd_pose_source in CROWD_POSE_SOURCES,
             f"crowd_pose_source must be one of {CROWD_POSE_SOURCES}, got {self.crowd_pose_source!r}")
        need(self.amp in AMP_MODES, f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        need(self.backbone_init in BACKBONE_INITS,
             f"backbone_init must be one of {BACKBONE_INITS}, got {self.backbone_init!r}")
        need(_DEVICE_PATTERN.fullmatch(self.device) is not None,
             f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {self.device!r}")
        need(self.lr_dec_epoch == sorted(self.lr_dec_epoch) and all(e >= 0 for e in self.lr_dec_epoch),
             f"lr_dec_epoch must be non-negative epochs in increasing order, got {self.lr_dec_epoch}")
        need(bool(self.trainset_3d or self.trainset_2d), "trainset_3d and trainset_2d cannot both be empty")
        need(bool(self.exp_name) and "/" not in self.exp_name and "\\" not in self.exp_name,
             f"exp_name must be a non-empty directory name, got {self.exp_name!r}")
        if problems:
            raise ConfigError("invalid config: " + "; ".join(problems))


@functools.cache
def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(Config)


def _type_name(typ: Any) -> str:
    return getattr(typ, "__name__", str(typ))


def _coerce(name: str, value: Any, typ: Any) -> Any:
    """Return `value` converted to the field type `typ` (tuple[...], list[...], dict[str, ...] or a scalar) or raise
    ConfigError."""
    origin = typing.get_origin(typ)
    if origin is tuple:
        item_types = typing.get_args(typ)
        if not isinstance(value, (list, tuple)) or len(value) != len(item_types):
            example = "[" + ", ".join(_type_name(t) for t in item_types) + "]"
            raise ConfigError(f"{name}: expected {len(item_types)} values {example}, got {value!r}")
        return tuple(_coerce_scalar(f"{name}[{i}]", v, t) for i, (v, t) in enumerate(zip(value, item_types)))
    if origin is list:
        (item_type,) = typing.get_args(typ)
        if not isinstance(value, (list, tuple)):
            value = [value]  # `testsets=3dpw` means the one-element list
        return [_coerce_scalar(f"{name}[{i}]", v, item_type) for i, v in enumerate(value)]
    if origin is dict:
        _, value_type = typing.get_args(typ)
        if value is None:  # `loss_multipliers:` with nothing after it
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a mapping {{name: {_type_name(value_type)}}}, "
                              f"e.g. {{smpl_shape: 0.1}}, got {value!r}")
        return {str(k): _coerce_scalar(f"{name}[{k}]", v, value_type) for k, v in value.items()}
    return _coerce_scalar(name, value, typ)


def _coerce_scalar(name: str, value: Any, typ: type) -> Any:
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if typ is bool and isinstance(value, bool):
        return value
    if typ is str:
        if isinstance(value, str):
            return value
        if value is None:  # `init_ckpt:` with nothing after it
            return ""
    if typ is int:
        if is_number and float(value).is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                number = float(value)  # '1e4': YAML 1.1 reads exponents without a dot as strings
            except ValueError:
                pass
            else:
                if number.is_integer():
                    return int(number)
    if typ is float:
        number = float(value) if is_number else None
        if isinstance(value, str):
            try:
                number = float(value)  # '1e-4': YAML 1.1 reads exponents without a dot as strings
            except ValueError:
                pass
        if number is not None and math.isfinite(number):
            return number
    hint = ""
    if typ is str:
        hint = " (quote it in YAML; note YAML reads on/off/yes/no as booleans, e.g. write amp: 'off')"
    raise ConfigError(f"{name}: expected {_type_name(typ)}, got {value!r} ({type(value).__name__}){hint}")


def _unknown_key_error(key: str, source: str) -> ConfigError:
    names = [f.name for f in fields(Config)]
    closest = difflib.get_close_matches(key, names, n=1, cutoff=0.0)
    suggestion = f"; did you mean '{closest[0]}'?" if closest else ""
    return ConfigError(f"{source}: unknown config key '{key}'{suggestion} (the keys are the fields of "
                       f"main/config.py::Config)")


def _build(values: dict[str, Any], source: str) -> Config:
    """Config(**values); an error names `source`. Built from the merged values (not by replacing fields of an
    earlier config) so that derived values (princpt, sigma, path placeholders) follow the final values."""
    try:
        return Config(**values)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None


def _check_keys(values: dict[str, Any], source: str) -> None:
    names = {f.name for f in fields(Config)}
    for key in values:
        if key not in names:
            raise _unknown_key_error(str(key), source)


def resolve_preset(preset: str | os.PathLike) -> Path:
    """A preset is a YAML file path, or a bare name of a file in main/configs (`fine_tune`)."""
    path = Path(preset)
    if path.is_file():
        return path
    named = PRESET_DIR / f"{preset}.yaml"
    if path.suffix == "" and len(path.parts) == 1 and named.is_file():
        return named
    available = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
    raise ConfigError(f"config preset not found: '{preset}'; give a YAML file path or one of {available} "
                      f"(in {PRESET_DIR})")


def _read_preset(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The preset's values on top of its base preset's (recursively)."""
    if path.resolve() in chain:
        raise ConfigError(f"preset {path}: base presets form a cycle: {' -> '.join(str(p) for p in chain)}")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"preset {path}: not valid YAML: {error}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"preset {path}: expected a mapping of config keys to values, got {type(values).__name__}")
    base = values.pop(BASE_KEY, None)
    _check_keys(values, f"preset {path}")
    if base is None:
        return values
    relative = path.parent / str(base)
    base_path = relative if relative.is_file() else resolve_preset(str(base))
    return {**_read_preset(base_path, (*chain, path.resolve())), **values}


def _parse_override(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"command line: expected key=value, got '{text}'")
    types = _field_types()
    if key not in types:
        raise _unknown_key_error(key, "command line")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        if types[key] is not str:
            raise ConfigError(f"command line: cannot parse {key}={raw}: {error}") from None
        value = raw
    if types[key] is str and not isinstance(value, str):
        value = raw  # string fields take the text as typed: amp=off, exp_name=2024, init_ckpt=
    return key, value


def load_config(preset: str | os.PathLike | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Defaults, then the preset YAML (if any), then `key=value` overrides (values parsed as YAML, checked and
    coerced against the field's type). Raises ConfigError naming the source of an unknown key or bad value."""
    values: dict[str, Any] = {}
    cfg = Config()
    if preset:
        path = resolve_preset(preset)
        values = _read_preset(path)
        cfg = _build(values, f"preset {path}")
    if overrides:
        values = {**values, **dict(_parse_override(text) for text in overrides)}
        cfg = _build(values, "command line")
    return cfg


def save_config(cfg: Config, path: str | os.PathLike) -> Path:
    """Write the resolved config as YAML (loadable again as a preset); atomic, so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    values = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}
    text = ("# Resolved JOTR config (defaults < preset < overrides). Re-run with: --cfg <this file>\n"
            + yaml.safe_dump(values, sort_keys=False, default_flow_style=None))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def add_config_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add `--cfg PRESET` and trailing `KEY=VALUE` overrides to an entry point's parser.

    If the entry point has other options and users may put them after overrides, parse with
    `parser.parse_intermixed_args()`."""
    parser.add_argument("--cfg", metavar="PRESET", default=None,
                        help="YAML preset: a file path or a name in main/configs (main_train, fine_tune)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="override any field of main/config.py::Config, e.g. lr=5e-5 trainset_2d=[MSCOCO]")
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(args.cfg, args.overrides)
