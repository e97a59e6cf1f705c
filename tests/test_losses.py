import math
import os

import pytest
import torch
import torch.nn.functional as F

from common.body.joint_sets import SMPL30_QUERY15_IDX
from common.losses import (
    SUPERVISED_KEYS,
    AutomaticWeightedLoss,
    JointContrastiveLoss,
    draw_indices,
    non_joint_cells,
    supervised_losses,
)
from common.model.transformer import sample_volume

# ---------------------------------------------------------------------------------------------------------------
# Supervised terms
# ---------------------------------------------------------------------------------------------------------------


def random_batch(batch=2, seed=0):
    """Model outputs, targets and meta in the formats of spec 1.4 / 5.3, with float64 scalar masks as the official
    collate produced them."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.rand(*shape, generator=g)

    def bits(*shape):
        return (rand(*shape) > 0.3).float()

    out = {"joint_img": rand(batch, 15, 3), "joint_proj": 64 * rand(batch, 30, 2),
           "joint_cam": rand(batch, 30, 3) - 0.5, "smpl_pose": rand(batch, 72) - 0.5,
           "smpl_shape": rand(batch, 10) - 0.5}
    targets = {"orig_joint_img": 64 * rand(batch, 30, 3), "fit_joint_img": 64 * rand(batch, 30, 3),
               "orig_joint_cam": rand(batch, 30, 3) - 0.5, "pose_param": rand(batch, 72) - 0.5,
               "shape_param": rand(batch, 10) - 0.5}
    meta = {"orig_joint_valid": bits(batch, 30, 1), "orig_joint_trunc": bits(batch, 30, 1),
            "fit_param_valid": bits(batch, 72), "fit_joint_trunc": bits(batch, 30, 1),
            "is_valid_fit": torch.tensor([1.0, 0.0] * (batch // 2), dtype=torch.float64),
            "is_3D": torch.tensor([0.0, 1.0] * (batch // 2), dtype=torch.float64)}
    return out, targets, meta


def reference_supervised(out, targets, meta):
    """Spec 3.1 element by element, with Python loops; plain mean over all elements."""
    def mean(values):
        return sum(values) / len(values)

    q = SMPL30_QUERY15_IDX
    batch = out["joint_img"].shape[0]
    body_img, smpl_img, pose, shape, proj, cam = [], [], [], [], [], []
    for b in range(batch):
        is_3d, fit = float(meta["is_3D"][b]), float(meta["is_valid_fit"][b])
        for j in range(15):
            for c in range(3):
                pred = 64 * float(out["joint_img"][b, j, c])
                mask = float(meta["orig_joint_trunc"][b, q[j], 0]) * (is_3d if c == 2 else 1.0)
                body_img.append(abs(pred - float(targets["orig_joint_img"][b, q[j], c])) / 64 * mask)
                mask = float(meta["fit_joint_trunc"][b, q[j], 0]) * fit
                smpl_img.append(abs(pred - float(targets["fit_joint_img"][b, q[j], c])) / 64 * mask)
        for i in range(72):
            err = abs(float(out["smpl_pose"][b, i]) - float(targets["pose_param"][b, i]))
            pose.append(err * float(meta["fit_param_valid"][b, i]) * fit)
        for i in range(10):
            shape.append(abs(float(out["smpl_shape"][b, i]) - float(targets["shape_param"][b, i])) * fit)
        for j in range(30):
            for c in range(2):
                err = abs(float(out["joint_proj"][b, j, c]) - float(targets["orig_joint_img"][b, j, c]))
                proj.append(err / 8 * float(meta["orig_joint_trunc"][b, j, 0]))
            for c in range(3):
                err = abs(float(out["joint_cam"][b, j, c]) - float(targets["orig_joint_cam"][b, j, c]))
                cam.append(5 * err * float(meta["orig_joint_valid"][b, j, 0]) * is_3d)
    return dict(zip(SUPERVISED_KEYS, map(mean, (body_img, smpl_img, pose, shape, proj, cam))))


def test_supervised_losses_match_the_spec_formulas():
    out, targets, meta = random_batch(batch=4)
    losses = supervised_losses(out, targets, meta)
    assert tuple(losses) == SUPERVISED_KEYS
    expected = reference_supervised(out, targets, meta)
    for key in SUPERVISED_KEYS:
        assert losses[key].shape == () and losses[key].dtype == torch.float32, key
        assert losses[key].item() == pytest.approx(expected[key], rel=1e-5, abs=1e-7), key


def test_supervised_scales_and_masks_by_hand():
    out, targets, meta = random_batch(batch=2)
    # Exact predictions everywhere, then one known error per term.
    out["joint_img"] = targets["orig_joint_img"][:, SMPL30_QUERY15_IDX] / 64
    targets["fit_joint_img"] = targets["orig_joint_img"].clone()
    out["joint_proj"] = targets["orig_joint_img"][..., :2].clone()
    out["joint_cam"] = targets["orig_joint_cam"].clone()
    out["smpl_pose"], out["smpl_shape"] = targets["pose_param"].clone(), targets["shape_param"].clone()
    for key in ("orig_joint_valid", "orig_joint_trunc", "fit_joint_trunc"):
        meta[key] = torch.ones_like(meta[key])
    meta["fit_param_valid"] = torch.ones(2, 72)
    meta["is_valid_fit"] = torch.tensor([1.0, 0.0])
    meta["is_3D"] = torch.tensor([1.0, 0.0])

    # Query joint 3 (L_Knee = SMPL30 joint 4): 8 heatmap pixels off in x for sample 0, and in z for both samples.
    out["joint_img"][0, 3, 0] += 8 / 64
    out["joint_img"][:, 3, 2] += 8 / 64
    out["joint_proj"][:, 7, 1] += 4.0  # 4 px off, both samples
    out["joint_cam"][:, 2, 0] += 0.1  # 10 cm off, both samples
    out["smpl_pose"][:, 5] += 0.2
    out["smpl_shape"][:, 1] += 0.3
    losses = supervised_losses(out, targets, meta)

    # body_joint_img: x error of sample 0 counts; z error counts only for the 3D sample 0 (is_3D z-mask).
    assert losses["body_joint_img"].item() == pytest.approx((8 / 64 + 8 / 64) / (2 * 15 * 3))
    # smpl_joint_img: only sample 0 has a valid fit; it has the x and the z errors.
    assert losses["smpl_joint_img"].item() == pytest.approx((8 / 64 + 8 / 64) / (2 * 15 * 3))
    assert losses["smpl_pose"].item() == pytest.approx(0.2 / (2 * 72))
    assert losses["smpl_shape"].item() == pytest.approx(0.3 / (2 * 10))
    assert losses["body_joint_proj"].item() == pytest.approx(2 * 4 / 8 / (2 * 30 * 2))  # scale 1/8, both samples
    assert losses["body_joint_cam"].item() == pytest.approx(5 * 0.1 / (2 * 30 * 3))  # scale 5, 3D sample only

    # Masked entries are excluded from the numerator but count in the denominator.
    meta["orig_joint_trunc"][0, SMPL30_QUERY15_IDX[3]] = 0
    losses = supervised_losses(out, targets, meta)
    assert losses["body_joint_img"].item() == pytest.approx(0.0)
    assert losses["body_joint_proj"].item() == pytest.approx(2 * 4 / 8 / (2 * 30 * 2))  # joint 7 is not joint 4


# ---------------------------------------------------------------------------------------------------------------
# AutomaticWeightedLoss
# ---------------------------------------------------------------------------------------------------------------


def test_awl_official_order_and_values():
    awl = AutomaticWeightedLoss(SUPERVISED_KEYS)
    # Spec 3.2: the official indices of the sorted keys.
    assert awl.names == ("body_joint_cam", "body_joint_img", "body_joint_proj", "smpl_joint_img", "smpl_pose",
                         "smpl_shape")
    assert torch.equal(awl.params.detach(), torch.ones(6))
    losses = {name: torch.tensor(0.5 + i) for i, name in enumerate(SUPERVISED_KEYS)}
    with torch.no_grad():
        awl.params.copy_(torch.tensor([1.0, 2.0, 0.5, 3.0, 1.5, 0.25]))
    total, weighted = awl(losses)
    expected = {}
    for p, name in zip([1.0, 2.0, 0.5, 3.0, 1.5, 0.25], awl.names):
        expected[name] = 0.5 / p**2 * losses[name].item() + math.log(1 + p**2)
    for name in awl.names:
        assert weighted[name].item() == pytest.approx(expected[name], rel=1e-6)
    assert total.item() == pytest.approx(sum(expected.values()), rel=1e-6)
    total.backward()
    assert awl.params.grad is not None and torch.isfinite(awl.params.grad).all()
    with pytest.raises(KeyError, match="smpl_shape"):
        awl({k: v for k, v in losses.items() if k != "smpl_shape"})


def test_awl_loads_official_states():
    awl = AutomaticWeightedLoss(SUPERVISED_KEYS)
    values = torch.arange(1.0, 7.0)
    awl.load_official_state_dict({"module.params": values})  # saved by the DDP-wrapped official module
    assert torch.equal(awl.params.detach(), values)
    awl.load_official_state_dict({"params": values * 2})
    assert torch.equal(awl.official_state_dict()["params"], values * 2)
    with pytest.raises(ValueError, match="shape"):
        awl.load_official_state_dict({"params": torch.ones(5)})
    with pytest.raises(KeyError, match="params"):
        awl.load_official_state_dict({"weights": values})


# ---------------------------------------------------------------------------------------------------------------
# Contrastive losses: sampling helpers
# ---------------------------------------------------------------------------------------------------------------


def test_draw_indices_rules():
    g = torch.Generator().manual_seed(3)
    mask = torch.zeros(4, 50, dtype=torch.bool)
    mask[0, ::2] = True  # 25 candidates
    mask[1, :5] = True  # 5 candidates
    mask[2, 7] = True  # 1 candidate
    idx, ok = draw_indices(mask, 10, g)
    assert ok.tolist() == [True, True, True, False]
    assert idx.shape == (4, 10)
    for row in range(3):
        assert mask[row, idx[row]].all()
    assert len(set(idx[0].tolist())) == 10  # enough candidates: without replacement
    assert set(idx[1].tolist()) <= set(range(5)) and idx[2].tolist() == [7] * 10  # too few: with replacement
    # Reproducible from the generator alone.
    again, _ = draw_indices(mask, 10, torch.Generator().manual_seed(3))
    assert torch.equal(idx, again)
    # Uniform over the candidates.
    many, _ = draw_indices(mask[1:2], 50_000, g)
    counts = torch.bincount(many[0], minlength=5).float()
    assert (counts / counts.sum() - 0.2).abs().max() < 0.01


def cells_read_by_decoder(volume_shape, joint_img, exponent):
    """The voxels the decoder's trilinear sample of `joint_img` reads, found from sample_volume's gradient."""
    volume = torch.zeros(joint_img.shape[0], 1, *volume_shape, requires_grad=True)
    sample_volume(volume, joint_img, exponent).sum().backward()
    return volume.grad[:, 0] != 0


def test_non_joint_cells_axis_order_and_depth_warp():
    # One joint in an 8 x 8 x 8 volume with k = 3: x = 0 -> w = 0; y = 0.5 -> h = 3.5 (rows 3 and 4);
    # z = 0.5 -> warped z^3 * 7 = 0.875 -> depth slices 0 and 1 (the linear z would give slices 3 and 4).
    joint = torch.tensor([[[0.0, 0.5, 0.5]]])
    allowed = non_joint_cells(joint, 3.0, (8, 8, 8))
    excluded = {tuple(c) for c in (~allowed[0]).nonzero().tolist()}
    assert excluded == {(0, 3, 0), (0, 4, 0), (1, 3, 0), (1, 4, 0)}  # (d, h, w)
    # The official [x, y, z] indexing with linear depth would have excluded these instead:
    assert not excluded & {(0, 3, 3), (0, 4, 3), (0, 3, 4), (0, 4, 4)}

    # Random joints in a non-cubic volume: the excluded cells are exactly those the decoder's sample reads.
    g = torch.Generator().manual_seed(1)
    joints = 0.05 + 0.9 * torch.rand(2, 5, 3, generator=g)
    shape = (4, 6, 10)
    allowed = non_joint_cells(joints, 2.5, shape)
    assert torch.equal(~allowed, cells_read_by_decoder(shape, joints, 2.5))


# ---------------------------------------------------------------------------------------------------------------
# Contrastive losses: values
# ---------------------------------------------------------------------------------------------------------------


def contrastive_inputs(batch=4, channels=16, size=8, seed=0, valid_fraction=0.8):
    g = torch.Generator().manual_seed(seed)
    volume = torch.randn(batch, channels, size, size, size, generator=g)
    joint_img = 0.02 + 0.96 * torch.rand(batch, 15, 3, generator=g)
    gt = 64 * torch.rand(batch, 15, 3, generator=g)
    valid = (torch.rand(batch, 15, 1, generator=g) < valid_fraction).float()
    is_3d = torch.ones(batch)
    return volume, joint_img, gt, valid, is_3d


def small_loss(**counts):
    values = {"intra_anchors": 6, "intra_positives": 5, "intra_negatives": 7, "inter_anchors": 6,
              "inter_positives": 5, "inter_negatives": 9}
    values.update(counts)
    return JointContrastiveLoss(**values)


def naive_losses(entries, samples, temperature):
    """Explicit loops: one row per (anchor, positive) with logits [positive, its negatives], cross-entropy target 0."""
    pred, gt, volume = entries["pred_feat"], entries["gt_feat"], entries["volume"]
    _, _, depth, height, width = volume.shape

    def cosine(a, b):
        return F.cosine_similarity(a, b, dim=0)

    def voxel(flat):
        b, rest = divmod(int(flat), depth * height * width)
        d, rest = divmod(rest, height * width)
        h, w = divmod(rest, width)
        return volume[b, :, d, h, w]

    results = {}
    for name, positive_pool, negative_feature in (
            ("intra", gt, None), ("inter", pred, voxel)):
        s = samples[name]
        rows = []
        for a in range(len(s["anchor"])):
            if not s["valid"][a]:
                continue
            anchor = pred[s["anchor"][a]]
            negatives = s["negative"][a] if name == "intra" else s["negative"]
            for p in s["positive"][a]:
                logits = [cosine(anchor, positive_pool[p])]
                for n in negatives:
                    logits.append(cosine(anchor, pred[n] if negative_feature is None else negative_feature(n)))
                logits = torch.stack(logits)[None] / temperature
                rows.append(F.cross_entropy(logits, torch.zeros(1, dtype=torch.long)))
        results[f"{name}_nce"] = torch.stack(rows).mean() if rows else torch.tensor(0.0)
    return results


def test_vectorised_equals_naive_reference():
    loss_fn = small_loss(intra_anchors=30)  # = N: every entry is an anchor once (without replacement)
    # Joint 4 is never valid: its anchors must be dropped from the intra loss.
    volume, joint_img, gt, valid, is_3d = contrastive_inputs(batch=3, seed=2)
    valid[:, 4] = 0
    is_3d[1] = 0
    entries = loss_fn.entries(volume, joint_img, gt, valid, is_3d, torch.tensor(2.0))
    assert entries["labels"].numel() == 2 * 15
    g = torch.Generator().manual_seed(11)
    samples = loss_fn.draw(entries, g)
    ours = loss_fn.losses(entries, samples)
    reference = naive_losses(entries, samples, loss_fn.temperature)
    for key in ("intra_nce", "inter_nce"):
        torch.testing.assert_close(ours[key], reference[key], rtol=1e-5, atol=1e-6)
    # forward() draws the same samples from the same generator state.
    direct = loss_fn(volume, joint_img, gt, valid, is_3d, torch.tensor(2.0), torch.Generator().manual_seed(11))
    for key in ("intra_nce", "inter_nce"):
        torch.testing.assert_close(direct[key], ours[key])
    # Anchors of joint 4 were drawn but excluded.
    intra = samples["intra"]
    assert (entries["labels"][intra["anchor"]] == 4).any()
    assert not intra["valid"][entries["labels"][intra["anchor"]] == 4].any()


def test_draws_obey_the_sampling_rules():
    loss_fn = JointContrastiveLoss()  # the paper's counts
    volume, joint_img, gt, valid, is_3d = contrastive_inputs(batch=3, channels=4, seed=4)
    entries = loss_fn.entries(volume, joint_img, gt, valid, is_3d, 3.0)
    samples = loss_fn.draw(entries, torch.Generator().manual_seed(0))
    labels, ok = entries["labels"], entries["valid"]
    intra, inter = samples["intra"], samples["inter"]
    assert intra["positive"].shape == (100, 128) and intra["negative"].shape == (100, 256)
    assert inter["positive"].shape == (100, 1024) and inter["negative"].shape == (2048,)
    anchor_label = labels[intra["anchor"]][:, None]
    rows = intra["valid"]
    assert (labels[intra["positive"][rows]] == anchor_label[rows]).all() and ok[intra["positive"][rows]].all()
    assert (labels[intra["negative"]] != anchor_label).all()
    assert (inter["positive"] != inter["anchor"][:, None]).all()
    allowed = non_joint_cells(entries["joint_img"], 3.0, (8, 8, 8)).flatten()
    assert allowed[inter["negative"]].all()
    # 2048 negatives out of fewer than 3 * 512 allowed cells: with replacement, every allowed cell reachable.
    assert len(set(inter["negative"].tolist())) > 0.8 * int(allowed.sum())


def separable_volume(batch, channels=48, size=8, exponent=3.0, seed=0):
    """Each sample's 15 joints sit on distinct voxels with feature u + e_j (u: a shared "joint" direction,
    e_j: one per joint); the other voxels hold noise in channels no joint uses. Joints sit exactly on voxel
    positions of the warped grid, so the predicted and the GT joint read their voxel only."""
    g = torch.Generator().manual_seed(seed)
    volume = torch.zeros(batch, channels, size, size, size)
    volume[:, 16:] = torch.randn(batch, channels - 16, size, size, size, generator=g)
    joints = torch.zeros(batch, 15, 3)
    for b in range(batch):
        cells = torch.randperm(size**3, generator=g)[:15]
        d, h, w = cells // size**2, cells // size % size, cells % size
        volume[b, :, d, h, w] = 0
        volume[b, 15, d, h, w] = 1.0
        volume[b, torch.arange(15), d, h, w] = 1.0
        joints[b] = torch.stack([w / (size - 1), h / (size - 1), (d / (size - 1)) ** (1 / exponent)], dim=-1)
    return volume, joints


def test_separable_features_give_lower_losses_than_shuffled():
    batch, exponent = 4, 3.0
    loss_fn = JointContrastiveLoss()
    volume, joints = separable_volume(batch, exponent=exponent)
    valid, is_3d = torch.ones(batch, 15), torch.ones(batch)
    gt = joints * 64
    separable = loss_fn(volume, joints, gt, valid, is_3d, exponent, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    flat = volume.flatten(2)
    shuffled_volume = torch.stack([flat[b][:, torch.randperm(flat.shape[2], generator=g)] for b in range(batch)])
    shuffled = loss_fn(shuffled_volume.reshape(volume.shape), joints, gt, valid, is_3d, exponent,
                       torch.Generator().manual_seed(0))
    # Separable: positives have cosine 1 (intra) or >= 0.5 (inter) against negatives at 0.5 (intra) or ~0 (inter).
    assert separable["intra_nce"] < 0.5 < 4.0 < shuffled["intra_nce"]
    assert separable["inter_nce"] < 1.5 < 6.0 < shuffled["inter_nce"]


def test_inter_negatives_never_read_by_a_joint():
    """Voxels read by a joint get feature e1, the others e2: with the corrected mask every negative is e2, so each
    row's loss is exactly log(1 + Nn exp(-1 / t)); a single leaked joint voxel would raise it by orders of
    magnitude (exp(1 / t) = 1.6e6)."""
    batch, size, exponent, num_neg = 3, 6, 2.5, 3000
    g = torch.Generator().manual_seed(5)
    joints = 0.05 + 0.9 * torch.rand(batch, 15, 3, generator=g)
    read = cells_read_by_decoder((size, size, size), joints, exponent)  # (B, D, H, W)
    assert read.float().mean() < 0.8  # leaves negatives to draw
    volume = torch.zeros(batch, 2, size, size, size)
    volume[:, 0][read] = 1.0
    volume[:, 1][~read] = 1.0
    loss_fn = JointContrastiveLoss(inter_negatives=num_neg)
    out = loss_fn(volume, joints, joints * 64, torch.ones(batch, 15), torch.ones(batch), exponent,
                  torch.Generator().manual_seed(0))
    t = loss_fn.temperature
    assert out["inter_nce"].item() == pytest.approx(math.log1p(num_neg * math.exp(-1 / t)), rel=1e-4)


def test_gt_features_use_the_decoders_depth_warp():
    """Features at a GT joint equal the decoder's sample of the volume there (depth on z^k, official defect: linear z).
    A volume whose channels are its own (d, h, w) voxel indices makes trilinear sampling return the index itself."""
    size, exponent = 8, 3.0
    d, h, w = torch.meshgrid(*(torch.arange(size, dtype=torch.float32),) * 3, indexing="ij")
    volume = torch.stack([d, h, w])[None]  # (1, 3, D, H, W)
    gt_norm = torch.tensor([[[0.25, 0.5, 0.5], [0.9, 0.1, 0.8]] + [[0.5, 0.5, 0.5]] * 13])  # (1, 15, 3)
    pred = torch.full((1, 15, 3), 0.3)
    loss_fn = JointContrastiveLoss()
    entries = loss_fn.entries(volume, pred, gt_norm * 64, torch.ones(1, 15), torch.ones(1), torch.tensor(exponent))
    expected = torch.stack([gt_norm[0, :, 2] ** exponent * 7, gt_norm[0, :, 1] * 7, gt_norm[0, :, 0] * 7], dim=-1)
    torch.testing.assert_close(entries["gt_feat"], expected)
    torch.testing.assert_close(entries["gt_feat"], sample_volume(volume, gt_norm, exponent)[0])
    torch.testing.assert_close(entries["pred_feat"][0], torch.tensor([0.3**3 * 7, 0.3 * 7, 0.3 * 7]))
    assert entries["gt_feat"][0, 0] == pytest.approx(0.125 * 7)  # not the linear 0.5 * 7


def test_no_valid_anchor_or_no_3d_sample_gives_zero_not_nan():
    loss_fn = small_loss()
    volume, joint_img, gt, valid, is_3d = contrastive_inputs(batch=2)
    volume.requires_grad_(True)
    out = loss_fn(volume, joint_img, gt, torch.zeros_like(valid), is_3d, 3.0, torch.Generator().manual_seed(0))
    assert out["intra_nce"].item() == 0.0
    assert torch.isfinite(out["inter_nce"]) and out["inter_nce"] > 0  # inter does not need GT validity
    (out["intra_nce"] + out["inter_nce"]).backward()
    assert torch.isfinite(volume.grad).all()

    volume.grad = None
    out = loss_fn(volume, joint_img, gt, valid, torch.zeros(2), 3.0, torch.Generator().manual_seed(0))
    assert out["intra_nce"].item() == 0.0 and out["inter_nce"].item() == 0.0
    (out["intra_nce"] + out["inter_nce"]).backward()  # part of the graph, zero gradient
    assert volume.grad is not None and (volume.grad == 0).all()

    # Invalid GT joints at negative depth (z^k would be NaN) stay harmless.
    gt[:, :, 2] = -5.0
    out = loss_fn(volume, joint_img, gt, torch.zeros_like(valid), is_3d, 2.5, torch.Generator().manual_seed(0))
    assert all(torch.isfinite(v) for v in out.values())


def test_gradients_reach_the_volume_joints_and_exponent():
    loss_fn = JointContrastiveLoss()
    volume, joint_img, gt, valid, is_3d = contrastive_inputs(batch=2, channels=8)
    volume.requires_grad_(True)
    joint_img.requires_grad_(True)
    exponent = torch.tensor(3.0, requires_grad=True)
    out = loss_fn(volume, joint_img, gt, valid, is_3d, exponent, torch.Generator().manual_seed(0))
    (out["intra_nce"] + out["inter_nce"]).backward()
    for tensor in (volume, joint_img, exponent):
        assert torch.isfinite(tensor.grad).all() and tensor.grad.abs().sum() > 0


def test_forward_batch_selects_the_query_joints_under_autocast():
    loss_fn = small_loss()
    volume, joint_img, gt15, valid15, is_3d = contrastive_inputs(batch=2)
    gt30, valid30 = torch.zeros(2, 30, 3), torch.zeros(2, 30, 1)
    gt30[:, SMPL30_QUERY15_IDX], valid30[:, SMPL30_QUERY15_IDX] = gt15, valid15
    out = {"voxel_feat": volume.bfloat16(), "joint_img": joint_img, "depth_exponent": torch.tensor(3.0)}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        batch_losses = loss_fn.forward_batch(out, {"orig_joint_img": gt30},
                                             {"orig_joint_trunc": valid30, "is_3D": is_3d},
                                             torch.Generator().manual_seed(0))
    direct = loss_fn(volume.bfloat16().float(), joint_img, gt15, valid15, is_3d, 3.0, torch.Generator().manual_seed(0))
    for key in direct:
        assert batch_losses[key].dtype == torch.float32
        torch.testing.assert_close(batch_losses[key], direct[key])


# ---------------------------------------------------------------------------------------------------------------
# Distributed: two CPU processes (gloo) give the loss of the union batch and DDP-ready gradients
# ---------------------------------------------------------------------------------------------------------------

RANK_ROWS = ((0, 3), (3, 5))  # unequal local batches: rank 0 holds samples 0-2, rank 1 samples 3-4


def distributed_inputs():
    volume, joint_img, gt, valid, is_3d = contrastive_inputs(batch=5, channels=8, seed=9)
    is_3d[1] = 0  # one 2D sample on each rank
    is_3d[4] = 0
    return volume, joint_img, gt, valid, is_3d


def _distributed_worker(rank, world_size, init_file, result_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        start, stop = RANK_ROWS[rank]
        volume, joint_img, gt, valid, is_3d = (t[start:stop] for t in distributed_inputs())
        volume.requires_grad_(True)
        exponent = torch.tensor(2.0, requires_grad=True)
        out = small_loss()(volume, joint_img, gt, valid, is_3d, exponent, torch.Generator().manual_seed(7))
        (out["intra_nce"] + out["inter_nce"]).backward()
        torch.save({"losses": {k: v.detach() for k, v in out.items()}, "volume_grad": volume.grad,
                    "exponent_grad": exponent.grad}, f"{result_dir}/rank{rank}.pt")
        dist.barrier()  # neither process tears the group down while the other is still in a collective
    finally:
        dist.destroy_process_group()
    # Results are saved; skip the interpreter's teardown, where a spawned gloo worker occasionally aborts in C++
    # destructors ("terminate called without an active exception") after its work is done.
    os._exit(0)


def test_distributed_gather_matches_single_process(tmp_path):
    import torch.multiprocessing as mp

    world_size = 2
    mp.spawn(_distributed_worker, args=(world_size, str(tmp_path / "init"), str(tmp_path)), nprocs=world_size)

    volume, joint_img, gt, valid, is_3d = distributed_inputs()
    volume.requires_grad_(True)
    exponent = torch.tensor(2.0, requires_grad=True)
    reference = small_loss(distributed=False)(volume, joint_img, gt, valid, is_3d, exponent,
                                              torch.Generator().manual_seed(7))
    (reference["intra_nce"] + reference["inter_nce"]).backward()
    for rank, (start, stop) in enumerate(RANK_ROWS):
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        # float32 sums in another order (other processes, other thread counts): 1e-4 relative, far below the factor
        # W that a wrong gradient scaling would show.
        tol = dict(rtol=1e-4, atol=1e-6)
        for key in reference:
            torch.testing.assert_close(result["losses"][key], reference[key].detach(), **tol)
        # Every rank's local slice gets W x the union gradient; DDP's averaging over W ranks then gives exactly
        # the single-process gradient. Parameters outside the gather (the exponent) get it directly.
        torch.testing.assert_close(result["volume_grad"], world_size * volume.grad[start:stop], **tol)
        torch.testing.assert_close(result["exponent_grad"], exponent.grad, **tol)
