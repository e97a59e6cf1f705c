"""Temporal smoothing of a tracked person's SMPL parameters with the One-Euro filter.

The One-Euro filter (Casiez, Roussel and Vogel, CHI 2012) is an exponential low-pass filter whose cutoff frequency
rises with the signal's speed: fc = min_cutoff + beta |dx/dt| (the speed itself low-passed at d_cutoff), so a still
person's jitter is removed (fc = min_cutoff) while a fast motion is followed with little lag. For a steady motion
the lag is the filter's time constant 1 / (2 pi fc) seconds. It is causal (each output uses the past only) and
takes the actual time between samples, so frames where the person was not seen are simply skipped.

Rotations are filtered in the continuous 6D representation (the first two columns of the rotation matrix, Zhou et
al., CVPR 2019; common.geometry) and mapped back with Gram-Schmidt: axis-angle vectors jump where the angle passes
pi and quaternions where their sign flips, and averaging either across such a jump gives a wrong rotation.
"""
import dataclasses

import numpy as np
import torch

from common.geometry import axis_angle_to_rotmat, rot6d_to_rotmat, rotmat_to_axis_angle, rotmat_to_rot6d


def _alpha(dt, cutoff):
    """The exponential filter's weight of the new sample for a time step dt (s) and a cutoff (Hz)."""
    tau = 1.0 / (2 * np.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """One-Euro filter of an array signal (any shape; each element filtered with its own speed).

    min_cutoff (Hz): the cutoff of a still signal; beta (s / signal unit): how much the cutoff grows with the
    speed (signal units per second); d_cutoff (Hz): the cutoff of the speed estimate."""

    def __init__(self, min_cutoff=1.0, beta=0.0, d_cutoff=1.0):
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError(f"One-Euro filter: need min_cutoff > 0, d_cutoff > 0, beta >= 0; got {min_cutoff}, "
                             f"{d_cutoff}, {beta}")
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.t = self.x = self.dx = None

    def __call__(self, t, x):
        """The filtered value of sample x at time t (seconds, increasing)."""
        x = np.asarray(x, dtype=np.float64)
        if self.t is None:
            self.t, self.x, self.dx = t, x.copy(), np.zeros_like(x)
            return x.copy()
        dt = t - self.t
        if dt <= 0:
            raise ValueError(f"One-Euro filter: times must increase, got {t} after {self.t}")
        a_d = _alpha(dt, self.d_cutoff)
        self.dx = a_d * (x - self.x) / dt + (1 - a_d) * self.dx
        a = _alpha(dt, self.min_cutoff + self.beta * np.abs(self.dx))
        self.x = a * x + (1 - a) * self.x
        self.t = t
        return self.x.copy()


@dataclasses.dataclass(frozen=True)
class SmoothingSettings:
    """One-Euro parameters per quantity: (min_cutoff Hz, beta). Rotations: 6D components (unitless, a rotation at
    w rad/s moves them at up to w per second); shape: betas, filtered hard (a person's shape does not change);
    translation: metres. At 30 fps and these defaults, a still person's rotations and translation are averaged over
    about 5 frames (tau = 1 / (2 pi) s), a limb swinging at 3 rad/s is followed with tau = 1 / (8 pi) s (1.2
    frames), a person walking at 1.5 m/s with tau = 1 / (8 pi) s as well."""
    rotation: tuple = (1.0, 1.0)
    shape: tuple = (0.1, 0.0)
    translation: tuple = (1.0, 2.0)
    d_cutoff: float = 1.0


class SmplSmoother:
    """Smooths one person's SMPL parameters over time; call once per frame the person is seen."""

    def __init__(self, settings=SmoothingSettings()):
        self.rotation = OneEuroFilter(*settings.rotation, d_cutoff=settings.d_cutoff)
        self.shape = OneEuroFilter(*settings.shape, d_cutoff=settings.d_cutoff)
        self.translation = OneEuroFilter(*settings.translation, d_cutoff=settings.d_cutoff)

    def __call__(self, t, pose, betas, transl):
        """t: seconds; pose (72,) axis-angle (24 joints, root first); betas (10,); transl (3,) metres.
        Returns the smoothed (pose (72,), betas (10,), transl (3,)) as float64 numpy arrays."""
        rotmat = axis_angle_to_rotmat(torch.as_tensor(np.asarray(pose, np.float64).reshape(-1, 3)))
        rot6d = self.rotation(t, rotmat_to_rot6d(rotmat).numpy())
        pose = rotmat_to_axis_angle(rot6d_to_rotmat(torch.from_numpy(rot6d))).numpy().reshape(-1)
        return pose, self.shape(t, betas), self.translation(t, transl)
