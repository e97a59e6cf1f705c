"""Preflight of the entry points: before any work, every file a run will read is looked for, and all that are
missing or unusable are reported in one message (a UserError: status 2, no traceback).

What each dataset and body-model file is, where it comes from and how it is checked is data/requirements.py, the
table `python -m tools.check_data` reports from; this module only says which of its entries a run needs. The
body models, regressors and VPoser are opened and checked (they are small); annotation files and checkpoints
only have to exist here, since their loaders check their content anyway and they can be gigabytes.
"""
import dataclasses
from pathlib import Path

from common.errors import UserError
from data.requirements import BODY_MODEL_FILES, DATASETS, FileSpec, check_file

DATA_GUIDE = "docs/DATA.md"
CHECKPOINT_SOURCE = ("the links in the JOTR README (the released <testset>_best_ckpt.pth.tar go in checkpoint/, see "
                     "checkpoint/README.md), or a run of your own (output/<exp_name>/checkpoint/)")


class MissingFilesError(UserError):
    """Files a run needs are missing or unusable; the message lists every one with where to get it."""


def _located(spec, path):
    """`spec` (a BODY_MODEL_FILES entry) at the configured `path`: a file, or the folder holding its alternatives."""
    if isinstance(spec.path, str):
        return dataclasses.replace(spec, path=str(path) + ("/" if spec.path.endswith("/") else ""))
    return dataclasses.replace(spec, path=tuple(str(Path(path) / Path(name).name) for name in spec.path))


def body_model_files(cfg, genders=("neutral",), vposer=False):
    """[(root, FileSpec)] of the body model of each gender, both regressors and, if asked, VPoser, where `cfg`
    (main.config.Config) puts them (relative to the working directory)."""
    specs = [_located(BODY_MODEL_FILES[f"smpl_{gender}"], cfg.smpl_dir) for gender in genders]
    specs.append(_located(BODY_MODEL_FILES["j_regressor_extra"], cfg.j_regressor_extra_path))
    specs.append(_located(BODY_MODEL_FILES["j_regressor_h36m"], cfg.j_regressor_h36m_path))
    if vposer:
        specs.append(_located(BODY_MODEL_FILES["vposer"], cfg.vposer_path))
    return [(Path(), spec) for spec in specs]


def dataset_files(data_dir, names, kind):
    """[(root, FileSpec)] of the annotation files the loaders `names` (registry names, `kind` 'train' or 'test')
    read, for existence only. A name without a row in the table is left to data.registry, which rejects it."""
    needed = []
    for dataset in DATASETS:
        files = {spec.name: spec for spec in dataset.files}
        for loader in dataset.loaders:
            if loader.kind == kind and loader.name in names:
                needed += [(Path(data_dir), dataclasses.replace(files[name], check=None)) for name in loader.needs]
    return needed


def checkpoint_files(paths):
    return [(Path(), FileSpec(str(path), CHECKPOINT_SOURCE)) for path in paths]


def require(needed, data_dir):
    """Check every (root, FileSpec) of `needed`; raise MissingFilesError listing all that are missing or malformed."""
    problems, seen = [], set()
    for root, spec in needed:
        if spec.name in seen:
            continue
        seen.add(spec.name)
        report = check_file(root, spec)
        if report["status"] == "present":
            continue
        shown = str(root / report["path"]) if root != Path() else report["path"]
        if report["status"] == "missing":
            alternatives = f" ({report['detail']})" if report["detail"] else ""
            problems.append(f"  missing    {shown}{alternatives}\n             get it from {spec.source}")
        else:
            problems.append(f"  malformed  {shown}: {report['detail']}")
    if problems:
        raise MissingFilesError(
            f"{len(problems)} file(s) this run needs are missing or unusable:\n" + "\n".join(problems) +
            f"\n`python -m tools.check_data --data-dir {data_dir}` reports every dataset in detail; {DATA_GUIDE} "
            f"shows where each file goes.")


def check_training_files(cfg):
    """Everything `python -m main.train` with `cfg` reads: body models (all genders when it evaluates), regressors,
    VPoser when its weights do not come from a checkpoint, the start checkpoint and every dataset's annotations."""
    resume = cfg.resume
    if resume == "auto":  # continues the run's own checkpoints if there are any, else starts as a fresh run would
        has_checkpoint = any((Path(cfg.output_dir) / cfg.exp_name / "checkpoint").glob("*.pth.tar"))
        resume = "auto" if has_checkpoint else ""
    start = resume or cfg.init_ckpt
    genders = ("neutral", "male", "female") if cfg.testsets else ("neutral",)
    needed = body_model_files(cfg, genders, vposer=cfg.pose_head == "vposer" and not start)
    needed += checkpoint_files([start] if start and start != "auto" else [])
    needed += dataset_files(cfg.data_dir, [*cfg.trainset_3d, *cfg.trainset_2d], "train")
    needed += dataset_files(cfg.data_dir, cfg.testsets, "test")
    require(needed, cfg.data_dir)


def check_test_files(cfg, checkpoints):
    """Everything `python -m main.test` with `cfg` reads: the body models of all genders, the regressors, the
    `checkpoints` (paths) and the annotations of every test set (VPoser's weights are in the checkpoints)."""
    needed = body_model_files(cfg, ("neutral", "male", "female"))
    needed += checkpoint_files(checkpoints)
    needed += dataset_files(cfg.data_dir, cfg.testsets, "test")
    require(needed, cfg.data_dir)
