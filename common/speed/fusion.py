"""Inference-only fusion (the `fast_inference` config key), which leaves what the model computes unchanged up to
float32 rounding (tests compare the outputs with and without it):

- fuse_conv_bn: each BatchNorm that follows a convolution is folded into that convolution's weights and bias
  (y = gamma (Wx + b - mean) / sqrt(var + eps) + beta is again a convolution), and the ReLU and residual add after it
  run inside the convolution kernel, which removes their full memory passes. The folded model has no BN buffers, so
  it is for evaluation and the demo (`inference_model` makes such a copy), never for training or saving.
- compile: torch.compile of the whole model (needs a C++ compiler on CPU; the first call compiles for minutes).
"""
import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import fuse_conv_bn_eval

from common.model.jotr import JOTR


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
    return model


def compile_model(model, enabled=True, **kwargs):
    """torch.compile(model) when enabled, else the model unchanged."""
    return torch.compile(model, **kwargs) if enabled else model


def is_fused(model):
    """Whether `fuse_conv_bn` has already been applied to `model`."""
    return any(isinstance(module, FusedConv) for module in model.modules())


def inference_model(model, compile=False, fuse=True):
    """What evaluation and the demo run: for a JOTR model, with `fuse` (the `fast_inference` config key) an eval-mode
    copy with its BatchNorms folded into the convolutions (the trained model itself is left untouched, so training
    can go on), else the model itself; optionally compiled. Any other model (e.g. embedded.baseline.MeanPoseBaseline)
    is returned as it is."""
    if not isinstance(model, JOTR):
        return model
    if fuse and not is_fused(model):
        model = fuse_conv_bn(copy.deepcopy(model).eval())
    return compile_model(model, compile)
