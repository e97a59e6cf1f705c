"""channels_last (the `channels_last` config key): the CNN parts (ResNet, Pose2Feat, the 1x1 lift/projection convs)
run in NHWC, the layout oneDNN's convolutions are fastest in on CPUs, and Tensor Cores' on GPUs. Parameter values and
names are unchanged, so checkpoints load and save as before; only the memory layout of the 4-D tensors changes.
"""
import torch
from torch import nn


def _nhwc(module, args):
    """Forward pre-hook: the 4-D tensor arguments (JOTR's image, Pose2Feat's stem features and heatmaps) in NHWC."""
    return tuple(a.contiguous(memory_format=torch.channels_last) if torch.is_tensor(a) and a.dim() == 4 else a
                 for a in args)


def set_channels_last(model, enabled=True):
    """Switch a JOTR model's CNN parts to channels_last (enabled) or back to contiguous NCHW, in place: the conv
    weights, and forward pre-hooks converting the image (model input) and the heatmaps (Pose2Feat input).
    Returns the model."""
    memory_format = torch.channels_last if enabled else torch.contiguous_format
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            module.weight.data = module.weight.data.contiguous(memory_format=memory_format)
    for handle in getattr(model, "_channels_last_hooks", ()):
        handle.remove()
    model._channels_last_hooks = []
    if enabled:
        model._channels_last_hooks = [model.register_forward_pre_hook(_nhwc),
                                      model.pose2feat.register_forward_pre_hook(_nhwc)]
    return model
