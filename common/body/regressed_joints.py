"""Regressed joints of an SMPL body without computing its mesh.

A training item needs the J30 joints of its SMPL fit (regressor @ vertices), not the 6890 vertices themselves.
Linear blend skinning is linear in the posed template, and a joint regressor is linear in the vertices, so the
two contract ahead of time: with skinning weights W (V, 24), regressor R (K, V) and the per-joint rigid transforms
(rotation G_j, translation t_j) of the posed skeleton,

    joints_k = sum_j G_j (sum_v R_kv W_vj v_posed_v) + sum_j t_j (sum_v R_kv W_vj) + transl * sum_v R_kv,

and v_posed = v_template + shapedirs . betas + posedirs . pose_feature is linear in betas and in the pose feature
(rotation matrices minus identity of joints 1-23, SMPL's pose blend shapes). Contracting R W with v_template,
shapedirs and posedirs once leaves per pose about 0.5 M multiply-adds for 30 joints, against about 8 M for the
mesh; the result equals regressor @ SMPLLayer(pose, betas, transl) up to floating-point rounding (float64 here).
"""
import numpy as np
import torch
from scipy import sparse

from common.body.body_model import NUM_BETAS, NUM_JOINTS
from common.geometry import axis_angle_to_rotmat


class RegressedJoints:
    """regressor @ SMPL(pose, betas, transl) for an SMPL layer's arrays, without the mesh (module docstring).

    smpl_arrays: the SMPL model arrays (common.body.body_model.SMPLLayer.arrays: v_template (V, 3), shapedirs
        (V, 3, >= 10), posedirs (V, 3, 207), J_regressor (24, V), weights (V, 24), kintree_table (2, 24));
    regressor: (K, V) joint regressor (e.g. the J30 regressor).
    """

    def __init__(self, smpl_arrays, regressor):
        regressor = np.asarray(regressor, dtype=np.float64)
        v_template = np.asarray(smpl_arrays["v_template"], dtype=np.float64)
        num_vertices = v_template.shape[0]
        if regressor.ndim != 2 or regressor.shape[1] != num_vertices:
            raise ValueError(f"regressor must be (K, {num_vertices}), got {regressor.shape}")
        shapedirs = np.asarray(smpl_arrays["shapedirs"], dtype=np.float64)[:, :, :NUM_BETAS]
        posedirs = np.asarray(smpl_arrays["posedirs"], dtype=np.float64)
        weights = np.asarray(smpl_arrays["weights"], dtype=np.float64)
        j_regressor = smpl_arrays["J_regressor"]
        j_regressor = np.asarray(j_regressor.toarray() if hasattr(j_regressor, "toarray") else j_regressor,
                                 dtype=np.float64)
        # The root's parent is stored as -1 or as its unsigned 32-bit image.
        self.parents = np.asarray(smpl_arrays["kintree_table"])[0].astype(np.int64)
        self.parents[0] = -1
        num_joints = self.num_joints = regressor.shape[0]
        # R_kv W_vj as a sparse (K * 24, V) matrix: both the regressors and the skinning weights are sparse.
        skin = sparse.csr_matrix((regressor[:, None, :] * weights.T[None]).reshape(num_joints * NUM_JOINTS, -1))
        self.template = (skin @ v_template).reshape(num_joints, NUM_JOINTS, 3)
        self.shape_dirs = (skin @ shapedirs.reshape(num_vertices, -1)).reshape(num_joints, NUM_JOINTS, 3, NUM_BETAS)
        self.pose_dirs = (skin @ posedirs.reshape(num_vertices, -1)).reshape(num_joints, NUM_JOINTS, 3, -1)
        self.weight_sums = np.asarray(skin.sum(axis=1)).reshape(num_joints, NUM_JOINTS)
        self.regressor_sums = regressor.sum(axis=1)  # (K,)
        self.rest_template = j_regressor @ v_template  # (24, 3): the skeleton of the mean shape
        self.rest_dirs = np.einsum("jv,vcb->jcb", j_regressor, shapedirs)  # (24, 3, 10)

    def __call__(self, poses, betas, transl):
        """poses (B, 72) axis-angle radians (root first), betas (10,), transl (3,) metres -> (B, K, 3) float64
        metres: the regressor applied to the posed mesh."""
        poses = np.asarray(poses, dtype=np.float64).reshape(-1, NUM_JOINTS, 3)
        betas = np.asarray(betas, dtype=np.float64).reshape(NUM_BETAS)
        rotations = axis_angle_to_rotmat(torch.from_numpy(poses)).numpy()  # (B, 24, 3, 3)
        pose_feature = (rotations[:, 1:] - np.eye(3)).reshape(len(poses), -1)  # (B, 207), SMPL's ordering
        pose_offsets = (self.pose_dirs.reshape(-1, pose_feature.shape[1]) @ pose_feature.T).T
        posed = (self.template + self.shape_dirs @ betas)[None] + pose_offsets.reshape(len(poses),
                                                                                      *self.template.shape)
        rest = self.rest_template + self.rest_dirs @ betas  # (24, 3)
        # World rotation and translation of each joint along the kinematic chain.
        world_rot = np.empty_like(rotations)
        world_pos = np.empty((len(poses), NUM_JOINTS, 3))
        for j, parent in enumerate(self.parents):
            if parent < 0:
                world_rot[:, j], world_pos[:, j] = rotations[:, j], rest[j]
            else:
                world_rot[:, j] = world_rot[:, parent] @ rotations[:, j]
                world_pos[:, j] = world_pos[:, parent] + np.einsum("bcd,d->bc", world_rot[:, parent],
                                                                   rest[j] - rest[parent])
        # Skinning transform of joint j: x -> world_rot_j x + (world_pos_j - world_rot_j rest_j).
        offsets = world_pos - np.einsum("bjcd,jd->bjc", world_rot, rest)
        translations = (offsets.transpose(0, 2, 1) @ self.weight_sums.T).transpose(0, 2, 1)  # (B, K, 3)
        joints = np.einsum("bjcd,bkjd->bkc", world_rot, posed) + translations
        return joints + self.regressor_sums[None, :, None] * np.asarray(transl, dtype=np.float64).reshape(1, 1, 3)
