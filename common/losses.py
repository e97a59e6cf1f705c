"""JOTR's training losses (spec 3): six supervised L1 terms, their learned uncertainty weighting, and the two
joint-contrastive InfoNCE terms on the 3D feature volume.

Frames and units: `joint_img` predictions are (x, y, z) in [0, 1] (x, y = heatmap pixel / 64, z = depth bin / 64,
linear); `orig_joint_img` / `fit_joint_img` targets are in the 64-grid heatmap frame (pixels, depth bins);
`joint_proj` is in the heatmap frame; `joint_cam` is root-relative, metres.

A training step combines them as (spec 3.2)

    total = AWL(supervised_losses(...)) + intra_weight * intra_nce + inter_weight * inter_nce.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from common.body.joint_sets import SMPL30_QUERY15_IDX
from common.model.transformer import sample_volume

SUPERVISED_KEYS = ("body_joint_img", "smpl_joint_img", "smpl_pose", "smpl_shape", "body_joint_proj", "body_joint_cam")
JOINT_PROJ_SCALE = 1 / 8  # body_joint_proj: L1 in 64-grid pixels, scaled by 1/8 (spec 3.1)
JOINT_CAM_SCALE = 5.0  # body_joint_cam: L1 in metres, scaled by 5 (spec 3.1)


# ----------------------------------------------------------------------------------------------------------------
# Supervised terms (spec 3.1)
# ----------------------------------------------------------------------------------------------------------------

def supervised_losses(out, targets, meta, hm_shape=(64, 64, 64)):
    """The six supervised L1 terms of spec 3.1, each reduced to a scalar.

    out: model outputs joint_img (B, 15, 3) in [0, 1]; joint_proj (B, 30, 2) heatmap frame; joint_cam (B, 30, 3)
        root-relative metres; smpl_pose (B, 72) axis-angle; smpl_shape (B, 10).
    targets: orig_joint_img (B, 30, 3) (64-grid x, y; z = depth bin for 3D sets, visibility for 2D sets),
        fit_joint_img (B, 30, 3), orig_joint_cam (B, 30, 3) root-relative metres, pose_param (B, 72),
        shape_param (B, 10).
    meta: orig_joint_valid, orig_joint_trunc, fit_joint_trunc (B, 30, 1); fit_param_valid (B, 72);
        is_valid_fit, is_3D (B,).
    hm_shape: (D, H, W) of the heatmap grid the joint_img targets live on.

    Returns {key: scalar} for the keys of SUPERVISED_KEYS (the official names without their `_0` suffix).

    Reduction: the official one, a plain mean over ALL elements of each masked tensor, so masked-out entries count
    in the denominator (a batch with few valid joints gives a smaller loss, not a renormalised one). Everything is
    computed in float32: the official float64 came only from its collate turning the scalar masks into float64
    (spec 3.1), not from a need for the precision.
    """
    def f32(t):
        return t.float()

    query = SMPL30_QUERY15_IDX
    batch = out["joint_img"].shape[0]
    is_3d = f32(meta["is_3D"]).reshape(batch, 1, 1)
    valid_fit = f32(meta["is_valid_fit"]).reshape(batch, 1)
    # (1/s) |s J - T| per axis, s = (W, H, D) = 64: the joint_img error in [0, 1] units (spec 3.1).
    scale = torch.tensor([hm_shape[2], hm_shape[1], hm_shape[0]], dtype=torch.float32,
                         device=out["joint_img"].device)
    joint_img = f32(out["joint_img"]) * scale

    body_img = (joint_img - f32(targets["orig_joint_img"])[:, query]).abs() / scale
    body_img = body_img * f32(meta["orig_joint_trunc"])[:, query]
    # 2D datasets carry a visibility flag in the z column, not a depth: only 3D samples supervise z.
    body_img = torch.cat([body_img[..., :2], body_img[..., 2:] * is_3d], dim=-1)

    smpl_img = (joint_img - f32(targets["fit_joint_img"])[:, query]).abs() / scale
    smpl_img = smpl_img * f32(meta["fit_joint_trunc"])[:, query] * valid_fit[..., None]

    pose = (f32(out["smpl_pose"]) - f32(targets["pose_param"])).abs() * f32(meta["fit_param_valid"]) * valid_fit
    shape = (f32(out["smpl_shape"]) - f32(targets["shape_param"])).abs() * valid_fit
    proj = JOINT_PROJ_SCALE * (f32(out["joint_proj"]) - f32(targets["orig_joint_img"])[..., :2]).abs()
    proj = proj * f32(meta["orig_joint_trunc"])
    cam = JOINT_CAM_SCALE * (f32(out["joint_cam"]) - f32(targets["orig_joint_cam"])).abs()
    cam = cam * f32(meta["orig_joint_valid"]) * is_3d

    terms = (body_img, smpl_img, pose, shape, proj, cam)
    return {key: term.mean() for key, term in zip(SUPERVISED_KEYS, terms)}


# ----------------------------------------------------------------------------------------------------------------
# Learned uncertainty weighting (spec 3.2)
# ----------------------------------------------------------------------------------------------------------------

class AutomaticWeightedLoss(nn.Module):
    """Uncertainty weighting of named loss terms: each mean loss L_i becomes 0.5 / p_i^2 * L_i + log(1 + p_i^2)
    with a learnable p_i initialised to 1 (spec 3.2).

    names: the loss keys. They are stored sorted, and `params[i]` belongs to `names[i]`; with the six keys of
    SUPERVISED_KEYS this is the official order (body_joint_cam, body_joint_img, body_joint_proj, smpl_joint_img,
    smpl_pose, smpl_shape), so an official `awl` state loads index for index.
    """

    def __init__(self, names=SUPERVISED_KEYS):
        super().__init__()
        self.names = tuple(sorted(names))
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"AutomaticWeightedLoss: duplicate loss names in {names}")
        self.params = nn.Parameter(torch.ones(len(self.names)))

    def forward(self, losses):
        """losses: {name: scalar} with exactly `self.names`. Returns (total scalar, {name: weighted scalar})."""
        if set(losses) != set(self.names):
            raise KeyError(f"AutomaticWeightedLoss expects the terms {list(self.names)}, got {sorted(losses)}")
        p2 = self.params.float() ** 2
        weighted = {name: 0.5 / p2[i] * losses[name].float() + torch.log1p(p2[i]) for i, name in enumerate(self.names)}
        return sum(weighted.values()), weighted

    def official_state_dict(self):
        """The official checkpoint's `awl` entry (non-distributed form): {'params': (len(names),)}."""
        return {"params": self.params.detach().clone()}

    def load_official_state_dict(self, state):
        """Load an official `awl` entry: {'params': ...}, or {'module.params': ...} from its DDP-wrapped module."""
        params = state.get("params", state.get("module.params"))
        if params is None or set(state) - {"params", "module.params"}:
            raise KeyError(f"expected an AutomaticWeightedLoss state {{'params'}} or {{'module.params'}}, "
                           f"got keys {sorted(state)}")
        params = torch.as_tensor(params)
        if params.shape != self.params.shape:
            raise ValueError(f"AutomaticWeightedLoss params: expected shape {tuple(self.params.shape)} "
                             f"(one per term of {list(self.names)}), got {tuple(params.shape)}")
        with torch.no_grad():
            self.params.copy_(params)


# ----------------------------------------------------------------------------------------------------------------
# Joint-contrastive InfoNCE (spec 3.3)
# ----------------------------------------------------------------------------------------------------------------

def draw_indices(mask, count, generator):
    """For each row of `mask` (R, M) bool, `count` column indices drawn uniformly among the True entries: without
    replacement when the row has at least `count` candidates, with replacement otherwise (the official rule).

    Returns (indices (R, count) long, has_candidate (R,) bool), on mask's device. Rows without any candidate get
    index 0 and has_candidate False; callers must drop them. Random numbers come from `generator` only (on its own
    device), so a run is reproducible and resumable from the generator state.
    """
    rows, cols = mask.shape
    candidates = mask.to(generator.device)
    keys = torch.rand(rows, cols, generator=generator, device=generator.device).masked_fill(~candidates, 2.0)
    order = keys.argsort(dim=1)  # the candidates first, in uniformly random order
    available = candidates.sum(dim=1, keepdim=True)
    uniform = torch.rand(rows, count, generator=generator, device=generator.device)
    with_replacement = torch.minimum((uniform * available).long(), available - 1).clamp(min=0)
    without_replacement = torch.arange(count, device=generator.device).clamp(max=max(cols - 1, 0)).expand(rows, -1)
    position = torch.where(available >= count, without_replacement, with_replacement)
    indices = order.gather(1, position) if cols > 0 else position
    return indices.to(mask.device), (available[:, 0] > 0).to(mask.device)


def non_joint_cells(joint_img, exponent, volume_shape):
    """Voxels of the (D, H, W) volume that no predicted joint of the same sample reads, for the inter negatives.

    joint_img: (B, J, 3) predicted joints (x, y, z) in [0, 1], z linear; exponent: the depth warp k.
    Returns (B, D, H, W) bool, True = may be drawn as a negative.

    A joint at (x, y, z) is sampled at the continuous voxel index (w, h, d) = (x (W-1), y (H-1), z^k (D-1))
    (grid_sample, align_corners=True, depth on z^k); its floor/ceil corners are excluded. Two official defects are
    fixed here (spec 7.8): its mask was indexed [x, y, z] against the (d, h, w) layout of the flattened volume, so the
    excluded cells were transposed (x used as depth, z as width); and it used the linear z, whereas the volume's
    depth axis is laid out on z^k. The official index (P + 1) * 4 = 8 J also does not match the align_corners=True
    sampling (index (size - 1) J); we exclude exactly the corners the decoder's trilinear sample reads.
    """
    depth, height, width = volume_shape
    joints = joint_img.detach().float().clamp(0, 1)
    exponent = torch.as_tensor(exponent).detach().float()
    coords = [joints[..., 2].pow(exponent) * (depth - 1), joints[..., 1] * (height - 1), joints[..., 0] * (width - 1)]
    corners = []  # per axis (B, J, 2): floor and ceil
    for coord, size in zip(coords, volume_shape):
        corners.append(torch.stack([coord.floor(), coord.ceil()], dim=-1).clamp(0, size - 1).long())
    d, h, w = corners
    flat = (d[..., :, None, None] * height + h[..., None, :, None]) * width + w[..., None, None, :]  # (B, J, 2, 2, 2)
    adjacent = torch.zeros(joints.shape[0], depth * height * width, dtype=torch.bool, device=joints.device)
    adjacent.scatter_(1, flat.flatten(1), True)
    return ~adjacent.reshape(-1, depth, height, width)


def _distributed():
    return torch.distributed.is_available() and torch.distributed.is_initialized() \
        and torch.distributed.get_world_size() > 1


def _all_gather_rows(tensors):
    """Concatenate every rank's tensors along dim 0 (rank order); the number of rows may differ between ranks.

    Autograd-aware: torch.distributed.nn.functional.all_gather's backward sums, over ranks, the gradients every
    rank computed for this rank's rows (see JointContrastiveLoss for why that gives DDP the right gradient).
    """
    import torch.distributed as dist
    import torch.distributed.nn.functional as dist_nn

    count = torch.tensor([tensors[0].shape[0]], device=tensors[0].device)
    counts = [torch.zeros_like(count) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, count)
    counts = [int(c) for c in counts]
    gathered = []
    for tensor in tensors:
        padded = torch.cat([tensor, tensor.new_zeros(max(counts) - tensor.shape[0], *tensor.shape[1:])])
        parts = dist_nn.all_gather(padded)
        gathered.append(torch.cat([part[:n] for part, n in zip(parts, counts)]))
    return gathered


def _zero(like):
    """A 0 that is part of the graph (backward gives zero gradients) and never NaN, even if `like` is empty."""
    return like.flatten()[:0].sum()


class JointContrastiveLoss(nn.Module):
    """The two InfoNCE losses of spec 3.3 on the refined 3D feature volume, on the samples with 3D ground truth.

    Entries: every (sample, joint) pair of the 3D samples (N = 15 B'), with a predicted-position feature (the volume
    sampled at the predicted joint), a GT-position feature, its joint label and the GT validity. Similarities are
    cosines divided by `temperature`; each row's loss is cross-entropy with the positive as target, computed as
    softplus(logsumexp(neg / t) - pos / t) = -pos / t + logaddexp(pos / t, logsumexp(neg / t)), so the negatives'
    logsumexp is computed once per anchor and shared by its positives (no anchors x positives x negatives tensor).

    intra (joint-to-joint): `intra_anchors` anchors = predicted features of random entries; per anchor
        `intra_positives` GT features of the same joint from samples where that joint is valid, and
        `intra_negatives` predicted features of other joints (any sample). Mean over the rows of valid anchors.
    inter (joint-to-non-joint): `inter_anchors` anchors as above; per anchor `inter_positives` predicted features
        of any other entry; `inter_negatives` voxel features, shared by all anchors, drawn from the cells no
        predicted joint of the same sample reads. Mean over all rows.
    Draws follow the official rule (without replacement when there are enough candidates) but use a
    torch.Generator passed in, never numpy's global RNG.

    Fixed official defects (spec 7.8): features are sampled with the decoder's depth warp z^k (common.model.transformer.
    sample_volume) at both predicted and GT positions, where the official code used the linear z; the inter negative
    mask uses the volume's (d, h, w) layout and the warped depth (non_joint_cells); anchors without any valid
    positive are dropped and an empty set gives 0 instead of NaN.

    Distributed: when torch.distributed is initialised with more than one process (or `distributed=True`), the
    3D samples' inputs are gathered from all ranks (in rank order) with an autograd-aware all-gather and the losses
    are computed on the union. Every rank must pass a generator with the same seed and state, so all ranks draw the
    same indices and compute the same loss L. No rescaling is needed: the all-gather's backward sums the gradients
    of all W ranks' (identical) losses, so each rank's local inputs receive W dL/dx_r; DDP then averages the
    parameter gradients over W ranks, which gives sum_r dL/dx_r dx_r/dtheta = dL/dtheta, the gradient of the loss
    over the union batch. (Parameters reached without the gather, like the depth exponent, get dL/dtheta on every
    rank, and their average is again dL/dtheta.) The official gather returned only the local slice's own gradient,
    which after DDP's averaging scaled the contrastive gradient by 1/W. A single-process run never calls
    torch.distributed.
    """

    def __init__(self, intra_anchors=100, intra_positives=128, intra_negatives=256, inter_anchors=100,
                 inter_positives=1024, inter_negatives=2048, temperature=0.07, hm_shape=(64, 64, 64), distributed=None):
        super().__init__()
        self.intra_counts = (intra_anchors, intra_positives, intra_negatives)
        self.inter_counts = (inter_anchors, inter_positives, inter_negatives)
        self.temperature = temperature
        self.hm_shape = tuple(hm_shape)
        self.distributed = distributed

    def forward(self, voxel_feat, joint_img, gt_joint_img, joint_valid, is_3d, exponent, generator):
        """voxel_feat: (B, C, D, H, W) the refined volume the decoder samples; joint_img: (B, 15, 3) predicted, in
        [0, 1]; gt_joint_img: (B, 15, 3) GT joints of the 15-joint set in the 64-grid heatmap frame (x, y pixels, z
        depth bin; the R15 subset of orig_joint_img); joint_valid: (B, 15) or (B, 15, 1), the R15 subset of
        orig_joint_trunc; is_3d: (B,); exponent: the model's clamped depth exponent k; generator: torch.Generator.

        Returns {'intra_nce': scalar, 'inter_nce': scalar}, float32; each is a graph-connected 0 when there is no
        3D sample or no valid anchor.
        """
        entries = self.entries(voxel_feat, joint_img, gt_joint_img, joint_valid, is_3d, exponent)
        if entries["labels"].numel() == 0:
            zero = _zero(voxel_feat)
            return {"intra_nce": zero, "inter_nce": zero}
        samples = self.draw(entries, generator)
        return self.losses(entries, samples)

    def forward_batch(self, out, targets, meta, generator):
        """forward() on the model's output dict and a training batch's targets / meta (spec 5.3)."""
        query = SMPL30_QUERY15_IDX
        return self(out["voxel_feat"], out["joint_img"], targets["orig_joint_img"][:, query],
                    meta["orig_joint_trunc"][:, query], meta["is_3D"], out["depth_exponent"], generator)

    def entries(self, voxel_feat, joint_img, gt_joint_img, joint_valid, is_3d, exponent):
        """The (sample, joint) entries of the 3D samples (gathered over ranks when distributed), float32.

        Returns a dict: volume (B', C, D, H, W); joint_img (B', J, 3); pred_feat, gt_feat (N, C) features at the
        predicted / GT positions, entry n = b J + j; labels (N,) joint index; valid (N,) bool GT validity;
        exponent (the depth warp).
        """
        batch, num_joints = joint_img.shape[:2]
        keep = is_3d.reshape(batch) > 0
        with torch.autocast(device_type=voxel_feat.device.type, enabled=False):
            volume = voxel_feat[keep].float()
            pred = joint_img[keep].float()
            gt = gt_joint_img[keep].float()
            valid = joint_valid.reshape(batch, num_joints)[keep].float()
            if self.distributed or (self.distributed is None and _distributed()):
                volume, pred, gt, valid = _all_gather_rows([volume, pred, gt, valid])
            depth, height, width = self.hm_shape
            # Invalid GT joints may lie anywhere (even at negative depth, where z^k is NaN): clamp to the volume;
            # valid ones are inside it by the definition of the trunc mask (spec 5.2), so they are unchanged.
            gt = (gt / gt.new_tensor([width, height, depth])).clamp(0, 1)
            exponent = torch.as_tensor(exponent, device=volume.device).float()
            pred_feat = sample_volume(volume, pred, exponent).flatten(0, 1)
            gt_feat = sample_volume(volume, gt, exponent).flatten(0, 1)
        labels = torch.arange(num_joints, device=volume.device).repeat(volume.shape[0])
        return {"volume": volume, "joint_img": pred, "pred_feat": pred_feat, "gt_feat": gt_feat, "labels": labels,
                "valid": valid.flatten() > 0, "exponent": exponent}

    def draw(self, entries, generator):
        """Random indices of both losses (intra first, then inter, from `generator`).

        Returns {'intra': {anchor (A,), positive (A, P) into gt_feat, negative (A, Nn) into pred_feat, valid (A,)},
                 'inter': {anchor (A,), positive (A, P) into pred_feat, negative (Nn,) into the flattened volume
                           cells (b, d, h, w), valid (A,)}}.
        """
        labels, valid = entries["labels"], entries["valid"]
        num_entries = labels.numel()
        every_entry = torch.ones(1, num_entries, dtype=torch.bool, device=labels.device)

        num_anchors, num_pos, num_neg = self.intra_counts
        anchor = draw_indices(every_entry, num_anchors, generator)[0][0]
        same_joint = labels[None, :] == labels[anchor][:, None]  # (A, N)
        positive, has_positive = draw_indices(same_joint & valid[None, :], num_pos, generator)
        negative, has_negative = draw_indices(~same_joint, num_neg, generator)
        intra = {"anchor": anchor, "positive": positive, "negative": negative, "valid": has_positive & has_negative}

        num_anchors, num_pos, num_neg = self.inter_counts
        anchor = draw_indices(every_entry, num_anchors, generator)[0][0]
        others = torch.ones(num_anchors, num_entries, dtype=torch.bool, device=labels.device)
        others[torch.arange(num_anchors, device=labels.device), anchor] = False
        positive, has_positive = draw_indices(others, num_pos, generator)
        cells = non_joint_cells(entries["joint_img"], entries["exponent"], entries["volume"].shape[2:])
        negative, has_negative = draw_indices(cells.reshape(1, -1), num_neg, generator)
        inter = {"anchor": anchor, "positive": positive, "negative": negative[0],
                 "valid": has_positive & has_negative.expand(num_anchors)}
        return {"intra": intra, "inter": inter}

    def losses(self, entries, samples):
        """The two InfoNCE means from the entries and the drawn indices (see `draw`)."""
        with torch.autocast(device_type=entries["volume"].device.type, enabled=False):
            pred = F.normalize(entries["pred_feat"], dim=1)
            gt = F.normalize(entries["gt_feat"], dim=1)

            intra = samples["intra"]
            anchor_ok = intra["valid"]
            anchors = pred[intra["anchor"][anchor_ok]]  # (A', C)
            pos = (anchors @ gt.T).gather(1, intra["positive"][anchor_ok])  # (A', P)
            neg = (anchors @ pred.T).gather(1, intra["negative"][anchor_ok])  # (A', Nn)
            intra_loss = self._info_nce(pos, neg.div(self.temperature).logsumexp(dim=1, keepdim=True))

            inter = samples["inter"]
            anchor_ok = inter["valid"]
            anchors = pred[inter["anchor"][anchor_ok]]
            pos = (anchors @ pred.T).gather(1, inter["positive"][anchor_ok])  # (A', P)
            volume = entries["volume"]
            cells_per_sample = math.prod(volume.shape[2:])
            cell = inter["negative"]
            negatives = volume.flatten(2)[cell // cells_per_sample, :, cell % cells_per_sample]  # (Nn, C)
            neg = anchors @ F.normalize(negatives, dim=1).T  # (A', Nn), shared by each anchor's positives
            inter_loss = self._info_nce(pos, neg.div(self.temperature).logsumexp(dim=1, keepdim=True))
        return {"intra_nce": intra_loss, "inter_nce": inter_loss}

    def _info_nce(self, pos, neg_logsumexp):
        """Mean over rows of -log softmax([pos, negatives])[0]; pos (A, P) cosines, neg_logsumexp (A, 1)."""
        if pos.numel() == 0:  # no valid anchor (the official code took the mean of an empty set: NaN)
            return _zero(pos)
        return F.softplus(neg_logsumexp - pos / self.temperature).mean()

