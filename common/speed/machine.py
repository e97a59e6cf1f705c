"""`machine_kind` names the CPU and the vector/matrix instructions the speeds depend on, for reports (the benchmark,
`make demo`): the same code runs at different fractions of the matmul ceiling on AMD EPYC and on Intel Xeon with AMX.
"""
import os
import platform

import torch

# /proc/cpuinfo flags -> the names reports use. AMX: Intel's tile matrix units (bf16 matmuls in hardware).
ISA_FLAGS = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_bf16": "AVX-512 BF16", "amx_tile": "AMX",
             "amx_bf16": "AMX BF16"}


def machine_kind():
    """The CPU this process runs on: {'cpu_model': /proc/cpuinfo's model name (else platform.processor()),
    'isa': {name in ISA_FLAGS.values(): bool, or None where /proc/cpuinfo is unreadable}, 'torch_cpu_capability':
    the vector ISA PyTorch's own kernels dispatch to (torch.backends.cpu.get_cpu_capability(), e.g. 'AVX512'),
    'cpu_count': os.cpu_count(), 'arch': platform.machine(), 'summary': one line of all of it}."""
    model, flags = None, None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model is None:
                    model = value.strip()
                elif key == "flags" and flags is None:
                    flags = set(value.split())
    except OSError:
        pass
    model = model or platform.processor() or "unknown CPU"
    isa = {name: (None if flags is None else flag in flags) for flag, name in ISA_FLAGS.items()}
    capability = torch.backends.cpu.get_cpu_capability()
    present = [name for name, has in isa.items() if has]
    summary = (f"{model}, {os.cpu_count()} cores ({platform.machine()}); "
               f"{', '.join(present) if present else ('no ' + '/'.join(isa) if flags is not None else 'ISA unknown')}; "
               f"PyTorch kernels: {capability}")
    return {"cpu_model": model, "isa": isa, "torch_cpu_capability": capability, "cpu_count": os.cpu_count(),
            "arch": platform.machine(), "summary": summary}
