"""Evaluate JOTR on the 3DPW test sets (spec 6) and print the results beside the paper's.

    python -m main.test --ckpt checkpoint/3dpw-oc_best_ckpt.pth.tar testsets=[3dpw-oc]
    python -m main.test --ckpt-dir checkpoint          # each test set with its own <testset>_best_ckpt.pth.tar
    torchrun --nproc_per_node N -m main.test ...       # every sample is still evaluated exactly once

Accepts official checkpoints (raw state_dict or snapshot) and our own. Writes the results as JSON
(output/<exp_name>/eval/results.json unless --out is given), every person's metrics beside it as
<testset>_samples.csv, and prints one table.
"""
import argparse
from pathlib import Path

import yaml

from common.errors import run_entry_point
from common.evaluation.metrics import format_table, write_results_json, write_samples_csv
from common.speed import inference_model, setup_cpu_process
from common.training.checkpoint import load_checkpoint
from common.training.distributed import cleanup_distributed, init_distributed
from common.training.engine import evaluate
from main.build import (
    build_body_model,
    build_gendered_body_models,
    build_model,
    build_test_sets,
    resolve_device,
)
from main.config import add_config_args, config_from_args
from main.preflight import check_test_files

PAPER_NUMBERS = Path(__file__).resolve().parent / "paper_numbers.yaml"


def paper_numbers():
    """{test set: {'mpjpe', 'pa_mpjpe', 'mpvpe'}} as published (sets without a confirmed number are left out)."""
    return {k: v for k, v in yaml.safe_load(PAPER_NUMBERS.read_text()).items() if v}


def checkpoint_for(name, args):
    if args.ckpt:
        return Path(args.ckpt)
    return Path(args.ckpt_dir) / f"{name}_best_ckpt.pth.tar"


def run(cfg, args):
    setup_cpu_process(cfg.reuse_cpu_memory)
    world = init_distributed(resolve_device(cfg.device))
    body_model = build_body_model(cfg)
    model = build_model(cfg, body_model=body_model).to(world.device)
    test_sets = build_test_sets(cfg, world, body_model.arrays["v_template"].shape[0])
    smpl_by_gender = build_gendered_body_models(cfg, world.device)
    results, per_person, loaded = {}, {}, None
    for name, test_set in test_sets.items():
        path = checkpoint_for(name, args)
        if path != loaded:
            load_checkpoint(model, path)
            # Folded once per checkpoint, not per test set.
            net = inference_model(model, cfg.compile, fuse=cfg.fast_inference)
            loaded = path
        results[name], _, per_person[name] = evaluate(
            net, test_set.loader, smpl_by_gender=smpl_by_gender, h36m_regressor=test_set.h36m_regressor,
            device=world.device, amp=cfg.amp, fast_inference=cfg.fast_inference, expected_count=test_set.size,
            progress=world.is_main,
            desc=f"eval {name}", return_per_sample=True)
        results[name].update(test_set.loader.dataset.report(), checkpoint=str(path))
    if world.is_main:
        out = Path(args.out) if args.out else Path(cfg.output_dir) / cfg.exp_name / "eval" / "results.json"
        write_results_json(out, results)
        for name, per_sample in per_person.items():
            write_samples_csv(out.parent / f"{name}_samples.csv", per_sample, test_sets[name].loader.dataset.describe)
        print(format_table(results, paper_numbers()))
        print(f"results written to {out}")
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", help="one checkpoint for every test set")
    source.add_argument("--ckpt-dir", help="folder with <testset>_best_ckpt.pth.tar per test set")
    parser.add_argument("--out", help="results JSON (default output/<exp_name>/eval/results.json)")
    add_config_args(parser)
    args = parser.parse_intermixed_args(argv)
    cfg = config_from_args(args)
    check_test_files(cfg, [checkpoint_for(name, args) for name in cfg.testsets])  # all that is missing, at once
    try:
        run(cfg, args)
    except BaseException:
        cleanup_distributed(graceful=False)
        raise
    cleanup_distributed()
    return 0


if __name__ == "__main__":
    run_entry_point(main)
