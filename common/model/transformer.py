"""DETR-style post-norm transformer layers, and JOTR's decoder with 3D joint refinement (spec 1.3 steps 6-10).

Tensors are batch-first here, (B, L, C); the official code is sequence-first, which only matters when
comparing intermediates. Parameter names (self_attn.in_proj_weight, linear1, norm1, ...) follow
torch.nn.MultiheadAttention / DETR so official checkpoints load without renaming inside layers.
"""
import torch
import torch.nn.functional as F
from torch import nn

from common.geometry import inverse_sigmoid


class Attention(nn.Module):
    """Multi-head attention with nn.MultiheadAttention's parameter layout (q, k, v packed in
    in_proj_weight rows [0:C], [C:2C], [2C:3C]) computed by scaled_dot_product_attention."""

    def __init__(self, dim, num_heads, dropout=0.0):
        super().__init__()
        self.num_heads, self.dropout = num_heads, dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)
        self.attend = F.scaled_dot_product_attention  # (q, k, v, dropout_p) -> attention output

    def forward(self, query, key, value):
        """query (B, Lq, C), key/value (B, Lk, C) -> (B, Lq, C)."""
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        batch, heads = query.shape[0], self.num_heads

        def split(x, w, b):  # (B, L, C) -> (B, heads, L, C / heads)
            return F.linear(x, w, b).reshape(batch, x.shape[1], heads, -1).transpose(1, 2)

        q, k, v = split(query, w_q, b_q), split(key, w_k, b_k), split(value, w_v, b_v)
        out = self.attend(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(batch, query.shape[1], -1))


class EncoderLayer(nn.Module):
    """Post-norm encoder layer; the positional embedding is added to queries and keys only."""

    def __init__(self, dim, num_heads, dim_feedforward, dropout):
        super().__init__()
        self.self_attn = Attention(dim, num_heads, dropout)
        self.linear1 = nn.Linear(dim, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, src, pos):
        q = k = src + pos
        src = self.norm1(src + self.dropout(self.self_attn(q, k, src)))
        return self.norm2(src + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(src), inplace=True)))))


class TransformerEncoder(nn.Module):
    """A stack of EncoderLayers, optionally followed by a LayerNorm (refine_3d has one, the main encoder not)."""

    def __init__(self, num_layers, dim, num_heads, dim_feedforward, dropout, final_norm):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(dim, num_heads, dim_feedforward, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim) if final_norm else None

    def forward(self, src, pos):
        for layer in self.layers:
            src = layer(src, pos)
        return self.norm(src) if self.norm is not None else src


class DecoderLayer(nn.Module):
    """Post-norm DETR decoder layer: self-attention, cross-attention, feed-forward."""

    def __init__(self, dim, num_heads, dim_feedforward, dropout):
        super().__init__()
        self.self_attn = Attention(dim, num_heads, dropout)
        self.multihead_attn = Attention(dim, num_heads, dropout)
        self.linear1 = nn.Linear(dim, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tgt, memory, memory_pos, query_pos):
        q = k = tgt + query_pos
        tgt = self.norm1(tgt + self.dropout(self.self_attn(q, k, tgt)))
        tgt = self.norm2(tgt + self.dropout(self.multihead_attn(tgt + query_pos, memory + memory_pos, memory)))
        return self.norm3(tgt + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(tgt), inplace=True)))))


def sample_volume(volume, joints, exponent):
    """Trilinear features of `volume` at normalised joint positions.

    volume: (B, C, D, H, W); joints: (B, J, 3) (x, y, z) in [0, 1], z linear in depth bins;
    exponent: the model's depth warp k. The volume's depth axis is laid out on z^k (its depth anchors are
    a^k), so the sampling grid uses 2 z^k - 1 along depth (spec 1.3-10). Returns (B, J, C).
    """
    grid = torch.stack([2 * joints[..., 0] - 1, 2 * joints[..., 1] - 1, 2 * joints[..., 2].pow(exponent) - 1], dim=-1)
    sampled = F.grid_sample(volume, grid[:, None, None].to(volume.dtype), mode="bilinear", padding_mode="zeros",
                            align_corners=True)  # (B, C, 1, 1, J)
    return sampled[:, :, 0, 0].transpose(1, 2)


class JointRefineDecoder(nn.Module):
    """JOTR's decoder: DETR layers whose 15 joint tokens regress normalised 3D joints, refined layer by layer;
    the 3D feature volume sampled at each layer's joints is appended to the next layer's cross-attention memory.

    Unlike DETR, the shared final LayerNorm is applied after every layer and its output feeds the next layer.
    """

    def __init__(self, num_layers, dim, num_heads, dim_feedforward, dropout, num_smpl_tokens=3):
        super().__init__()
        self.num_smpl_tokens = num_smpl_tokens
        self.layers = nn.ModuleList(DecoderLayer(dim, num_heads, dim_feedforward, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim)
        # Layer 0 regresses joints from features; later layers regress a residual in logit space from
        # [features ; previous logits].
        self.joint_regressors = nn.ModuleList(
            [nn.Linear(dim, 3)] + [nn.Linear(dim + 3, 3) for _ in range(num_layers - 1)])
        # Embeds a joint's (unwarped) logits as the positional encoding of its sampled feature.
        self.joint_pos_embed = nn.Sequential(nn.Linear(3, dim), nn.LayerNorm(dim), nn.ReLU(), nn.Linear(dim, dim))

    def forward(self, tgt, query_pos, memory, memory_pos, volume, exponent):
        """tgt, query_pos: (B, 3 + J, C); memory, memory_pos: (B, N, C); volume: (B, C, D, H, W).

        Returns smpl_tokens (num_layers, B, 3, C) (normalised) and joints (B, J, 3) in [0, 1] from the last layer.
        """
        image_memory, image_pos = memory, memory_pos
        smpl_tokens, joints = [], None
        for layer, regressor in zip(self.layers, self.joint_regressors):
            tgt = self.norm(layer(tgt, memory, memory_pos, query_pos))
            smpl_tokens.append(tgt[:, : self.num_smpl_tokens])
            joint_feat = tgt[:, self.num_smpl_tokens:]
            if joints is None:
                joints = torch.sigmoid(regressor(joint_feat))
            else:
                logits = inverse_sigmoid(joints)
                joints = torch.sigmoid(logits + regressor(torch.cat([joint_feat, logits], dim=-1)))
            # The next layer attends to the image tokens plus the voxel features at this layer's joints.
            memory = torch.cat([image_memory, sample_volume(volume, joints, exponent)], dim=1)
            memory_pos = torch.cat([image_pos, self.joint_pos_embed(inverse_sigmoid(joints))], dim=1)
        return torch.stack(smpl_tokens), joints


class Transformer(nn.Module):
    """Main encoder (2D image tokens) + joint-refining decoder, with the learnable decoder content inputs."""

    def __init__(self, dim, num_heads, enc_layers, dec_layers, dim_feedforward, dropout, num_smpl_tokens=3):
        super().__init__()
        self.encoder = TransformerEncoder(enc_layers, dim, num_heads, dim_feedforward, dropout, final_norm=False)
        self.decoder = JointRefineDecoder(dec_layers, dim, num_heads, dim_feedforward, dropout, num_smpl_tokens)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        # Decoder content inputs: one learned vector shared by the SMPL tokens, one by the joint tokens.
        self.smpl_tgt = nn.Parameter(torch.zeros(dim))
        self.kp_tgt = nn.Parameter(torch.zeros(dim))
        self.num_smpl_tokens = num_smpl_tokens

    def forward(self, src, pos, query_pos, volume, exponent):
        """src, pos: (B, N, C) image tokens and their embedding; query_pos: (3 + J, C).

        Returns (smpl_tokens (L, B, 3, C), joints (B, J, 3), memory (B, N, C))."""
        batch, num_queries = src.shape[0], query_pos.shape[0]
        memory = self.encoder(src, pos)
        tgt = torch.cat([self.smpl_tgt.expand(self.num_smpl_tokens, -1),
                         self.kp_tgt.expand(num_queries - self.num_smpl_tokens, -1)])
        tgt = tgt.expand(batch, -1, -1)
        query_pos = query_pos.expand(batch, -1, -1)
        smpl_tokens, joints = self.decoder(tgt, query_pos, memory, pos, volume, exponent)
        return smpl_tokens, joints, memory
