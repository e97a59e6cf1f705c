"""A trivial baseline to print beside the model: every person gets the mean training pose and shape, placed at the
detected 2D root. It has the network's interface, so `common.training.engine.evaluate` scores it with the same code."""
import torch
from torch import nn

from common.geometry import axis_angle_to_rotmat, rotmat_to_axis_angle


def mean_rotation(rotmats):
    """Chordal L2 mean of rotations: the proper rotation closest to the average matrix. (N, 3, 3) -> (3, 3)."""
    u, _, vt = torch.linalg.svd(rotmats.double().mean(0))
    fix = torch.diag(torch.tensor([1.0, 1.0, torch.linalg.det(u @ vt).sign().item()], dtype=torch.float64))
    return (u @ fix @ vt).float()


def mean_smpl_params(poses, shapes):
    """Mean pose (72,) (per joint, the mean rotation) and mean shape (10,) of (N, 72) / (N, 10) SMPL parameters."""
    rotmats = axis_angle_to_rotmat(torch.as_tensor(poses, dtype=torch.float64).reshape(-1, 24, 3))
    pose = torch.stack([rotmat_to_axis_angle(mean_rotation(rotmats[:, j])) for j in range(24)]).reshape(72)
    return pose.float(), torch.as_tensor(shapes, dtype=torch.float32).mean(0)


class MeanPoseBaseline(nn.Module):
    """Predicts the same SMPL pose and shape for everyone.

    body_model: SMPL layer; joint_regressor: (30, V) SMPL-30 regressor; mean_pose (72,), mean_shape (10,);
    focal, princpt, output_hm_shape, input_img_shape: the crop camera and frames of the network it stands in for.
    The mesh is placed at a fixed depth so that its pelvis projects onto the detected pelvis (input joint 0) or the
    crop centre when the pelvis was not detected; the root-relative metrics do not depend on the placement.
    """

    def __init__(self, body_model, joint_regressor, mean_pose, mean_shape, *, focal, princpt, input_img_shape,
                 output_hm_shape, depth=50.0):
        super().__init__()
        self.body_model = body_model
        self.register_buffer("joint_regressor", torch.as_tensor(joint_regressor, dtype=torch.float32))
        self.register_buffer("mean_pose", torch.as_tensor(mean_pose, dtype=torch.float32))
        self.register_buffer("mean_shape", torch.as_tensor(mean_shape, dtype=torch.float32))
        self.focal, self.princpt, self.depth = tuple(focal), tuple(princpt), depth
        self.hm_to_crop = (input_img_shape[1] / output_hm_shape[2], input_img_shape[0] / output_hm_shape[1])

    def forward(self, img, joints, joints_mask, bbox=None):
        batch = img.shape[0]
        pose, shape = self.mean_pose.expand(batch, -1), self.mean_shape.expand(batch, -1)
        mesh = self.body_model(pose, shape, torch.zeros(batch, 3, device=img.device))
        root = self.joint_regressor[0] @ mesh  # (B, 3)
        mesh = mesh - root[:, None]
        pelvis_crop = joints[:, 0, :2].float() * joints.new_tensor(self.hm_to_crop)
        centre = joints.new_tensor(self.princpt).expand(batch, 2)
        pelvis_crop = torch.where(joints_mask[:, 0] > 0, pelvis_crop, centre)
        xy = (pelvis_crop - centre) / joints.new_tensor(self.focal) * self.depth
        trans = torch.cat([xy, torch.full((batch, 1), self.depth, device=img.device)], dim=1)
        return {"smpl_mesh_cam": mesh, "mesh_cam_render": mesh + trans[:, None], "smpl_pose": pose,
                "smpl_shape": shape, "cam_trans": trans}
