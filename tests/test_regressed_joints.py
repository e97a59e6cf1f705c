"""common.body.regressed_joints: a regressor applied to the posed SMPL mesh, computed without the mesh."""
import numpy as np
import torch

from common.body.body_model import SMPLLayer
from common.body.regressed_joints import RegressedJoints
from tests.test_body_model import random_smpl_arrays


def test_equals_the_regressor_applied_to_the_smpl_layers_mesh():
    arrays = random_smpl_arrays(seed=3)
    rng = np.random.default_rng(0)
    regressor = np.zeros((30, 6890))
    for k in range(30):  # sparse rows, as the J30 and H36M regressors are
        regressor[k, rng.choice(6890, 15, replace=False)] = rng.random(15)
    poses = rng.normal(0.0, 0.5, (3, 72))
    betas = rng.normal(0.0, 1.0, 10)
    transl = np.array([0.2, -0.1, 3.5])
    layer = SMPLLayer(arrays).double()
    with torch.no_grad():
        mesh = layer(torch.tensor(poses), torch.tensor(betas).expand(3, -1), torch.tensor(transl).expand(3, -1))
    expected = regressor @ mesh.numpy()
    joints = RegressedJoints(arrays, regressor)(poses, betas, transl)
    assert joints.shape == (3, 30, 3)
    # smplx computes the rotation angle as |axis-angle + 1e-8|, hence the 1e-7 m rather than float64 noise.
    np.testing.assert_allclose(joints, expected, atol=1e-7)

