"""Dataset names used in the config -> dataset classes, and the training mix of spec 4.4.

Every training dataset class takes the same keyword arguments (those of data.muco.MuCo: data_dir, body_model,
joint_regressor_30, h36m_regressor, input_img_shape, output_hm_shape, bbox_3d_size, update_bbox, augment, seed;
a dataset ignores the ones it does not need), so that `build_train_dataset` can pass one set to all of them.
"""
import os

from data.muco import MuCo
from data.multiple_datasets import MultipleDatasets
from data.pw3d import PW3D

TRAIN_DATASETS = {"MuCo": MuCo}
# Named by the official configuration, not written yet.
PLANNED_TRAIN_DATASETS = ("Human36M", "MSCOCO", "CrowdPose")
TEST_DATASETS = {"3dpw": PW3D, "3dpw-oc": PW3D, "3dpw-pc": PW3D, "3dpw-crowd": PW3D}


def _train_class(name):
    if name in TRAIN_DATASETS:
        return TRAIN_DATASETS[name]
    planned = f" ('{name}' is planned but not implemented yet)" if name in PLANNED_TRAIN_DATASETS else ""
    raise ValueError(f"unknown training dataset '{name}'{planned}; available: {', '.join(sorted(TRAIN_DATASETS))} "
                     f"(config keys trainset_3d / trainset_2d)")


def _group(names, common_kwargs):
    classes = [_train_class(name) for name in names]  # all names checked before any dataset loads
    dbs = [cls(**common_kwargs) for cls in classes]
    if len(dbs) == 1:
        return dbs[0]
    return MultipleDatasets(dbs, make_same_len=False, seed=common_kwargs.get("seed", 0))


def build_train_dataset(names_3d, names_2d, **common_kwargs):
    """The training set of spec 4.4: the 3D datasets concatenated (in the given order), the 2D datasets
    concatenated, then the two groups balanced with MultipleDatasets(make_same_len=True). If one group is empty,
    the other group alone. `common_kwargs` go to every dataset (module docstring); `seed` also seeds the mix."""
    names_3d, names_2d = list(names_3d), list(names_2d)
    for name in names_3d + names_2d:
        _train_class(name)
    if not names_3d and not names_2d:
        raise ValueError("no training dataset: trainset_3d and trainset_2d are both empty")
    groups = [_group(names, common_kwargs) for names in (names_3d, names_2d) if names]
    if len(groups) == 1:
        return groups[0]
    return MultipleDatasets(groups, make_same_len=True, seed=common_kwargs.get("seed", 0))


def build_test_dataset(name, data_dir="data", **kwargs):
    """A test set by name ('3dpw', '3dpw-oc', '3dpw-pc', '3dpw-crowd'), read from <data_dir>/3DPW. Other keyword
    arguments go to data.pw3d.PW3D (input_img_shape, output_hm_shape, smpl_fn_by_gender)."""
    if name not in TEST_DATASETS:
        raise ValueError(f"unknown test dataset '{name}'; available: {', '.join(sorted(TEST_DATASETS))} "
                         f"(config key testsets)")
    return TEST_DATASETS[name](os.path.join(os.fspath(data_dir), "3DPW"), name, **kwargs)
