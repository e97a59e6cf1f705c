"""Mixing training sets (spec 4.4).

`MultipleDatasets(dbs, make_same_len=False)` concatenates: the index ranges of the datasets laid end to end.
`MultipleDatasets(dbs, make_same_len=True)` balances: every dataset gets max_len = max(len) positions, so the
length is len(dbs) * max_len; position i belongs to dataset i // max_len with local position p = i % max_len. For
a dataset of length n, positions p < n * floor(max_len / n) take item p % n and the remaining tail positions take
a uniformly random item. The official run mixes the 3D group (Human36M + MuCo, concatenated) and the 2D group
(CrowdPose + MSCOCO) this way, so each epoch sees both groups equally often.

The tail's random items are drawn from np.random.default_rng([seed, salt, epoch, i]) (the official code used the
global RNG): the mix is reproducible and independent of DataLoader workers. `set_epoch(epoch)` selects the epoch
and is passed on to every member that has a set_epoch.
"""
import bisect

import numpy as np
import torch

_TAIL_SALT = 0x4D495820  # keeps the tail draws apart from the datasets' own per-item streams


class MultipleDatasets(torch.utils.data.Dataset):
    """Concatenation (make_same_len=False) or balanced mix (make_same_len=True) of datasets; see module docstring."""

    def __init__(self, dbs, make_same_len=True, seed=0):
        self.dbs = list(dbs)
        if not self.dbs:
            raise ValueError("MultipleDatasets needs at least one dataset")
        self.lengths = [len(db) for db in self.dbs]
        empty = [i for i, n in enumerate(self.lengths) if n == 0]
        if empty:
            raise ValueError(f"MultipleDatasets: dataset(s) at position {empty} are empty "
                             f"({[type(self.dbs[i]).__name__ for i in empty]})")
        self.make_same_len = bool(make_same_len)
        self.seed = int(seed)
        self.epoch = 0
        self.max_len = max(self.lengths)
        self.offsets = np.cumsum([0] + self.lengths).tolist()  # concatenation: start of each dataset

    def __len__(self):
        return len(self.dbs) * self.max_len if self.make_same_len else self.offsets[-1]

    def set_epoch(self, epoch):
        self.epoch = int(epoch)
        for db in self.dbs:
            if hasattr(db, "set_epoch"):
                db.set_epoch(epoch)

    def locate(self, index):
        """(dataset position, item index in that dataset) of mixed item `index` in the current epoch."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for MultipleDatasets of length {len(self)}")
        if not self.make_same_len:
            db_idx = bisect.bisect_right(self.offsets, index) - 1
            return db_idx, index - self.offsets[db_idx]
        db_idx, local = divmod(index, self.max_len)
        length = self.lengths[db_idx]
        if local < length * (self.max_len // length):
            return db_idx, local % length
        rng = np.random.default_rng([self.seed, _TAIL_SALT, self.epoch, index])
        return db_idx, int(rng.integers(length))

    def __getitem__(self, index):
        db_idx, local = self.locate(int(index))
        return self.dbs[db_idx][local]
