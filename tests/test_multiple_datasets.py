import numpy as np
import pytest
import torch

from data.muco import MuCo
from data.multiple_datasets import MultipleDatasets
from data.pw3d import PW3D
from data.registry import TEST_DATASETS, TRAIN_DATASETS, build_test_dataset, build_train_dataset
from tests.muco_format import symmetric_body_model, write_tiny_muco
from tests.pw3d_format import toy_setup, write_tiny_pw3d


class Toy(torch.utils.data.Dataset):
    def __init__(self, name, length):
        self.name, self.length, self.epoch = name, length, None

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        if not 0 <= index < self.length:
            raise IndexError(index)
        return self.name, index

    def set_epoch(self, epoch):
        self.epoch = epoch


def _expected_balanced(lengths, names, i):
    """Spec 4.4 by hand: (name, local index) or (name, None) for a random tail position."""
    longest = max(lengths)
    group, local = i // longest, i % longest
    n = lengths[group]
    if local < n * (longest // n):
        return names[group], local % n
    return names[group], None


@pytest.mark.parametrize("lengths", [(3, 7), (7, 3), (2, 5, 4), (4, 4)])
def test_balanced_mix_length_and_index_mapping(lengths):
    names = "abc"[: len(lengths)]
    mix = MultipleDatasets([Toy(n, k) for n, k in zip(names, lengths)], make_same_len=True)
    assert len(mix) == len(lengths) * max(lengths)
    for i in range(len(mix)):
        name, local = mix[i]
        expected_name, expected_local = _expected_balanced(lengths, names, i)
        assert name == expected_name
        if expected_local is None:
            assert 0 <= local < lengths[names.index(name)]
        else:
            assert local == expected_local


def test_the_tail_is_random_but_reproducible():
    state = np.random.get_state()
    mix = MultipleDatasets([Toy("a", 3), Toy("b", 7)], make_same_len=True, seed=3)
    tail = []
    for epoch in range(60):
        mix.set_epoch(epoch)
        tail.append(mix[6][1])
        assert mix[6] == mix[6]
    assert set(tail) == {0, 1, 2}  # uniform over the short dataset
    again = MultipleDatasets([Toy("a", 3), Toy("b", 7)], make_same_len=True, seed=3)
    for epoch in (0, 17, 59):
        again.set_epoch(epoch)
        assert again[6][1] == tail[epoch]
    other_seed = MultipleDatasets([Toy("a", 3), Toy("b", 7)], make_same_len=True, seed=4)
    other = []
    for epoch in range(60):
        other_seed.set_epoch(epoch)
        other.append(other_seed[6][1])
    assert other != tail
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state()[1:], state[1:])), "global RNG used"


def test_concatenation():
    cat = MultipleDatasets([Toy("a", 3), Toy("b", 7), Toy("c", 1)], make_same_len=False)
    assert len(cat) == 11
    assert [cat[i] for i in range(11)] == [("a", 0), ("a", 1), ("a", 2)] + [("b", i) for i in range(7)] + [("c", 0)]
    with pytest.raises(IndexError):
        cat[11]


def test_set_epoch_reaches_nested_datasets():
    inner = [Toy("a", 2), Toy("b", 3)]
    mix = MultipleDatasets([MultipleDatasets(inner, make_same_len=False), Toy("c", 4)], make_same_len=True)
    mix.set_epoch(5)
    assert [db.epoch for db in inner] == [5, 5] and mix.dbs[1].epoch == 5


def test_empty_datasets_are_rejected():
    with pytest.raises(ValueError, match="empty"):
        MultipleDatasets([Toy("a", 3), Toy("b", 0)])
    with pytest.raises(ValueError, match="at least one"):
        MultipleDatasets([])


# --- registry ---

@pytest.fixture(scope="module")
def muco_kwargs(tmp_path_factory):
    layer, j30, h36m = symmetric_body_model(seed=1)
    tiny = write_tiny_muco(tmp_path_factory.mktemp("muco"), layer, j30, h36m, n_images=3)
    return {"data_dir": tiny["data_dir"], "body_model": layer, "joint_regressor_30": j30, "h36m_regressor": h36m,
            "input_img_shape": (256, 256), "output_hm_shape": (64, 64, 64), "bbox_3d_size": 2.0, "update_bbox": True,
            "augment": True, "seed": 0}


def test_build_train_dataset_groups(muco_kwargs):
    assert TRAIN_DATASETS["MuCo"] is MuCo
    single = build_train_dataset(["MuCo"], [], **muco_kwargs)
    assert isinstance(single, MuCo) and len(single) == 3
    only_2d = build_train_dataset([], ["MuCo"], **muco_kwargs)
    assert isinstance(only_2d, MuCo)
    # Stand-in for 3D = [MuCo, MuCo] (concatenated, 6) and 2D = [MuCo] (3): balanced to 2 x 6.
    mix = build_train_dataset(["MuCo", "MuCo"], ["MuCo"], **muco_kwargs)
    assert isinstance(mix, MultipleDatasets) and mix.make_same_len and len(mix) == 12
    group_3d, group_2d = mix.dbs
    assert isinstance(group_3d, MultipleDatasets) and not group_3d.make_same_len and len(group_3d) == 6
    assert isinstance(group_2d, MuCo)
    assert [mix.locate(i) for i in (0, 5, 6, 8, 9, 11)] == [(0, 0), (0, 5), (1, 0), (1, 2), (1, 0), (1, 2)]
    inputs, _, meta = mix[7]
    assert inputs["img"].shape == (3, 256, 256) and meta["is_3D"] == 1


def test_build_train_dataset_errors(muco_kwargs):
    with pytest.raises(ValueError, match=r"unknown training dataset 'Human3.6M'; available: CrowdPose, Human36M, "
                                         r"MSCOCO, MuCo"):
        build_train_dataset(["Human3.6M", "MuCo"], [], **muco_kwargs)
    with pytest.raises(ValueError, match=r"unknown training dataset 'MPII'; available: .*MuCo"):
        build_train_dataset([], ["MPII"], **muco_kwargs)
    with pytest.raises(ValueError, match="both empty"):
        build_train_dataset([], [], **muco_kwargs)


def test_build_test_dataset(tmp_path):
    _, _, _, joints_fn = toy_setup()
    write_tiny_pw3d(tmp_path, joints_fn)
    assert set(TEST_DATASETS) == {"3dpw", "3dpw-oc", "3dpw-pc", "3dpw-crowd", "3doh"}
    ds = build_test_dataset("3dpw-pc", data_dir=tmp_path / "data", input_img_shape=(256, 256))
    assert isinstance(ds, PW3D) and ds.variant == "3dpw-pc" and len(ds) == 2
    with pytest.raises(ValueError, match=r"unknown test dataset '3dpw-val'; available: 3doh, 3dpw, 3dpw-crowd"):
        build_test_dataset("3dpw-val", data_dir=tmp_path / "data")
