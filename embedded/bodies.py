"""The body models of a generator run as numpy arrays: the SMPL function in float64 and the clothing regions.

Read from SMPL files through the project's loader (common.body.body_model), so the mannequin (embedded.mannequin) and
the real SMPL files work alike.
"""
from pathlib import Path

import numpy as np
import scipy.sparse
from scipy.spatial.transform import Rotation

from common.body.body_model import joint_regressor_30, load_smpl
from common.body.joint_sets import SMPL30

# Surface regions for clothing, from each vertex's dominant skinning joint.
REGIONS = ("face", "hair", "hands", "forearms", "upper_arms", "torso", "hips_thighs", "shins", "feet")
_REGION_OF_JOINT = {
    "Head": "face", "Neck": "face", "Pelvis": "hips_thighs", "Torso": "torso", "Spine": "torso", "Chest": "torso",
    "L_Thorax": "torso", "R_Thorax": "torso", "L_Hip": "hips_thighs", "R_Hip": "hips_thighs", "L_Knee": "shins",
    "R_Knee": "shins", "L_Ankle": "feet", "R_Ankle": "feet", "L_Toe": "feet", "R_Toe": "feet",
    "L_Shoulder": "upper_arms", "R_Shoulder": "upper_arms", "L_Elbow": "forearms", "R_Elbow": "forearms",
    "L_Wrist": "hands", "R_Wrist": "hands", "L_Hand": "hands", "R_Hand": "hands",
}


class Bodies:
    """The body models of a generator run, read from SMPL files through the project's loader (common.body.body_model).

    layers: {gender: SMPLLayer}; j30: {gender: (30, 6890) J30 regressor}; h36m: (17, 6890); face_regions:
    {gender: (13776,) index into REGIONS}."""

    def __init__(self, smpl_dir, j_regressor_extra, h36m_regressor, genders=("neutral", "male", "female")):
        self.layers, self.j30, self.face_regions, self._models = {}, {}, {}, {}
        self.h36m = np.asarray(h36m_regressor, np.float64)
        for gender in genders:
            layer = load_smpl(smpl_dir, gender)
            self.layers[gender] = layer
            self.j30[gender] = joint_regressor_30(layer.arrays["J_regressor"], j_regressor_extra).astype(np.float64)
            self.face_regions[gender] = self._regions(layer)

    @staticmethod
    def _regions(layer):
        weights = np.asarray(layer.arrays["weights"])
        template = np.asarray(layer.arrays["v_template"], np.float64)
        vertex = np.array([REGIONS.index(_REGION_OF_JOINT[SMPL30[j]]) for j in weights.argmax(1)])
        head = np.asarray(layer.arrays["J_regressor"], np.float64)[SMPL30.index("Head")] @ template
        # Hair: the top and back of the head.
        hair = (vertex == REGIONS.index("face")) & (
            (template[:, 1] > head[1] + 0.07) | ((template[:, 2] < head[2] - 0.01) & (template[:, 1] > head[1] - 0.03)))
        vertex[hair] = REGIONS.index("hair")
        return vertex[layer.faces[:, 0]]

    def forward(self, gender, poses, betas):
        """Vertices (N, 6890, 3) float64 metres (transl 0) and J30 joints (N, 30, 3) for poses (N, 72), betas (N, 10).

        The SMPL function (shape blend, pose blend, linear blend skinning about the rest joints) evaluated in numpy
        float64 on the loaded model's arrays: for a handful of bodies faster than the torch layer, and reproducible
        bit for bit. tests/test_synthetic.py checks it against common.body.body_model.SMPLLayer.
        No product here goes through a multi-threaded BLAS: for these sizes its threads cost far more CPU than
        they save (einsum loops and sparse products instead)."""
        model = self._model(gender)
        poses, betas = np.asarray(poses, np.float64), np.asarray(betas, np.float64)
        n, n_verts, n_joints = len(poses), len(model["v_template"]), len(model["parents"])
        v_shaped = model["v_template"] + np.einsum("kvc,nk->nvc", model["shapedirs"][:betas.shape[1]], betas)
        rest_joints = _sparse_apply(model["J_regressor"], v_shaped)  # (N, 24, 3)
        rotations = Rotation.from_rotvec(poses.reshape(-1, 3)).as_matrix().reshape(n, n_joints, 3, 3)
        if model["posedirs"] is not None:
            features = (rotations[:, 1:] - np.eye(3)).reshape(n, -1)
            v_shaped = v_shaped + np.einsum("pvc,np->nvc", model["posedirs"], features)
        world = np.zeros((n, n_joints, 4, 4))
        world[:, :, 3, 3] = 1
        world[:, 0, :3, :3], world[:, 0, :3, 3] = rotations[:, 0], rest_joints[:, 0]
        for j in range(1, n_joints):
            parent = model["parents"][j]
            local = np.zeros((n, 4, 4))
            local[:, :3, :3], local[:, 3, 3] = rotations[:, j], 1
            local[:, :3, 3] = rest_joints[:, j] - rest_joints[:, parent]
            world[:, j] = world[:, parent] @ local
        # Skinning transforms relative to the rest pose: x -> R (x - J_rest) + t, blended per vertex.
        world[:, :, :3, 3] -= np.einsum("njab,njb->nja", world[:, :, :3, :3], rest_joints)
        blended = _sparse_apply(model["weights"], world[:, :, :3, :].reshape(n, n_joints, 12)).reshape(n, n_verts, 3, 4)
        verts = blended[..., 3] + sum(blended[..., k] * v_shaped[..., k:k + 1] for k in range(3))
        return verts, _sparse_apply(model["J30"], verts)

    def _model(self, gender):
        """The model arrays as float64 in the layouts forward() uses (cached); the regressors and skinning weights
        as sparse matrices (each row mixes a few vertices / joints)."""
        if gender not in self._models:
            arrays = self.layers[gender].arrays
            posedirs = np.asarray(arrays["posedirs"], np.float64)
            self._models[gender] = {
                "v_template": np.asarray(arrays["v_template"], np.float64),
                "shapedirs": np.ascontiguousarray(np.asarray(arrays["shapedirs"], np.float64).transpose(2, 0, 1)),
                "posedirs": np.ascontiguousarray(posedirs.transpose(2, 0, 1)) if np.any(posedirs) else None,
                "J_regressor": scipy.sparse.csr_matrix(np.asarray(arrays["J_regressor"], np.float64)),
                "J30": scipy.sparse.csr_matrix(self.j30[gender]),
                "weights": scipy.sparse.csr_matrix(np.asarray(arrays["weights"], np.float64)),
                "parents": np.asarray(arrays["kintree_table"])[0].astype(np.int64),
            }
        return self._models[gender]


def _sparse_apply(matrix, values):
    """Sparse (R, K) matrix applied to each of N stacked (K, C) arrays: (N, K, C) -> (N, R, C), in one product."""
    n, k, c = values.shape
    out = matrix @ values.transpose(1, 0, 2).reshape(k, n * c)
    return np.ascontiguousarray(out.reshape(-1, n, c).transpose(1, 0, 2))


def load_bodies(body_models):
    """The Bodies of a folder as embedded.mannequin.write_mannequin writes it (smpl/, J_regressor_extra.npy,
    J_regressor_h36m_correct.npy)."""
    body_models = Path(body_models)
    return Bodies(body_models / "smpl", np.load(body_models / "J_regressor_extra.npy"),
                  np.load(body_models / "J_regressor_h36m_correct.npy"))
