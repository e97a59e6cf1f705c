"""The synthetic scenes' pinhole camera and the world it looks at.

The "world" frame here is the camera's levelled frame: origin at the camera centre, x right, y down (gravity),
z forward and horizontal; the floor is the plane y = camera height. Camera frame = rotation of it about x.
"""
import dataclasses

import numpy as np
from scipy.spatial.transform import Rotation


@dataclasses.dataclass
class Camera:
    """Pinhole camera: focal (fx = fy) and princpt (cx, cy) in pixels; height above the floor (metres); pitch
    (radians, > 0 looks down); size (H, W) pixels."""
    focal: float
    princpt: np.ndarray
    height: float
    pitch: float
    size: tuple

    @property
    def world_to_camera(self):
        """(3, 3) R with X_camera = R X_world."""
        c, s = np.cos(self.pitch), np.sin(self.pitch)
        return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])

    def project(self, points):
        """Camera-frame points (..., 3) -> pixels (..., 2)."""
        return points[..., :2] / points[..., 2:] * self.focal + self.princpt


def sample_camera(rng, image_size):
    """A Camera for an image of `image_size` (H, W): focal 1.1-1.6 x W, principal point near the centre."""
    height, width = image_size
    focal = width * rng.uniform(1.1, 1.6)
    princpt = np.array([(width - 1) / 2, (height - 1) / 2]) + rng.uniform(-0.02, 0.02, 2) * np.array([width, height])
    cam_height = rng.uniform(1.0, 1.8)
    # Aim roughly at the middle of a person ~6 m away.
    pitch = np.arctan2(cam_height - 0.9, 6.0) + np.deg2rad(rng.normal(0.0, 2.0))
    # Rounded as stored in the annotation files, so that the stored camera is the one used.
    return Camera(round(float(focal), 6), np.round(princpt, 6), float(cam_height), float(pitch),
                  (int(height), int(width)))


def rot_y(angle):
    """(3, 3) rotation by `angle` radians about y, the world's vertical."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def global_orient(camera, yaw, tilt):
    """(3,) SMPL root axis-angle for a person standing upright in `camera`'s world, turned by `yaw` (radians,
    about the vertical) and leaning by `tilt` (3,) small axis-angle in SMPL's frame."""
    smpl_to_world = np.diag([1.0, -1.0, -1.0])  # 180 degrees about x: SMPL's y-up frame -> y down, z forward
    rotation = camera.world_to_camera @ smpl_to_world @ rot_y(yaw) @ Rotation.from_rotvec(tilt).as_matrix()
    return Rotation.from_matrix(rotation).as_rotvec()
