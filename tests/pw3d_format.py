"""Test helper: a tiny dataset in the exact on-disk format of data/3DPW, and a stand-in body model.

`write_tiny_pw3d(root, joints_fn)` writes root/data/3DPW with five 320x240 JPEG images in three
sequences, the four annotation files and the HigherHRNet results file. The 2D poses are the
projections of the ground-truth 3D joints that `joints_fn` computes from each person's SMPL
parameters, so any body model works: the `ToyBodyModel` below now, the real SMPL layer later.

What is written (ann ids; "op" = openpose_result):
    test split, sequence downtown_walking_00:
        image 1: ann 101 (male), 102 (female)
        image 2: ann 103 (female; op all zeros = no detection), 104 (male; op L_Wrist confidence 0.03)
    validation split:
        courtyard_hug_00 image 3: ann 201 (male, HigherHRNet), 202 (female, op only)
        courtyard_hug_00 image 4: ann 203 (female, HigherHRNet), 204 (male, op only)
        courtyard_basketball_00 image 5: ann 205 (not in 3DPW-Crowd)
    3DPW_pc.json: anns 101, 104; 3DPW_oc.json: ann 102 (with their images).
HigherHRNet poses are the projected COCO joints shifted by HHRNET_OFFSET_PX with confidence 0.8,
OpenPose poses the exact projections with confidence 0.9, so the two sources are distinguishable.
"""
import json
import os

import cv2
import numpy as np
import torch

from common.body.joint_sets import COCO17, OPENPOSE18, SMPL30, map_joints
from common.geometry import axis_angle_to_rotmat

IMAGE_SIZE = (320, 240)  # width, height
FOCAL = (300.0, 310.0)
PRINCPT = (161.0, 118.0)
OPENPOSE_CONFIDENCE = 0.9
HHRNET_CONFIDENCE = 0.8
HHRNET_OFFSET_PX = (4.0, -3.0)
LOW_CONFIDENCE = 0.03  # below the loader's 0.05 threshold

# (ann id, image id, gender, x position in metres, input-pose case)
_PEOPLE = (
    (101, 1, "male", -0.5, "openpose"), (102, 1, "female", 0.5, "openpose"),
    (103, 2, "female", -0.5, "no_detection"), (104, 2, "male", 0.5, "low_wrist"),
    (201, 3, "male", -0.5, "hhrnet"), (202, 3, "female", 0.5, "openpose"),
    (203, 4, "female", -0.5, "hhrnet"), (204, 4, "male", 0.5, "openpose"),
    (205, 5, "male", 0.0, "openpose"),
)
_IMAGES = {1: "downtown_walking_00", 2: "downtown_walking_00", 3: "courtyard_hug_00", 4: "courtyard_hug_00",
           5: "courtyard_basketball_00"}
_FILES = {
    "3DPW_latest_test.json": (101, 102, 103, 104),
    "3DPW_latest_validation.json": (201, 202, 203, 204, 205),
    "3DPW_pc.json": (101, 104),
    "3DPW_oc.json": (102,),
}


def _project(points_cam):
    """(N, 3) camera metres -> (N, 2) image pixels with the tiny dataset's camera."""
    return points_cam[:, :2] / points_cam[:, 2:] * np.array(FOCAL) + np.array(PRINCPT)


def _write_image(path, rng):
    width, height = IMAGE_SIZE
    xs, ys = np.meshgrid(np.linspace(0, 1, width), np.linspace(0, 1, height))
    red = 170 + 60 * xs * ys + rng.uniform(-5, 5)  # red dominates, blue is low: the RGB order is testable
    green = 60 + 120 * xs
    blue = 30 + 20 * ys
    bgr = np.stack([blue, green, red], axis=-1).clip(0, 255).astype(np.uint8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(path, bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])


def write_tiny_pw3d(root, joints_fn, seed=0):
    """Write root/data/3DPW in the official format; return that directory.

    joints_fn(pose (72,), shape (10,), trans (3,), gender 'male'|'female') -> (30, 3) SMPL30 joints in
    the camera frame, metres (numpy). The people stand 3.5 - 5 m in front of the camera.
    """
    rng = np.random.default_rng(seed)
    data_dir = os.path.join(os.fspath(root), "data", "3DPW")
    images = {}
    for image_id, sequence in _IMAGES.items():
        file_name = f"image_{image_id:05d}.jpg"
        _write_image(os.path.join(data_dir, "imageFiles", sequence, file_name), rng)
        images[image_id] = {"id": image_id, "width": IMAGE_SIZE[0], "height": IMAGE_SIZE[1], "sequence": sequence,
                            "file_name": file_name, "cam_param": {"focal": list(FOCAL), "princpt": list(PRINCPT)}}

    annotations, hhrnet = {}, {}
    for ann_id, image_id, gender, x_pos, case in _PEOPLE:
        pose = rng.normal(0, 0.15, 72)
        pose[:3] = rng.normal(0, 0.1, 3)
        shape = rng.normal(0, 0.5, 10)
        trans = np.array([x_pos, rng.uniform(-0.1, 0.1), rng.uniform(3.5, 5.0)])
        joints_img = _project(np.asarray(joints_fn(pose, shape, trans, gender), dtype=np.float64))  # (30, 2)

        openpose = np.concatenate([map_joints(joints_img, SMPL30, OPENPOSE18), np.full((18, 1), OPENPOSE_CONFIDENCE)],
                                  axis=1)
        (x0, y0), (x1, y1) = openpose[:, :2].min(0), openpose[:, :2].max(0)
        bbox = [x0, y0, x1 - x0, y1 - y0]
        if case == "no_detection":
            openpose[:] = 0
        elif case == "low_wrist":
            openpose[OPENPOSE18.index("L_Wrist"), 2] = LOW_CONFIDENCE
        elif case == "hhrnet":
            coco = map_joints(joints_img, SMPL30, COCO17) + np.array(HHRNET_OFFSET_PX)
            hhrnet[str(ann_id)] = {"coco_joints": np.concatenate([coco, np.full((17, 1), HHRNET_CONFIDENCE)],
                                                                 axis=1).tolist()}
        annotations[ann_id] = {
            "id": ann_id, "image_id": image_id, "bbox": [float(v) for v in bbox],
            "smpl_param": {"pose": pose.tolist(), "shape": shape.tolist(), "trans": trans.tolist(), "gender": gender},
            "openpose_result": openpose.reshape(-1).tolist(),
        }

    for file_name, ann_ids in _FILES.items():
        image_ids = sorted({annotations[a]["image_id"] for a in ann_ids})
        content = {"images": [images[i] for i in image_ids], "annotations": [annotations[a] for a in ann_ids],
                   "categories": [{"id": 1, "name": "person"}]}
        with open(os.path.join(data_dir, file_name), "w") as f:
            json.dump(content, f)
    with open(os.path.join(data_dir, "3DPW_validation_crowd_hhrnet_result.json"), "w") as f:
        json.dump(hhrnet, f)
    return data_dir


class ToyBodyModel:
    """A deterministic stand-in for an SMPL layer: __call__(pose (B, 72), betas (B, 10), transl (B, 3)) ->
    vertices (B, V, 3) metres. A person-sized point cloud (1.7 m tall, y down as in a camera frame),
    deformed linearly by betas and the 69 body pose numbers, turned by the root axis-angle, translated."""

    def __init__(self, gender="neutral", n_vertices=50, seed=0):
        gen = torch.Generator().manual_seed(seed * 10 + {"neutral": 0, "male": 1, "female": 2}[gender])
        size = {"neutral": 1.0, "male": 1.05, "female": 0.95}[gender]
        unit = torch.rand(n_vertices, 3, generator=gen, dtype=torch.float64) - 0.5
        self.template = unit * torch.tensor([0.5, 1.7, 0.3], dtype=torch.float64) * size
        self.shape_dirs = torch.randn(n_vertices * 3, 10, generator=gen, dtype=torch.float64) * 0.01
        self.pose_dirs = torch.randn(n_vertices * 3, 69, generator=gen, dtype=torch.float64) * 0.02

    def __call__(self, pose, betas, transl):
        pose, betas, transl = pose.double(), betas.double(), transl.double()
        offsets = betas @ self.shape_dirs.T + pose[:, 3:] @ self.pose_dirs.T  # (B, V * 3)
        body = self.template + offsets.reshape(len(pose), -1, 3)
        return (body @ axis_angle_to_rotmat(pose[:, :3]).transpose(1, 2) + transl[:, None]).float()


def toy_regressor(n_joints, n_vertices, seed):
    """(n_joints, n_vertices) float64, non-negative rows summing to 1 like real SMPL/H36M regressors
    (each joint a weighted mean of a few vertices)."""
    gen = torch.Generator().manual_seed(seed)
    weights = torch.rand(n_joints, n_vertices, generator=gen, dtype=torch.float64)
    weights = weights * (weights > 0.8)
    return weights / weights.sum(dim=1, keepdim=True)


def toy_setup(n_vertices=50, seed=0):
    """Stand-in body models by gender, a J30 regressor (30, V) and an H36M regressor (17, V), and
    the joints_fn write_tiny_pw3d needs."""
    models = {g: ToyBodyModel(g, n_vertices, seed) for g in ("neutral", "male", "female")}
    j30 = toy_regressor(30, n_vertices, seed + 100)
    h36m = toy_regressor(17, n_vertices, seed + 200)

    def joints_fn(pose, shape, trans, gender):
        verts = models[gender](*(torch.as_tensor(np.asarray(v, np.float64))[None] for v in (pose, shape, trans)))
        return (j30 @ verts[0].double()).numpy()

    return models, j30, h36m, joints_fn
