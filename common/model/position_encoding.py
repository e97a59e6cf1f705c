"""Fixed positional encodings of the two token sets (spec 1.3 steps 6 and 7)."""
import math

import torch


def sine_position_2d(height, width, num_pos_feats=128, temperature=10000.0):
    """DETR's normalised sine embedding of an unmasked (height x width) grid.

    Returns (height * width, 2 * num_pos_feats), tokens in (row, column) order; the first
    num_pos_feats channels encode the row, the rest the column. Channel m of each half is
    sin(e / f_m) for even m and cos(e / f_m) for odd m, f_m = temperature^(2 floor(m/2) / num_pos_feats),
    with e = (index + 1) / (size + 1e-6) * 2 pi.
    """
    eps, scale = 1e-6, 2 * math.pi
    y_embed = torch.arange(1, height + 1, dtype=torch.float32)[:, None].expand(height, width) / (height + eps) * scale
    x_embed = torch.arange(1, width + 1, dtype=torch.float32)[None, :].expand(height, width) / (width + eps) * scale
    dim_t = torch.arange(num_pos_feats, dtype=torch.float32)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_pos_feats)

    def encode(embed):
        pos = embed[..., None] / dim_t  # (H, W, F)
        return torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(-2)

    return torch.cat((encode(y_embed), encode(x_embed)), dim=-1).reshape(height * width, 2 * num_pos_feats)


def sinusoid_table(num_positions, dim):
    """The Transformer paper's 1D table (num_positions, dim): sin for even channels, cos for odd,
    angle = position / 10000^(2 floor(j/2) / dim). Computed in float64 like the official buffer."""
    pos = torch.arange(num_positions, dtype=torch.float64)[:, None]
    j = torch.arange(dim)
    angle = pos / torch.pow(10000.0, 2 * torch.div(j, 2, rounding_mode="floor").double() / dim)
    return torch.where(j % 2 == 0, torch.sin(angle), torch.cos(angle)).float()
