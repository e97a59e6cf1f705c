"""Training and evaluation, one plain function per phase (DETR style). Entry points: main/train.py, main/test.py.

`train_one_epoch` runs optimiser steps; `evaluate` runs the 3DPW protocol (spec 6) on one test set and is used
both during training and by the standalone evaluation, so the two can never disagree.
"""
import math
import signal
import time

import torch
from torch import nn
from tqdm import tqdm

from common.body.body_model import gendered_meshes
from common.body.joint_sets import SMPL30_QUERY15_IDX as QUERY15_IDX
from common.evaluation.metrics import MetricAccumulator, mesh_metrics
from common.losses import SUPERVISED_KEYS, AutomaticWeightedLoss, supervised_losses
from common.speed import inference_model
from common.training.distributed import all_reduce_max

AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}
FUSED_ADAMW_DEVICES = ("cpu", "cuda")  # where build_optimizer uses PyTorch's fused AdamW


class NonFiniteLossError(RuntimeError):
    """A loss term was NaN or infinite; the step was not applied."""


class TrainingObjective(nn.Module):
    """The model and its losses as one module, so that DistributedDataParallel synchronises the gradients of the
    learned loss weights together with the network's.

    forward(inputs, targets, meta) -> (total loss, {term name: unweighted scalar}).

    loss_multipliers: optional {term: fixed multiplier} applied to the supervised terms before the learned weighting
    (config `loss_multipliers`; terms not named keep 1, the official recipe).
    """

    def __init__(self, model, contrastive=None, intra_weight=0.1, inter_weight=0.1, hm_shape=(64, 64, 64), seed=0,
                 loss_multipliers=None):
        super().__init__()
        self.model = model
        self.awl = AutomaticWeightedLoss(SUPERVISED_KEYS)
        multipliers = dict(loss_multipliers or {})
        unknown = sorted(set(multipliers) - set(SUPERVISED_KEYS))
        if unknown:
            raise ValueError(f"loss_multipliers: unknown loss terms {unknown}; the terms are {list(SUPERVISED_KEYS)}")
        self.loss_multipliers = {name: float(multipliers.get(name, 1.0)) for name in SUPERVISED_KEYS}
        self.contrastive = contrastive
        self.intra_weight, self.inter_weight = intra_weight, inter_weight
        self.hm_shape = tuple(hm_shape)
        # The contrastive terms draw their samples from this generator; every process seeds it identically so all
        # draw the same indices (JointContrastiveLoss), and checkpoints save its state for an exact resume.
        self.nce_generator = torch.Generator().manual_seed(seed)

    def forward(self, inputs, targets, meta):
        out = self.model(inputs["img"], inputs["joints"], inputs["joints_mask"])
        terms = supervised_losses(out, targets, meta, self.hm_shape)
        total, _ = self.awl({name: self.loss_multipliers[name] * term for name, term in terms.items()})
        if self.contrastive is not None:
            # The InfoNCE terms are not weighted by the learned uncertainty (spec 3.2).
            nce = self.contrastive(out["voxel_feat"], out["joint_img"], targets["orig_joint_img"][:, QUERY15_IDX],
                                   meta["orig_joint_trunc"][:, QUERY15_IDX], meta["is_3D"], out["depth_exponent"],
                                   self.nce_generator)
            total = total + self.intra_weight * nce["intra_nce"] + self.inter_weight * nce["inter_nce"]
            terms.update(nce)
        return total, terms


TRANSFORMER_MODULES = ("transformer", "voxel_encoder", "smpl_query_pos", "joint_query_pos")


def build_optimizer(objective, lr, lr_backbone, weight_decay, lr_transformer=0.0, lr_image_gate=0.0):
    """AdamW with the official three groups (spec 4.2): the backbone at lr_backbone, the rest of the network at lr,
    and the learned loss weights at lr without weight decay. With lr_transformer > 0 the transformers
    (TRANSFORMER_MODULES) get a group at that rate; with lr_image_gate > 0 the image gate (a model with
    image_gate) gets one at that rate, without weight decay. Frozen parameters (VPoser) are left out.

    Each group remembers its base learning rate in 'initial_lr' for `set_epoch_lr`. (The official set_lr
    overwrote every group with `lr`, so its lr_backbone never took effect; here each group keeps its own.)"""
    model = objective.model
    backbone = [p for p in model.backbone.parameters() if p.requires_grad]
    transformer = []
    if lr_transformer > 0:
        transformer = [p for name, p in model.named_parameters()
                       if p.requires_grad and name.split(".")[0] in TRANSFORMER_MODULES]
    gate = model.pose2feat.image_gate
    gate = [gate] if lr_image_gate > 0 and gate is not None else []
    taken = {id(p) for p in backbone + transformer + gate}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in taken]
    groups = [
        {"params": backbone, "lr": lr_backbone, "weight_decay": weight_decay, "name": "backbone"},
        {"params": rest, "lr": lr, "weight_decay": weight_decay, "name": "network"},
        {"params": list(objective.awl.parameters()), "lr": lr, "weight_decay": 0.0, "name": "loss_weights"},
    ]
    if transformer:
        groups.append({"params": transformer, "lr": lr_transformer, "weight_decay": weight_decay,
                       "name": "transformer"})
    if gate:
        groups.append({"params": gate, "lr": lr_image_gate, "weight_decay": 0.0, "name": "image_gate"})
    for g in groups:
        g["initial_lr"] = g["lr"]
    # PyTorch's fused AdamW updates each tensor in one pass where the default makes about ten passes over all of
    # them: 8 ms less in the embedded preset's 0.15 s CPU step. The same update up to rounding.
    fused = all(p.device.type in FUSED_ADAMW_DEVICES for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, betas=(0.9, 0.999), eps=1e-8, fused=True if fused else None)


def set_epoch_lr(optimizer, epoch, milestones, factor):
    """Step schedule: base lr / factor^(number of milestones <= epoch), for every group (kept in 'epoch_lr', which
    the warm-up of train_one_epoch scales)."""
    decay = factor ** sum(epoch >= m for m in milestones)
    for g in optimizer.param_groups:
        g["lr"] = g["epoch_lr"] = g["initial_lr"] / decay


def apply_warmup(optimizer, step, warmup_steps):
    """Linear warm-up: the lr of the step after `step` applied steps is epoch_lr * min(1, (step + 1) / warmup_steps).
    A function of the step alone, so a resumed run gets the same rates."""
    if warmup_steps > 0:
        for g in optimizer.param_groups:
            g["lr"] = g.get("epoch_lr", g["initial_lr"]) * min(1.0, (step + 1) / warmup_steps)


def to_device(batch, device):
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    return batch


class StopRequest:
    """Turns SIGINT/SIGTERM into a flag the training loop checks after each step, so it can write a resumable
    checkpoint and exit instead of dying mid-step. A second signal exits immediately."""

    def __init__(self):
        self.signal = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum
        print(f"\nreceived {signal.Signals(signum).name}: finishing the current step, then saving a checkpoint",
              flush=True)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False

    @property
    def requested(self):
        return self.signal is not None


def withhold_input_pose(inputs, all_samples, prob):
    """`inputs` with the input pose masked out (joints_mask 0) for every sample if `all_samples`, else for each
    sample with probability `prob` (drawn from the global generator, whose state checkpoints save)."""
    if all_samples:
        return {**inputs, "joints_mask": torch.zeros_like(inputs["joints_mask"])}
    if prob > 0:
        mask = inputs["joints_mask"]
        keep = torch.rand(mask.shape[0], device=mask.device) >= prob
        return {**inputs, "joints_mask": mask * keep.view(-1, *([1] * (mask.dim() - 1))).to(mask.dtype)}
    return inputs


def train_one_epoch(objective, loader, optimizer, scaler, *, device, step, amp="off", max_norm=0.0,
                    total_steps=0, stop=None, on_step=None, log=None, progress=True, desc="train", warmup_steps=0,
                    bad_samples=None, image_only_steps=0, image_only_prob=0.0):
    """Optimiser steps over `loader` (one epoch, or what is left of it after a resume).

    objective: TrainingObjective, possibly DDP-wrapped; step: global step count before the first batch;
    amp: 'off' | 'bf16' | 'fp16'; scaler: torch.amp.GradScaler (enabled for fp16 only);
    total_steps: stop once the global step reaches it (0 = no cap); stop: StopRequest or None;
    warmup_steps: linear lr warm-up over the first global steps (apply_warmup);
    on_step(step, terms): called after every applied step (evaluation, checkpoints, logging);
    bad_samples: data.skip_unreadable.BadSampleCount or None; it takes each batch's record of skipped samples.
    image_only_steps: for the global steps before it, the network gets no input pose (every joint masked), so it
    learns from the image alone; a pretext stage for training from scratch (not in the paper);
    image_only_prob: afterwards, each sample's input pose is withheld with this probability (not in the paper).
    A non-finite loss on any process raises NonFiniteLossError on every process before backward, so the step
    is not applied; too many skipped samples on any process raise bad_samples.error() on every process.
    Returns (step, stop_requested): stop_requested is True when a process received SIGINT/SIGTERM (the same answer
    on every process); the loop also ends early once total_steps is reached.
    """
    objective.train()
    amp_dtype = AMP_DTYPES[amp]
    bar = tqdm(loader, desc=desc, dynamic_ncols=True, disable=not progress, leave=False)
    for inputs, targets, meta in bar:
        if bad_samples is not None:
            bad_samples.take(meta)
        inputs, targets, meta = to_device((inputs, targets, meta), device)
        inputs = withhold_input_pose(inputs, step < image_only_steps, image_only_prob)
        with torch.autocast(device_type=device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            total, terms = objective(inputs, targets, meta)
        # One collective per step: every process learns whether any process saw a non-finite loss or too many
        # unreadable samples.
        bad_loss, bad_data = all_reduce_max([0.0 if torch.isfinite(total.detach()) else 1.0,
                                             1.0 if bad_samples is not None and bad_samples.exceeded else 0.0], device)
        if bad_data:
            raise bad_samples.error()
        if bad_loss:
            values = {k: float(v.detach()) for k, v in terms.items()}
            raise NonFiniteLossError(f"non-finite loss at step {step + 1}; the step was not applied. Terms: {values}")
        optimizer.zero_grad(set_to_none=True)
        apply_warmup(optimizer, step, warmup_steps)
        scaler.scale(total).backward()
        if max_norm > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], max_norm)
        scaler.step(optimizer)
        scaler.update()
        step += 1
        if progress:
            bar.set_postfix(loss=f"{float(total.detach()):.4f}", step=step)
        if on_step is not None:
            on_step(step, {k: float(v.detach()) for k, v in terms.items()} | {"total": float(total.detach())})
        (stop_now,) = all_reduce_max([1.0 if stop is not None and stop.requested else 0.0], device)
        if stop_now or (total_steps and step >= total_steps):
            bar.close()
            return step, bool(stop_now)
    bar.close()
    return step, False


@torch.no_grad()
def evaluate(model, loader, *, smpl_by_gender, h36m_regressor, device, amp="off", fast_inference=True,
             expected_count=None, progress=True, desc="eval", keep_samples=0, return_per_sample=False):
    """The 3DPW protocol (spec 6) over one test set.

    model: the bare network (not DDP-wrapped); loader: a PW3D-style loader whose meta carries the sample id
    'idx' (in a distributed run each process gets a disjoint shard, see ShardSampler); smpl_by_gender: GT body
    models {'male', 'female'[, 'neutral']}; h36m_regressor: (17, V). expected_count: the test set's size; the
    accumulator refuses to report if any sample is missing. Returns (summary, samples): summary = {'mpjpe',
    'pa_mpjpe', 'mpvpe', 'n'} in millimetres over the whole set (all processes); samples = up to keep_samples
    (img (3, H, W), predicted mesh_cam_render (V, 3), GT mesh (V, 3)) tuples from this process, for overlays. With
    return_per_sample also every person's metrics, {sample id: {'mpjpe', 'pa_mpjpe', 'mpvpe'}} (all processes), as a
    third value. The forward passes run on common.speed.inference_model(model): a copy with BatchNorm folded into
    the convolutions and the ReLUs and residual adds fused into them (the same function, fewer memory passes);
    `model` itself is not modified. A model already prepared that way (the callers do it once for all their test
    sets) is used as it is; fast_inference=False evaluates `model` itself.
    """
    was_training = model.training
    model.eval()
    net = inference_model(model, fuse=fast_inference)
    amp_dtype = AMP_DTYPES[amp]
    root_regressor = model.joint_regressor[0]
    accumulator = MetricAccumulator(expected_count)
    samples = []
    for inputs, targets, meta in tqdm(loader, desc=desc, dynamic_ncols=True, disable=not progress, leave=False):
        inputs, targets, meta = to_device((inputs, targets, meta), device)
        with torch.autocast(device_type=device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            out = net(inputs["img"], inputs["joints"], inputs["joints_mask"], bbox=meta["bbox"])
        gt_mesh = gendered_meshes(targets, smpl_by_gender)
        accumulator.add(mesh_metrics(out["smpl_mesh_cam"].float(), gt_mesh, h36m_regressor, root_regressor),
                        meta["idx"])
        for i in range(min(keep_samples - len(samples), len(inputs["img"]))):
            samples.append((inputs["img"][i].cpu(), out["mesh_cam_render"][i].float().cpu(),
                            gt_mesh[i].float().cpu()))
    accumulator.merge()
    model.train(was_training)
    if return_per_sample:
        return accumulator.summary(), samples, accumulator.per_sample()
    return accumulator.summary(), samples


class RunLogger:
    """Rank 0's log: a plain-text file, TensorBoard scalars/images and the console. Other ranks get a no-op."""

    def __init__(self, log_dir, enabled=True):
        self.enabled = enabled
        self.writer = None
        self.file = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            log_dir.mkdir(parents=True, exist_ok=True)
            self.writer = SummaryWriter(str(log_dir / "tensorboard"))
            self.file = open(log_dir / "train.log", "a", buffering=1)
        self.start = time.time()

    def info(self, message):
        if self.enabled:
            line = f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {message}"
            tqdm.write(line)
            self.file.write(line + "\n")

    def scalars(self, prefix, values, step):
        if self.enabled:
            for name, value in values.items():
                if value is not None and math.isfinite(value):
                    self.writer.add_scalar(f"{prefix}/{name}", value, step)

    def images(self, tag, images, step):
        """images: (N, H, W, 3) uint8."""
        if self.enabled and len(images):
            self.writer.add_images(tag, torch.as_tensor(images), step, dataformats="NHWC")

    def close(self):
        if self.enabled:
            self.writer.close()
            self.file.close()


def loss_weights(objective):
    """The learned uncertainty weights 0.5 / p^2 per loss term, for logging."""
    awl = objective.awl
    return {name: float(0.5 / p**2) for name, p in zip(awl.names, awl.params.detach())}

