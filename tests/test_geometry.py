import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from common.geometry import (
    axis_angle_to_rotmat,
    inverse_sigmoid,
    project_to_crop,
    rot6d_to_axis_angle,
    rot6d_to_rotmat,
    rotmat_to_axis_angle,
    rotmat_to_rot6d,
)


def random_rotations(n, seed=0):
    return Rotation.random(n, random_state=seed)


def test_axis_angle_to_rotmat_matches_scipy():
    rots = random_rotations(500)
    ours = axis_angle_to_rotmat(torch.from_numpy(rots.as_rotvec()))
    np.testing.assert_allclose(ours.numpy(), rots.as_matrix(), atol=1e-12)


def test_axis_angle_to_rotmat_small_angles_and_gradient_at_zero():
    vec = torch.tensor([[1e-7, -2e-7, 3e-8], [0.0, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    ours = axis_angle_to_rotmat(vec)
    np.testing.assert_allclose(ours.detach().numpy(), Rotation.from_rotvec(vec.detach().numpy()).as_matrix(),
                               atol=1e-12)
    ours.sum().backward()
    assert torch.isfinite(vec.grad).all()


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
def test_rotmat_to_axis_angle_matches_scipy(dtype, tol):
    rots = random_rotations(2000, seed=1)
    ours = rotmat_to_axis_angle(torch.from_numpy(rots.as_matrix()).to(dtype))
    # Compare as rotations (axis-angle is unique for angles < pi).
    back = Rotation.from_rotvec(ours.double().numpy())
    assert np.abs((back.inv() * rots).magnitude()).max() < tol
    assert (torch.linalg.norm(ours, dim=-1) <= np.pi + 1e-6).all()


def test_rotmat_to_axis_angle_near_pi_and_identity():
    axes = np.random.default_rng(2).normal(size=(50, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    for angle in (np.pi, np.pi - 1e-6, 1e-9, 0.0):
        rotvec = axes * angle
        ours = rotmat_to_axis_angle(torch.from_numpy(Rotation.from_rotvec(rotvec).as_matrix()))
        err = (Rotation.from_rotvec(ours.numpy()).inv() * Rotation.from_rotvec(rotvec)).magnitude()
        assert err.max() < 1e-7, angle


def test_rot6d_round_trip_and_gram_schmidt():
    mats = torch.from_numpy(random_rotations(100, seed=3).as_matrix())
    np.testing.assert_allclose(rot6d_to_rotmat(rotmat_to_rot6d(mats)).numpy(), mats.numpy(), atol=1e-12)
    # Any 6-vector gives a proper rotation; its first column is the normalised first 3x2 column (x[0::2]).
    x = torch.randn(64, 6, dtype=torch.float64)
    r = rot6d_to_rotmat(x)
    np.testing.assert_allclose((r.transpose(1, 2) @ r).numpy(), np.broadcast_to(np.eye(3), (64, 3, 3)), atol=1e-12)
    np.testing.assert_allclose(torch.linalg.det(r).numpy(), 1.0, atol=1e-12)
    a1 = x[:, 0::2]
    np.testing.assert_allclose(r[:, :, 0].numpy(), (a1 / a1.norm(dim=1, keepdim=True)).numpy(), atol=1e-12)


def test_rot6d_of_a_batch_of_three_is_per_sample():
    """The official rot6d_to_axis_angle crossed over the first size-3 dimension, the batch when it holds 3 people;
    each sample must depend on itself only, whatever the batch size."""
    x = torch.randn(3, 6, dtype=torch.float64)
    alone = torch.stack([rot6d_to_axis_angle(row[None])[0] for row in x])
    np.testing.assert_allclose(rot6d_to_axis_angle(x).numpy(), alone.numpy(), atol=1e-12)


def test_rot6d_to_axis_angle_replaces_nan():
    out = rot6d_to_axis_angle(torch.tensor([[float("nan")] * 6, [1.0, 0, 0, 1, 0, 0]]))
    assert torch.isfinite(out).all()
    assert torch.allclose(out[1], torch.zeros(3), atol=1e-6)


def test_inverse_sigmoid_inverts_sigmoid_and_clamps():
    x = torch.linspace(-8, 8, 101, dtype=torch.float64)
    np.testing.assert_allclose(inverse_sigmoid(torch.sigmoid(x)).numpy(), x.numpy(), atol=1e-8)
    assert torch.isfinite(inverse_sigmoid(torch.tensor([0.0, 1.0, -1.0, 2.0]))).all()


def test_project_to_crop_pinhole():
    pts = torch.tensor([[0.1, -0.2, 10.0], [0.0, 0.0, 5.0]])
    uv = project_to_crop(pts, (5000.0, 4000.0), (128.0, 100.0))
    expected = torch.tensor([[0.1 / (10 + 1e-4) * 5000 + 128, -0.2 / (10 + 1e-4) * 4000 + 100], [128.0, 100.0]])
    torch.testing.assert_close(uv, expected)
