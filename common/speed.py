"""Speed switches that leave what the model computes unchanged (tests compare the outputs with and without each);
`python -m tools.bench` reports each one's effect on the current machine.

- channels_last: the CNN parts (ResNet, Pose2Feat, the 1x1 lift/projection convs) run in NHWC, the layout oneDNN's
  convolutions are fastest in on CPUs, and Tensor Cores' on GPUs. Parameter values and names are unchanged, so
  checkpoints load and save as before; only the memory layout of the 4-D tensors changes.
- fuse_conv_bn: inference only. Each BatchNorm that follows a convolution is folded into that convolution's
  weights and bias (y = gamma (Wx + b - mean) / sqrt(var + eps) + beta is again a convolution), and the ReLU
  and residual add after it run inside the convolution kernel, which removes their full memory passes. The folded model
  has no BN buffers, so it is for evaluation and the demo (common.speed.inference_model makes such a copy), never
  for training or saving.
- compile: torch.compile of the whole model (needs a C++ compiler on CPU; the first call compiles for minutes).
- reuse_cpu_memory (process-wide, `setup_cpu_process`): glibc hands every block of 32 MiB or more (the ResNet's
  stem and layer1 activations at batch 8) back to the kernel when it is freed, and the next one is page-faulted and
  zeroed again, 4 KiB at a time: on this VM a fresh 32 MiB output cost 40 ms against 9 ms for the convolution
  writing it. Serving every allocation from the heap and never trimming the heap keeps freed activations for the
  next call (what jemalloc or tcmalloc would do), at the price of the process keeping its peak memory.

bf16 autocast is the fourth switch; it is the `amp` config key of training and evaluation.

`machine_kind` names the CPU and the vector/matrix instructions these speeds depend on, for reports (the benchmark,
`make demo`): the same code runs at different fractions of the matmul ceiling on AMD EPYC and on Intel Xeon with AMX.
"""
import copy
import ctypes
import os
import platform

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import fuse_conv_bn_eval

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


def set_channels_last(model, enabled=True):
    """Switch a JOTR model's CNN parts to channels_last (enabled) or back to contiguous NCHW, in place.
    The model converts its image and heatmap inputs accordingly in forward. Returns the model."""
    memory_format = torch.channels_last if enabled else torch.contiguous_format
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            module.weight.data = module.weight.data.contiguous(memory_format=memory_format)
    model.channels_last = bool(enabled)
    return model


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


def _onednn_conv_available():
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


class FusedConv(nn.Module):
    """A convolution whose BatchNorm is already folded in, with what follows it fused: an optional residual added
    (forward's `residual`) and an optional ReLU. On the CPU that is one oneDNN call (a convolution with add/ReLU
    post-ops: PyTorch's own mkldnn::_convolution_pointwise, the kernel torch.compile emits), which saves the
    separate read-modify-write passes of the add and the activation; elsewhere conv2d, add, relu."""

    def __init__(self, conv, relu):
        super().__init__()
        self.weight, self.bias = conv.weight, conv.bias
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self.relu = relu
        self.onednn = _onednn_conv_available() and isinstance(self.padding, tuple)

    def forward(self, x, residual=None):
        weight, bias = self.weight, self.bias
        if self.onednn and x.device.type == "cpu":
            # A custom op is not autocast-aware: apply the autocast rule (convolutions run in the autocast dtype)
            # by hand.
            if torch.is_autocast_enabled("cpu"):
                dtype = torch.get_autocast_dtype("cpu")
                x, weight = x.to(dtype), weight.to(dtype)
                bias = bias.to(dtype) if bias is not None else None
            # With a residual, an NCHW input makes the op fall back to conv + aten add_relu, which has no bf16
            # kernel: bf16 residual blocks fuse only in channels_last (the default) and otherwise take the generic path.
            fused = (torch.float32, torch.bfloat16)
            if residual is not None and (x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last)):
                fused = (torch.float32,)
            if x.dtype == weight.dtype and x.dtype in fused:
                geometry = (list(self.padding), list(self.stride), list(self.dilation), self.groups)
                if residual is None:
                    return torch.ops.mkldnn._convolution_pointwise(x, weight, bias, *geometry,
                                                                   "relu" if self.relu else "none", [], "")
                return torch.ops.mkldnn._convolution_pointwise.binary(
                    x, residual.to(x.dtype), weight, bias, *geometry, "add", None, "relu" if self.relu else None, [],
                    "")
        y = F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)
        if residual is not None:
            y = y + residual.to(y.dtype)
        return F.relu(y) if self.relu else y


class FusedBlock(nn.Module):
    """A torchvision BasicBlock/Bottleneck for inference: convolutions with folded BN, the ReLUs and the residual
    add fused into them (FusedConv), without the block's separate BN, add and activation passes."""

    def __init__(self, block):
        super().__init__()
        convs = [getattr(block, name) for name in ("conv1", "conv2", "conv3") if hasattr(block, name)]
        bns = [getattr(block, name.replace("conv", "bn")) for name in ("conv1", "conv2", "conv3")
               if hasattr(block, name)]
        folded = [fuse_conv_bn_eval(conv, bn) for conv, bn in zip(convs, bns)]
        self.inner = nn.Sequential(*(FusedConv(conv, relu=True) for conv in folded[:-1]))
        self.last = FusedConv(folded[-1], relu=True)  # relu(conv(x) + identity)
        self.downsample = None
        if block.downsample is not None:
            self.downsample = FusedConv(fuse_conv_bn_eval(block.downsample[0], block.downsample[1]), relu=False)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        return self.last(self.inner(x), residual=identity)


def fuse_conv_bn(model):
    """Fold every BatchNorm of a JOTR model (ResNet stem and blocks, Pose2Feat) into the convolution before it and
    fuse the ReLUs that follow (FusedConv, FusedBlock), in place, for inference. The model must be in eval mode (BN
    then uses its running statistics, which is what makes the fold exact). Returns the model, which stays in eval
    mode: it has no BN left to train."""
    if model.training:
        raise ValueError("fuse_conv_bn folds the BN running statistics and needs model.eval() first")
    backbone = model.backbone
    backbone.conv1 = FusedConv(fuse_conv_bn_eval(backbone.conv1, backbone.bn1), relu=True)
    backbone.bn1, backbone.relu = nn.Identity(), nn.Identity()
    for layer in (backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4):
        for i, block in enumerate(layer):
            layer[i] = FusedBlock(block)
    conv, bn = model.pose2feat.conv[0], model.pose2feat.conv[1]
    model.pose2feat.conv = FusedConv(fuse_conv_bn_eval(conv, bn), relu=True)
    model.fused_for_inference = True
    return model


def compile_model(model, enabled=True, **kwargs):
    """torch.compile(model) when enabled, else the model unchanged."""
    return torch.compile(model, **kwargs) if enabled else model


def inference_model(model, compile=False):
    """What evaluation and the demo run: for a JOTR model, an eval-mode copy with its BatchNorms folded into the
    convolutions (the trained model itself is left untouched, so training can go on), optionally compiled; any
    other model (e.g. embedded.baseline.MeanPoseBaseline) is returned as it is."""
    if not hasattr(model, "fused_for_inference"):
        return model
    if not model.fused_for_inference:
        model = fuse_conv_bn(copy.deepcopy(model).eval())
    return compile_model(model, compile)
