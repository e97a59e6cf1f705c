"""Process-group set-up for torchrun, seeding, and samplers that shard data across processes.

A single-process run never initialises torch.distributed; every helper here works in both cases.
"""
import math
import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self):
        return self.world_size > 1

    @property
    def is_main(self):
        return self.rank == 0


def init_distributed(device):
    """Join the process group that torchrun describes in the environment (RANK, WORLD_SIZE, LOCAL_RANK).

    device: the configured device (torch.device); under torchrun with CUDA each process takes
    cuda:LOCAL_RANK. Backend nccl on CUDA, gloo on the CPU. Without torchrun (or with one process) nothing
    is initialised.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda" and world_size > 1:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
        if attempt is None:
            dist.init_process_group(backend=backend)
        else:
            # Under torchrun, workers restarted after a failure (--max-restarts) meet in the key-value store of the
            # failed attempt, whose stale addresses the process group would try to connect to (torch 2.14 with gloo
            # times out); a key prefix per attempt keeps each attempt to itself. The store is the one env:// uses.
            agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
            store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size,
                                  is_master=rank == 0 and not agent_store)
            dist.init_process_group(backend=backend, store=dist.PrefixStore(f"attempt_{attempt}/", store), rank=rank,
                                    world_size=world_size)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def cleanup_distributed(graceful=True):
    """Leave the process group. graceful: wait for every process first, so none tears the group down while another is
    still in a collective (a C++ abort otherwise); after an error, leave at once (the others may never arrive)."""
    if dist.is_available() and dist.is_initialized():
        if graceful:
            dist.barrier()
        dist.destroy_process_group()


def is_distributed():
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_max(values, device):
    """Element-wise maximum of a list of floats over all processes (the list itself when single-process)."""
    if not is_distributed():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def broadcast_buffers(module):
    """Copy rank 0's buffers (BatchNorm running statistics) to every process. DDP synchronises parameters
    through gradients, but each process updates its own running statistics during its forward passes."""
    if is_distributed():
        for buf in module.buffers():
            dist.broadcast(buf, src=0)


def seed_everything(seed):
    """Seed python, numpy and torch (all devices) with `seed` (callers add the rank)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_worker(worker_id):
    """DataLoader worker_init_fn: seed python's and numpy's global RNGs from the worker's torch seed, which the
    DataLoader derives from its generator, so workers differ from each other and runs repeat. (Our datasets draw
    their augmentation from per-sample generators; this only covers code that uses the global RNGs.)"""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def rng_state():
    """Every RNG state that affects training (saved in checkpoints for an exact resume)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class EpochSampler(torch.utils.data.Sampler):
    """Training order: a permutation drawn from (seed, epoch), sharded across processes, that can start in the
    middle of an epoch (to resume exactly).

    Each process gets every world_size-th index of the permutation, padded by wrapping around so that all
    processes take the same number of steps (as DistributedSampler does); `start_batch` skips the batches an
    interrupted run already trained on. The order does not depend on the number of DataLoader workers.
    """

    def __init__(self, dataset_len, batch_size, seed, rank=0, world_size=1, shuffle=True):
        self.dataset_len, self.batch_size = dataset_len, batch_size
        self.seed, self.rank, self.world_size, self.shuffle = seed, rank, world_size, shuffle
        self.num_per_rank = math.ceil(dataset_len / world_size)
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch, start_batch=0):
        self.epoch, self.start_batch = epoch, start_batch

    def batches_per_epoch(self):
        return self.num_per_rank // self.batch_size  # incomplete last batches are dropped

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.dataset_len, generator=g).tolist()
        else:
            order = list(range(self.dataset_len))
        total = self.num_per_rank * self.world_size
        order = (order * math.ceil(total / max(len(order), 1)))[:total]
        mine = order[self.rank:total:self.world_size]
        usable = self.batches_per_epoch() * self.batch_size
        return iter(mine[self.start_batch * self.batch_size:usable])

    def __len__(self):
        return max(self.batches_per_epoch() - self.start_batch, 0) * self.batch_size


class ShardSampler(torch.utils.data.Sampler):
    """Evaluation: process r takes indices r, r + world_size, ...; no padding, so every sample is evaluated
    exactly once across processes (processes may get one sample more or less than others)."""

    def __init__(self, dataset_len, rank=0, world_size=1):
        self.indices = list(range(rank, dataset_len, world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)
