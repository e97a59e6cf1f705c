import numpy as np
import pytest
import torch

from data.skip_unreadable import BadDataError, BadSampleCount, SkipUnreadable


class ImagesOnDisk(torch.utils.data.Dataset):
    """Item i is (inputs, targets, meta) built from image i; the listed ones are unreadable, as a loader reports."""

    def __init__(self, n, unreadable=()):
        self.n, self.unreadable = n, set(unreadable)

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        if index in self.unreadable:
            raise FileNotFoundError(f"MuCo image missing or unreadable: /data/MuCo/{index:06d}.jpg")
        return {"img": np.full((2,), index, np.float32)}, {}, {"is_3D": np.float32(1)}


def test_unreadable_items_are_replaced_by_the_next_readable_one_and_recorded():
    dataset = SkipUnreadable(ImagesOnDisk(5, unreadable={1, 2, 4}))
    inputs, _, meta = dataset[1]
    assert inputs["img"][0] == 3  # 1 and 2 passed over
    assert meta["skipped"].splitlines() == [f"MuCo image missing or unreadable: /data/MuCo/{i:06d}.jpg" for i in (1, 2)]
    inputs, _, meta = dataset[4]
    assert inputs["img"][0] == 0 and "000004.jpg" in meta["skipped"]  # wraps around
    assert dataset[0][2]["skipped"] == ""
    with pytest.raises(FileNotFoundError, match="no training image could be read.*000000.jpg"):
        SkipUnreadable(ImagesOnDisk(2, unreadable={0, 1}))[0]


def test_other_errors_are_not_skipped():
    class Broken(ImagesOnDisk):
        def __getitem__(self, index):
            raise ValueError("MuCo image /data/MuCo/000001.jpg is 10x10, but MuCo-3DHP.json says 20x20")

    with pytest.raises(ValueError, match="10x10"):
        SkipUnreadable(Broken(3))[0]


def test_counts_through_the_data_loader_and_stops_past_the_fraction():
    dataset = SkipUnreadable(ImagesOnDisk(10, unreadable={3}))
    loader = torch.utils.data.DataLoader(dataset, batch_size=5, num_workers=1)
    logged = []
    count = BadSampleCount(samples_per_epoch=10, max_fraction=0.1, log=logged.append)
    count.start_epoch(7)
    for _, _, meta in loader:
        count.take(meta)
        assert "skipped" not in meta  # the model never sees it
    assert count.count == 1 and not count.exceeded  # 1 of 10 is not more than 10 %
    assert logged == ["skipped a training sample (1 in epoch 7): MuCo image missing or unreadable: "
                      "/data/MuCo/000003.jpg"]
    count.take({"skipped": ["", "x.jpg unreadable"]})
    assert count.exceeded
    with pytest.raises(BadDataError, match=r"more than 10.00% of epoch 7's 10 samples.*2 on this process"):
        raise count.error()
    count.start_epoch(8)
    assert count.count == 0 and not count.exceeded
