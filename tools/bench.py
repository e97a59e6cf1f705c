"""Speed benchmarks on the current device: random model inputs and a small synthetic data set written on the fly (no
dataset download, no real body model needed).

    python -m tools.bench [--batch 8] [--steps 5] [--warmup 2] [--device auto] [--threads N] [--quick] [--compile]
                          [--profile]
                          [--sections machine,forward,train_step,embedded_step,data,eval,checkpoint]
                          [--output output/bench/bench.json]

Sections (one function each in SECTIONS; they run in that order, whatever the order given to --sections):
  machine     the device's own ceilings: float32 and bf16 matrix-multiply GFLOP/s (2 n^3 FLOPs per n x n product;
              for each of MATMUL_SIZES the fastest of the timed calls, the ceiling is the best size) and memory
              bandwidth (a COPY_MB tensor copied into another: bytes read + written / median time).
  forward     the model's FLOPs per image (count_flops: torch.utils.flop_counter.FlopCounterMode, 2 per
              multiply-add of the convolutions, matrix products and attention; elementwise ops, BN and softmax are
              not counted; the convolution part separately), then eval-mode forward images/s, achieved GFLOP/s and
              its fraction of the float32 ceiling, in float32 and in bf16 autocast, at batch 1 and --batch, with the
              speed switches of common.speed: {plain, channels_last, channels_last + fuse_conv_bn} at --batch, the
              project's inference default (INFERENCE_SWITCHES) at batch 1, and torch.compile of the default when
              --compile is given (compiling takes minutes). bf16 speed-up = median over the timed rounds of
              (float32 time / bf16 time) at --batch with the default switches.
  train_step  one training step -- train-mode forward, supervised losses, AutomaticWeightedLoss, backward, AdamW
              step -- in float32: with the layout TRAIN_CHANNELS_LAST selects, without and with the two contrastive
              terms at the config's sampling counts, plus the other layout without them; per variant the median
              step time, images/s and the step's peak memory; the contrastive ratio (median over rounds of the
              with / without step times), 3 x forward FLOPs x batch / step time and its fraction of the ceiling,
              and the contrastive losses' own forward + backward time. Where the hardware computes bf16 products
              (AVX-512 BF16, AMX, or a GPU with bf16), the step without the contrastive terms again under bf16 autocast
              (main.train's amp=bf16): its FLOP rate, fraction of the bf16 ceiling (paired with a bf16 matmul timed
              in the same rounds) and its speed-up over the float32 step.
  embedded_step  the training step of `make demo`'s model (main/configs/embedded.yaml: its network, its batch --
              --batch with --quick --, its amp dtype, contrastive terms and gradient clipping), as main.train runs it;
              FLOPs counted as for train_step (3 x the float32 forward's FLOPs x batch); its median step time,
              images/s, GFLOP/s and the fraction of the matmul ceiling of its amp dtype (bf16: the machine section's
              bf16 ceiling, and paired with a bf16 matmul timed in the same rounds).
  data        samples/s of one process building items as one DataLoader worker does (torch and OpenCV limited to
              one thread, as in a worker on one core), for the MuCo-format training split (data.muco.MuCo, with
              augmentation) and the 3DPW-format test set (data.pw3d.PW3D), on a small set written by
              embedded.generate.generate (its default image size; the loaders crop to the config's 256 x 256 input);
              one timed call = one pass over the set. Also the generator's own images/s (measure_speed, same
              thread limits). Real MuCo / 3DPW images are larger than the synthetic ones, so their JPEG decoding
              costs more than here.
  eval        common.evaluation.metrics.mesh_metrics on a batch of random meshes (the test batch size): samples/s.
  checkpoint  the time to write (atomically, with fsync) and to read back a resumable training checkpoint of the
              model (weights, AdamW moments, loss weights, RNG states) in the folder of --output, and its size.

The machine's CPU (model name, AVX-512 / AVX-512 BF16 / AMX, PyTorch's kernel ISA: common.speed.machine_kind) is
printed first and stored as `cpu`: the same code reaches different fractions of the ceiling on different CPU kinds.

Then an "acceptance" block: the speed targets, each computed from the numbers stored above (a criterion whose
sections did not run is "not measured"). The two fractions of the float32 ceiling are paired: the ceiling's matmul
(REFERENCE) is timed in the same rounds as the forward passes / training steps, and the fraction is the median over
rounds, so a machine whose speed drifts between sections (shared hosts) does not move the ratio; the table also
shows the fraction of the machine section's ceiling. They use the paper configuration's numbers only without --quick.

Memory: like the entry points, the benchmark first applies common.speed.setup_cpu_process, which on Linux/glibc
keeps freed memory for reuse (config reuse_cpu_memory; --no-reuse-memory measures without it; bench.json records
whether it applied). Without it every activation of 32 MiB or more is page-faulted in afresh at each call.

Threads: --threads sets the math libraries' thread count (default: torch's, one per core). On a machine shared with
busy processes, threads that wait for a descheduled sibling at every parallel region make each op many times slower
(25x measured on 2 cores next to a 2-core job): measure on a quiet machine, or with fewer threads than cores.

Profile: --profile adds, to the forward (float32 and bf16, --batch, INFERENCE_SWITCHES), train_step (each timed
dtype, without the contrastive terms) and embedded_step sections, a breakdown of one call by kind of work
(profile_breakdown: convolutions, matrix products, fused attention, batch norm, softmax, copies and casts, other,
in ms and as a share, and the fraction of the ceiling the convolutions and the matrix products reach inside the
call), stored under the section's "profile". It shows where a fraction of the ceiling is lost on the machine it runs
on.

Timing: `warmup` untimed calls, then `steps` timed calls of every variant of a section, in rounds whose order is
rotated each round so that load from other processes affects all variants alike; medians are reported. On CUDA,
each timed call is bracketed by torch.cuda.synchronize. Peak memory: CUDA, torch.cuda.max_memory_allocated minus
the memory allocated before the step; CPU (Linux), the growth of the process's peak resident set during one step:
freed heap memory is first returned to the system (glibc malloc_trim, else memory the allocator kept from the
previous step would be reused without showing), the kernel's peak-RSS mark is reset (writing 5 to
/proc/self/clear_refs), and the peak (VmHWM) is read after the step, minus VmRSS before it. Elsewhere it is not
measured (null).

The model's body model is the parity fixture's random SMPL-layout model (tools/parity_fixture.py), written to a
temporary directory, so the benchmark runs anywhere. `--quick` uses a small model (ResNet-18, narrow transformer,
128 x 128 crop) and tiny sizes, for smoke tests. Results are printed as tables and written atomically to
output/bench/bench.json: {created, device, torch, threads, reuse_cpu_memory, machine, cpu, quick, batch, steps, warmup,
compile, profile, sections: {name: the section's numbers + section_s}, acceptance: [{name, criterion, value, op,
threshold, pass}]}; each median is stored with the per-round times it comes from, so every ratio can be recomputed
from the file.
"""
import argparse
import contextlib
import copy
import ctypes
import ctypes.util
import dataclasses
import gc
import itertools
import json
import math
import os
import platform
import statistics
import tempfile
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from common.body.body_model import joint_regressor_30, load_smpl
from common.errors import run_entry_point
from common.evaluation.metrics import mesh_metrics
from common.losses import JointContrastiveLoss, supervised_losses
from common.speed import compile_model, fuse_conv_bn, machine_kind, set_channels_last, setup_cpu_process
from common.training.engine import AMP_DTYPES, TrainingObjective, build_optimizer
from data.muco import MuCo
from data.pw3d import PW3D
from embedded.generate import generate, measure_speed
from embedded.scene import DEFAULT_IMAGE_SIZE
from main.build import build_body_model, build_h36m_regressor, build_joint_regressor, build_model, resolve_device
from main.config import Config, load_config
from tools.check_parity import write_body_model_files
from tools.parity_fixture import body_model as random_body_model

# --quick: a small model on a small geometry (128 x 128 crop, 32^3 grid).
QUICK_MODEL = {"resnet_type": 18, "hidden_dim": 64, "nheads": 4, "dim_feedforward": 128,
               "voxel_dim_feedforward": 128, "enc_layers": 1, "dec_layers": 2, "input_img_shape": (128, 128),
               "output_hm_shape": (32, 32, 32), "princpt": (64.0, 64.0), "sigma": 1.25}
# The speed switches of common.speed the forward section compares, by name.
SWITCHES = {
    "plain": lambda model: set_channels_last(model, False),  # build_model applies cfg.channels_last (on)
    "channels_last": lambda model: set_channels_last(model, True),
    "channels_last+fuse_conv_bn": lambda model: set_channels_last(fuse_conv_bn(model), True),
}
INFERENCE_SWITCHES = "channels_last+fuse_conv_bn"  # what the project ships for inference; the acceptance uses it
TRAIN_CHANNELS_LAST = True  # the layout of the training step the acceptance uses
DTYPES = {"float32": None, "bfloat16": torch.bfloat16}  # forward: autocast dtype (None = off)
MATMUL_SIZES, QUICK_MATMUL_SIZES = (2048, 3072, 4096), (256, 512)
COPY_MB, QUICK_COPY_MB = 256, 32
DATA_SIZES, QUICK_DATA_SIZES = dict(n_train=16, n_test=8, n_crowd=0), dict(n_train=3, n_test=2, n_crowd=0)
GENERATOR_IMAGES, QUICK_GENERATOR_IMAGES = 20, 2
QUICK_EVAL_BATCH = 4
CONV_OPS = {torch.ops.aten.convolution, torch.ops.aten._convolution, torch.ops.aten.cudnn_convolution,
            torch.ops.aten._slow_conv2d_forward, torch.ops.aten.convolution_overrideable,
            torch.ops.aten.convolution_backward}


# ----------------------------------------------------------------------------------------------------------------------
# Shared helpers: configuration, inputs, timing, FLOPs, memory

def bench_config(body_model_dir, quick):
    cfg = dataclasses.replace(Config(), smpl_dir=str(body_model_dir / "smpl"),
                              j_regressor_extra_path=str(body_model_dir / "J_regressor_extra.npy"),
                              j_regressor_h36m_path=str(body_model_dir / "J_regressor_h36m_correct.npy"))
    return dataclasses.replace(cfg, **QUICK_MODEL) if quick else cfg


EMBEDDED_PRESET = "embedded"  # make demo's configuration (main/configs/embedded.yaml)


def embedded_config(cfg):
    """The embedded preset with the benchmark's body-model files (those of `cfg`)."""
    return load_config(EMBEDDED_PRESET, [f"smpl_dir={cfg.smpl_dir}",
                                         f"j_regressor_extra_path={cfg.j_regressor_extra_path}",
                                         f"j_regressor_h36m_path={cfg.j_regressor_h36m_path}"])


def model_summary(cfg):
    return {"resnet_type": cfg.resnet_type, "hidden_dim": cfg.hidden_dim, "enc_layers": cfg.enc_layers,
            "dec_layers": cfg.dec_layers, "input_img_shape": list(cfg.input_img_shape)}


def random_batch(cfg, batch, device, generator):
    """A training batch in the loaders' layout (spec 5.3). Every sample is a 3D sample with a valid fit: the worst
    case for the contrastive terms, which only use 3D samples."""
    def rand(*shape):
        return torch.rand(*shape, generator=generator).to(device)

    depth, height, width = cfg.output_hm_shape
    hm_scale = torch.tensor([width, height, depth], dtype=torch.float32, device=device)
    inputs = {"img": rand(batch, 3, *cfg.input_img_shape), "joints": rand(batch, 30, 2) * hm_scale[:2],
              "joints_mask": torch.ones(batch, 30, 1, device=device)}
    targets = {"orig_joint_img": (0.1 + 0.8 * rand(batch, 30, 3)) * hm_scale,
               "fit_joint_img": (0.1 + 0.8 * rand(batch, 30, 3)) * hm_scale,
               "orig_joint_cam": rand(batch, 30, 3) - 0.5, "pose_param": 0.2 * (rand(batch, 72) - 0.5),
               "shape_param": rand(batch, 10) - 0.5}
    meta = {"orig_joint_valid": torch.ones(batch, 30, 1, device=device),
            "orig_joint_trunc": (rand(batch, 30, 1) > 0.1).float(),
            "fit_param_valid": torch.ones(batch, 72, device=device),
            "fit_joint_trunc": torch.ones(batch, 30, 1, device=device),
            "is_valid_fit": torch.ones(batch, device=device), "is_3D": torch.ones(batch, device=device)}
    return inputs, targets, meta


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    """(wall-clock seconds, this process's CPU seconds over all threads) of one call."""
    synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def time_interleaved(calls, warmup, steps, device):
    """Run every call of `calls` ({name: fn}) `warmup` times untimed, then in `steps` timed rounds, each call once
    per round, in an order rotated each round: load from other processes (a shared machine) then affects every
    variant alike. Returns ({name: [wall s per round]}, {name: [CPU s per round]})."""
    names = list(calls)
    for _ in range(warmup):
        for name in names:
            calls[name]()
    wall, cpu = {name: [] for name in names}, {name: [] for name in names}
    for round_index in range(steps):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            seconds, cpu_seconds = timed(calls[name], device)
            wall[name].append(seconds)
            cpu[name].append(cpu_seconds)
    return wall, cpu


def paired_ratio(numerators, denominators):
    """Median over rounds of numerator time / denominator time. On a shared machine the load changes between rounds
    far more than within one, so pairing the calls of a round cancels most of it."""
    return statistics.median(a / b for a, b in zip(numerators, denominators))


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
    """FLOPs of attention: Q K^T and softmax(.) V, 2 per multiply-add. Shapes (..., L, E), (..., S, E), (..., S, Ev)."""
    batch_heads = math.prod(query_shape[:-2])
    queries, keys = query_shape[-2], key_shape[-2]
    return 2 * batch_heads * queries * keys * (query_shape[-1] + value_shape[-1])


# PyTorch's counter has formulas for the CUDA attention kernels but not for the CPU one that
# F.scaled_dot_product_attention dispatches to on CPUs: without this the transformers' attention would count 0.
_EXTRA_FLOP_FORMULAS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops}


def count_flops(fn):
    """{'total', 'conv', 'attention'}: FLOPs of one call of fn (FlopCounterMode: 2 per multiply-add of convolutions,
    matrix products and attention; elementwise ops are not counted), of its convolutions alone and of its fused
    attention calls (F.scaled_dot_product_attention's kernels) alone."""
    with FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOP_FORMULAS) as counter:
        fn()
    per_op = counter.get_flop_counts().get("Global", {})
    return {"total": int(counter.get_total_flops()),
            "conv": int(sum(count for op, count in per_op.items() if op in CONV_OPS)),
            "attention": int(sum(count for op, count in per_op.items() if "scaled_dot_product" in str(op)))}


# --profile: the categories of the breakdown. An op belongs to the first category that names it, exactly (the aten::
# names) or by a part of its name (the others); ops no category names count as "other" (elementwise work, the
# profiler's and Python's per-op overhead).
PROFILE_CATEGORIES = (
    ("convolution", ("convolution",)),
    ("matrix products", ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm")),
    ("fused attention", ("scaled_dot_product",)),
    ("batch norm", ("batch_norm",)),
    ("softmax", ("softmax",)),
    ("copies and casts", ("aten::copy_", "aten::_to_copy", "aten::clone")),
)
PROFILE_ROUNDS = 3


def _profile_category(op_name):
    for category, patterns in PROFILE_CATEGORIES:
        if any(pattern == op_name or (not pattern.startswith("aten::") and pattern in op_name)
               for pattern in patterns):
            return category
    return "other"


def profile_breakdown(fn, rounds, flops=None, ceiling=None):
    """Where the time of one call of fn goes: torch.profiler's self time of every op, summed per PROFILE_CATEGORIES
    category, in ms per call (the profiler's own overhead, a few microseconds per op, lands in the categories too,
    most of it in "other"; `profiled_ms` is therefore more than the timed call). With `flops` ({category: FLOPs
    per call}) and `ceiling` (GFLOP/s), also the rate each of those categories reaches inside the call, as a
    fraction of the ceiling. The optimiser's step, where there is one, is given whole (its ops are in the categories
    too)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(rounds):
            fn()
    ms = {category: 0.0 for category, _ in PROFILE_CATEGORIES} | {"other": 0.0}
    optimizer_ms = 0.0
    for event in prof.key_averages():
        ms[_profile_category(event.key)] += event.self_cpu_time_total / 1e3 / rounds
        if event.key.startswith("Optimizer.step"):
            optimizer_ms += event.cpu_time_total / 1e3 / rounds
    result = {"rounds": rounds, "ms": ms, "profiled_ms": sum(ms.values()), "optimizer_step_ms": optimizer_ms,
              "fraction_of_ceiling": {}}
    for category, category_flops in (flops or {}).items():
        if ceiling and ms[category] > 0:
            result["fraction_of_ceiling"][category] = category_flops / (ms[category] / 1e3) / 1e9 / ceiling
    return result


def training_flops_by_category(forward_flops):
    """A training step's FLOPs by profile category, from its forward's count_flops: the backward doubles each (the
    image's gradient aside), and the training step computes its attention as explicit matrix products
    (common.speed.dropout.attend), so those FLOPs are the products'."""
    return {"convolution": 3 * forward_flops["conv"],
            "matrix products": 3 * (forward_flops["total"] - forward_flops["conv"])}


def profile_table(name, profile, timed_s):
    """Lines for one profile_breakdown result; timed_s: the call's timed median (without the profiler)."""
    total = profile["profiled_ms"]
    parts = []
    for category, ms in sorted(profile["ms"].items(), key=lambda item: -item[1]):
        fraction = profile["fraction_of_ceiling"].get(category)
        rate = "" if fraction is None else f", {fraction:.2f} of the ceiling"
        parts.append(f"{category} {ms:.1f} ms ({ms / total:.0%}{rate})")
    line = f"  profile of {name} ({profile['rounds']} calls; {total:.1f} ms a call under the profiler, " \
           f"{timed_s * 1e3:.1f} ms timed): " + ", ".join(parts)
    if profile["optimizer_step_ms"]:
        line += f"; the optimiser's step {profile['optimizer_step_ms']:.1f} ms"
    return [line]


def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(f"/proc/self/status has no {field}")


def _reset_peak_rss():
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


_LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if platform.system() == "Linux" else None


def peak_memory_mb(fn, device):
    """Peak memory growth (MiB) during one call of fn (module docstring), or None where it cannot be measured."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    if device.type != "cpu" or _LIBC is None or not hasattr(_LIBC, "malloc_trim"):
        fn()
        return None
    gc.collect()
    _LIBC.malloc_trim(0)
    if not _reset_peak_rss():
        fn()
        return None
    before = _status_kib("VmRSS")
    fn()
    return (_status_kib("VmHWM") - before) / 1024


@contextlib.contextmanager
def one_worker_threads():
    """Thread limits of one DataLoader worker on one core: torch sets 1 thread in its workers; OpenCV is limited
    here too, as tools/make_synthetic does, so that one process uses one core."""
    torch_threads, cv2_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        torch.set_num_threads(torch_threads)
        cv2.setNumThreads(cv2_threads)


def bf16_products(device):
    """Whether `device` computes bf16 products natively: a CPU with AVX-512 BF16 or AMX, a GPU that supports bf16.
    The bf16 targets apply only there; elsewhere bf16 is emulated (and the training section does not time it)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    isa = machine_kind()["isa"]
    return device.type == "cpu" and bool(isa["AVX-512 BF16"] or isa["AMX BF16"])


REFERENCE = "float32 matmul (reference)"  # the ceiling's matmul, timed in the same rounds as a section's variants
BF16_REFERENCE = "bf16 matmul (reference)"
REFERENCE_REPEATS = 3  # back-to-back products per reference call; the round's ceiling is the fastest


class ReferenceMatmul:
    """The matmul that sets the ceiling (float32 unless `dtype_name` says otherwise; the machine section's best size;
    the largest size if that section did not run), for timing among a section's variants: each call runs
    REFERENCE_REPEATS products back to back and records the fastest one's GFLOP/s in `rates`. Its first product after
    a forward pass or training step runs slower than the machine can (up to 20 % here), so a ceiling from single
    products would flatter every ratio."""

    def __init__(self, args, device, done, dtype_name="float32"):
        size = done["machine"]["matmul"][dtype_name]["best_size"] if "machine" in done else \
            (QUICK_MATMUL_SIZES if args.quick else MATMUL_SIZES)[-1]
        gen = torch.Generator().manual_seed(args.seed)
        dtype = DTYPES[dtype_name] or torch.float32
        self.a, self.b = (torch.rand(size, size, generator=gen).to(device=device, dtype=dtype) for _ in range(2))
        self.out = torch.empty(size, size, device=device, dtype=dtype)
        self.flops, self.device, self.rates = 2 * size**3, device, []

    def __call__(self):
        best = min(timed(lambda: torch.mm(self.a, self.b, out=self.out), self.device)[0]
                   for _ in range(REFERENCE_REPEATS))
        self.rates.append(self.flops / best / 1e9)

    def round_rates(self, steps):
        """The GFLOP/s of the timed rounds (the last `steps` calls; the ones before were warm-up)."""
        return self.rates[-steps:]


def paired_fraction(flops, times, reference_gflops):
    """Median over rounds of (flops / time) / (the reference matmul's GFLOP/s in the same round)."""
    return statistics.median((flops / t / 1e9) / r for t, r in zip(times, reference_gflops))


def _float32_ceiling(done):
    return _ceiling(done, "float32")


def _ceiling(done, dtype_name):
    machine = done.get("machine")
    return None if machine is None else machine["matmul"][dtype_name]["best_gflops"]


def _fraction(value, ceiling):
    return None if ceiling is None else value / ceiling


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


# ----------------------------------------------------------------------------------------------------------------------
# Sections: each takes (cfg, args, device, done = results of the sections run before) and returns (result, table)

def bench_machine(cfg, args, device, done):
    sizes = QUICK_MATMUL_SIZES if args.quick else MATMUL_SIZES
    gen = torch.Generator().manual_seed(args.seed)
    calls, flops = {}, {}
    for size in sizes:
        for dtype_name in DTYPES:
            dtype = DTYPES[dtype_name] or torch.float32
            a = torch.rand(size, size, generator=gen).to(device=device, dtype=dtype)
            b = torch.rand(size, size, generator=gen).to(device=device, dtype=dtype)
            out = torch.empty(size, size, device=device, dtype=dtype)
            calls[(dtype_name, size)] = lambda a=a, b=b, out=out: torch.mm(a, b, out=out)
            flops[(dtype_name, size)] = 2 * size**3
    wall, _ = time_interleaved(calls, max(args.warmup, 1), args.steps, device)
    matmul = {}
    for dtype_name in DTYPES:
        # A ceiling: the fastest of the timed products (the first ones after other work run slower).
        per_size = {str(size): flops[(dtype_name, size)] / min(wall[(dtype_name, size)]) / 1e9 for size in sizes}
        best = max(per_size, key=per_size.get)
        matmul[dtype_name] = {"gflops_by_size": per_size, "best_gflops": per_size[best], "best_size": int(best)}
    del calls

    copy_mb = QUICK_COPY_MB if args.quick else COPY_MB
    src = torch.rand(copy_mb * 2**20 // 4, generator=gen).to(device)
    dst = torch.empty_like(src)
    copy_wall, _ = time_interleaved({"copy": lambda: dst.copy_(src)}, max(args.warmup, 1), args.steps, device)
    copy_s = statistics.median(copy_wall["copy"])
    bandwidth = 2 * src.numel() * src.element_size() / copy_s / 1e9
    result = {"matmul": matmul, "matmul_sizes": list(sizes), "memory_bandwidth_gbs": bandwidth,
              "copy_bytes": src.numel() * src.element_size(), "copy_s": copy_s}
    table = [f"machine: {device}, {torch.get_num_threads()} threads; matmul fastest, copy median of {args.steps}",
             f"  {'matmul GFLOP/s':<18}" + "".join(f"{'n=' + str(s):>10}" for s in sizes) + f"{'best':>10}"]
    for dtype_name, entry in matmul.items():
        table.append(f"  {dtype_name:<18}" + "".join(f"{entry['gflops_by_size'][str(s)]:>10.1f}" for s in sizes)
                     + f"{entry['best_gflops']:>10.1f}")
    table.append(f"  memory bandwidth (copy of {copy_mb} MiB, read + write): {bandwidth:.1f} GB/s")
    return result, table


def bench_forward(cfg, args, device, done):
    torch.manual_seed(args.seed)
    base = build_model(cfg).to(device).eval()
    models = {name: switch(copy.deepcopy(base)).eval() for name, switch in SWITCHES.items()}
    del base
    compiled = f"{INFERENCE_SWITCHES}+compile"
    if args.compile:
        models[compiled] = compile_model(models[INFERENCE_SWITCHES], True)
    gen = torch.Generator().manual_seed(args.seed)
    batches = sorted({1, args.batch})
    inputs = {batch: random_batch(cfg, batch, device, gen)[0] for batch in batches}

    def forward(model, batch, dtype_name):
        def call():
            with torch.no_grad(), torch.autocast(device.type, dtype=DTYPES[dtype_name] or torch.float32,
                                                 enabled=DTYPES[dtype_name] is not None):
                model(inputs[batch]["img"], inputs[batch]["joints"], inputs[batch]["joints_mask"])
        return call

    flops = {batch: count_flops(forward(models["plain"], batch, "float32")) for batch in batches}
    rows = []  # (batch, dtype, switches)
    for dtype_name in DTYPES:
        rows += [(args.batch, dtype_name, name) for name in models]
        if args.batch != 1:
            rows.append((1, dtype_name, INFERENCE_SWITCHES))
    calls = {row: forward(models[row[2]], row[0], row[1]) for row in rows}
    reference = calls[REFERENCE] = ReferenceMatmul(args, device, done)
    if args.compile:  # compile before the timed rounds: the first call of each dtype compiles (minutes)
        for row in rows:
            if row[2] == compiled:
                calls[row]()
    wall, _ = time_interleaved(calls, args.warmup, args.steps, device)

    ceiling = _float32_ceiling(done)
    bf16_ceiling = None if "machine" not in done else done["machine"]["matmul"]["bfloat16"]["best_gflops"]
    result_rows = []
    for batch, dtype_name, switches in rows:
        median = statistics.median(wall[(batch, dtype_name, switches)])
        gflops = flops[batch]["total"] / median / 1e9
        result_rows.append({
            "batch": batch, "dtype": dtype_name, "switches": switches, "median_s": median,
            "images_per_s": batch / median, "gflops": gflops, "fraction_of_fp32_ceiling": _fraction(gflops, ceiling),
            "fraction_of_bf16_ceiling": _fraction(gflops, bf16_ceiling) if dtype_name == "bfloat16" else None,
            "times_s": wall[(batch, dtype_name, switches)]})
    default_fp32 = (args.batch, "float32", INFERENCE_SWITCHES)
    speedup = paired_ratio(wall[default_fp32], wall[(args.batch, "bfloat16", INFERENCE_SWITCHES)])
    reference_gflops = reference.round_rates(args.steps)
    paired = paired_fraction(flops[args.batch]["total"], wall[default_fp32], reference_gflops)
    result = {
        "model": model_summary(cfg), "steps": args.steps, "warmup": args.warmup,
        "flops_per_image": {str(batch): {k: v / batch for k, v in flops[batch].items()} for batch in batches},
        "gflops_per_image": flops[args.batch]["total"] / args.batch / 1e9,
        "conv_gflops_per_image": flops[args.batch]["conv"] / args.batch / 1e9,
        "default_switches": INFERENCE_SWITCHES, "rows": result_rows, "bf16_products": bf16_products(device),
        "bf16_speedup": {"batch": args.batch, "switches": INFERENCE_SWITCHES, "value": speedup},
        "paired_fp32_fraction": {"batch": args.batch, "switches": INFERENCE_SWITCHES, "value": paired,
                                 "reference_gflops": reference_gflops},
    }
    width = max(len(name) for name in models) + 2
    table = [f"forward: ResNet-{cfg.resnet_type}, {tuple(cfg.input_img_shape)} input, eval mode, {device}; "
             f"{result['gflops_per_image']:.2f} GFLOP/image ({result['conv_gflops_per_image']:.2f} in convolutions)",
             f"  {'batch':>5} {'dtype':<9} {'switches':<{width}}{'median s':>10}{'images/s':>10}{'GFLOP/s':>9}"
             f"{'of fp32 ceil':>13}"]
    for row in result_rows:
        table.append(f"  {row['batch']:>5} {row['dtype']:<9} {row['switches']:<{width}}{row['median_s']:>10.4f}"
                     f"{row['images_per_s']:>10.2f}{row['gflops']:>9.1f}"
                     f"{_fmt(row['fraction_of_fp32_ceiling'], '.2f'):>13}")
    table.append(f"  bf16 speed-up (batch {args.batch}, {INFERENCE_SWITCHES}, median of paired rounds): "
                 f"{speedup:.2f}x")
    table.append(f"  float32 batch {args.batch} {INFERENCE_SWITCHES}: {paired:.3f} of the float32 matmul timed in the "
                 f"same rounds (median of rounds)")
    if args.profile:
        counts = flops[args.batch]
        split = {"convolution": counts["conv"], "fused attention": counts["attention"],
                 "matrix products": counts["total"] - counts["conv"] - counts["attention"]}
        result["profile"] = {}
        for dtype_name, dtype_ceiling in (("float32", ceiling), ("bfloat16", bf16_ceiling)):
            row = (args.batch, dtype_name, INFERENCE_SWITCHES)
            result["profile"][dtype_name] = profile_breakdown(calls[row], PROFILE_ROUNDS, split, dtype_ceiling)
            table += profile_table(f"the {dtype_name} forward (batch {args.batch}, {INFERENCE_SWITCHES})",
                                   result["profile"][dtype_name], statistics.median(wall[row]))
    return result, table


def bench_train_step(cfg, args, device, done):
    torch.manual_seed(args.seed)
    plain = set_channels_last(build_model(cfg), False).to(device).train()
    models = {"plain": plain, "channels_last": set_channels_last(copy.deepcopy(plain), True)}
    layout = "channels_last" if TRAIN_CHANNELS_LAST else "plain"
    optimizers = {}
    for name, model in models.items():
        objective = TrainingObjective(model).to(device)  # the training code's loss weights and optimiser groups
        optimizers[name] = (objective.awl, build_optimizer(objective, cfg.lr, cfg.lr_backbone, cfg.weight_decay))
    contrastive = JointContrastiveLoss(cfg.intra_anchors, cfg.intra_positives, cfg.intra_negatives, cfg.inter_anchors,
                                       cfg.inter_positives, cfg.inter_negatives, cfg.nce_temperature,
                                       cfg.output_hm_shape)
    data_gen = torch.Generator().manual_seed(args.seed)
    nce_gen = torch.Generator().manual_seed(args.seed)
    inputs, targets, meta = random_batch(cfg, args.batch, device, data_gen)

    def step(name, with_contrastive, amp_dtype=None):
        def call():
            model, (awl, optimizer) = models[name], optimizers[name]
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                out = model(inputs["img"], inputs["joints"], inputs["joints_mask"])
                total, _ = awl(supervised_losses(out, targets, meta, cfg.output_hm_shape))
            if with_contrastive:
                nce = contrastive.forward_batch(out, targets, meta, nce_gen)
                total = total + cfg.intra_weight * nce["intra_nce"] + cfg.inter_weight * nce["inter_nce"]
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
        return call

    with torch.no_grad():
        flops = count_flops(lambda: models[layout](inputs["img"], inputs["joints"], inputs["joints_mask"]))

    # The contrastive terms alone (forward + backward) on fixed model outputs.
    with torch.no_grad():
        out = models[layout](inputs["img"], inputs["joints"], inputs["joints_mask"])
    loss_inputs = {k: out[k].detach().requires_grad_(True) for k in ("voxel_feat", "joint_img", "depth_exponent")}

    def contrastive_only():
        nce = contrastive.forward_batch(loss_inputs, targets, meta, nce_gen)
        (nce["intra_nce"] + nce["inter_nce"]).backward()

    with_name = f"{layout}+contrastive"
    calls = {layout: step(layout, False), with_name: step(layout, True)}
    other = "plain" if layout == "channels_last" else "channels_last"
    calls[other] = step(other, False)
    # The same step under bf16 autocast (main.train's amp=bf16), where the hardware computes bf16 products.
    bf16_name = f"{layout} bf16" if bf16_products(device) else None
    if bf16_name:
        calls[bf16_name] = step(layout, False, torch.bfloat16)
    reference = ReferenceMatmul(args, device, done)
    references = {REFERENCE: reference}
    if bf16_name:
        references[BF16_REFERENCE] = ReferenceMatmul(args, device, done, "bfloat16")
    wall, cpu = time_interleaved(calls | references, args.warmup, args.steps, device)
    for name in references:
        wall.pop(name)
        cpu.pop(name)
    reference_gflops = reference.round_rates(args.steps)
    loss_only, _ = time_interleaved({"loss": contrastive_only}, args.warmup, max(args.steps, 5), device)
    memory = {name: peak_memory_mb(call, device) for name, call in calls.items()}

    variants = {}
    for name in calls:
        median = statistics.median(wall[name])
        variants[name] = {"wall_s": median, "min_wall_s": min(wall[name]), "cpu_s": statistics.median(cpu[name]),
                          "images_per_s": args.batch / median, "peak_memory_mb": memory[name],
                          "all_wall_s": wall[name], "all_cpu_s": cpu[name]}
    step_s = variants[layout]["wall_s"]
    gflops = 3 * flops["total"] / step_s / 1e9  # flops: the whole batch's forward
    result = {
        "model": model_summary(cfg), "batch": args.batch, "dtype": "float32", "steps": args.steps,
        "warmup": args.warmup, "layout": layout, "contrastive_variant": with_name,
        "counts": {"intra": [cfg.intra_anchors, cfg.intra_positives, cfg.intra_negatives],
                   "inter": [cfg.inter_anchors, cfg.inter_positives, cfg.inter_negatives]},
        "variants": variants, "forward_flops_per_image": flops["total"] / args.batch,
        "step_s": step_s, "images_per_s": args.batch / step_s, "gflops": gflops,
        "fraction_of_fp32_ceiling": _fraction(gflops, _float32_ceiling(done)),
        "paired_fp32_fraction": paired_fraction(3 * flops["total"], wall[layout], reference_gflops),
        "reference_gflops": reference_gflops,
        "ratio": paired_ratio(wall[with_name], wall[layout]), "ratio_cpu": paired_ratio(cpu[with_name], cpu[layout]),
        "channels_last_speedup": paired_ratio(wall["plain"], wall["channels_last"]),
        "contrastive_loss_only_s": statistics.median(loss_only["loss"]),
        "bf16": None,
        "peak_memory_method": "cuda max_memory_allocated" if device.type == "cuda" else "peak RSS growth (VmHWM)",
    }
    if bf16_name:
        bf16_s = variants[bf16_name]["wall_s"]
        bf16_gflops = 3 * flops["total"] / bf16_s / 1e9
        bf16_reference = references[BF16_REFERENCE].round_rates(args.steps)
        result["bf16"] = {"variant": bf16_name, "step_s": bf16_s, "gflops": bf16_gflops,
                          "fraction_of_bf16_ceiling": _fraction(bf16_gflops, _ceiling(done, "bfloat16")),
                          "paired_fraction": paired_fraction(3 * flops["total"], wall[bf16_name], bf16_reference),
                          "reference_gflops": bf16_reference,
                          "speedup": paired_ratio(wall[layout], wall[bf16_name])}
    table = [f"train_step: ResNet-{cfg.resnet_type}, batch {args.batch}, float32, {device}, {args.steps} rounds; "
             f"3 x {flops['total'] / args.batch / 1e9:.2f} GFLOP/image forward",
             f"  {'':<28}{'wall median':>12}{'wall min':>10}{'cpu median':>12}{'images/s':>10}{'peak MiB':>10}"]
    for name, variant in variants.items():
        table.append(f"  {name:<28}{variant['wall_s']:>12.3f}{variant['min_wall_s']:>10.3f}{variant['cpu_s']:>12.3f}"
                     f"{variant['images_per_s']:>10.2f}{_fmt(variant['peak_memory_mb'], '.0f'):>10}")
    table += [
        f"  contrastive ratio (median of paired rounds): {result['ratio']:.3f} wall, {result['ratio_cpu']:.3f} cpu",
        f"  channels_last speed-up over plain: {result['channels_last_speedup']:.2f}x",
        f"  {layout}: 3 x forward FLOPs x batch / step time = {gflops:.1f} GFLOP/s"
        f" ({_fmt(result['fraction_of_fp32_ceiling'], '.2f')} of the float32 ceiling; "
        f"{result['paired_fp32_fraction']:.3f} of the matmul timed in the same rounds)",
        f"  contrastive losses alone, forward + backward: {result['contrastive_loss_only_s'] * 1000:.1f} ms",
    ]
    if result["bf16"]:
        b = result["bf16"]
        table.append(f"  {bf16_name}: {b['gflops']:.1f} GFLOP/s ({_fmt(b['fraction_of_bf16_ceiling'], '.2f')} of the "
                     f"bf16 ceiling; {b['paired_fraction']:.3f} of the bf16 matmul timed in the same rounds), "
                     f"{b['speedup']:.2f}x the float32 step")
    else:
        table.append(f"  bf16 step: not timed ({device} computes no bf16 products: no AVX-512 BF16 or AMX)")
    if args.profile:
        split = training_flops_by_category(flops)
        result["profile"] = {}
        for name, dtype_name in ((layout, "float32"), (bf16_name, "bfloat16")):
            if name:
                result["profile"][dtype_name] = profile_breakdown(calls[name], PROFILE_ROUNDS, split,
                                                                  _ceiling(done, dtype_name))
                table += profile_table(f"the {dtype_name} step ({name})", result["profile"][dtype_name],
                                       variants[name]["wall_s"])
    return result, table


def convolutions_alone(model, inputs, amp_dtype, device, args):
    """Each convolution of `model`, timed alone at the shapes of a training step (forward and backward, the input's
    gradient too except for the image's, under the step's autocast): where the step's convolution time goes and how
    close the library's kernels come to the matmul ceiling on these shapes. Returns ({'seconds', 'flops'} of all of
    them, [per-convolution rows])."""
    convs = {m: name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))}
    seen = []
    hooks = [m.register_forward_hook(lambda m, inp, out: seen.append((m, inp[0]))) for m in convs]
    try:
        with torch.no_grad(), torch.autocast(device.type, dtype=amp_dtype or torch.float32,
                                             enabled=amp_dtype is not None):
            model(inputs["img"], inputs["joints"], inputs["joints_mask"])
    finally:
        for hook in hooks:
            hook.remove()
    rows, calls = [], {}
    for index, (module, seen_input) in enumerate(seen):
        x = torch.randn(seen_input.shape, device=device).contiguous(
            memory_format=torch.channels_last if seen_input.dim() == 4 else torch.contiguous_format)
        x.requires_grad_(index > 0)  # the first convolution takes the image, which needs no gradient

        def call(module=module, x=x):
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                y = module(x)
            y.backward(torch.ones_like(y))

        with torch.no_grad():
            forward_flops = count_flops(lambda module=module, x=x: module(x))["total"]
        # Backward: the weight's gradient, and the input's where it is needed, each as many FLOPs as the forward.
        rows.append({"name": convs[module], "input_shape": list(x.shape),
                     "flops": forward_flops * (3 if x.requires_grad else 2)})
        calls[convs[module]] = call
    wall, _ = time_interleaved(calls, args.warmup, max(args.steps, 5), device)
    for row in rows:
        row["seconds"] = statistics.median(wall[row["name"]])
    model.zero_grad(set_to_none=True)
    return {"seconds": sum(r["seconds"] for r in rows), "flops": sum(r["flops"] for r in rows)}, rows


def bench_embedded_step(cfg, args, device, done):
    embedded = embedded_config(cfg)
    batch = args.batch if args.quick else embedded.train_batch_size
    amp_dtype = AMP_DTYPES[embedded.amp]
    dtype_name = {None: "float32", torch.bfloat16: "bfloat16"}.get(amp_dtype)
    if dtype_name is None:
        raise ValueError(f"embedded_step: the preset's amp={embedded.amp!r} has no matmul ceiling here (float32, bf16)")
    torch.manual_seed(args.seed)
    model = build_model(embedded).to(device).train()
    contrastive = None
    if embedded.with_contrastive:
        contrastive = JointContrastiveLoss(embedded.intra_anchors, embedded.intra_positives, embedded.intra_negatives,
                                           embedded.inter_anchors, embedded.inter_positives, embedded.inter_negatives,
                                           embedded.nce_temperature, embedded.output_hm_shape)
    # What main.train builds: the objective with its loss weights and the optimiser groups.
    objective = TrainingObjective(model, contrastive, embedded.intra_weight, embedded.inter_weight,
                                  embedded.output_hm_shape, seed=args.seed,
                                  loss_multipliers=embedded.loss_multipliers).to(device)
    optimizer = build_optimizer(objective, embedded.lr, embedded.lr_backbone, embedded.weight_decay,
                                embedded.lr_transformer)
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    inputs, targets, meta = random_batch(embedded, batch, device, torch.Generator().manual_seed(args.seed))

    def step():
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            total, _ = objective(inputs, targets, meta)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        if embedded.max_norm > 0:
            torch.nn.utils.clip_grad_norm_(parameters, embedded.max_norm)
        optimizer.step()

    with torch.no_grad():  # counted in float32, as every other section counts
        flops = count_flops(lambda: model(inputs["img"], inputs["joints"], inputs["joints_mask"]))
    reference = ReferenceMatmul(args, device, done, dtype_name)
    name = f"embedded step ({embedded.amp})"
    wall, cpu = time_interleaved({name: step, REFERENCE: reference}, args.warmup, args.steps, device)
    reference_gflops = reference.round_rates(args.steps)
    step_s = statistics.median(wall[name])
    gflops = 3 * flops["total"] / step_s / 1e9
    convs, conv_rows = convolutions_alone(model, inputs, amp_dtype, device, args)
    ceiling = _ceiling(done, dtype_name)
    for row in conv_rows:
        row["fraction_of_ceiling"] = _fraction(row["flops"] / row["seconds"] / 1e9, ceiling)
    # The step's fraction if every convolution ran at the ceiling and the rest of the step took as long as now.
    at_ceiling_s = None if ceiling is None else step_s - convs["seconds"] + convs["flops"] / ceiling / 1e9
    result = {
        "convolutions": {**convs, "share_of_step": convs["seconds"] / step_s,
                         "fraction_of_ceiling": _fraction(convs["flops"] / convs["seconds"] / 1e9, ceiling),
                         "step_fraction_with_convolutions_at_ceiling":
                             None if at_ceiling_s is None else _fraction(gflops * step_s / at_ceiling_s, ceiling),
                         "rows": conv_rows},
        "preset": EMBEDDED_PRESET, "model": model_summary(embedded), "batch": batch, "amp": embedded.amp,
        "ceiling_dtype": dtype_name, "with_contrastive": embedded.with_contrastive, "max_norm": embedded.max_norm,
        "forward_flops_per_image": flops["total"] / batch, "forward_conv_flops": flops["conv"],
        "step_s": step_s, "min_step_s": min(wall[name]),
        "cpu_s": statistics.median(cpu[name]), "images_per_s": batch / step_s, "gflops": gflops,
        "fraction_of_ceiling": _fraction(gflops, ceiling),
        "paired_fraction": paired_fraction(3 * flops["total"], wall[name], reference_gflops),
        "reference_gflops": reference_gflops, "all_step_s": wall[name], "all_cpu_s": cpu[name],
        "bf16_products": bf16_products(device),
    }
    table = [f"embedded_step: {EMBEDDED_PRESET} preset, ResNet-{embedded.resnet_type}, "
             f"{tuple(embedded.input_img_shape)} crop, batch {batch}, amp {embedded.amp}, {device}, "
             f"{args.steps} rounds; "
             f"3 x {flops['total'] / batch / 1e9:.2f} GFLOP/image forward",
             f"  step {step_s:.3f} s median ({result['min_step_s']:.3f} min), {result['images_per_s']:.1f} images/s, "
             f"{gflops:.1f} GFLOP/s = {_fmt(result['fraction_of_ceiling'], '.2f')} of the {dtype_name} ceiling; "
             f"{result['paired_fraction']:.3f} of the {dtype_name} matmul timed in the same rounds"]
    c = result["convolutions"]

    def time_lost(row):  # seconds beyond what the row's FLOPs take at the ceiling
        return row["seconds"] - (0.0 if ceiling is None else row["flops"] / ceiling / 1e9)

    slowest = sorted(conv_rows, key=time_lost, reverse=True)[:4]
    table += [f"  its {len(conv_rows)} convolutions, each timed alone at the step's shapes: "
              f"{c['seconds'] * 1e3:.0f} ms "
              f"({c['share_of_step']:.0%} of the step), {_fmt(c['fraction_of_ceiling'], '.2f')} of the {dtype_name} "
              f"ceiling; with all of them at the ceiling the step would reach "
              f"{_fmt(c['step_fraction_with_convolutions_at_ceiling'], '.2f')}",
              "  most time beyond the ceiling: " + ", ".join(
                  f"{r['name']} {tuple(r['input_shape'][1:])} {r['seconds'] * 1e3:.1f} ms "
                  f"({_fmt(r['fraction_of_ceiling'], '.2f')})" for r in slowest)]
    if args.profile:
        split = training_flops_by_category(flops)
        result["profile"] = profile_breakdown(step, PROFILE_ROUNDS, split, ceiling)
        table += profile_table("the step", result["profile"], step_s)
    return result, table


def bench_data(cfg, args, device, done):
    sizes = QUICK_DATA_SIZES if args.quick else DATA_SIZES
    with tempfile.TemporaryDirectory(prefix="jotr_bench_data_") as folder, warnings.catch_warnings():
        # A small set: the generator warns that the occlusion subsets are (nearly) empty, which is fine here.
        warnings.simplefilter("ignore")
        folder = Path(folder)
        generate(folder, seed=args.seed, **sizes)
        body_dir = folder / "body_models"
        smpl = load_smpl(body_dir / "smpl", "neutral")
        j30 = joint_regressor_30(smpl.arrays["J_regressor"], np.load(body_dir / "J_regressor_extra.npy"))
        muco = MuCo(folder, smpl, j30, np.load(body_dir / "J_regressor_h36m_correct.npy"),
                    input_img_shape=cfg.input_img_shape, output_hm_shape=cfg.output_hm_shape,
                    bbox_3d_size=cfg.bbox_3d_size, update_bbox=cfg.update_bbox, augment=True, seed=args.seed,
                    occlusion_prob=cfg.synthetic_occlusion_prob, occlusion_failures=cfg.synthetic_occlusion_failures)
        pw3d = PW3D(folder / "3DPW", "3dpw", input_img_shape=cfg.input_img_shape,
                    output_hm_shape=cfg.output_hm_shape)
        datasets = {"muco": muco, "pw3d": pw3d}
        epochs = itertools.count()

        def one_pass(dataset):
            def call():
                if hasattr(dataset, "set_epoch"):
                    dataset.set_epoch(next(epochs))  # new augmentation draws each pass, as in training
                for index in range(len(dataset)):
                    dataset[index]
            return call

        with one_worker_threads():
            wall, cpu = time_interleaved({name: one_pass(ds) for name, ds in datasets.items()},
                                         args.warmup, args.steps, torch.device("cpu"))
            n_images = QUICK_GENERATOR_IMAGES if args.quick else GENERATOR_IMAGES
            generator = measure_speed(n_images=n_images, seed=args.seed)
    loaders = {name: {"items": len(ds), "pass_s": statistics.median(wall[name]),
                      "samples_per_s": len(ds) / statistics.median(wall[name]),
                      "samples_per_cpu_s": len(ds) / statistics.median(cpu[name]), "all_pass_s": wall[name]}
               for name, ds in datasets.items()}
    result = {**loaders, "generator": dict(generator, images=n_images), "threads": 1,
              "image_size": list(DEFAULT_IMAGE_SIZE), "input_img_shape": list(cfg.input_img_shape),
              "sizes": sizes, "steps": args.steps, "warmup": args.warmup}
    table = [f"data: one worker (1 thread), synthetic {DEFAULT_IMAGE_SIZE[0]}x{DEFAULT_IMAGE_SIZE[1]} images cropped "
             f"to {cfg.input_img_shape[0]}x{cfg.input_img_shape[1]}, median of {args.steps} passes",
             f"  {'':<28}{'items':>7}{'samples/s':>11}{'per cpu s':>11}"]
    for name, title in (("muco", "MuCo training items"), ("pw3d", "3DPW test items")):
        entry = loaders[name]
        table.append(f"  {title:<28}{entry['items']:>7}{entry['samples_per_s']:>11.1f}"
                     f"{entry['samples_per_cpu_s']:>11.1f}")
    table.append(f"  {'synthetic generator (test)':<28}{n_images:>7}{generator['images_per_second']:>11.1f}"
                 f"{generator['images_per_cpu_second']:>11.1f}")
    return result, table


def bench_eval(cfg, args, device, done):
    batch = QUICK_EVAL_BATCH if args.quick else cfg.test_batch_size
    body_model = build_body_model(cfg)
    num_verts = body_model.arrays["v_template"].shape[0]
    h36m = build_h36m_regressor(cfg, num_verts)
    root = build_joint_regressor(cfg, body_model)[0]
    gen = torch.Generator().manual_seed(args.seed)
    pred = (torch.rand(batch, num_verts, 3, generator=gen) - 0.5).to(device)
    gt = (torch.rand(batch, num_verts, 3, generator=gen) - 0.5).to(device) + torch.tensor([0.0, 0.0, 5.0],
                                                                                         device=device)

    def metrics():
        with torch.no_grad():
            mesh_metrics(pred, gt, h36m, root)

    wall, _ = time_interleaved({"mesh_metrics": metrics}, args.warmup, max(args.steps, 5), device)
    median = statistics.median(wall["mesh_metrics"])
    result = {"batch": batch, "vertices": num_verts, "median_s": median, "samples_per_s": batch / median,
              "all_s": wall["mesh_metrics"]}
    table = [f"eval: mesh_metrics on {batch} meshes of {num_verts} vertices, {device}: {median * 1000:.1f} ms, "
             f"{result['samples_per_s']:.0f} samples/s"]
    return result, table


def bench_checkpoint(cfg, args, device, done):
    """Write and read back a resumable training checkpoint of the configured model (main.train.save_training_state:
    model, AdamW moments, loss weights, RNG states) in the folder of --output, i.e. on the disk runs write to."""
    from common.training.checkpoint import read_training_state
    from main.train import numpy_free_rng_state, save_training_state

    torch.manual_seed(args.seed)
    objective = TrainingObjective(build_model(cfg))
    optimizer = build_optimizer(objective, cfg.lr, cfg.lr_backbone, cfg.weight_decay)
    for group in optimizer.param_groups:  # one step on zero gradients: AdamW allocates both moments, as in a run
        for p in group["params"]:
            p.grad = torch.zeros_like(p)
    optimizer.step()
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    folder = Path(args.output).parent
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "bench_checkpoint.pth.tar"
    rng = [numpy_free_rng_state()]
    try:
        calls = {"save": lambda: save_training_state(path, objective, optimizer, scaler, 1, cfg, {}, rng),
                 "load": lambda: read_training_state(path)}
        calls["save"]()  # the file must exist before the first timed load
        wall, _ = time_interleaved(calls, args.warmup, args.steps, torch.device("cpu"))
        size_mb = path.stat().st_size / 2**20
    finally:
        path.unlink(missing_ok=True)
    result = {"path": str(path), "size_mb": size_mb,
              "parameters": sum(p.numel() for p in objective.parameters()),
              "trainable_parameters": sum(p.numel() for p in objective.parameters() if p.requires_grad),
              **{f"{name}_median_s": statistics.median(times) for name, times in wall.items()},
              **{f"{name}_all_s": times for name, times in wall.items()}}
    table = [f"checkpoint: ResNet-{cfg.resnet_type} model, {result['parameters'] / 1e6:.1f} M parameters, "
             f"{size_mb:.0f} MB in {folder}: save {result['save_median_s']:.2f} s, "
             f"load {result['load_median_s']:.2f} s (median)"]
    return result, table


SECTIONS = {"machine": bench_machine, "forward": bench_forward, "train_step": bench_train_step,
            "embedded_step": bench_embedded_step, "data": bench_data, "eval": bench_eval,
            "checkpoint": bench_checkpoint}


# ----------------------------------------------------------------------------------------------------------------------
# Acceptance (the project's speed targets), report, command line

# name, sections needed, value from the stored results (sections, batch), comparison, threshold, description
CRITERIA = (
    ("forward_fp32_fraction_of_ceiling", ("forward",),
     lambda s, b: s["forward"]["paired_fp32_fraction"]["value"], ">=", 0.85,
     "forward, float32, batch {batch}, " + INFERENCE_SWITCHES + ": achieved GFLOP/s / float32 matmul GFLOP/s "
     "(same rounds)"),
    ("forward_bf16_speedup", ("forward",), lambda s, b: s["forward"]["bf16_speedup"]["value"], ">=", 1.6,
     "forward, batch {batch}, " + INFERENCE_SWITCHES + ": bf16 images/s / float32 images/s (median of rounds)"),
    # Not measured (None) where the device has no bf16 products (bf16_products): bf16 is emulated there.
    ("forward_bf16_fraction_of_bf16_ceiling", ("machine", "forward"),
     lambda s, b: _bf16_forward_fraction(s, b) if s["forward"]["bf16_products"] else None, ">=", 0.5,
     "forward, bf16, batch {batch}, " + INFERENCE_SWITCHES + ": achieved GFLOP/s / bf16 matmul GFLOP/s (machine "
     "section; CPUs with AVX-512 BF16 or AMX, and GPUs)"),
    ("train_step_fraction_of_ceiling", ("train_step",),
     lambda s, b: s["train_step"]["paired_fp32_fraction"], ">=", 0.70,
     "train step, float32, batch {batch}, no contrastive: 3 x forward FLOPs x batch / step time / float32 matmul "
     "GFLOP/s (same rounds)"),
    # Not measured (None) where the device has no bf16 products: the section does not time the bf16 step there.
    ("train_step_bf16_fraction_of_bf16_ceiling", ("train_step",),
     lambda s, b: s["train_step"]["bf16"]["paired_fraction"] if s["train_step"]["bf16"] else None, ">=", 0.5,
     "train step, bf16 autocast, batch {batch}, no contrastive: 3 x forward FLOPs x batch / step time / bf16 matmul "
     "GFLOP/s (same rounds; CPUs with AVX-512 BF16 or AMX, and GPUs)"),
    ("contrastive_step_ratio", ("train_step",), lambda s, b: s["train_step"]["ratio"], "<=", 1.15,
     "train step time with the contrastive terms / without (median of rounds)"),
    ("data_worker_vs_train_step", ("train_step", "data"),
     lambda s, b: s["data"]["muco"]["samples_per_s"] / s["train_step"]["images_per_s"], ">=", 2.0,
     "one MuCo loader worker's samples/s / the train step's images/s"),
    # Not measured (None) where the device has no bf16 products (bf16_products): bf16 is emulated there.
    ("embedded_step_fraction_of_ceiling", ("embedded_step",),
     lambda s, b: s["embedded_step"]["paired_fraction"] if s["embedded_step"]["bf16_products"] else None, ">=", 0.5,
     "embedded preset's train step in its amp dtype: 3 x forward FLOPs x batch / step time / matmul GFLOP/s of that "
     "dtype (same rounds; CPUs with AVX-512 BF16 or AMX, and GPUs)"),
)


def _bf16_forward_fraction(sections, batch):
    rows = [r for r in sections["forward"]["rows"]
            if r["batch"] == batch and r["dtype"] == "bfloat16" and r["switches"] == INFERENCE_SWITCHES]
    return rows[0]["fraction_of_bf16_ceiling"] if rows else None


def acceptance(sections, batch):
    """The speed targets (CRITERIA) as a list of {name, criterion, value, op, threshold, pass}; value and pass
    are None when a section the criterion needs did not run or the criterion does not apply here. Values are
    computed from the numbers in `sections`."""
    criteria = []
    for name, needed, value_fn, op, threshold, text in CRITERIA:
        value = value_fn(sections, batch) if all(n in sections for n in needed) else None
        value = None if value is None else float(value)
        passed = None if value is None else (value >= threshold if op == ">=" else value <= threshold)
        criteria.append({"name": name, "criterion": text.format(batch=batch), "value": value, "op": op,
                         "threshold": threshold, "pass": passed})
    return criteria


def acceptance_table(criteria, quick):
    table = ["acceptance" + (" (--quick: small model, not the paper configuration)" if quick else "")]
    for c in criteria:
        status = "not measured" if c["pass"] is None else ("PASS" if c["pass"] else "FAIL")
        table.append(f"  {status:<13}{_fmt(c['value'], '.3f'):>8} {c['op']} {c['threshold']:<5} {c['criterion']}")
    return table


def write_json_atomic(data, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=None, help="batch size (default 8; 2 with --quick)")
    parser.add_argument("--steps", type=int, default=None, help="timed rounds (default 5; 2 with --quick)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed rounds first (default 2; 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="small model and sizes, for smoke tests")
    parser.add_argument("--compile", action="store_true", help="add torch.compile rows to forward (takes minutes)")
    parser.add_argument("--profile", action="store_true",
                        help="also break the forward, the training steps and the embedded step down by kind of work")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads of the math libraries (default: torch's, normally one per core)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, from {list(SECTIONS)}")
    parser.add_argument("--no-reuse-memory", action="store_true",
                        help="let the C library return freed memory to the kernel (config reuse_cpu_memory=false)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="output/bench/bench.json")
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be positive, got {args.threads}")
    defaults = {"batch": (8, 2), "steps": (5, 2), "warmup": (2, 1)}
    for name, (full, quick) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
        if getattr(args, name) < (0 if name == "warmup" else 1):
            parser.error(f"--{name} must be positive, got {getattr(args, name)}")
    sections = [s for s in args.sections.split(",") if s]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown or not sections:
        parser.error(f"--sections: unknown {unknown}; choose from {list(SECTIONS)}")
    args.sections = [s for s in SECTIONS if s in sections]
    return args


def main(argv=None):
    args = parse_args(argv)
    device = resolve_device(args.device)
    # Denormals flushed; freed memory kept for reuse unless --no-reuse-memory (common.speed.setup_cpu_process).
    reuse_memory = setup_cpu_process(not args.no_reuse_memory)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cpu = machine_kind()
    print(f"cpu: {cpu['summary']}", flush=True)
    report = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "device": str(device),
              "torch": torch.__version__, "threads": torch.get_num_threads(),
              "reuse_cpu_memory": reuse_memory, "machine": platform.machine(), "cpu": cpu,
              "quick": args.quick, "batch": args.batch, "steps": args.steps, "warmup": args.warmup,
              "compile": args.compile, "profile": args.profile, "sections": {}}
    with tempfile.TemporaryDirectory(prefix="jotr_bench_") as folder:
        write_body_model_files(random_body_model(), Path(folder))
        cfg = bench_config(Path(folder), args.quick)
        for name in args.sections:
            start = time.perf_counter()
            result, table = SECTIONS[name](cfg, args, device, report["sections"])
            report["sections"][name] = dict(result, section_s=time.perf_counter() - start)
            print("\n".join(table), flush=True)
    report["acceptance"] = acceptance(report["sections"], args.batch)
    print("\n".join(acceptance_table(report["acceptance"], args.quick)))
    write_json_atomic(report, args.output)
    print(f"wrote {args.output}")
    return report


if __name__ == "__main__":
    run_entry_point(main)
