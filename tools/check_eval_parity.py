"""Checks that this project's 3DPW evaluation computes what the official JOTR evaluation computes.

    python tools/check_eval_parity.py --fixture tests/fixtures/eval_parity

A fixture (format: its README.md) is a tiny 3DPW tree in the official format plus what the official code computed
on it (expected.json, expected_inputs.npz). This tool
1. regenerates the fixture's body models and official-layout checkpoint with the fixture's own generator
   (make_eval_fixture.py `materialize`) and checks their content hashes;
2. runs the project's evaluation entry, main.test.run (the code behind `python -m main.test`), on the tree: the
   sets 3dpw, 3dpw-oc, 3dpw-pc and 3dpw-crowd with crowd_pose_source=higherhrnet (the fixture's `3dpw-crowd`, the
   official code's intent), then 3dpw-crowd with the default crowd_pose_source=openpose (the fixture's
   `3dpw-crowd@official_train_order`, what the official evaluation computed), and reads back the per-person CSV and
   the results JSON it writes;
3. builds the same test sets and model with the same builders and compares the loader outputs (sample selection and
   order, pose source, input joints, mask, crop box, img2bb, crop pixels), the ground-truth and predicted H36M
   joints and the predicted meshes with the official ones.
Every check prints PASS or FAIL with its largest difference and tolerance (the fixture's README gives the
tolerances and why); the exit status is 1 if any check fails. float32 on the CPU.
"""
import argparse
import csv
import importlib.util
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from common.body.body_model import gendered_meshes
from common.speed import inference_model
from common.training.checkpoint import load_checkpoint
from common.training.engine import to_device
from data.registry import build_test_dataset
from main.build import build_body_model, build_gendered_body_models, build_h36m_regressor, build_model
from main.config import load_config
from main.test import run as run_evaluation

REPO = Path(__file__).resolve().parent.parent
# The fixture's variants: (test set, crowd_pose_source).
VARIANTS = {
    "3dpw": ("3dpw", "higherhrnet"),
    "3dpw-oc": ("3dpw-oc", "higherhrnet"),
    "3dpw-pc": ("3dpw-pc", "higherhrnet"),
    "3dpw-crowd": ("3dpw-crowd", "higherhrnet"),
    "3dpw-crowd@official_train_order": ("3dpw-crowd", "openpose"),
}
# Tolerances of the fixture README (maximum absolute difference); (absolute, relative) where they scale with |value|.
TOL = {"joints_xy": (1e-3, 1e-5), "joints_conf": 1e-6, "bbox": 1e-2, "img2bb": (1e-3, 1e-5), "img": 5e-4,
       "gt_h36m": 1e-4, "gt_root": 1e-4, "pred_mesh": 1e-4, "pred_h36m": 1e-4, "per_person_mm": 0.005,
       "mean_mm": 0.002}
METRICS = ("mpjpe", "pa_mpjpe", "mpvpe")


class Report:
    def __init__(self):
        self.failures = 0

    def check(self, variant, what, ok, detail):
        self.failures += not ok
        print(f"{'PASS' if ok else 'FAIL'}  {variant:<32}  {what:<24}  {detail}", flush=True)

    def close(self, variant, what, ours, theirs, tol):
        """Max |ours - theirs| against an absolute tolerance or (abs, rel): |d| <= abs + rel * |theirs|."""
        ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
        if ours.shape != theirs.shape:
            return self.check(variant, what, False, f"shape {ours.shape}, expected {theirs.shape}")
        err = np.abs(ours - theirs)
        bound = tol if np.isscalar(tol) else tol[0] + tol[1] * np.abs(theirs)
        worst = float(err.max()) if err.size else 0.0
        tol_text = f"{tol:g}" if np.isscalar(tol) else f"{tol[0]:g} + {tol[1]:g}*|v|"
        self.check(variant, what, bool((err <= bound).all()), f"max abs diff {worst:.3g} (tolerance {tol_text})")


def load_generator(fixture):
    spec = importlib.util.spec_from_file_location("make_eval_fixture", fixture / "make_eval_fixture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def materialize(fixture, out, parity_dir, report):
    """Body models and checkpoint of the fixture into `out`, by the fixture's generator; hashes checked."""
    meta = json.loads((fixture / "fixture.json").read_text())
    _, hashes = load_generator(fixture).materialize(str(out), meta["seed"], meta["salt"], str(parity_dir))
    bad = sorted(k for k, v in hashes.items() if meta["content_hashes"].get(k) != v)
    report.check("fixture", "content hashes", not bad, f"mismatch: {bad}" if bad else
                 f"{len(hashes)} regenerated files match fixture.json")


def config(fixture, models, testsets, crowd_pose_source, out_dir):
    return load_config(overrides=[
        f"data_dir={fixture / 'data'}", f"smpl_dir={models / 'body_models' / 'smpl'}",
        f"j_regressor_extra_path={models / 'body_models' / 'J_regressor_extra.npy'}",
        f"j_regressor_h36m_path={models / 'body_models' / 'J_regressor_h36m_correct.npy'}",
        "device=cpu", "num_thread=0", "amp=off", "compile=false", f"testsets=[{','.join(testsets)}]",
        f"crowd_pose_source={crowd_pose_source}", f"output_dir={out_dir}"])


def evaluation_entry(fixture, models, checkpoint, out_dir, variants):
    """{variant: (summary, [CSV rows])} from main.test.run, one run per crowd_pose_source."""
    results = {}
    for source in ("higherhrnet", "openpose"):
        variants_of_source = [v for v in variants if VARIANTS[v][1] == source]
        if not variants_of_source:
            continue
        testsets = [VARIANTS[v][0] for v in variants_of_source]
        out = out_dir / source / "results.json"
        args = argparse.Namespace(ckpt=str(checkpoint), ckpt_dir=None, out=str(out))
        summaries = run_evaluation(config(fixture, models, testsets, source, out_dir), args)
        for variant, testset in zip(variants_of_source, testsets):
            with open(out.parent / f"{testset}_samples.csv", newline="") as f:
                results[variant] = (summaries[testset], list(csv.DictReader(f)))
    return results


def check_entry(variant, expected, summary, rows, report):
    ann_ids = [int(r["ann_id"]) for r in rows]
    want = [s["ann_id"] for s in expected["samples"]]
    report.check(variant, "samples (ann_id order)", ann_ids == want and summary["n"] == expected["n"],
                 f"{len(ann_ids)} people" + ("" if ann_ids == want else f": got {ann_ids}, expected {want}"))
    report.check(variant, "pose source", [r["pose_source"] for r in rows] == [s["pose_source"] for s in
                 expected["samples"]], f"{sorted({r['pose_source'] for r in rows})}")
    if ann_ids != want:
        return
    for name in METRICS:
        report.close(variant, f"{name} per person", [float(r[name]) for r in rows],
                     [s[name] for s in expected["samples"]], TOL["per_person_mm"])
    report.close(variant, "means", [summary[m] for m in METRICS], [expected["means"][m] for m in METRICS],
                 TOL["mean_mm"])


@torch.no_grad()
def loader_and_model_outputs(cfg, testset, crowd_pose_source, net, smpl_by_gender, h36m):
    """The test set's items and the network's outputs, in evaluation order, as numpy arrays."""
    dataset = build_test_dataset(testset, data_dir=cfg.data_dir, input_img_shape=cfg.input_img_shape,
                                 output_hm_shape=cfg.output_hm_shape, crowd_pose_source=crowd_pose_source)
    loader = torch.utils.data.DataLoader(dataset, batch_size=len(dataset), shuffle=False)
    inputs, targets, meta = to_device(next(iter(loader)), torch.device("cpu"))
    out = net(inputs["img"], inputs["joints"], inputs["joints_mask"], bbox=meta["bbox"])
    gt_mesh = gendered_meshes(targets, smpl_by_gender).double()
    pred_mesh = out["smpl_mesh_cam"].double()
    reg = torch.as_tensor(h36m, dtype=torch.float64)
    return {
        "ann_id": meta["ann_id"].numpy(), "joints": inputs["joints"].numpy(),
        "joints_mask": inputs["joints_mask"].numpy(), "bbox": meta["bbox"].numpy(),
        "img2bb": meta["img2bb_trans"].numpy(), "img": inputs["img"].numpy(),
        "gt_h36m": (reg @ gt_mesh).numpy(), "gt_root": gt_mesh[:, 0].numpy(), "pred_h36m": (reg @ pred_mesh).numpy(),
        "pred_mesh": pred_mesh.numpy(),
    }


def check_inputs(variant, expected, ours, report):
    key = lambda name: f"{variant}/{name}"  # noqa: E731
    if not np.array_equal(ours["ann_id"], expected[key("ann_id")]):
        report.check(variant, "loader samples", False, f"ann ids {ours['ann_id'].tolist()}, expected "
                     f"{expected[key('ann_id')].tolist()}: the arrays below cannot be compared")
        return
    undetected = expected[key("joints")][..., 2:] == 0
    report.close(variant, "joints x, y (64 frame)", ours["joints"][..., :2], expected[key("joints")][..., :2],
                 TOL["joints_xy"])
    report.close(variant, "joints confidence", ours["joints"][..., 2], expected[key("joints")][..., 2],
                 TOL["joints_conf"])
    mask_ok = np.array_equal(ours["joints_mask"], expected[key("joints_mask")])
    report.check(variant, "joints mask", mask_ok, f"exact; {int(ours['joints_mask'].sum())} valid joints "
                 f"({int(undetected.sum())} undetected)")
    report.close(variant, "bbox (px)", ours["bbox"], expected[key("bbox")], TOL["bbox"])
    report.close(variant, "img2bb", ours["img2bb"], expected[key("img2bb")], TOL["img2bb"])
    report.close(variant, "crop pixels (every 8th)", ours["img"][:, :, ::8, ::8], expected[key("img_sub8")], TOL["img"])
    if key("img_crops") in expected:
        index = expected[key("crop_index")]
        report.close(variant, "full crops", ours["img"][index], expected[key("img_crops")], TOL["img"])
    report.close(variant, "GT H36M joints (m)", ours["gt_h36m"], expected[key("gt_h36m")], TOL["gt_h36m"])
    report.close(variant, "GT mesh vertex 0 (m)", ours["gt_root"], expected[key("gt_root")], TOL["gt_root"])
    report.close(variant, "pred H36M joints (m)", ours["pred_h36m"], expected[key("pred_h36m")], TOL["pred_h36m"])
    if key("pred_mesh") in expected:
        report.close(variant, "pred mesh (m)", ours["pred_mesh"], expected[key("pred_mesh")], TOL["pred_mesh"])


def run(fixture, parity_dir=None, work_dir=None, variants=None):
    """Run every check on `fixture` (only `variants` of it if given); returns the number of failed checks."""
    fixture = Path(fixture).resolve()
    if parity_dir is None:  # the generator's companion (make_fixture.py + manifest): beside the fixture, else ours
        beside = fixture.parent / "parity"
        parity_dir = beside if (beside / "make_fixture.py").is_file() else REPO / "tests" / "fixtures" / "parity"
    for name in ("fixture.json", "expected.json", "expected_inputs.npz", "make_eval_fixture.py"):
        if not (fixture / name).is_file():
            raise FileNotFoundError(f"{fixture / name} not found. A fixture holds fixture.json, the generator "
                                    f"make_eval_fixture.py, data/3DPW and what the official JOTR code computed on it "
                                    f"(expected.json, expected_inputs.npz; `make_eval_fixture.py generate` writes "
                                    f"only the tree): see tests/fixtures/eval_parity/README.md")
    expected = json.loads((fixture / "expected.json").read_text())
    arrays = dict(np.load(fixture / "expected_inputs.npz"))
    report = Report()
    selected = list(expected["variants"]) if variants is None else list(variants)
    unknown = sorted(set(selected) - set(VARIANTS) | set(selected) - set(expected["variants"]))
    report.check("fixture", "variants", not unknown, f"unknown variants {unknown}" if unknown else
                 f"{', '.join(selected)}")
    selected = [v for v in selected if v not in unknown]
    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        tmp = Path(tmp)
        materialize(fixture, tmp / "models", parity_dir, report)
        checkpoint = tmp / "models" / "checkpoint" / "official_layout_best_ckpt.pth.tar"
        entry = evaluation_entry(fixture, tmp / "models", checkpoint, tmp / "eval", selected)

        cfg = config(fixture, tmp / "models", [], "openpose", tmp / "eval")
        model = build_model(cfg, body_model=build_body_model(cfg))
        load_checkpoint(model, checkpoint)
        net = inference_model(model.eval())
        smpl_by_gender = build_gendered_body_models(cfg, torch.device("cpu"))
        h36m = build_h36m_regressor(cfg)
        for variant in selected:
            check_entry(variant, expected["variants"][variant], *entry[variant], report)
            testset, source = VARIANTS[variant]
            ours = loader_and_model_outputs(cfg, testset, source, net, smpl_by_gender, h36m)
            check_inputs(variant, arrays, ours, report)
    print("EVAL PARITY OK" if not report.failures else f"EVAL PARITY FAILED: {report.failures} checks failed")
    return report.failures


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fixture", required=True, help="folder with fixture.json, expected.json, "
                        "expected_inputs.npz, make_eval_fixture.py and data/3DPW")
    parser.add_argument("--parity-dir", help="folder with the generator's make_fixture.py and the state_dict "
                        "manifest (default: <fixture>/../parity if present, else tests/fixtures/parity)")
    parser.add_argument("--work-dir", help="where the regenerated body models, checkpoint and results go "
                        "(a temporary folder inside it, removed afterwards; default: the system's)")
    parser.add_argument("--variants", help="comma-separated subset of the fixture's variants (default: all)")
    args = parser.parse_args(argv)
    variants = args.variants.split(",") if args.variants else None
    return 1 if run(args.fixture, args.parity_dir, args.work_dir, variants) else 0


if __name__ == "__main__":
    sys.exit(main())
