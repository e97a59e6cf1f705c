"""Process-wide CPU settings every entry point applies before building a model (the `reuse_cpu_memory` config key):

- denormals flushed to zero: freshly initialised networks, e.g. N(0, 0.001) convolutions, produce denormals, which are
  very slow on CPUs.
- reuse_cpu_memory: glibc hands every block of 32 MiB or more (the ResNet's stem and layer1 activations at batch 8)
  back to the kernel when it is freed, and the next one is page-faulted and zeroed again, 4 KiB at a time: on this VM
  a fresh 32 MiB output cost 40 ms against 9 ms for the convolution writing it. Serving every allocation from the heap
  and never trimming the heap keeps freed activations for the next call (what jemalloc or tcmalloc would do), at the
  price of the process keeping its peak memory.
- numpy's BLAS on one thread: the loaders' numpy products are small, and OpenBLAS's idle threads busy-wait after
  every call (for up to about 0.1 s), taking a core from PyTorch's threads. In `make demo`'s training loop, which
  loads in the main process, that cost about 60 ms of each 0.3 s step on two cores.
"""
import ctypes
import platform

import torch
from threadpoolctl import threadpool_limits

# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def keep_freed_memory():
    """Make glibc serve every allocation from the heap (no mmap) and never return heap memory to the kernel, so
    that freed tensors are reused without page faults. Process-wide; Linux with glibc only. Returns True if
    applied, False where it does not apply (other platforms, other C libraries)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1


def setup_cpu_process(reuse_cpu_memory=True):
    """What every entry point does before building a model: flush denormals to zero (freshly initialised networks,
    e.g. N(0, 0.001) convolutions, produce denormals, which are very slow on CPUs), limit numpy's BLAS to one thread
    (module docstring) and, with reuse_cpu_memory, `keep_freed_memory`. Returns whether the memory setting was
    applied."""
    torch.set_flush_denormal(True)
    threadpool_limits(1, user_api="blas")  # kept for the process's lifetime (the limiter is not restored)
    return keep_freed_memory() if reuse_cpu_memory else False
