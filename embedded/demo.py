"""The whole pipeline on the embedded default, on any machine (`make demo`):

1. the procedural mannequin body model and a synthetic occluded-people benchmark, written in the real 3DPW, MuCo
   and MSCOCO formats (output/synthetic; reused when it already exists);
2. training of a CPU-sized JOTR (main/configs/embedded.yaml: ResNet-10, 96x96 crops, direct 6D pose head) with
   the real training code (output/embedded; an existing finished run is reused, an interrupted one resumed);
3. evaluation on the synthetic 3DPW-style test sets (all, object-occluded, person-occluded, crowd) with the real
   evaluation code, beside a trivial baseline (the mean training pose and shape at the detected 2D root), and the
   blanked-image ablation: the same checkpoint evaluated with every crop replaced by one constant colour
   (BlankedImage), which shows how much the model's accuracy comes from the image rather than the input 2D pose;
4. overlay PNGs of test images (output/embedded/overlays/) drawn by the demo.

output/embedded/results.json: {"test_sets": {name: {"model", "baseline", "model_blanked_image": {mpjpe, pa_mpjpe,
mpvpe (mm), n}}}, "ratios_to_baseline": {name: {"mpjpe", "pa_mpjpe": model / baseline}}, "target_ratios": what
those ratios should reach (TARGET_RATIOS), "image_use": {"gate": the image gate after training (None without one),
"blanked_image": what blanking means, "blanked_fill_rgb"}, "machine": the CPU (common.speed.machine_kind),
"timing": {"stage_seconds": wall time of each stage above (the venv's installation by `make` is not included),
"total_seconds"}}.

    python -m embedded.demo [--force] [--detector-failures] [key=value ...]  (overrides apply to training)
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from common.errors import run_entry_point
from common.evaluation.metrics import METRIC_NAMES, write_results_json
from common.speed import inference_model, machine_kind, setup_cpu_process
from common.training.checkpoint import load_checkpoint
from common.training.distributed import DistInfo
from common.training.engine import evaluate
from data.keypoints_io import read_keypoint_file
from embedded.baseline import MeanPoseBaseline, mean_smpl_params
from embedded.generate import generate
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
# What the embedded model should reach on every test subset, as fractions of the mean-pose baseline's errors.
TARGET_RATIOS = {"mpjpe": 0.55, "pa_mpjpe": 0.85}
BLANK_COLOUR_IMAGES = 200  # training images whose mean colour fills the blanked crops
BLANKED_IMAGE = "every pixel of every input crop set to the mean RGB colour of the training images"


class BlankedImage(nn.Module):
    """A JOTR model whose image input is replaced by one constant colour, `fill` (3,) RGB in [0, 1], at every pixel
    of every crop; the input 2D pose and everything else are unchanged. A constant image carries no information
    about the person; filling it with the training images' mean colour (rather than black) keeps the input at the
    level the network's first layers were trained on, so what the ablation removes is the information, not the
    brightness."""

    def __init__(self, model, fill):
        super().__init__()
        self.model = model
        self.joint_regressor = model.joint_regressor  # common.training.engine.evaluate reads the root regressor here
        self.register_buffer("fill", torch.as_tensor(fill, dtype=torch.float32).reshape(1, 3, 1, 1))

    def forward(self, img, joints, joints_mask, bbox=None):
        return self.model(self.fill.to(img.dtype).expand_as(img), joints, joints_mask, bbox=bbox)


def mean_training_colour(data_dir, max_images=BLANK_COLOUR_IMAGES):
    """Mean RGB in [0, 1] of the first `max_images` images of the MuCo-format training split (MuCo-3DHP.json)."""
    muco = Path(data_dir) / "MuCo"
    files = [img["file_name"] for img in json.loads((muco / "MuCo-3DHP.json").read_text())["images"][:max_images]]
    means = []
    for name in files:
        image = cv2.imread(str(muco / name))
        if image is None:
            raise FileNotFoundError(f"cannot read training image {muco / name} (listed in {muco / 'MuCo-3DHP.json'}); "
                                    f"regenerate the data with --force")
        means.append(image.reshape(-1, 3).mean(0)[::-1] / 255.0)  # BGR -> RGB
    return np.mean(means, axis=0)


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


def ratios_to_baseline(results):
    """{test set: {metric: model / baseline}} for the TARGET_RATIOS metrics."""
    return {name: {metric: entry["model"][metric] / entry["baseline"][metric] for metric in TARGET_RATIOS}
            for name, entry in results.items()}


def format_comparison(results):
    lines = [f"{'test set':<12}{'n':>6}  " + "  ".join(f"{m:>25}" for m in ("MPJPE", "PA-MPJPE", "MPVPE"))
             + "   (model / blanked image / baseline, mm)"]
    for name, entry in results.items():
        cells = [f"{entry['model'][m]:7.1f} / {entry['model_blanked_image'][m]:7.1f} / {entry['baseline'][m]:7.1f}"
                 for m in METRIC_NAMES]
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
                             device=device, progress=False, fast_inference=cfg.fast_inference)
        written += [s["overlay"] for s in summaries]
    return written


def embedded_config(overrides):
    """The preset with the user's overrides. Its body-model paths follow data_dir (the config's default
    {data_dir}/body_models/...), where the generator writes the mannequin."""
    return lambda *extra: load_config(PRESET, [*overrides, *extra])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true", help="regenerate the data and retrain from scratch")
    parser.add_argument("--detector-failures", action="store_true",
                        help="test input poses fail under occlusion as detectors do "
                             "(embedded.detections.occlusion_failures)")
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
    start = time.perf_counter()
    stage_seconds = {}
    setup_cpu_process(cfg.reuse_cpu_memory)
    device = resolve_device(cfg.device)
    machine = machine_kind()
    log(f"machine: {machine['summary']}")

    sizes = {split: getattr(args, split) for split in SYNTHETIC}
    log(f"1/4 synthetic benchmark in {cfg.data_dir} (mannequin body model, {sizes}"
        f"{', detector failures under occlusion' if args.detector_failures else ''})")
    stage_start = time.perf_counter()
    generate(cfg.data_dir, seed=cfg.seed, force=args.force, log=log, workers=os.cpu_count() or 1,
             detector_failures=args.detector_failures, **sizes)
    stage_seconds["data_generation"] = time.perf_counter() - stage_start

    run_dir = Path(cfg.output_dir) / cfg.exp_name
    last = run_dir / "checkpoint" / "last.pth.tar"
    train_cfg = config("testsets=[]")  # evaluation happens below, beside the baseline
    stage_start = time.perf_counter()
    if finished_run(train_cfg, last) and not args.force:
        log(f"2/4 training: reusing the finished run {last}")
    else:
        resume = [] if args.force or not last.is_file() else [f"resume={last}"]
        how = f"resuming {last}" if resume else "from scratch"
        log(f"2/4 training {cfg.total_steps} steps on {device} ({how})")
        result = train(config("testsets=[]", *resume))
        if result.exit_code:
            return result.exit_code
    stage_seconds["training"] = time.perf_counter() - stage_start

    log("3/4 evaluation on the synthetic test sets")
    stage_start = time.perf_counter()
    body_model = build_body_model(cfg).to(device)
    model = build_model(cfg, body_model=body_model).to(device)
    load_checkpoint(model, last)
    gate = model.pose2feat.image_gate
    gate = None if gate is None else gate.item()
    if gate is not None:
        log(f"image gate after training: {gate:+.4f} (the image features enter Pose2Feat times this; "
            "it starts at 0)")
    model = inference_model(model, fuse=cfg.fast_inference)  # folded once for every test set and the overlays
    fill = mean_training_colour(cfg.data_dir)
    blanked = BlankedImage(model, fill).to(device).eval()
    baseline = training_baseline(cfg, body_model, build_joint_regressor(cfg, body_model)).to(device)
    smpl_by_gender = build_gendered_body_models(cfg, device)
    world = DistInfo(device=device)
    results = {}
    networks = (("model", model), ("baseline", baseline), ("model_blanked_image", blanked))
    evaluation_seconds = dict.fromkeys((label for label, _ in networks), 0.0)
    for name, test_set in build_test_sets(cfg, world, body_model.arrays["v_template"].shape[0]).items():
        scores = {}
        for label, net in networks:
            label_start = time.perf_counter()
            summary, _ = evaluate(net, test_set.loader, smpl_by_gender=smpl_by_gender,
                                  h36m_regressor=test_set.h36m_regressor, device=device,
                                  expected_count=test_set.size, desc=f"{name} {label}", amp=cfg.amp,
                                  fast_inference=cfg.fast_inference)
            scores[label] = {k: float(v) if k != "n" else int(v) for k, v in summary.items()}
            evaluation_seconds[label] += time.perf_counter() - label_start
        results[name] = scores
    stage_seconds["evaluation"] = evaluation_seconds["model"] + evaluation_seconds["baseline"]
    stage_seconds["blanked_image_evaluation"] = evaluation_seconds["model_blanked_image"]
    stage_seconds["evaluation_setup"] = time.perf_counter() - stage_start - sum(evaluation_seconds.values())
    save_config(cfg, run_dir / "results_config.yaml")
    print(format_comparison(results))

    log("4/4 overlays of occluded test images")
    stage_start = time.perf_counter()
    overlays = draw_overlays(model, cfg, run_dir / "overlays", device)
    stage_seconds["overlays"] = time.perf_counter() - stage_start
    total = time.perf_counter() - start
    write_results_json(run_dir / "results.json", {
        "test_sets": results,
        "ratios_to_baseline": ratios_to_baseline(results), "target_ratios": TARGET_RATIOS,
        "image_use": {"gate": gate, "blanked_image": BLANKED_IMAGE, "blanked_fill_rgb": [float(c) for c in fill]},
        "machine": machine, "timing": {"stage_seconds": stage_seconds, "total_seconds": total}})
    log("wall time per stage: " + ", ".join(f"{k} {v:.0f} s" for k, v in stage_seconds.items())
        + f"; total {total / 60:.1f} min on {machine['summary']}")
    log(f"done: {run_dir / 'results.json'}, {len(overlays)} overlays in {run_dir / 'overlays'}")
    for name, ratios in ratios_to_baseline(results).items():
        missed = [f"{metric} {value:.3f} > {TARGET_RATIOS[metric]}" for metric, value in ratios.items()
                  if value > TARGET_RATIOS[metric]]
        log(f"{name}: model / baseline " + ", ".join(f"{m} {v:.3f}" for m, v in ratios.items())
            + (f" (target missed: {'; '.join(missed)})" if missed else " (targets met)"))
    return 0


if __name__ == "__main__":
    run_entry_point(main)
