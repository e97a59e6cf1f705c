"""Render the mannequin body model in four poses side by side (the README picture).

    .venv/bin/python -m tools.render_mannequin [--out assets/mannequin.png]

The mannequin is written to a temporary directory and loaded back through the SMPL loader
(common.body.body_model), exactly as the real SMPL files would be.
"""
import argparse
import pathlib
import tempfile

import cv2
import numpy as np
import torch
from scipy.spatial.transform import Rotation

from common.body.body_model import load_smpl
from common.body.joint_sets import SMPL30
from common.errors import run_entry_point
from common.renderer import render, smpl_to_camera
from embedded.mannequin import write_mannequin

PANEL = (384, 256)  # (H, W) pixels per pose
FOCAL = 500.0
DISTANCE = 3.7  # metres from the camera to the body


def _pose(rotations, yaw_degrees=0.0):
    """SMPL pose (72,) axis-angle from {joint name: [(axis 'x'|'y'|'z', degrees), ...]} (applied in list
    order, in the joint's rest frame) plus a global turn about the vertical axis."""
    pose = np.zeros((24, 3))
    rotations = dict(rotations)
    rotations.setdefault("Pelvis", [])
    rotations["Pelvis"] = [("y", yaw_degrees)] + rotations["Pelvis"]
    for name, steps in rotations.items():
        rotation = Rotation.identity()
        for axis, degrees in steps:
            rotation = Rotation.from_euler(axis, degrees, degrees=True) * rotation
        pose[SMPL30.index(name)] = rotation.as_rotvec()
    return pose.reshape(-1)


def demo_poses():
    """Four poses: T-pose, walking, arms raised, sitting (SMPL axis-angle, (4, 72))."""
    walking = {
        "L_Hip": [("x", -28)], "L_Knee": [("x", 15)], "R_Hip": [("x", 18)], "R_Knee": [("x", 40)],
        "R_Ankle": [("x", -10)], "L_Shoulder": [("z", -72), ("x", 25)], "R_Shoulder": [("z", 72), ("x", -25)],
        "L_Elbow": [("y", -15)], "R_Elbow": [("y", 30)], "Spine": [("y", -5)],
    }
    raised = {
        "L_Thorax": [("z", 12)], "R_Thorax": [("z", -12)], "L_Shoulder": [("z", 55)], "R_Shoulder": [("z", -55)],
        "L_Elbow": [("y", -20)], "R_Elbow": [("y", 20)], "Head": [("x", -10)],
    }
    sitting = {
        "L_Hip": [("x", -85), ("z", -6)], "R_Hip": [("x", -80), ("z", 6)], "L_Knee": [("x", 85)],
        "R_Knee": [("x", 75)], "Torso": [("x", 8)], "L_Shoulder": [("z", -65), ("x", 20)],
        "R_Shoulder": [("z", 65), ("x", 20)], "L_Elbow": [("y", -60)], "R_Elbow": [("y", 55)], "Neck": [("x", 8)],
    }
    return np.stack([_pose({}, 0), _pose(walking, 35), _pose(raised, -15), _pose(sitting, 50)])


def _background(height, width):
    ramp = np.linspace(235, 205, height)[:, None, None]
    return np.broadcast_to(ramp, (height, width, 3)).astype(np.uint8).copy()


def render_poses(smpl, poses):
    """Render each pose (N, 72) in its own panel; returns the (H, N * W, 3) uint8 RGB strip."""
    with torch.no_grad():
        verts = smpl(torch.as_tensor(poses, dtype=torch.float32), torch.zeros(len(poses), 10)).numpy()
    panels = []
    for v in verts:
        # Centred horizontally, standing on a common ground line 1.05 m below the optical axis.
        cam = smpl_to_camera(v - v.mean(0) * np.array([1, 0, 1]), (0.0, 1.05 + v[:, 1].min(), DISTANCE))
        result = render([(cam, smpl.faces)], (FOCAL, FOCAL), (PANEL[1] / 2, PANEL[0] / 2), PANEL,
                        colors=[(0.86, 0.78, 0.68)], background=_background(*PANEL), ambient=0.3)
        panels.append(result.image)
    return np.concatenate(panels, axis=1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="assets/mannequin.png", help="output PNG (default: %(default)s)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        write_mannequin(tmp)
        smpl = load_smpl(pathlib.Path(tmp) / "smpl", "neutral")
    image = render_poses(smpl, demo_poses())
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), image[:, :, ::-1])
    print(f"wrote {out} ({image.shape[1]}x{image.shape[0]})")


if __name__ == "__main__":
    run_entry_point(main)
