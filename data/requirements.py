"""What each dataset, test set and body model needs: its files (paths relative to the data directory), where to get
each, and a structural check per file. The one source of truth for `python -m tools.check_data` (the full report)
and the entry points' preflight (main.preflight: everything a run needs, checked before any work).

Adding a dataset = one DatasetSpec row (its files, a check per file, the loaders that read them).
See docs/DATA.md for the directory tree and the download instructions.
"""
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.body.body_model import NUM_VERTICES, SMPL_FILE_NAMES, load_regressor, load_smpl_pickle
from common.errors import InputError
from common.model.vposer import VPoserV1, find_vposer_snapshot, load_vposer_weights
from data import human36m, muco, oh3d, pw3d

# ----------------------------------------------------------------------------------------------------------------------
# File checks: each takes the path, returns a short summary, raises Malformed with what is wrong.


class Malformed(InputError):
    """A file exists but cannot be used; the message says what is wrong."""


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise Malformed(f"not valid JSON ({err}); the file is truncated or corrupt, download it again") from None
    except (OSError, UnicodeDecodeError) as err:
        raise Malformed(f"unreadable ({type(err).__name__}: {err})") from None


def _get(entry, dotted):
    """entry['a']['b'] for 'a.b'; KeyError if absent."""
    for key in dotted.split("."):
        if not isinstance(entry, dict) or key not in entry:
            raise KeyError(dotted)
        entry = entry[key]
    return entry


def _size(value):
    """How many numbers `value` holds (nested lists), or None if it is not all numeric."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return int(array.size)


def _check_fields(entry, fields, where):
    """fields: {dotted key: number count, or None for 'present, any value'}; a count may be given as (n, 'what')."""
    if not isinstance(entry, dict):
        raise Malformed(f"{where} is a {type(entry).__name__}, expected an object")
    for key, expected in fields.items():
        try:
            value = _get(entry, key)
        except KeyError:
            raise Malformed(f"{where} has no '{key}'") from None
        if expected is None:
            continue
        count, what = expected if isinstance(expected, tuple) else (expected, "numbers")
        size = _size(value)
        if size != count:
            got = "non-numeric values" if size is None else f"{size} numbers"
            raise Malformed(f"{where}: '{key}' has {got}, expected {count} ({what})")


def coco_style(image_fields, annotation_fields):
    """Check of a COCO-style file: {'images': [...], 'annotations': [...]} with the given fields on every entry."""
    def check(path):
        db = _read_json(path)
        if not isinstance(db, dict) or not isinstance(db.get("images"), list) or \
                not isinstance(db.get("annotations"), list):
            raise Malformed("expected a COCO-style object with 'images' and 'annotations' lists")
        for image in db["images"]:
            _check_fields(image, image_fields, f"image {image.get('id') if isinstance(image, dict) else '?'}")
        for ann in db["annotations"]:
            _check_fields(ann, annotation_fields, f"annotation {ann.get('id') if isinstance(ann, dict) else '?'}")
        return f"{len(db['images'])} images, {len(db['annotations'])} annotations"
    return check


def keyed_entries(fields, depth=1):
    """Check of a file that maps keys (annotation ids, image paths, camera indices; `depth` levels of nesting) to
    objects with the given fields."""
    def check(path):
        db = _read_json(path)
        count = 0

        def walk(node, level, where):
            nonlocal count
            if not isinstance(node, dict):
                raise Malformed(f"{where or 'the file'} is a {type(node).__name__}, expected an object keyed by id")
            for key, value in node.items():
                if level + 1 < depth:
                    walk(value, level + 1, f"{where}[{key}]")
                else:
                    _check_fields(value, fields, f"entry {where}[{key}]")
                    count += 1

        walk(db, 0, "")
        return f"{count} entries"
    return check


def nested_joints(num_joints, depth):
    """Check of a file of joint arrays nested `depth` levels deep (Human36M joint_3d: action/subaction/frame)."""
    def check(path):
        db = _read_json(path)
        count = 0

        def walk(node, level, where):
            nonlocal count
            if level == depth:
                size = _size(node)
                if size != num_joints * 3:
                    got = "non-numeric values" if size is None else f"{size} numbers"
                    raise Malformed(f"entry {where} has {got}, expected {num_joints * 3} ({num_joints} joints x 3)")
                count += 1
                return
            if not isinstance(node, dict):
                raise Malformed(f"{where or 'the file'} is a {type(node).__name__}, expected an object")
            for key, value in node.items():
                walk(value, level + 1, f"{where}[{key}]")

        walk(db, 0, "")
        return f"{count} poses"
    return check


def h36m_smpl_params(path):
    """Human3.6M fits: action/subaction/frame -> {pose, shape, trans} (or those under 'smpl_param')."""
    db = _read_json(path)
    count = 0
    for action, subactions in (db.items() if isinstance(db, dict) else ()):
        for subaction, frames in (subactions.items() if isinstance(subactions, dict) else ()):
            for frame, fit in (frames.items() if isinstance(frames, dict) else ()):
                fit = fit.get("smpl_param", fit) if isinstance(fit, dict) else fit
                _check_fields(fit, {"pose": 72, "shape": 10, "trans": 3}, f"fit [{action}][{subaction}][{frame}]")
                count += 1
    if count == 0:
        raise Malformed("no fit found; expected {action: {subaction: {frame: {pose, shape, trans}}}}")
    return f"{count} fits"


def image_directory(path):
    entries = sum(1 for _ in os.scandir(path))
    if entries == 0:
        raise Malformed("the directory is empty")
    return f"{entries} entries"


def smpl_model(path):
    arrays = load_smpl_pickle(path)  # raises BodyModelFileError with the reason
    return f"{arrays['v_template'].shape[0]} vertices"


def regressor(rows):
    def check(path):
        load_regressor(path, (rows, NUM_VERTICES), path.name, "see docs/DATA.md")
        return f"{rows} x {NUM_VERTICES}"
    return check


def vposer_snapshot(path):
    file = load_vposer_weights(VPoserV1(), find_vposer_snapshot(path))
    return f"snapshot {file.name}"


# ----------------------------------------------------------------------------------------------------------------------
# What each dataset needs. Paths are relative to the data directory; a trailing '/' is a directory; a tuple gives
# accepted alternatives (first = the name shown when missing).


@dataclass(frozen=True)
class FileSpec:
    path: str | tuple
    source: str
    check: Callable[[Path], str] | None = None

    @property
    def name(self):
        return self.path if isinstance(self.path, str) else self.path[0]


@dataclass(frozen=True)
class LoaderSpec:
    name: str  # the dataset's name in data.registry (config trainset_3d / trainset_2d / testsets)
    kind: str  # 'train' or 'test'
    needs: tuple  # FileSpec names it reads


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    files: tuple
    loaders: tuple = ()


CROWDNET = "3DCrowdNet's assets/directory.md (github.com/hongsukchoi/3DCrowdNet_RELEASE)"
H36M_SOURCE = "Human3.6M (vision.imar.ro/human3.6m, registration), parsed data as linked from " + CROWDNET
H36M_SMPL_SOURCE = "the Human3.6M 'SMPL parameters from SMPLify-X', as linked from " + CROWDNET
NEURALANNOT = "NeuralAnnot (github.com/mks0601/NeuralAnnot_RELEASE), as linked from " + CROWDNET
PW3D_SITE = "the 3DPW site (virtualhumans.mpi-inf.mpg.de/3DPW)"
JOTR_README = "JOTR's README (github.com/xljh0520/JOTR)"
SMPL_PARAMS = {"pose": 72, "shape": 10, "trans": 3}
NEURALANNOT_FIELDS = {"smpl_param.pose": 72, "smpl_param.shape": 10, "smpl_param.trans": 3, "cam_param.focal": 2,
                      "cam_param.princpt": 2}
PW3D_FILE_CHECK = coco_style(
    {"id": None, "file_name": None, "sequence": None, "width": None, "height": None},
    {"id": None, "image_id": None, "bbox": 4, "smpl_param.pose": 72, "smpl_param.shape": 10,
     "smpl_param.trans": 3, "smpl_param.gender": None})


def _h36m_files():
    files = []
    for subject in human36m.TRAIN_SUBJECTS:
        prefix = f"Human36M/annotations/Human36M_subject{subject}"
        files += [
            FileSpec(f"{prefix}_data.json", H36M_SOURCE,
                     coco_style({"id": None, "file_name": None, "width": None, "height": None},
                                {"id": None, "image_id": None, "bbox": 4})),
            FileSpec(f"{prefix}_camera.json", H36M_SOURCE, keyed_entries({"R": 9, "t": 3, "f": 2, "c": 2})),
            FileSpec(f"{prefix}_joint_3d.json", H36M_SOURCE, nested_joints(17, depth=3)),
            FileSpec(f"{prefix}_smpl_param.json", H36M_SMPL_SOURCE, h36m_smpl_params),
        ]
    return tuple(files) + (FileSpec("Human36M/images/", H36M_SOURCE, image_directory),)


_SMPL_SITE = "SMPL (smpl.is.tue.mpg.de, registration)"
# Keyed by the config field that locates each file (a run may keep its body models outside data/).
BODY_MODEL_FILES = {
    "smpl_neutral": FileSpec(tuple(f"body_models/smpl/{n}" for n in SMPL_FILE_NAMES["neutral"]),
                             "the neutral SMPL model of SMPLify (smplify.is.tue.mpg.de, registration)", smpl_model),
    "smpl_male": FileSpec(tuple(f"body_models/smpl/{n}" for n in SMPL_FILE_NAMES["male"]), _SMPL_SITE, smpl_model),
    "smpl_female": FileSpec(tuple(f"body_models/smpl/{n}" for n in SMPL_FILE_NAMES["female"]), _SMPL_SITE,
                            smpl_model),
    "j_regressor_extra": FileSpec("body_models/J_regressor_extra.npy", "SPIN's data (visiondata.cis.upenn.edu/spin/"
                                  "data.tar.gz) or the J_regressor_*.npy link of " + CROWDNET, regressor(9)),
    "j_regressor_h36m": FileSpec("body_models/J_regressor_h36m_correct.npy",
                                 "the J_regressor_*.npy link of " + CROWDNET, regressor(17)),
    "vposer": FileSpec("body_models/vposer_v1_0/", "VPoser v1.0 (smpl-x.is.tue.mpg.de, registration)",
                       vposer_snapshot),
}

DATASETS = (
    DatasetSpec("Human36M", _h36m_files(), (
        LoaderSpec("Human36M", "train", tuple(f.name for f in _h36m_files())),)),
    DatasetSpec("MuCo", (
        FileSpec(f"MuCo/{muco.ANNOTATION_FILE}", "the MuCo parsed/composited data, as linked from " + CROWDNET +
                 " (also 3DMPPE RootNet's release, github.com/mks0601/3DMPPE_ROOTNET_RELEASE)",
                 coco_style({"id": None, "file_name": None, "width": None, "height": None, "f": 2, "c": 2},
                            {"id": None, "image_id": None, "bbox": 4, "keypoints_img": (42, "21 joints x 2"),
                             "keypoints_cam": (63, "21 joints x 3")})),
        FileSpec(f"MuCo/{muco.SMPL_PARAM_FILE}",
                 "the MuCo 'SMPL parameters from SMPLify-X', as linked from " + CROWDNET,
                 keyed_entries(SMPL_PARAMS)),
        FileSpec("MuCo/augmented_set/", "the MuCo-3DHP images (release of MuCo-3DHP.json)", image_directory),
        FileSpec("MuCo/unaugmented_set/", "the MuCo-3DHP images (release of MuCo-3DHP.json)", image_directory),
    ), (LoaderSpec("MuCo", "train", (f"MuCo/{muco.ANNOTATION_FILE}", f"MuCo/{muco.SMPL_PARAM_FILE}")),)),
    DatasetSpec("MSCOCO", (
        FileSpec("MSCOCO/annotations/person_keypoints_train2017.json", "COCO 2017 (cocodataset.org)",
                 coco_style({"id": None, "file_name": None, "width": None, "height": None},
                            {"id": None, "image_id": None, "bbox": 4, "keypoints": (51, "17 joints x 3")})),
        FileSpec("MSCOCO/annotations/MSCOCO_train_SMPL_NeuralAnnot.json", NEURALANNOT,
                 keyed_entries(NEURALANNOT_FIELDS)),
        FileSpec("MSCOCO/images/train2017/", "COCO 2017 train images (cocodataset.org)", image_directory),
    ), (LoaderSpec("MSCOCO", "train", ("MSCOCO/annotations/person_keypoints_train2017.json",
                                       "MSCOCO/annotations/MSCOCO_train_SMPL_NeuralAnnot.json")),)),
    DatasetSpec("CrowdPose", (
        FileSpec("CrowdPose/annotations/crowdpose_train.json", "CrowdPose (github.com/Jeff-sjtu/CrowdPose; also the "
                 "CrowdPose data linked from " + CROWDNET + ")",
                 coco_style({"id": None, "file_name": None, "width": None, "height": None},
                            {"id": None, "image_id": None, "bbox": 4, "keypoints": (42, "14 joints x 3")})),
        FileSpec("CrowdPose/annotations/CrowdPose_train_SMPL_NeuralAnnot.json", NEURALANNOT,
                 keyed_entries(NEURALANNOT_FIELDS)),
        FileSpec("CrowdPose/images/", "CrowdPose images (github.com/Jeff-sjtu/CrowdPose)", image_directory),
    ), (LoaderSpec("CrowdPose", "train", ("CrowdPose/annotations/crowdpose_train.json",
                                          "CrowdPose/annotations/CrowdPose_train_SMPL_NeuralAnnot.json")),)),
    DatasetSpec("3DPW", (
        FileSpec(f"3DPW/{pw3d.ANNOTATION_FILES['3dpw']}", "3DPW in COCO-style JSON, as linked from " + CROWDNET,
                 PW3D_FILE_CHECK),
        FileSpec(f"3DPW/{pw3d.ANNOTATION_FILES['3dpw-crowd']}", "3DPW in COCO-style JSON, as linked from " + CROWDNET,
                 PW3D_FILE_CHECK),
        FileSpec(f"3DPW/{pw3d.HHRNET_FILE}", "the 3DPW-Crowd HigherHRNet poses, as linked from " + CROWDNET,
                 keyed_entries({"coco_joints": (51, "17 joints x 3")})),
        FileSpec(f"3DPW/{pw3d.ANNOTATION_FILES['3dpw-pc']}", "the 3DPW-PC subset linked from " + JOTR_README,
                 PW3D_FILE_CHECK),
        FileSpec(f"3DPW/{pw3d.ANNOTATION_FILES['3dpw-oc']}", "the 3DPW-OC subset linked from " + JOTR_README,
                 PW3D_FILE_CHECK),
        FileSpec("3DPW/imageFiles/", "imageFiles.zip of " + PW3D_SITE, image_directory),
    ), (
        LoaderSpec("3dpw", "test", (f"3DPW/{pw3d.ANNOTATION_FILES['3dpw']}",)),
        LoaderSpec("3dpw-crowd", "test", (f"3DPW/{pw3d.ANNOTATION_FILES['3dpw-crowd']}", f"3DPW/{pw3d.HHRNET_FILE}")),
        LoaderSpec("3dpw-pc", "test", (f"3DPW/{pw3d.ANNOTATION_FILES['3dpw-pc']}",)),
        LoaderSpec("3dpw-oc", "test", (f"3DPW/{pw3d.ANNOTATION_FILES['3dpw-oc']}",)),
    )),
    DatasetSpec("OH3D", (
        FileSpec(f"OH3D/{oh3d.ANNOTATION_FILE}", "3DOH50K (www.yangangwang.com) test annotations in the "
                 "format of JOTR's OH3D loader (see docs/DATA.md)",
                 keyed_entries({"hrnet_results": (51, "17 joints x 3"), "bbox": 4, "pose": 72, "shape": 10,
                                "trans": 3})),
        FileSpec("OH3D/images/", "the 3DOH50K test images (www.yangangwang.com)", image_directory),
    ), (LoaderSpec("3doh", "test", (f"OH3D/{oh3d.ANNOTATION_FILE}",)),)),
    DatasetSpec("body_models", tuple(BODY_MODEL_FILES.values())),
)
DATASET_NAMES = tuple(spec.name for spec in DATASETS)


# ----------------------------------------------------------------------------------------------------------------------
# Checking


def _find(data_dir, spec):
    """The existing path of a FileSpec (case-insensitive on the file name), or None."""
    for rel in ((spec.path,) if isinstance(spec.path, str) else spec.path):
        path = data_dir / rel.rstrip("/")
        if rel.endswith("/"):
            if path.is_dir():
                return path
            continue
        if path.is_file():
            return path
        if path.parent.is_dir():
            for candidate in path.parent.iterdir():
                if candidate.name.lower() == path.name.lower() and candidate.is_file():
                    return candidate
    return None


def check_file(data_dir, spec):
    """{'path', 'status': present | missing | malformed, 'detail', 'source'} for one FileSpec."""
    report = {"path": spec.name, "status": "missing", "detail": "", "source": spec.source}
    path = _find(data_dir, spec)
    if path is None:
        if not isinstance(spec.path, str):
            report["detail"] = "or: " + ", ".join(os.path.basename(p) for p in spec.path[1:])
        return report
    shown = path.relative_to(data_dir) if path.is_relative_to(data_dir) else path
    report["path"] = str(shown) + ("/" if path.is_dir() else "")
    try:
        report["detail"] = spec.check(path) if spec.check else ""
        report["status"] = "present"
    except Exception as err:  # every way a file can be unusable ends up in the report
        report["status"] = "malformed"
        report["detail"] = str(err) if isinstance(err, Malformed) else f"{type(err).__name__}: {err}"
    return report
