"""Dataset names used in the config -> dataset classes, and the training mix of spec 4.4.

Every training dataset class takes the same keyword arguments (those of data.muco.MuCo: data_dir, body_model,
joint_regressor_30, h36m_regressor, input_img_shape, output_hm_shape, bbox_3d_size, update_bbox, augment, seed;
a dataset ignores the ones it does not need), so that `build_train_dataset` can pass one set to all of them.
Dataset-specific switches (e.g. CrowdPose's official_crowdpose_flip) may be passed along with them: each dataset
receives only the keyword arguments its constructor names; one that no training dataset names is an error.
"""
import inspect
import os

from common.errors import InputError
from data.crowdpose import CrowdPose
from data.human36m import Human36M
from data.mscoco import MSCOCO
from data.muco import MuCo
from data.multiple_datasets import MultipleDatasets
from data.oh3d import OH3D
from data.pw3d import PW3D

TRAIN_DATASETS = {"Human36M": Human36M, "MuCo": MuCo, "MSCOCO": MSCOCO, "CrowdPose": CrowdPose}
TEST_DATASETS = {"3dpw": PW3D, "3dpw-oc": PW3D, "3dpw-pc": PW3D, "3dpw-crowd": PW3D, "3doh": OH3D}
# Directory of each test set under data_dir.
TEST_DATASET_DIRS = {"3dpw": "3DPW", "3dpw-oc": "3DPW", "3dpw-pc": "3DPW", "3dpw-crowd": "3DPW", "3doh": "OH3D"}


def _train_class(name):
    if name in TRAIN_DATASETS:
        return TRAIN_DATASETS[name]
    raise InputError(f"unknown training dataset '{name}'; available: {', '.join(sorted(TRAIN_DATASETS))} "
                     f"(config keys trainset_3d / trainset_2d)")


def _parameters(cls):
    return set(inspect.signature(cls.__init__).parameters) - {"self"}


def _check_kwargs(common_kwargs):
    known = set().union(*(_parameters(cls) for cls in TRAIN_DATASETS.values()))
    unknown = sorted(set(common_kwargs) - known)
    if unknown:
        raise TypeError(f"build_train_dataset: no training dataset takes the argument(s) {', '.join(unknown)}")


def _group(names, common_kwargs):
    classes = [_train_class(name) for name in names]  # all names checked before any dataset loads
    dbs = [cls(**{k: v for k, v in common_kwargs.items() if k in _parameters(cls)}) for cls in classes]
    if len(dbs) == 1:
        return dbs[0]
    return MultipleDatasets(dbs, make_same_len=False, seed=common_kwargs.get("seed", 0))


def build_train_dataset(names_3d, names_2d, **common_kwargs):
    """The training set of spec 4.4: the 3D datasets concatenated (in the given order), the 2D datasets
    concatenated, then the two groups balanced with MultipleDatasets(make_same_len=True). If one group is empty,
    the other group alone. `common_kwargs` go to every dataset that takes them (module docstring); `seed` also
    seeds the mix."""
    names_3d, names_2d = list(names_3d), list(names_2d)
    for name in names_3d + names_2d:
        _train_class(name)
    if not names_3d and not names_2d:
        raise InputError("no training dataset: trainset_3d and trainset_2d are both empty")
    _check_kwargs(common_kwargs)
    groups = [_group(names, common_kwargs) for names in (names_3d, names_2d) if names]
    if len(groups) == 1:
        return groups[0]
    return MultipleDatasets(groups, make_same_len=True, seed=common_kwargs.get("seed", 0))


def build_test_dataset(name, data_dir="data", **kwargs):
    """A test set by name: '3dpw', '3dpw-oc', '3dpw-pc', '3dpw-crowd' (data.pw3d.PW3D, read from <data_dir>/3DPW) or
    '3doh' (data.oh3d.OH3D, read from <data_dir>/OH3D). Other keyword arguments go to the dataset class
    (input_img_shape, output_hm_shape, smpl_fn_by_gender)."""
    if name not in TEST_DATASETS:
        raise InputError(f"unknown test dataset '{name}'; available: {', '.join(sorted(TEST_DATASETS))} "
                         f"(config key testsets)")
    return TEST_DATASETS[name](os.path.join(os.fspath(data_dir), TEST_DATASET_DIRS[name]), name, **kwargs)
