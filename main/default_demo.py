"""The whole pipeline on the embedded default, on any machine (`make demo`):

1. the procedural mannequin body model and a synthetic occluded-people benchmark, written in the real 3DPW and
   MuCo formats (output/synthetic; reused when it already exists);
2. training of a CPU-sized JOTR (main/configs/embedded.yaml: ResNet-18, 128x128 crops, direct 6D pose head) with
   the real training code (output/embedded; an existing finished run is reused, an interrupted one resumed);
3. evaluation on the synthetic 3DPW-style test sets (all, object-occluded, person-occluded, crowd) with the real
   evaluation code, beside a trivial baseline (the mean training pose and shape at the detected 2D root);
4. output/embedded/results.json and overlay PNGs of test images (output/embedded/overlays/) drawn by the demo.

    python -m main.default_demo [--force] [key=value ...]      (overrides apply to the training config)
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from common.baseline import MeanPoseBaseline, mean_smpl_params
from common.checkpoint import load_checkpoint
from common.distributed import DistInfo
from common.engine import evaluate
from common.errors import run_entry_point
from common.metrics import METRIC_NAMES, write_results_json
from common.speed import inference_model, setup_cpu_process
from data.keypoints_io import read_keypoint_file
from data.synthetic import generate
from main.build import (
    build_body_model,
    build_gendered_body_models,
    build_joint_regressor,
    build_model,
    build_test_sets,
    resolve_device,
)
from main.config import ConfigError, load_config, save_config
from main.demo import Frame, people_from_keypoint_file, read_image, run_demo
from main.train import train

PRESET = "embedded"
# Benchmark size: enough test people per subset for stable means, small enough to generate in about a minute.
SYNTHETIC = {"n_train": 1500, "n_test": 300, "n_crowd": 60}
OVERLAY_IMAGES = {"3DPW_oc.json": 3, "3DPW_pc.json": 3}  # test images to draw, from the occluded subsets
MAX_RATIO_TO_BASELINE = 0.7  # the model's MPJPE must be at most this fraction of the baseline's (issue 4)


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def finished_run(cfg, checkpoint):
    """True when `checkpoint` holds a finished training run of this very configuration."""
    if not checkpoint.is_file():
        return False
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)

    def comparable(config):
        return {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in config.items()
                if k not in ("resume", "init_ckpt")}

    return comparable(state.get("config", {})) == comparable(vars(cfg)) and state.get("step") == cfg.total_steps


def training_baseline(cfg, body_model, joint_regressor):
    """The mean pose and shape of the training split's SMPL fits (MuCo format: smpl_param.json)."""
    fits = json.loads((Path(cfg.data_dir) / "MuCo" / "smpl_param.json").read_text())
    poses = torch.tensor([f["pose"] for f in fits.values()])
    shapes = torch.tensor([f["shape"] for f in fits.values()])
    mean_pose, mean_shape = mean_smpl_params(poses, shapes)
    return MeanPoseBaseline(body_model, joint_regressor, mean_pose, mean_shape, focal=cfg.focal,
                            princpt=cfg.princpt, input_img_shape=cfg.input_img_shape,
                            output_hm_shape=cfg.output_hm_shape)


def format_comparison(results):
    lines = [f"{'test set':<12}{'n':>6}  " + "  ".join(f"{m:>17}" for m in ("MPJPE", "PA-MPJPE", "MPVPE"))
             + "   (model / baseline, mm)"]
    for name, entry in results.items():
        cells = [f"{entry['model'][m]:7.1f} / {entry['baseline'][m]:7.1f}" for m in METRIC_NAMES]
        lines.append(f"{name:<12}{entry['model']['n']:>6}  " + "  ".join(cells))
    return "\n".join(lines)


def draw_overlays(model, cfg, out_dir, device):
    """Run the demo (keypoint-file path) on a few occluded test images; returns the written overlay paths."""
    pw3d = Path(cfg.data_dir) / "3DPW"
    written = []
    for ann_file, count in OVERLAY_IMAGES.items():
        annotations = json.loads((pw3d / ann_file).read_text())
        keypoints = read_keypoint_file(pw3d / ann_file)
        images = annotations["images"][:count]
        frames = [Frame(name=img["file_name"],
                        image=read_image(pw3d / "imageFiles" / img["sequence"] / img["file_name"]))
                  for img in images]
        summaries = run_demo(model, frames, people_from_keypoint_file(keypoints), out_dir / ann_file.split(".")[0],
                             device=device, progress=False)
        written += [s["overlay"] for s in summaries]
    return written


def embedded_config(overrides):
    """The preset with the user's overrides; the body-model files always come from <data_dir>/body_models, where
    the generator writes the mannequin."""
    data_dir = Path(load_config(PRESET, overrides).data_dir)
    body = data_dir / "body_models"
    derived = [f"smpl_dir={body / 'smpl'}", f"j_regressor_extra_path={body / 'J_regressor_extra.npy'}",
               f"j_regressor_h36m_path={body / 'J_regressor_h36m_correct.npy'}"]
    return lambda *extra: load_config(PRESET, [*derived, *overrides, *extra])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true", help="regenerate the data and retrain from scratch")
    for split, size in SYNTHETIC.items():
        parser.add_argument(f"--{split.replace('_', '-')}", type=int, default=size,
                            help=f"synthetic {split[2:]} images (default {size})")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of main/configs/embedded.yaml")
    args = parser.parse_args(argv)
    try:
        config = embedded_config(args.overrides)
        cfg = config()
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    start = time.time()
    setup_cpu_process(cfg.reuse_cpu_memory)
    device = resolve_device(cfg.device)

    sizes = {split: getattr(args, split) for split in SYNTHETIC}
    log(f"1/4 synthetic benchmark in {cfg.data_dir} (mannequin body model, {sizes})")
    generate(cfg.data_dir, seed=cfg.seed, force=args.force, log=log, workers=os.cpu_count() or 1, **sizes)

    run_dir = Path(cfg.output_dir) / cfg.exp_name
    last = run_dir / "checkpoint" / "last.pth.tar"
    train_cfg = config("testsets=[]")  # evaluation happens below, beside the baseline
    if finished_run(train_cfg, last) and not args.force:
        log(f"2/4 training: reusing the finished run {last}")
    else:
        resume = [] if args.force or not last.is_file() else [f"resume={last}"]
        how = f"resuming {last}" if resume else "from scratch"
        log(f"2/4 training {cfg.total_steps} steps on {device} ({how})")
        result = train(config("testsets=[]", *resume))
        if result.exit_code:
            return result.exit_code

    log("3/4 evaluation on the synthetic test sets")
    body_model = build_body_model(cfg).to(device)
    model = build_model(cfg, body_model=body_model).to(device)
    load_checkpoint(model, last)
    gate = model.pose2feat.image_gate
    if gate is not None:
        log(f"image gate after training: {gate.item():+.4f} (the image features enter Pose2Feat times this; "
            "it starts at 0)")
    model = inference_model(model)  # folded once for every test set and the overlays
    baseline = training_baseline(cfg, body_model, build_joint_regressor(cfg, body_model)).to(device)
    smpl_by_gender = build_gendered_body_models(cfg, device)
    world = DistInfo(device=device)
    results = {}
    for name, test_set in build_test_sets(cfg, world, body_model.arrays["v_template"].shape[0]).items():
        scores = {}
        for label, net in (("model", model), ("baseline", baseline)):
            scores[label], _ = evaluate(net, test_set.loader, smpl_by_gender=smpl_by_gender,
                                        h36m_regressor=test_set.h36m_regressor, device=device,
                                        expected_count=test_set.size, desc=f"{name} {label}", amp=cfg.amp)
        results[name] = scores
    write_results_json(run_dir / "results.json", results)
    save_config(cfg, run_dir / "results_config.yaml")
    print(format_comparison(results))

    log("4/4 overlays of occluded test images")
    overlays = draw_overlays(model, cfg, run_dir / "overlays", device)
    log(f"done in {(time.time() - start) / 60:.1f} min: {run_dir / 'results.json'}, {len(overlays)} overlays in "
        f"{run_dir / 'overlays'}")
    worse = [n for n, r in results.items() if r["model"]["mpjpe"] > MAX_RATIO_TO_BASELINE * r["baseline"]["mpjpe"]]
    if worse:
        log(f"note: on {', '.join(worse)} the model's MPJPE is above {MAX_RATIO_TO_BASELINE} x the baseline's")
    return 0


if __name__ == "__main__":
    run_entry_point(main)
