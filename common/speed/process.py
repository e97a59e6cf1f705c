"""Process-wide CPU settings every entry point applies before building a model (the `reuse_cpu_memory` config key):

- denormals flushed to zero: freshly initialised networks, e.g. N(0, 0.001) convolutions, produce denormals, which are
  very slow on CPUs.
- reuse_cpu_memory: glibc hands every block of 32 MiB or more (the ResNet's stem and layer1 activations at batch 8)
  back to the kernel when it is freed, and the next one is page-faulted and zeroed again, 4 KiB at a time: on this VM
  a fresh 32 MiB output cost 40 ms against 9 ms for the convolution writing it. Serving every allocation from the heap
  and never trimming the heap keeps freed activations for the next call (what jemalloc or tcmalloc would do), at the
  price of the process keeping its peak memory.
"""
import ctypes
import platform

import torch

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
    e.g. N(0, 0.001) convolutions, produce denormals, which are very slow on CPUs) and, with reuse_cpu_memory,
    `keep_freed_memory`. Returns whether the memory setting was applied."""
    torch.set_flush_denormal(True)
    return keep_freed_memory() if reuse_cpu_memory else False
