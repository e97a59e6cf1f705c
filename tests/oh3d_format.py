"""Test helper: a tiny 3DOH50K test set in the exact on-disk format data/oh3d.py reads.

`write_tiny_oh3d(root, body_model, joint_regressor_30, h36m_regressor)` writes root/data/OH3D:
    3doh_test_annots_scale_1.json   five people, one per 320 x 240 image, keyed by image path in the three spellings
                                    the loader accepts ("images/0000.jpg", "0001.jpg", "/abs/.../0002.jpg", ...)
    images/000k.jpg
    J_regressor_h36m_correct.npy    = h36m_regressor (unless write_regressor=False)
hrnet_results are the projections of the neutral fit's J30 COCO joints with the tiny camera (confidence 0.9), except:
key "0003.jpg" has no detection (all zeros: the crop comes from its bbox, written as x1, y1, x2, y2) and key
"images/0004.jpg" has its L_Wrist at confidence 0.03 (below the 0.05 threshold).
"""
import json
import os

import cv2
import numpy as np
import torch

from common.body.joint_sets import COCO17, SMPL30

IMAGE_SIZE = (320, 240)
FOCAL = (300.0, 300.0)
PRINCPT = (160.0, 120.0)
CONFIDENCE = 0.9
LOW_CONFIDENCE = 0.03
KEYS = ("images/0000.jpg", "0001.jpg", "/home/someone/3DOH50K/testset/images/0002.jpg", "0003.jpg", "images/0004.jpg")
NO_DETECTION_KEY = "0003.jpg"
LOW_WRIST_KEY = "images/0004.jpg"


def project(points_cam):
    return points_cam[:, :2] / points_cam[:, 2:] * np.array(FOCAL) + np.array(PRINCPT)


def write_tiny_oh3d(root, body_model, joint_regressor_30, h36m_regressor, seed=0, write_regressor=True):
    """Write root/data/OH3D (module docstring). Returns {'data_dir': root/data, 'people': {key: dict(pose, shape,
    trans, joints_img (30, 2), bbox_xyxy)}}."""
    rng = np.random.default_rng(seed)
    data_dir = os.path.join(os.fspath(root), "data")
    oh3d_dir = os.path.join(data_dir, "OH3D")
    os.makedirs(os.path.join(oh3d_dir, "images"), exist_ok=True)
    annots, people = {}, {}
    for k, key in enumerate(KEYS):
        width, height = IMAGE_SIZE
        xs, ys = np.meshgrid(np.linspace(0, 1, width), np.linspace(0, 1, height))
        bgr = np.stack([60 + 40 * ys, 80 + 120 * xs, 140 + 50 * xs * ys], axis=-1) + rng.uniform(-5, 5)
        cv2.imwrite(os.path.join(oh3d_dir, "images", f"{k:04d}.jpg"), bgr.clip(0, 255).astype(np.uint8))

        pose = rng.normal(0.0, 0.2, 72)
        pose[:3] = np.array([np.pi, 0.0, 0.0]) + rng.normal(0.0, 0.1, 3)
        shape = rng.normal(0.0, 0.5, 10)
        trans = np.array([rng.uniform(-0.3, 0.3), rng.uniform(-0.1, 0.1), rng.uniform(3.0, 4.0)])
        with torch.no_grad():
            verts = body_model(*(torch.tensor(v, dtype=torch.float32)[None] for v in (pose, shape, trans)))
        joints_img = project(np.asarray(joint_regressor_30, np.float64) @ verts[0].double().numpy())
        coco = joints_img[[SMPL30.index(n) for n in COCO17]]
        hrnet = np.concatenate([coco, np.full((len(COCO17), 1), CONFIDENCE)], axis=1)
        (x0, y0), (x1, y1) = coco.min(0) - 3, coco.max(0) + 3
        if key == NO_DETECTION_KEY:
            hrnet[:] = 0.0
        elif key == LOW_WRIST_KEY:
            hrnet[COCO17.index("L_Wrist"), 2] = LOW_CONFIDENCE
        annots[key] = {"hrnet_results": hrnet.tolist(), "bbox": [x0, y0, x1, y1], "pose": pose.tolist(),
                       "shape": shape.tolist(), "trans": trans.tolist(), "scale": 1.0}
        people[key] = {"pose": pose, "shape": shape, "trans": trans, "joints_img": joints_img,
                       "bbox_xyxy": np.array([x0, y0, x1, y1])}
    with open(os.path.join(oh3d_dir, "3doh_test_annots_scale_1.json"), "w") as f:
        json.dump(annots, f)
    if write_regressor:
        np.save(os.path.join(oh3d_dir, "J_regressor_h36m_correct.npy"), np.asarray(h36m_regressor, np.float32))
    return {"data_dir": data_dir, "people": people}
