"""Small pure geometry functions: rotation conversions and the model's camera projection.

Rotation matrices act on column vectors; axis-angle vectors have their angle (radians) in [0, pi].
"""
import torch
import torch.nn.functional as F


def rot6d_to_rotmat(x):
    """6D rotation representation -> rotation matrix (Gram-Schmidt).

    x: (..., 6). The 6 numbers are read as a 3x2 matrix in row-major order, i.e. the two
    columns are a1 = x[0::2] and a2 = x[1::2] (the convention of JOTR's root head and of
    VPoser v1's decoder). Returns (..., 3, 3) with columns (b1, b2, b3).
    """
    pair = x.reshape(*x.shape[:-1], 3, 2)
    a1, a2 = pair[..., 0], pair[..., 1]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    # The vector dimension, explicitly: the official code omitted `dim`, so a batch of exactly 3 was crossed over
    # the batch dimension and got wrong root rotations (spec 7.21).
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def rotmat_to_rot6d(rotmat):
    """Inverse of `rot6d_to_rotmat` for proper rotations: (..., 3, 3) -> (..., 6)."""
    return rotmat[..., :2].reshape(*rotmat.shape[:-2], 6)


def axis_angle_to_rotmat(axis_angle):
    """Rodrigues' formula. axis_angle: (..., 3) -> (..., 3, 3)."""
    angle = torch.linalg.norm(axis_angle, dim=-1, keepdim=True)[..., None]  # (..., 1, 1)
    x, y, z = axis_angle.unbind(-1)
    zero = torch.zeros_like(x)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*axis_angle.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)
    # sin(t)/t and (1-cos t)/t^2 with their Taylor limits near 0, so the gradient stays finite at the identity.
    small = angle < 1e-4
    safe = torch.where(small, torch.ones_like(angle), angle)
    sinc = torch.where(small, 1 - angle**2 / 6, torch.sin(safe) / safe)
    cosc = torch.where(small, 0.5 - angle**2 / 24, (1 - torch.cos(safe)) / safe**2)
    return eye + sinc * skew + cosc * (skew @ skew)


def rotmat_to_quaternion(rotmat):
    """(..., 3, 3) -> unit quaternion (..., 4) as (w, x, y, z) with w >= 0.

    Uses the numerically stable branch per element (largest of w, x, y, z), so it is accurate
    near 180 degree rotations too.
    """
    m = rotmat
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    # 4 q_i^2 for each component; the largest is the safest divisor.
    sq = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], dim=-1)
    r = torch.sqrt(sq.clamp(min=1e-12))  # 2 |q_i|
    # Row i: the quaternion scaled by 4 q_i, written with the products that branch i knows.
    cand = torch.stack([
        torch.stack([r[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], -1),
        torch.stack([m21 - m12, r[..., 1] ** 2, m10 + m01, m02 + m20], -1),
        torch.stack([m02 - m20, m10 + m01, r[..., 2] ** 2, m21 + m12], -1),
        torch.stack([m10 - m01, m02 + m20, m21 + m12, r[..., 3] ** 2], -1),
    ], dim=-2)  # (..., 4 branches, 4)
    best = sq.argmax(dim=-1)
    quat = torch.gather(cand, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    quat = quat / (2 * torch.gather(r, -1, best[..., None]))
    quat = F.normalize(quat, dim=-1)
    return torch.where(quat[..., :1] < 0, -quat, quat)


def quaternion_to_axis_angle(quat):
    """(w, x, y, z) unit quaternion with w >= 0 -> axis-angle (..., 3), angle in [0, pi]."""
    w, xyz = quat[..., :1], quat[..., 1:]
    sin_half = torch.linalg.norm(xyz, dim=-1, keepdim=True)
    angle = 2 * torch.atan2(sin_half, w)
    # angle / sin(angle/2) -> 2 as the angle -> 0.
    small = sin_half < 1e-6
    scale = torch.where(small, 2 / w.clamp(min=1e-6), angle / torch.where(small, torch.ones_like(sin_half), sin_half))
    return xyz * scale


def rotmat_to_axis_angle(rotmat):
    """(..., 3, 3) -> (..., 3) axis-angle with angle in [0, pi]."""
    return quaternion_to_axis_angle(rotmat_to_quaternion(rotmat))


def rot6d_to_axis_angle(x):
    """(..., 6) -> (..., 3): the official root-pose conversion (spec 1.3-12). NaNs become 0, as there."""
    aa = rotmat_to_axis_angle(rot6d_to_rotmat(x))
    return torch.nan_to_num(aa, nan=0.0)


def inverse_sigmoid(x, eps=1e-5):
    """log(x / (1 - x)) with x clamped to [0, 1] and both terms floored at eps (DETR's form)."""
    x = x.clamp(0, 1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def project_to_crop(points_cam, focal, princpt):
    """Perspective projection of camera-frame points (..., 3) metres -> crop pixels (..., 2).

    The 1e-4 m added to depth is the official model's guard against division by zero.
    """
    z = points_cam[..., 2:] + 1e-4
    xy = points_cam[..., :2] / z
    return xy * xy.new_tensor(focal) + xy.new_tensor(princpt)
