"""Temporal smoothing: less jitter on a noisy synthetic track, little lag on the real motion underneath, and
rotations that stay continuous where axis-angle vectors jump."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from common.video.smoothing import OneEuroFilter, SmoothingSettings, SmplSmoother

FPS = 30.0
T = 90
WALK_SPEED = 1.5  # m/s along x
SWING_HZ, SWING_AMPLITUDE = 1.0, 0.5  # the left shoulder swings 0.5 rad at 1 Hz


def _true_track():
    """A person walking at 1.5 m/s, the left arm swinging, the body turning through 180 degrees (where the root's
    axis-angle flips from +pi to -pi): poses (T, 72), betas (T, 10), transl (T, 3)."""
    t = np.arange(T) / FPS
    poses = np.zeros((T, 24, 3))
    poses[:, 0] = Rotation.from_euler("y", (np.pi - 0.3 + 0.6 * t / t[-1])[:, None]).as_rotvec()
    poses[:, 16, 0] = SWING_AMPLITUDE * np.sin(2 * np.pi * SWING_HZ * t)
    transl = np.stack([WALK_SPEED * t - 1.0, np.full(T, 0.2), np.full(T, 5.0)], axis=1)
    betas = np.tile(np.linspace(-1, 1, 10), (T, 1))
    return poses.reshape(T, 72), betas, transl


def _noisy(poses, betas, transl, rng):
    noise = Rotation.from_rotvec(rng.normal(0, np.deg2rad(3), (T * 24, 3)))
    noisy_poses = (noise * Rotation.from_rotvec(poses.reshape(-1, 3))).as_rotvec().reshape(T, 72)
    return (noisy_poses, betas + rng.normal(0, 0.1, betas.shape),
            transl + rng.normal(0, 1, transl.shape) * [0.02, 0.02, 0.08])


def _smooth(poses, betas, transl):
    smoother = SmplSmoother(SmoothingSettings())
    out = [smoother(i / FPS, p, b, tr) for i, (p, b, tr) in enumerate(zip(poses, betas, transl))]
    return [np.stack(x) for x in zip(*out)]


def _angles(a, b):
    """Geodesic angles (radians) between axis-angle rotations a and b (..., 3)."""
    ra, rb = Rotation.from_rotvec(a.reshape(-1, 3)), Rotation.from_rotvec(b.reshape(-1, 3))
    return (ra.inv() * rb).magnitude().reshape(a.shape[:-1])


def _jitter(poses, transl):
    """Mean frame-to-frame acceleration: of the translation (m / frame^2) and of the joint rotations (rad)."""
    accel = np.linalg.norm(np.diff(transl, 2, axis=0), axis=1).mean()
    rot = Rotation.from_rotvec(poses.reshape(-1, 3)).as_matrix().reshape(T, 24, 9)
    return accel, np.linalg.norm(np.diff(rot, 2, axis=0), axis=2).mean()


def test_smoothing_reduces_jitter_and_error_on_a_noisy_track():
    truth = _true_track()
    noisy = _noisy(*truth, np.random.default_rng(0))
    smooth = _smooth(*noisy)
    raw_jitter, smooth_jitter = _jitter(noisy[0], noisy[2]), _jitter(smooth[0], smooth[2])
    assert smooth_jitter[0] < 0.3 * raw_jitter[0]  # translation
    assert smooth_jitter[1] < 0.3 * raw_jitter[1]  # rotations
    settled = slice(10, None)
    # Closer to the truth than the raw values: betas (still) by far; the translation less, as at 1.5 m/s its lag
    # (about 6 cm) is of the order of the noise.
    for k, ratio in ((1, 0.6), (2, 0.85)):
        raw_error = np.linalg.norm(noisy[k] - truth[k], axis=1)[settled].mean()
        assert np.linalg.norm(smooth[k] - truth[k], axis=1)[settled].mean() < ratio * raw_error
    raw_rot_error = _angles(noisy[0].reshape(T, 24, 3), truth[0].reshape(T, 24, 3))[settled].mean()
    assert _angles(smooth[0].reshape(T, 24, 3), truth[0].reshape(T, 24, 3))[settled].mean() < 0.7 * raw_rot_error


def test_smoothing_lags_a_real_motion_by_at_most_two_frames():
    """Without noise the filter should return the motion; what it changes is lag. Stated bound (at 30 fps with the
    default settings): the translation of a person walking at 1.5 m/s trails by at most 2 frames (10 cm), the
    swinging arm (0.5 rad at 1 Hz) by at most 0.2 rad, and the root turning through 180 degrees stays within
    0.05 rad of the truth (no jump where its axis-angle flips sign)."""
    poses, betas, transl = _true_track()
    smooth_poses, smooth_betas, smooth_transl = _smooth(poses, betas, transl)
    step = WALK_SPEED / FPS
    lag_frames = np.abs(smooth_transl[:, 0] - transl[:, 0]) / step
    assert lag_frames.max() <= 2.0
    np.testing.assert_allclose(smooth_betas, betas, atol=1e-9)
    angles = _angles(smooth_poses.reshape(T, 24, 3), poses.reshape(T, 24, 3))
    assert angles[:, 16].max() <= 0.2
    assert angles[:, 0].max() <= 0.05
    flips = np.linalg.norm(np.diff(poses[:, :3], axis=0), axis=1).max()
    assert flips > 3  # the true root's axis-angle does jump across pi: a filter on it would fail


def test_one_euro_filter_follows_gaps_in_time_and_rejects_bad_times():
    f = OneEuroFilter(min_cutoff=1.0)
    assert f(0.0, 1.0) == 1.0
    near = f(1 / 30, 2.0)
    later = OneEuroFilter(min_cutoff=1.0)
    later(0.0, 1.0)
    far = later(1.0, 2.0)  # one second later: the old value weighs much less
    assert 1.0 < near < far < 2.0
    with pytest.raises(ValueError, match="increase"):
        f(0.0, 3.0)
