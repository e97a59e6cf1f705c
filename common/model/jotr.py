"""The JOTR network (spec 1): image crop + 2D pose -> SMPL parameters, mesh and joints.

Frames: `joints` inputs and `joint_proj` outputs are in the heatmap frame (64 x 64 pixels over the 256 x 256
crop); `joint_img` is (x, y, depth bin) / 64 in [0, 1]; meshes and 3D joints are in the camera frame of the
virtual crop camera (focal 5000 px, principal point at the crop centre), metres.
"""
import math

import torch
from torch import nn

from common.body.joint_sets import UNSUPERVISED_SMPL_JOINTS
from common.geometry import project_to_crop, rot6d_to_axis_angle, rot6d_to_rotmat, rotmat_to_axis_angle
from common.model.backbone import Pose2Feat, ResNetBackbone, gaussian_heatmaps
from common.model.position_encoding import sine_position_2d, sinusoid_table
from common.model.transformer import Transformer, TransformerEncoder
from common.model.vposer import VPoserV1

NUM_SMPL_TOKENS = 3  # pose, shape, camera
NUM_QUERY_JOINTS = 15
NUM_SMPL_JOINTS = 24
VPOSER_LATENT_DIM = 32
POSE_HEADS = ("vposer", "rot6d")


class CascadeHead(nn.Module):
    """Per-decoder-layer linear heads, each refining the previous layer's output (spec 1.3-11):
    o_0 = F_0(t_0), o_l = o_{l-1} + F_l([t_l ; o_{l-1}]). Only the last output is used."""

    def __init__(self, num_layers, dim, out_dim):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(dim, out_dim)] + [nn.Linear(dim + out_dim, out_dim)
                                                                 for _ in range(num_layers - 1)])

    def forward(self, tokens):
        """tokens (L, B, dim) -> (B, out_dim)."""
        out = self.layers[0](tokens[0])
        for layer, token in zip(self.layers[1:], tokens[1:]):
            out = out + layer(torch.cat([token, out], dim=-1))
        return out


class JOTR(nn.Module):
    """JOTR. Build it with `main.build.build_model(cfg)`; every argument here is a plain value.

    Args:
        body_model: SMPL layer (common.body.body_model.SMPLLayer), gender neutral; maps pose (B, 72), betas (B, 10),
            translation (B, 3) to vertices (B, V, 3) in metres.
        joint_regressor: (30, V) array, the SMPL-30 regressor (common.body.body_model.joint_regressor_30).
        resnet_type: ResNet depth of the backbone (10/18/34/50/101/152).
        input_img_shape: crop (H, W) in pixels. output_hm_shape: heatmap grid (D, H, W).
        sigma: input heatmap Gaussian std (heatmap pixels). focal, princpt: virtual crop camera (pixels).
        camera_3d_size: depth scale of the camera translation (metres). pose_head: 'vposer' (the paper: a 32-d
            VPoser v1 code for 21 body joints) or 'rot6d' (6D rotations of the 23 body joints, no VPoser; the
            joints the pose loss does not supervise, UNSUPERVISED_SMPL_JOINTS, are held at the rest pose).
        input_joint_mask_prob: probability of dropping each input joint in training (spec 1.3-1).
        render: at test time, scale the camera depth by the real bounding box (spec 1.3-15; off in the paper).
        backbone_init: 'official' (convs N(0, 0.001), spec 2.4) or 'kaiming' (torchvision's init), for training
            from scratch; irrelevant when weights are loaded.
        image_gate: scale the image features entering Pose2Feat by a learnable scalar that starts at
            `image_gate_init` (not in the paper; for short runs from scratch, common.model.backbone.Pose2Feat). Adds
            the key pose2feat.image_gate.
    """

    def __init__(self, body_model, joint_regressor, *, resnet_type=50, input_img_shape=(256, 256),
                 output_hm_shape=(64, 64, 64), sigma=2.5, focal=(5000.0, 5000.0), princpt=(128.0, 128.0),
                 camera_3d_size=2.5, enc_layers=2, dec_layers=4, hidden_dim=256, nheads=8, dim_feedforward=2048,
                 voxel_dim_feedforward=1024, dropout=0.1, pose_head="vposer", input_joint_mask_prob=0.1,
                 render=False, backbone_init="official", image_gate=False, image_gate_init=0.0):
        super().__init__()
        if pose_head not in POSE_HEADS:
            raise ValueError(f"pose_head={pose_head!r}: expected one of {POSE_HEADS}")
        num_input_joints = joint_regressor.shape[0]
        self.input_img_shape, self.output_hm_shape = tuple(input_img_shape), tuple(output_hm_shape)
        self.sigma, self.focal, self.princpt = sigma, tuple(focal), tuple(princpt)
        self.camera_3d_size, self.pose_head_type = camera_3d_size, pose_head
        self.input_joint_mask_prob, self.render = input_joint_mask_prob, render
        # Camera depth scale k = sqrt(fx fy s^2 / (H W)) (48.828125 for the paper's values).
        self.camera_depth_scale = math.sqrt(focal[0] * focal[1] * camera_3d_size**2
                                            / (input_img_shape[0] * input_img_shape[1]))

        # Model-level parameters (official names in common/training/checkpoint.py).
        self.smpl_query_pos = nn.Parameter(torch.randn(NUM_SMPL_TOKENS, hidden_dim))
        self.depth_exponent = nn.Parameter(torch.tensor(3.0))

        self.backbone = ResNetBackbone(resnet_type, backbone_init)
        self.pose2feat = Pose2Feat(self.backbone.stem_channels, num_input_joints, image_gate, image_gate_init)
        feat_h, feat_w = input_img_shape[0] // 32, input_img_shape[1] // 32
        self.volume_shape = (feat_h, feat_h, feat_w)  # (D, H, W): depth gets as many cells as the feature height

        # 3D lift: channels -> (feature, depth) volume, plus three coordinate channels, 1x1x1 conv, voxel encoder.
        self.lift_conv = nn.Conv2d(self.backbone.out_channels, hidden_dim * self.volume_shape[0], kernel_size=1)
        self.coord_conv3d = nn.Conv3d(hidden_dim + 3, hidden_dim, kernel_size=1)
        self.voxel_encoder = TransformerEncoder(enc_layers, hidden_dim, nheads, voxel_dim_feedforward, dropout,
                                                final_norm=True)
        self.register_buffer("voxel_pos_table", sinusoid_table(math.prod(self.volume_shape), hidden_dim))

        # 2D branch and the main transformer.
        self.input_proj = nn.Conv2d(self.backbone.out_channels, hidden_dim, kernel_size=1)
        self.transformer = Transformer(hidden_dim, nheads, enc_layers, dec_layers, dim_feedforward, dropout,
                                       NUM_SMPL_TOKENS)
        self.joint_query_pos = nn.Embedding(NUM_QUERY_JOINTS, hidden_dim)

        # Cascade heads over the decoder layers' SMPL tokens.
        num_body_joints = NUM_SMPL_JOINTS - 1
        self.root_pose_head = CascadeHead(dec_layers, hidden_dim, 6)
        pose_dim = VPOSER_LATENT_DIM if pose_head == "vposer" else num_body_joints * 6
        self.pose_head = CascadeHead(dec_layers, hidden_dim, pose_dim)
        if pose_head == "rot6d":
            # Start from the rest pose (identity rotations) rather than random ones, as regression heads of
            # mesh-recovery models start from the mean pose; the VPoser head keeps the official init.
            with torch.no_grad():
                for layer in self.pose_head.layers:
                    layer.weight.mul_(0.01)
                    layer.bias.zero_()
                self.pose_head.layers[0].bias.copy_(torch.tensor([1.0, 0, 0, 1, 0, 0]).repeat(num_body_joints))
            # Without VPoser's prior nothing keeps the ankles, toes, wrists and hands natural: the loss does not
            # supervise their rotations (spec 5.3) and, left free, they drift to arbitrary turns (52-167 degrees
            # after the embedded preset's training). They are held at the rest pose, as the official model holds
            # the hands; the head keeps their slots so that the checkpoint layout does not depend on this.
            keep = torch.ones(NUM_SMPL_JOINTS, 1)
            keep[list(UNSUPERVISED_SMPL_JOINTS)] = 0
            self.register_buffer("rot6d_keep", keep[1:], persistent=False)
        self.shape_head = CascadeHead(dec_layers, hidden_dim, 10)
        self.cam_head = CascadeHead(dec_layers, hidden_dim, 3)
        if pose_head == "vposer":
            self.vposer = VPoserV1(latent_dim=VPOSER_LATENT_DIM)
            self.vposer.requires_grad_(False)  # a frozen prior (spec 4.5)
        else:
            self.vposer = None

        self.body_model = body_model
        # Constants, as non-persistent buffers so they follow .to(device) and are built once.
        hm_h, hm_w = self.output_hm_shape[1:]
        self.register_buffer("hm_grid_y", torch.arange(hm_h, dtype=torch.float32)[:, None], persistent=False)
        self.register_buffer("hm_grid_x", torch.arange(hm_w, dtype=torch.float32)[None, :], persistent=False)
        self.register_buffer("image_pos", sine_position_2d(feat_h, feat_w, hidden_dim // 2), persistent=False)
        self.register_buffer("joint_regressor", torch.as_tensor(joint_regressor, dtype=torch.float32),
                             persistent=False)

    def train(self, mode=True):
        super().train(mode)
        if self.vposer is not None:
            self.vposer.eval()  # the official model keeps VPoser in eval mode even while training
        return self

    def volume_coordinates(self, exponent):
        """The three anchor channels of the volume (1, 3, D, H, W): depth a^k, row a, column a with
        a = arange(n) / n; the depth channel is warped by the learnable exponent k."""
        d, h, w = self.volume_shape
        device = self.depth_exponent.device
        a_d = (torch.arange(d, device=device, dtype=torch.float32) / d).pow(exponent)
        a_h = torch.arange(h, device=device, dtype=torch.float32) / h
        a_w = torch.arange(w, device=device, dtype=torch.float32) / w
        return torch.stack([a_d[:, None, None].expand(d, h, w), a_h[None, :, None].expand(d, h, w),
                            a_w[None, None, :].expand(d, h, w)])[None]

    def forward(self, img, joints, joints_mask, bbox=None, return_intermediates=False):
        """img (B, 3, H, W) RGB in [0, 1] (no mean/std normalisation); joints (B, 30, 2 or 3) input pose in the
        heatmap frame (a third column, a detector confidence, is ignored); joints_mask (B, 30, 1), 1 = present;
        bbox (B, 4) xywh in original-image pixels, used only when `render` is on at test time.

        Returns a dict: cam_param (B, 3) raw camera head; cam_trans (B, 3) metres; joint_img (B, 15, 3) in [0, 1];
        joint_proj (B, 30, 2) heatmap frame; joint_cam (B, 30, 3) root-relative metres; smpl_mesh_cam (B, V, 3)
        root-relative metres; mesh_cam_render (B, V, 3) absolute metres; smpl_pose (B, 72) axis-angle;
        smpl_shape (B, 10); voxel_feat (B, C, D, H, W), the volume the decoder samples; depth_exponent (clamped k).
        """
        batch = img.shape[0]
        inter = {}
        with torch.no_grad():
            joints_xy = joints[..., :2].detach().float()
            joints_mask = joints_mask.float()
            if self.training and self.input_joint_mask_prob > 0:
                keep = torch.rand(joints_mask.shape, device=img.device) >= self.input_joint_mask_prob
                joints_mask = joints_mask * keep
            heatmaps = gaussian_heatmaps(joints_xy, joints_mask, self.hm_grid_y, self.hm_grid_x, self.sigma)

        stem = self.backbone.stem(img)
        fused = self.pose2feat(stem, heatmaps)
        feat = self.backbone.body(fused)  # (B, 2048, 8, 8) for ResNet-50
        inter.update(backbone_stem=stem, pose2feat_out=fused, backbone_layer4=feat)

        # 3D branch: channel index 8c + d of lift_conv is feature c at depth d ("c-major" split).
        exponent = self.depth_exponent.clamp(1, 20)
        volume = self.lift_conv(feat).reshape(batch, -1, *self.volume_shape)
        coords = self.volume_coordinates(exponent).to(volume.dtype).expand(batch, -1, -1, -1, -1)
        volume = self.coord_conv3d(torch.cat([volume, coords], dim=1))
        tokens = volume.flatten(2).transpose(1, 2)  # (B, D*H*W, C), token t = (d*H + h)*W + w
        tokens = self.voxel_encoder(tokens, self.voxel_pos_table)
        voxel_feat = tokens.transpose(1, 2).reshape(volume.shape)
        inter["refine_3d_out"] = tokens

        # 2D branch and transformer.
        src = self.input_proj(feat)
        inter["down_linear_out"] = src
        src = src.flatten(2).transpose(1, 2)  # (B, h*w, C)
        query_pos = torch.cat([self.smpl_query_pos, self.joint_query_pos.weight])
        smpl_tokens, joint_img, memory = self.transformer(src, self.image_pos.expand(batch, -1, -1), query_pos,
                                                          voxel_feat, exponent)
        inter.update(encoder_memory=memory, decoder_hs=smpl_tokens)

        pose_tokens, shape_tokens, cam_tokens = smpl_tokens.unbind(2)  # each (L, B, C)
        out = self.smpl_from_heads(self.root_pose_head(pose_tokens), self.pose_head(pose_tokens),
                                   self.shape_head(shape_tokens), self.cam_head(cam_tokens), bbox)
        out.update(joint_img=joint_img, voxel_feat=voxel_feat, depth_exponent=exponent)
        if return_intermediates:
            out["intermediates"] = inter
        return out

    def smpl_from_heads(self, root_6d, body_code, shape, cam_param, bbox=None):
        """Head outputs -> SMPL pose, camera translation, mesh and joints (spec 1.3 steps 12-19), in float32."""
        with torch.autocast(device_type=root_6d.device.type, enabled=False):
            root_6d, body_code, shape, cam_param = (t.float() for t in (root_6d, body_code, shape, cam_param))
            batch = root_6d.shape[0]
            root_pose = rot6d_to_axis_angle(root_6d)
            if self.vposer is not None:
                body_pose = self.vposer.decode(body_code).reshape(batch, -1)  # SMPL joints 1..21
                hands = body_pose.new_zeros(batch, 6)  # L_Hand, R_Hand are not predicted
                pose = torch.cat([root_pose, body_pose, hands], dim=1)
            else:
                body_pose = rotmat_to_axis_angle(rot6d_to_rotmat(body_code.reshape(batch, -1, 6))) * self.rot6d_keep
                pose = torch.cat([root_pose, body_pose.reshape(batch, -1)], dim=1)

            depth_scale = torch.full((batch,), self.camera_depth_scale, device=cam_param.device)
            if self.render and not self.training and bbox is not None:
                # Depth from the real box size instead of the crop's (spec 1.3-15).
                depth_scale = torch.sqrt(self.focal[0] * self.focal[1] * self.camera_3d_size**2
                                         / (bbox[:, 2] * bbox[:, 3]).float())
            cam_trans = torch.cat([cam_param[:, :2], (depth_scale * torch.sigmoid(cam_param[:, 2]))[:, None]], dim=1)

            mesh = self.body_model(pose, shape, cam_trans)
            joint_cam = torch.einsum("jv,bvc->bjc", self.joint_regressor, mesh)
            crop_to_hm = joint_cam.new_tensor([self.output_hm_shape[2] / self.input_img_shape[1],
                                               self.output_hm_shape[1] / self.input_img_shape[0]])
            joint_proj = project_to_crop(joint_cam, self.focal, self.princpt) * crop_to_hm
            root = joint_cam[:, :1]
        return {
            "cam_param": cam_param, "cam_trans": cam_trans, "smpl_pose": pose, "smpl_shape": shape,
            "joint_proj": joint_proj, "joint_cam": joint_cam - root, "smpl_mesh_cam": mesh - root,
            "mesh_cam_render": mesh,
        }
