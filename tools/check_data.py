"""Checks the data folder: per dataset, which files are present, missing or malformed, and how many samples each
loader would yield.

    python -m tools.check_data [--data-dir data] [--datasets MuCo 3DPW ...] [--json] [--skip-images]

For every file a dataset needs (data/requirements.py, with where to get it) the file is opened and its structure
checked (JSON parses, the fields the loaders read exist, joint counts and parameter sizes are right; body-model
files load and have the SMPL shapes). When all files a loader reads are usable, the loader is built through
data.registry (exactly as training/evaluation builds it) and its sample count reported, with the number of images
its samples refer to that are missing (unless --skip-images). A loader this version does not have yet is reported
as such. Errors are caught into the report; nothing is raised.

A dataset is `complete` (every file usable, every available loader built, no image missing), `partial` (some
files or images missing), `missing` (no file at all), `malformed` (some file unusable) or `error` (files fine but
its loader failed). Exit code 0 when every requested dataset is complete, 1 otherwise.

Adding a dataset = one DatasetSpec row in data/requirements.py (its files, a check per file, the loaders).
See docs/DATA.md for the directory tree and the download instructions.
"""
import argparse
import json
import os
import warnings
from pathlib import Path

import numpy as np

from common.body.body_model import (
    NUM_VERTICES,
    SMPLLayer,
    find_smpl_file,
    joint_regressor_30,
    load_regressor,
    load_smpl_pickle,
)
from common.errors import run_entry_point
from data import registry
from data.requirements import DATASET_NAMES, DATASETS, check_file

# ----------------------------------------------------------------------------------------------------------------------
# Checking (the files each dataset needs, their sources and checks: data/requirements.py)


class _BodyParts:
    """What training loaders take besides the data: the real body-model files when usable, placeholders otherwise
    (sample counts do not depend on them)."""

    def __init__(self, data_dir):
        self.data_dir = data_dir
        self._values = None

    def kwargs(self):
        if self._values is None:
            folder = self.data_dir / "body_models"
            values = {"body_model": None, "joint_regressor_30": None,
                      "h36m_regressor": np.zeros((17, NUM_VERTICES), np.float32)}
            try:
                layer = SMPLLayer(load_smpl_pickle(find_smpl_file(folder / "smpl", "neutral")))
                extra = load_regressor(folder / "J_regressor_extra.npy", (9, NUM_VERTICES), "extra", "")
                h36m = load_regressor(folder / "J_regressor_h36m_correct.npy", (17, NUM_VERTICES), "h36m", "")
                values = {"body_model": layer, "joint_regressor_30": joint_regressor_30(layer.arrays["J_regressor"],
                                                                                        extra),
                          "h36m_regressor": h36m}
            except Exception:  # missing or broken body models are reported under body_models
                pass
            self._values = values
        return self._values


def _image_paths(dataset):
    """Image paths of a dataset's samples, if it exposes them (samples with an img_path)."""
    paths = []
    for sample in getattr(dataset, "samples", None) or ():
        path = sample.get("img_path") if isinstance(sample, dict) else getattr(sample, "img_path", None)
        if path is None:
            return None
        paths.append(path)
    return paths or None


def check_loader(data_dir, spec, needed_files, body_parts, check_images=True):
    """{'name', 'kind', 'status': ok | incomplete | skipped | unavailable | error, 'samples', 'detail'} for one
    LoaderSpec; needed_files: the check_file reports of the files it reads."""
    report = {"name": spec.name, "kind": spec.kind, "status": "skipped", "samples": None, "detail": ""}
    unusable = [f"{r['path']} ({r['status']})" for r in needed_files if r["status"] != "present"]
    if unusable:
        report["detail"] = ("needs " + ", ".join(unusable) if len(unusable) <= 2 else
                            f"needs {len(unusable)} files that are missing or malformed (above)")
        return report
    table = registry.TRAIN_DATASETS if spec.kind == "train" else registry.TEST_DATASETS
    if spec.name not in table:
        report["status"] = "unavailable"
        report["detail"] = "no loader for it in this version of data/registry.py"
        return report
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if spec.kind == "train":
                dataset = registry.build_train_dataset([spec.name], [], data_dir=str(data_dir), **body_parts.kwargs(),
                                                       augment=False, seed=0)
            else:
                dataset = registry.build_test_dataset(spec.name, data_dir=str(data_dir))
        report["samples"] = len(dataset)
    except Exception as err:
        report["status"] = "error"
        report["detail"] = f"{type(err).__name__}: {err}"
        return report
    report["status"] = "ok"
    if check_images:
        paths = _image_paths(dataset)
        if paths is not None:
            unique = sorted(set(paths))
            missing = [p for p in unique if not os.path.isfile(p)]
            report["detail"] = f"{len(unique)} images referenced, {len(missing)} missing"
            if missing:
                report["status"] = "incomplete"
                report["detail"] += f" (e.g. {missing[0]})"
    return report


def check_dataset(data_dir, spec, body_parts, check_images=True):
    """{'name', 'status', 'files': [check_file reports], 'loaders': [check_loader reports]} for one DatasetSpec."""
    files = [check_file(data_dir, f) for f in spec.files]
    by_name = {f.name: r for f, r in zip(spec.files, files)}  # loaders name files by their FileSpec name
    loaders = [check_loader(data_dir, loader, [by_name[name] for name in loader.needs], body_parts, check_images)
               for loader in spec.loaders]
    statuses = {r["status"] for r in files}
    loader_statuses = {r["status"] for r in loaders}
    if "malformed" in statuses:
        status = "malformed"
    elif statuses == {"missing"}:
        status = "missing"
    elif "missing" in statuses or "incomplete" in loader_statuses:
        status = "partial"
    elif "error" in loader_statuses:
        status = "error"
    else:
        status = "complete"
    return {"name": spec.name, "status": status, "files": files, "loaders": loaders}


def check_data(data_dir="data", datasets=None, check_images=True):
    """The report (a JSON-serialisable dict) for `datasets` (names from DATASET_NAMES; None = all)."""
    data_dir = Path(data_dir)
    names = list(DATASET_NAMES if datasets is None else datasets)
    unknown = [n for n in names if n not in DATASET_NAMES]
    if unknown:
        raise ValueError(f"unknown dataset(s) {unknown}; known: {', '.join(DATASET_NAMES)}")
    body_parts = _BodyParts(data_dir)
    reports = [check_dataset(data_dir, spec, body_parts, check_images) for spec in DATASETS if spec.name in names]
    return {"data_dir": str(data_dir.resolve()), "ok": all(r["status"] == "complete" for r in reports),
            "datasets": reports}


def format_report(report):
    lines = [f"data directory: {report['data_dir']}", ""]
    width = max([len(f["path"]) for d in report["datasets"] for f in d["files"]] + [10])
    for dataset in report["datasets"]:
        lines.append(f"{dataset['name']}: {dataset['status']}")
        for f in dataset["files"]:
            detail = f["detail"]
            if f["status"] != "present":
                detail = "; ".join(t for t in (detail, f"source: {f['source']}") if t)
            lines.append(f"  {f['status']:<10} {f['path']:<{width}}  {detail}")
        for loader in dataset["loaders"]:
            count = "" if loader["samples"] is None else f"{loader['samples']} samples"
            text = "; ".join(t for t in (count, loader["detail"]) if t)
            lines.append(f"  loader {loader['name']} ({loader['kind']}): {loader['status']}" + (f": {text}" if text
                                                                                                  else ""))
        lines.append("")
    counts = {}
    for dataset in report["datasets"]:
        counts[dataset["status"]] = counts.get(dataset["status"], 0) + 1
    summary = ", ".join(f"{n} {status}" for status, n in counts.items())
    lines.append(f"summary: {summary} -> {'OK' if report['ok'] else 'NOT complete'}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tools.check_data", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="data", help="the data directory (config key data_dir; default data)")
    parser.add_argument("--datasets", nargs="+", choices=DATASET_NAMES, metavar="NAME",
                        help=f"only these ({', '.join(DATASET_NAMES)}); default all")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--skip-images", action="store_true",
                        help="do not check that the images the loaders' samples refer to exist")
    args = parser.parse_args(argv)
    report = check_data(args.data_dir, args.datasets, check_images=not args.skip_images)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    run_entry_point(main)
