"""Speed benchmarks on the current device, on random inputs (no dataset, no real body model needed).

    python -m tools.bench [--batch 8] [--steps 5] [--warmup 2] [--device auto] [--quick] [--sections train_step]

Sections (one function each in SECTIONS; add new ones there, e.g. forward GFLOP/s, bf16, data loading):
  train_step  one training step -- train-mode forward, supervised losses, AutomaticWeightedLoss, backward, AdamW
              step -- of the paper configuration (ResNet-50, float32), without and with the two contrastive terms
              at the config's sampling counts; reports the median step time of each and their ratio, plus the
              contrastive losses' own forward + backward time.

The body model is the parity fixture's random SMPL-layout model (tools/parity_fixture.py), written to a
temporary directory, so the benchmark runs anywhere. `--quick` uses a small model (ResNet-18, narrow
transformer) for smoke tests. Results are printed as a table and written atomically to output/bench/bench.json.
"""
import argparse
import dataclasses
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from common.losses import SUPERVISED_KEYS, AutomaticWeightedLoss, JointContrastiveLoss, supervised_losses
from main.build import build_model, resolve_device
from main.config import Config
from tools.check_parity import write_body_model_files
from tools.parity_fixture import body_model as random_body_model

QUICK_MODEL = {"resnet_type": 18, "hidden_dim": 64, "nheads": 4, "dim_feedforward": 128,
               "voxel_dim_feedforward": 128, "enc_layers": 1, "dec_layers": 2}


def bench_config(body_model_dir, quick):
    cfg = dataclasses.replace(Config(), smpl_dir=str(body_model_dir / "smpl"),
                              j_regressor_extra_path=str(body_model_dir / "J_regressor_extra.npy"),
                              j_regressor_h36m_path=str(body_model_dir / "J_regressor_h36m_correct.npy"))
    return dataclasses.replace(cfg, **QUICK_MODEL) if quick else cfg


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


def optimizer_for(cfg, model, awl):
    """AdamW with the official groups (spec 4.2): backbone, the rest of the model, and the AWL vector (no decay)."""
    backbone = [p for n, p in model.named_parameters() if n.startswith("backbone.") and p.requires_grad]
    rest = [p for n, p in model.named_parameters() if not n.startswith("backbone.") and p.requires_grad]
    return torch.optim.AdamW([
        {"params": backbone, "lr": cfg.lr_backbone, "weight_decay": cfg.weight_decay},
        {"params": rest, "lr": cfg.lr, "weight_decay": cfg.weight_decay},
        {"params": awl.parameters(), "lr": cfg.lr, "weight_decay": 0.0},
    ], betas=(0.9, 0.999), eps=1e-8)


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


def bench_train_step(cfg, args, device):
    model = build_model(cfg).to(device).train()
    awl = AutomaticWeightedLoss(SUPERVISED_KEYS).to(device)
    optimizer = optimizer_for(cfg, model, awl)
    contrastive = JointContrastiveLoss(cfg.intra_anchors, cfg.intra_positives, cfg.intra_negatives, cfg.inter_anchors,
                                       cfg.inter_positives, cfg.inter_negatives, cfg.nce_temperature,
                                       cfg.output_hm_shape)
    data_gen = torch.Generator().manual_seed(args.seed)
    nce_gen = torch.Generator().manual_seed(args.seed)
    inputs, targets, meta = random_batch(cfg, args.batch, device, data_gen)

    def step(with_contrastive):
        out = model(inputs["img"], inputs["joints"], inputs["joints_mask"])
        total, _ = awl(supervised_losses(out, targets, meta, cfg.output_hm_shape))
        if with_contrastive:
            nce = contrastive.forward_batch(out, targets, meta, nce_gen)
            total = total + cfg.intra_weight * nce["intra_nce"] + cfg.inter_weight * nce["inter_nce"]
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()

    # The contrastive terms alone (forward + backward) on fixed model outputs.
    with torch.no_grad():
        out = model(inputs["img"], inputs["joints"], inputs["joints_mask"])
    loss_inputs = {k: out[k].detach().requires_grad_(True) for k in ("voxel_feat", "joint_img", "depth_exponent")}

    def contrastive_only():
        nce = contrastive.forward_batch(loss_inputs, targets, meta, nce_gen)
        (nce["intra_nce"] + nce["inter_nce"]).backward()

    for _ in range(args.warmup):
        step(with_contrastive=False)
        step(with_contrastive=True)
        contrastive_only()
    # Interleaved, alternating the order, so that load from other processes affects both variants alike.
    pairs = []  # (without, with), each (wall s, cpu s)
    for i in range(args.steps):
        order = (False, True) if i % 2 == 0 else (True, False)
        times = {variant: timed(lambda v=variant: step(v), device) for variant in order}
        pairs.append((times[False], times[True]))
    loss_only = [timed(contrastive_only, device)[0] for _ in range(max(args.steps, 5))]

    def summary(clock):
        without = [p[0][clock] for p in pairs]
        with_nce = [p[1][clock] for p in pairs]
        # The ratio is the median over adjacent (without, with) pairs: on a shared machine the load changes
        # between pairs far more than within one, so pairing cancels most of it.
        return {"without": statistics.median(without), "with": statistics.median(with_nce),
                "min_without": min(without), "min_with": min(with_nce),
                "ratio": statistics.median(b / a for a, b in zip(without, with_nce)),
                "all_without": without, "all_with": with_nce}

    wall, cpu = summary(0), summary(1)
    result = {
        "model": {"resnet_type": cfg.resnet_type, "hidden_dim": cfg.hidden_dim, "enc_layers": cfg.enc_layers,
                  "dec_layers": cfg.dec_layers, "input_img_shape": list(cfg.input_img_shape)},
        "batch": args.batch, "dtype": "float32", "steps": args.steps, "warmup": args.warmup,
        "counts": {"intra": [cfg.intra_anchors, cfg.intra_positives, cfg.intra_negatives],
                   "inter": [cfg.inter_anchors, cfg.inter_positives, cfg.inter_negatives]},
        "ratio": wall["ratio"], "wall_s": wall, "cpu_s": cpu, "contrastive_loss_only_s": statistics.median(loss_only),
    }
    table = [
        f"train_step: ResNet-{cfg.resnet_type}, batch {args.batch}, float32, {device}, {args.steps} step pairs",
        f"  {'':<26}{'wall median':>12}{'wall min':>10}{'cpu median':>12}",
        f"  {'supervised + AWL':<26}{wall['without']:>12.3f}{wall['min_without']:>10.3f}{cpu['without']:>12.3f}",
        f"  {'+ contrastive':<26}{wall['with']:>12.3f}{wall['min_with']:>10.3f}{cpu['with']:>12.3f}",
        f"  {'ratio (median of pairs)':<26}{wall['ratio']:>12.3f}{'':>10}{cpu['ratio']:>12.3f}",
        f"  contrastive losses alone, forward + backward: {result['contrastive_loss_only_s'] * 1000:.1f} ms",
    ]
    return result, table


SECTIONS = {"train_step": bench_train_step}


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
    parser.add_argument("--steps", type=int, default=None, help="timed step pairs (default 5; 2 with --quick)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 2; 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="small model, for smoke tests")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, from {list(SECTIONS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="output/bench/bench.json")
    args = parser.parse_args(argv)
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
    args.sections = sections
    return args


def main(argv=None):
    args = parse_args(argv)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    report = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "device": str(device),
              "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
              "quick": args.quick, "sections": {}}
    with tempfile.TemporaryDirectory(prefix="jotr_bench_") as folder:
        write_body_model_files(random_body_model(), Path(folder))
        cfg = bench_config(Path(folder), args.quick)
        for name in args.sections:
            result, table = SECTIONS[name](cfg, args, device)
            report["sections"][name] = result
            print("\n".join(table))
    write_json_atomic(report, args.output)
    print(f"wrote {args.output}")
    return report


if __name__ == "__main__":
    main()
