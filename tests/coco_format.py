"""Test helper: tiny MSCOCO and CrowdPose sets in the exact on-disk formats data/mscoco.py and data/crowdpose.py read.

Both are COCO-format keypoint files plus a NeuralAnnot fit file, written from SMPL fits so that joints and fits
agree: each person's keypoints are the projections, with the person's NeuralAnnot camera, of the fit's J30 joints of
the same names; visibility 2, except the joints listed in the person's `hidden` (written as 0, 0, 0). The principal
point's x is the image centre, so flipping the image mirrors the camera too.

write_tiny_mscoco(root, body_model, j30) -> root/data/MSCOCO (images/train2017/*.jpg 320 x 240):
    image 1: ann 11, 12 (side by side, overlapping boxes), 13 (iscrowd 1: no sample), 14 (no keypoint: no sample)
    image 2: ann 21 (L_Wrist and R_Ankle hidden), 22 (no NeuralAnnot fit), 23 (zero-width box: no sample)
    image 3: ann 31
write_tiny_crowdpose(root, body_model, j30, swap_sizes=True) -> root/data/CrowdPose (images/*.jpg, 240 x 320
portrait; with swap_sizes the file says width 320, height 240, as the official train file does):
    image 1: ann 101 (fit_err 1.2), 102 (fit_err 7.5, fit perturbed after the keypoints were made), 103 (fit_err 2.0)
    image 2: ann 201 (fit_err 0.8, standing low in the image: its box lies below y = 240), 202 (fit_err 9.0,
             perturbed), 203 (L_Hip hidden, fit_err 3.0)
    image 3: ann 301 (fit_err 4.99)
Returns {'data_dir': root/data, 'persons': {ann id: dict(image_id, pose, shape, trans, focal, princpt, hidden,
joints_img (J, 2) in the dataset's keypoint order)}}.
"""
import json
import os

import cv2
import numpy as np
import torch

from common.body.joint_sets import COCO17, CROWDPOSE14, SMPL30

FOCAL = (300.0, 290.0)


def _smpl_joints(body_model, j30, pose, shape, trans):
    with torch.no_grad():
        verts = body_model(*(torch.tensor(np.asarray(v), dtype=torch.float32)[None] for v in (pose, shape, trans)))
    return np.asarray(j30, np.float64) @ verts[0].double().numpy()


def _write_image(path, size, rng):
    width, height = size
    xs, ys = np.meshgrid(np.linspace(0, 1, width), np.linspace(0, 1, height))
    bgr = np.stack([50 + 40 * ys, 90 + 100 * xs, 150 + 60 * xs * ys], axis=-1) + rng.uniform(-5, 5)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(path, bgr.clip(0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 95])


def _person(rng, body_model, j30, keypoint_set, position, focal, princpt, hidden=()):
    pose = rng.normal(0.0, 0.25, 72)
    pose[:3] = np.array([np.pi, 0.0, 0.0]) + rng.normal(0.0, 0.15, 3)
    shape = rng.normal(0.0, 0.5, 10)
    trans = np.asarray(position, np.float64)
    joints = _smpl_joints(body_model, j30, pose, shape, trans)[[SMPL30.index(n) for n in keypoint_set]]
    joints_img = joints[:, :2] / joints[:, 2:] * np.asarray(focal) + np.asarray(princpt)
    keypoints = np.concatenate([joints_img, np.full((len(keypoint_set), 1), 2.0)], axis=1)
    for name in hidden:
        keypoints[keypoint_set.index(name)] = 0.0
    shown = keypoints[keypoints[:, 2] > 0, :2]
    (x0, y0), (x1, y1) = shown.min(0), shown.max(0)
    return {"pose": pose, "shape": shape, "trans": trans, "focal": tuple(focal), "princpt": tuple(princpt),
            "hidden": tuple(hidden), "joints_img": joints_img, "keypoints": keypoints,
            "bbox": [x0 - 2, y0 - 2, x1 - x0 + 4, y1 - y0 + 4]}


def _write(dataset_dir, annotation_file, fits_file, image_dir, images, annotations, fits):
    os.makedirs(os.path.join(dataset_dir, "annotations"), exist_ok=True)
    with open(os.path.join(dataset_dir, annotation_file), "w") as f:
        json.dump({"images": images, "annotations": annotations,
                   "categories": [{"id": 1, "name": "person", "keypoints": []}]}, f)
    with open(os.path.join(dataset_dir, fits_file), "w") as f:
        json.dump(fits, f)


def _annotation(ann_id, image_id, person, iscrowd=0):
    keypoints = person["keypoints"]
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": iscrowd,
            "keypoints": keypoints.reshape(-1).tolist(), "num_keypoints": int((keypoints[:, 2] > 0).sum()),
            "bbox": [float(v) for v in person["bbox"]], "area": float(person["bbox"][2] * person["bbox"][3])}


def _fit_entry(person, perturb_rng=None, fit_err=None):
    pose = person["pose"].copy()
    if perturb_rng is not None:
        pose[3:] += perturb_rng.choice([-1.0, 1.0], 69) * 0.8  # every body joint turned by ~0.8 rad
    entry = {"smpl_param": {"pose": pose.tolist(), "shape": person["shape"].tolist(),
                            "trans": person["trans"].tolist()},
             "cam_param": {"focal": list(person["focal"]), "princpt": list(person["princpt"])}}
    if fit_err is not None:
        entry["fit_err"] = fit_err
    return entry


def write_tiny_mscoco(root, body_model, joint_regressor_30, seed=0):
    """Write root/data/MSCOCO (module docstring)."""
    rng = np.random.default_rng(seed)
    width, height = 320, 240
    princpt = ((width - 1) / 2, 121.0)
    data_dir = os.path.join(os.fspath(root), "data")
    coco_dir = os.path.join(data_dir, "MSCOCO")
    layout = {  # ann id -> (image id, position (m), hidden joints, kind)
        11: (1, (-0.1, 0.0, 4.5), (), "ok"), 12: (1, (0.1, 0.05, 5.0), (), "ok"),
        13: (1, (0.0, 0.0, 6.0), (), "crowd"), 14: (1, (0.5, 0.0, 6.0), (), "no_keypoints"),
        21: (2, (-0.3, 0.0, 4.2), ("L_Wrist", "R_Ankle"), "ok"), 22: (2, (0.4, 0.0, 5.0), (), "no_fit"),
        23: (2, (1.2, 0.0, 6.0), (), "zero_width"),
        31: (3, (0.0, 0.1, 4.8), (), "ok"),
    }
    images = []
    for image_id in (1, 2, 3):
        name = f"{image_id:012d}.jpg"
        _write_image(os.path.join(coco_dir, "images", "train2017", name), (width, height), rng)
        images.append({"id": image_id, "file_name": name, "width": width, "height": height})
    annotations, fits, persons = [], {}, {}
    for ann_id, (image_id, position, hidden, kind) in layout.items():
        person = _person(rng, body_model, joint_regressor_30, COCO17, position, FOCAL, princpt, hidden)
        if kind == "no_keypoints":
            person["keypoints"][:] = 0.0
        if kind == "zero_width":
            person["bbox"][2] = 0.0
        annotations.append(_annotation(ann_id, image_id, person, iscrowd=int(kind == "crowd")))
        if kind != "no_fit":
            fits[str(ann_id)] = _fit_entry(person)
        persons[ann_id] = dict(person, image_id=image_id, kind=kind)
    _write(coco_dir, "annotations/person_keypoints_train2017.json",
           "annotations/MSCOCO_train_SMPL_NeuralAnnot.json", "images/train2017", images, annotations, fits)
    return {"data_dir": data_dir, "persons": persons}


CROWDPOSE_SIZE = (240, 320)  # real width, height (portrait)


def write_tiny_crowdpose(root, body_model, joint_regressor_30, swap_sizes=True, seed=0):
    """Write root/data/CrowdPose (module docstring)."""
    rng = np.random.default_rng(seed)
    width, height = CROWDPOSE_SIZE
    princpt = ((width - 1) / 2, 150.0)
    data_dir = os.path.join(os.fspath(root), "data")
    crowd_dir = os.path.join(data_dir, "CrowdPose")
    layout = {  # ann id -> (image id, position (m), hidden joints, fit_err, perturbed fit)
        101: (1, (-0.3, 0.0, 4.5), (), 1.2, False), 102: (1, (0.3, 0.05, 5.0), (), 7.5, True),
        103: (1, (0.0, -0.1, 6.0), (), 2.0, False),
        201: (2, (-0.2, 2.1, 5.5), (), 0.8, False), 202: (2, (0.35, 0.0, 4.8), (), 9.0, True),
        203: (2, (-0.1, -0.2, 5.2), ("L_Hip",), 3.0, False),
        301: (3, (0.0, 0.0, 4.6), (), 4.99, False),
    }
    images = []
    for image_id in (1, 2, 3):
        name = f"{100000 + image_id}.jpg"
        _write_image(os.path.join(crowd_dir, "images", name), (width, height), rng)
        size = {"width": height, "height": width} if swap_sizes else {"width": width, "height": height}
        images.append({"id": image_id, "file_name": name, **size, "crowdIndex": 0.5})
    annotations, fits, persons = [], {}, {}
    for ann_id, (image_id, position, hidden, fit_err, perturbed) in layout.items():
        person = _person(rng, body_model, joint_regressor_30, CROWDPOSE14, position, FOCAL, princpt, hidden)
        annotations.append(_annotation(ann_id, image_id, person))
        fits[str(ann_id)] = _fit_entry(person, rng if perturbed else None, fit_err)
        persons[ann_id] = dict(person, image_id=image_id, fit_err=fit_err, perturbed=perturbed)
    _write(crowd_dir, "annotations/crowdpose_train.json", "annotations/CrowdPose_train_SMPL_NeuralAnnot.json",
           "images", images, annotations, fits)
    return {"data_dir": data_dir, "persons": persons}
