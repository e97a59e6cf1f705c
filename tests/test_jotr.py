import dataclasses

import pytest
import torch

from common.body.joint_sets import UNSUPERVISED_SMPL_JOINTS
from common.model.backbone import Pose2Feat, ResNetBackbone
from main.build import build_body_model, build_model


@pytest.fixture(scope="module")
def body_model(paper_cfg):
    return build_body_model(paper_cfg)


def random_inputs(batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(batch, 3, 256, 256, generator=g)
    joints = torch.cat([4 + 56 * torch.rand(batch, 30, 2, generator=g), torch.rand(batch, 30, 1, generator=g)], -1)
    mask = (torch.rand(batch, 30, 1, generator=g) > 0.15).float()
    return img, joints, mask


OUTPUT_SHAPES = {
    "cam_param": (3,), "cam_trans": (3,), "joint_img": (15, 3), "joint_proj": (30, 2), "joint_cam": (30, 3),
    "smpl_mesh_cam": (6890, 3), "mesh_cam_render": (6890, 3), "smpl_pose": (72,), "smpl_shape": (10,),
    "voxel_feat": (256, 8, 8, 8),
}


@pytest.mark.slow
@pytest.mark.parametrize("autocast", [False, True], ids=["float32", "bf16"])
def test_forward_batch8_cpu(paper_cfg, body_model, autocast):
    model = build_model(paper_cfg, body_model=body_model).eval()
    img, joints, mask = random_inputs(8)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = model(img, joints, mask)
    for key, shape in OUTPUT_SHAPES.items():
        assert out[key].shape == (8, *shape), key
        assert torch.isfinite(out[key]).all(), key
    # The SMPL part always runs in float32, even under autocast.
    assert out["smpl_mesh_cam"].dtype == torch.float32
    assert ((out["joint_img"] > 0) & (out["joint_img"] < 1)).all()
    # Root-relative outputs: the pelvis (J30 row 0) is at the origin; mesh_cam_render is the absolute mesh.
    assert out["joint_cam"][:, 0].abs().max() < 1e-5
    offset = out["mesh_cam_render"] - out["smpl_mesh_cam"]  # the absolute pelvis, the same for every vertex
    torch.testing.assert_close(offset, offset[:, :1].expand_as(offset))
    # The two hand joints are not predicted (zero rotation) with the VPoser head.
    assert out["smpl_pose"][:, 66:].abs().max() == 0


def test_camera_translation_and_projection(paper_cfg, body_model):
    model = build_model(paper_cfg, body_model=body_model).eval()
    img, joints, mask = random_inputs(2, seed=2)
    with torch.no_grad():
        out = model(img, joints, mask)
    k = 5000 * 2.5 / 256  # spec 1.1: 48.828125
    torch.testing.assert_close(out["cam_trans"][:, 2], k * torch.sigmoid(out["cam_param"][:, 2]))
    torch.testing.assert_close(out["cam_trans"][:, :2], out["cam_param"][:, :2])
    # joint_proj is the perspective projection of the absolute joints into the 64-pixel heatmap frame.
    absolute = out["joint_cam"] + (out["mesh_cam_render"] - out["smpl_mesh_cam"])[:, :1]
    uv = absolute[..., :2] / (absolute[..., 2:] + 1e-4) * 5000 + 128
    torch.testing.assert_close(out["joint_proj"], uv * 64 / 256, atol=1e-3, rtol=1e-5)


def test_training_mode_backward_and_frozen_vposer(paper_cfg, body_model):
    model = build_model(dataclasses.replace(paper_cfg, resnet_type=18), body_model=body_model).train()
    assert not model.vposer.training, "VPoser stays in eval mode while training"
    img, joints, mask = random_inputs(2, seed=3)
    out = model(img, joints, mask)
    (out["joint_img"].sum() + out["smpl_mesh_cam"].sum()).backward()
    assert all(p.grad is None for p in model.vposer.parameters())
    assert model.backbone.conv1.weight.grad is not None
    assert model.depth_exponent.grad is not None and torch.isfinite(model.depth_exponent.grad)


def test_input_joint_masking_only_in_training(paper_cfg, body_model):
    cfg = dataclasses.replace(paper_cfg, resnet_type=18, input_joint_mask_prob=1.0)
    model = build_model(cfg, body_model=body_model)
    heatmaps = []
    model.pose2feat.register_forward_hook(lambda module, args, output: heatmaps.append(args[1]))
    img, joints, mask = random_inputs(2, seed=4)
    with torch.no_grad():
        model.train()(img, joints, mask)
        model.eval()(img, joints, mask)
    assert heatmaps[0].abs().max() == 0, "with probability 1 every input joint is dropped in training"
    # At test time every valid joint gives a Gaussian peaking (value 1) at its integer pixel.
    x, y = joints[0, 0, :2].round().long()
    assert mask[0, 0] == 1 and heatmaps[1][0, 0].max() > 0.9
    assert heatmaps[1][0, 0].argmax() == y * 64 + x
    # Invalid joints give an empty map.
    invalid = (mask[..., 0] == 0).nonzero()[0]
    assert heatmaps[1][invalid[0], invalid[1]].abs().max() == 0


def test_rot6d_pose_head(paper_cfg, body_model):
    model = build_model(dataclasses.replace(paper_cfg, resnet_type=18, pose_head="rot6d"), body_model=body_model)
    assert model.vposer is None
    assert model.pose_head.layers[0].out_features == 23 * 6
    with torch.no_grad():
        out = model.eval()(*random_inputs(2, seed=5))
    assert out["smpl_pose"].shape == (2, 72) and torch.isfinite(out["smpl_pose"]).all()


def test_rot6d_head_holds_the_unsupervised_joints_at_rest(paper_cfg, body_model):
    """The pose loss does not supervise the ankles, toes, wrists and hands; without VPoser's prior the rot6d head
    would give them whatever its untrained outputs say, so the model holds them at the rest pose."""
    model = build_model(dataclasses.replace(paper_cfg, resnet_type=18, pose_head="rot6d"), body_model=body_model)
    with torch.no_grad():
        model.pose_head.layers[0].bias.normal_(generator=torch.Generator().manual_seed(0))  # every joint turned
        pose = model.eval()(*random_inputs(2, seed=5))["smpl_pose"].reshape(2, 24, 3)
    held = torch.zeros(24, dtype=torch.bool)
    held[list(UNSUPERVISED_SMPL_JOINTS)] = True
    assert (pose[:, held] == 0).all()
    assert (pose[:, ~held].norm(dim=-1) > 1e-3).all()


@pytest.mark.parametrize("depth,channels", [(18, 512), (34, 512), (50, 2048), (101, 2048)])
def test_backbone_channels_follow_depth(depth, channels):
    backbone = ResNetBackbone(depth)
    assert backbone.out_channels == channels
    assert backbone(torch.zeros(1, 3, 64, 64)).shape == (1, channels, 2, 2)


def test_unknown_resnet_depth_is_an_error():
    with pytest.raises(ValueError, match="resnet_type=42"):
        ResNetBackbone(42)


def test_render_mode_uses_bbox_for_depth(paper_cfg, body_model):
    model = build_model(dataclasses.replace(paper_cfg, resnet_type=18, render=True), body_model=body_model).eval()
    img, joints, mask = random_inputs(2, seed=6)
    bbox = torch.tensor([[0.0, 0.0, 512.0, 512.0], [10.0, 10.0, 128.0, 128.0]])
    with torch.no_grad():
        out = model(img, joints, mask, bbox=bbox)
    k = torch.sqrt(5000.0 * 5000.0 * 2.5**2 / (bbox[:, 2] * bbox[:, 3]))
    torch.testing.assert_close(out["cam_trans"][:, 2], k * torch.sigmoid(out["cam_param"][:, 2]))


def test_rot6d_head_starts_from_the_rest_pose(paper_cfg, body_model):
    model = build_model(dataclasses.replace(paper_cfg, resnet_type=18, pose_head="rot6d"), body_model=body_model)
    with torch.no_grad():
        out = model.eval()(*random_inputs(2, seed=7))
    assert out["smpl_pose"][:, 3:].abs().max() < 0.1  # near-identity body rotations before any training


@pytest.mark.parametrize("init,expected_std", [("official", 0.001), ("kaiming", (2 / (64 * 9)) ** 0.5)])
def test_backbone_init(init, expected_std):
    weight = ResNetBackbone(18, init).layer1[0].conv1.weight  # 64 -> 64, 3x3: He std sqrt(2 / fan_out)
    assert abs(weight.std().item() - expected_std) < 0.15 * expected_std


def test_image_gate_starts_closed_and_can_open():
    torch.manual_seed(0)
    fusion = Pose2Feat(64, 30, image_gate=True).train()
    heatmaps = torch.rand(4, 30, 16, 16)
    feat_a, feat_b = torch.rand(4, 64, 16, 16), 5 * torch.rand(4, 64, 16, 16)
    # Closed at the start: the output depends on the heatmaps only, whatever the image features are.
    torch.testing.assert_close(fusion(feat_a, heatmaps), fusion(feat_b, heatmaps))
    # ... but the gate gets a gradient, so training can open it.
    fusion(feat_a, heatmaps).square().sum().backward()
    assert fusion.image_gate.grad.abs() > 0
    with torch.no_grad():
        fusion.image_gate.fill_(1.0)
    assert not torch.allclose(fusion(feat_a, heatmaps), fusion(feat_b, heatmaps))


def test_image_gate_is_off_by_default_and_adds_one_key(paper_cfg, body_model):
    assert paper_cfg.image_gate is False
    small = dataclasses.replace(paper_cfg, resnet_type=18)
    plain = build_model(small, body_model=body_model).state_dict()
    gated = build_model(dataclasses.replace(small, image_gate=True), body_model=body_model).state_dict()
    assert "pose2feat.image_gate" not in plain  # the official checkpoint layout is unchanged
    assert set(gated) - set(plain) == {"pose2feat.image_gate"}
    assert gated["pose2feat.image_gate"].item() == 0.0
    started = build_model(dataclasses.replace(small, image_gate=True, image_gate_init=0.1), body_model=body_model)
    assert started.pose2feat.image_gate.item() == pytest.approx(0.1)


def test_a_gate_that_starts_open_a_little_passes_a_gradient_to_the_stem():
    torch.manual_seed(0)
    feat = torch.rand(2, 64, 8, 8, requires_grad=True)
    heatmaps = torch.rand(2, 30, 8, 8)
    for start, stem_learns in ((0.0, False), (0.1, True)):
        feat.grad = None
        Pose2Feat(64, 30, image_gate=True, image_gate_init=start).train()(feat, heatmaps).square().sum().backward()
        assert bool(feat.grad.abs().max() > 0) is stem_learns
