"""Training only: samples whose image is missing or unreadable are skipped and counted, never silently.

A dataset's item raises FileNotFoundError (or another OSError) naming the file when its image cannot be read
(data.train_sample.TrainingImages). `SkipUnreadable` replaces such an item by the next readable one, so batches
keep their size and the data order stays a function of (seed, epoch, step), and records the failures in the
item's meta['skipped'] (one string, empty when nothing was skipped). The default collate turns that into a list of
strings per batch, which reaches the training process even from DataLoader workers; `BadSampleCount` there logs
each file and decides when there are too many. Evaluation sets are never wrapped: a bad test image is an error.
"""
import torch

from common.errors import UserError

SKIPPED_KEY = "skipped"


class SkipUnreadable(torch.utils.data.Dataset):
    """dataset[i], or, if its image cannot be read, the next index whose image can (wrapping around); meta gains
    'skipped': newline-separated error messages of the items passed over ('' when none)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def set_epoch(self, epoch):
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __getitem__(self, index):
        skipped = []
        for offset in range(len(self.dataset)):
            try:
                inputs, targets, meta = self.dataset[(index + offset) % len(self.dataset)]
            except OSError as error:
                skipped.append(str(error))
                continue
            return inputs, targets, dict(meta, **{SKIPPED_KEY: "\n".join(skipped)})
        raise FileNotFoundError(f"no training image could be read; the first error: {skipped[0]}")


class BadDataError(UserError, RuntimeError):
    """More than the tolerated fraction of an epoch's training samples could not be read."""


class BadSampleCount:
    """Counts the skipped samples of the current epoch on this process (since the epoch's start or the resume).

    samples_per_epoch: this process's samples per epoch; max_fraction: config max_bad_samples_fraction;
    log: callable(str) that records each skipped file."""

    def __init__(self, samples_per_epoch, max_fraction, log):
        self.samples_per_epoch, self.max_fraction, self.log = samples_per_epoch, max_fraction, log
        self.epoch, self.count = 0, 0

    def start_epoch(self, epoch):
        self.epoch, self.count = epoch, 0

    def take(self, meta):
        """Remove 'skipped' from a batch's meta (the model must not see it) and count and log its entries."""
        for messages in meta.pop(SKIPPED_KEY, ()):
            for message in filter(None, messages.split("\n")):
                self.count += 1
                self.log(f"skipped a training sample ({self.count} in epoch {self.epoch}): {message}")

    @property
    def exceeded(self):
        return self.count > self.max_fraction * self.samples_per_epoch

    def error(self):
        return BadDataError(
            f"too many unreadable training samples: more than {self.max_fraction:.2%} of epoch {self.epoch}'s "
            f"{self.samples_per_epoch} samples per process could not be read ({self.count} on this process; the log "
            f"names each file). Fix or re-download the images (python -m tools.check_data lists the missing ones), "
            f"or raise max_bad_samples_fraction.")
