"""Fast CPU dropout and attention for training (the `fast_cpu_dropout` config key). On the CPU, random numbers dominate
the cost of dropout (torch.rand and bernoulli_ spend one Mersenne-Twister draw per element); `drop_mask` cuts each
64-bit draw into four 16-bit ones. The masks are drawn from a different random stream than F.dropout's, so a run with
the key off is reproducible but not bitwise equal to one with it on. `attend` trains the attention through explicit
products, whose backward is cheaper than the fused kernel's on short sequences.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from common.model.transformer import Attention


def drop_mask(shape, p, device):
    """A dropout mask (bool, `shape`, True = dropped): each element dropped with probability p (rounded to a
    multiple of 1/65536), independently."""
    if p >= 1:
        return torch.ones(shape, dtype=torch.bool, device=device)  # 32768 does not fit the int16 comparison below
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-(2**63), None)
    quarters = words.view(torch.int16)[:n]  # each uniform over [-32768, 32767]
    return (quarters < round(p * 65536) - 32768).reshape(shape)


def dropout(x, p, training):
    """F.dropout (kept elements scaled by 1 / (1 - p) in training), with `drop_mask` on the CPU."""
    if not training or p == 0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    return x.masked_fill(drop_mask(x.shape, p, x.device), 0.0).mul_(1.0 / (1.0 - p))


class Dropout(nn.Dropout):
    """nn.Dropout (same name and state, none) computed by `dropout`."""

    def forward(self, x):
        return dropout(x, self.p, self.training)


def attend(q, k, v, dropout_p=0.0):
    """F.scaled_dot_product_attention(q, k, v, dropout_p) (q (B, heads, Lq, d), k/v (B, heads, Lk, d)), computed as
    explicit products when training on the CPU. With dropout, PyTorch's CPU attention falls back to its unfused path
    and draws the mask element by element (12x the fused kernel's time for the voxel encoder's 512 tokens); this
    draws it with `drop_mask`. Without dropout, the fused kernel's backward costs about four times the explicit
    products' on the embedded preset's 9-27 tokens. Without gradients (evaluation) the fused kernel is used."""
    if q.device.type != "cpu" or not (dropout_p > 0 or torch.is_grad_enabled()):
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    weights = torch.softmax((q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1), dim=-1)
    if dropout_p == 0:
        return weights @ v
    weights = weights.masked_fill(drop_mask(weights.shape, dropout_p, weights.device), 0.0)
    return (weights @ v) * (1.0 / (1.0 - dropout_p))  # the 1 / (1 - p) on the 16x smaller output


def use_fast_cpu_dropout(model):
    """Replace, in place, every nn.Dropout of `model` by `Dropout` and the attention of every Attention by `attend`.
    Parameter and buffer names are unchanged. Returns the model."""
    for module in list(model.modules()):
        for name, child in module.named_children():
            if type(child) is nn.Dropout:
                setattr(module, name, Dropout(child.p, child.inplace))
        if isinstance(module, Attention):
            module.attend = attend
    return model
