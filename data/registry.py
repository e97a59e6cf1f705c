"""Dataset names used in the config -> dataset classes, and the training mix of spec 4.4.

Every training dataset class takes the same arguments (those of data.muco.MuCo: data_dir, body_model,
joint_regressor_30, h36m_regressor, input_img_shape, output_hm_shape, bbox_3d_size, update_bbox, augment, seed,
occlusion_prob, occlusion_failures; a dataset ignores the ones it does not need); CrowdPose also takes its two switches
(official_crowdpose_flip, official_crowdpose_fit_filter). `build_train_dataset` passes them explicitly.
"""
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


def build_train_dataset(names_3d, names_2d, *, data_dir, body_model, joint_regressor_30, h36m_regressor,
                        input_img_shape=(256, 256), output_hm_shape=(64, 64, 64), bbox_3d_size=2.0, update_bbox=True,
                        augment=True, seed=0, occlusion_prob=0.0, occlusion_failures=False,
                        official_crowdpose_flip=False, official_crowdpose_fit_filter=False):
    """The training set of spec 4.4: the 3D datasets concatenated (in the given order), the 2D datasets
    concatenated, then the two groups balanced with MultipleDatasets(make_same_len=True). If one group is empty,
    the other group alone. The arguments go to every dataset (module docstring); `seed` also seeds the mix."""
    names_3d, names_2d = list(names_3d), list(names_2d)
    for name in names_3d + names_2d:  # every name checked before any dataset loads
        _train_class(name)
    if not names_3d and not names_2d:
        raise InputError("no training dataset: trainset_3d and trainset_2d are both empty")
    common = {"data_dir": data_dir, "body_model": body_model, "joint_regressor_30": joint_regressor_30,
              "h36m_regressor": h36m_regressor, "input_img_shape": input_img_shape,
              "output_hm_shape": output_hm_shape, "bbox_3d_size": bbox_3d_size, "update_bbox": update_bbox,
              "augment": augment, "seed": seed, "occlusion_prob": occlusion_prob,
              "occlusion_failures": occlusion_failures}
    crowdpose = {"official_crowdpose_flip": official_crowdpose_flip,
                 "official_crowdpose_fit_filter": official_crowdpose_fit_filter}

    def build(name):
        cls = _train_class(name)
        return cls(**common, **crowdpose) if cls is CrowdPose else cls(**common)

    groups = []
    for names in (names_3d, names_2d):
        if names:
            dbs = [build(name) for name in names]
            groups.append(dbs[0] if len(dbs) == 1 else MultipleDatasets(dbs, make_same_len=False, seed=seed))
    if len(groups) == 1:
        return groups[0]
    return MultipleDatasets(groups, make_same_len=True, seed=seed)


def build_test_dataset(name, data_dir="data", **kwargs):
    """A test set by name: '3dpw', '3dpw-oc', '3dpw-pc', '3dpw-crowd' (data.pw3d.PW3D, read from <data_dir>/3DPW) or
    '3doh' (data.oh3d.OH3D, read from <data_dir>/OH3D). Other keyword arguments go to the dataset class
    (input_img_shape, output_hm_shape, smpl_fn_by_gender)."""
    if name not in TEST_DATASETS:
        raise InputError(f"unknown test dataset '{name}'; available: {', '.join(sorted(TEST_DATASETS))} "
                         f"(config key testsets)")
    return TEST_DATASETS[name](os.path.join(os.fspath(data_dir), TEST_DATASET_DIRS[name]), name, **kwargs)
