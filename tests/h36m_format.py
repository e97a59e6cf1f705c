"""Test helper: a tiny Human3.6M in the exact on-disk format data/human36m.py reads.

`write_tiny_h36m(root, body_model, joint_regressor_30, h36m_regressor)` writes root/data/Human36M:
    annotations/Human36M_subject{S}_{data,camera,joint_3d,smpl_param}.json for S in `subjects` (default 1, 5, 6,
    7, 8 and the test subject 9), one action (2), one subaction (1), frames 0 .. n_frames - 1, two cameras;
    images/<file_name>: 320 x 240 JPEGs, dark, with a white dot (radius DOT_RADIUS px) at every ground-truth 2D
    joint, so the image content itself says where the joints are.
Each frame's SMPL fit is drawn in the WORLD frame (z up); the cameras (camera = R @ world + t, t in mm) look at the
person from 4-5 m. The ground truth comes from the fit: joint_3d (world, mm) = the H36M-regressed joints of the
fit's world mesh; the 2D joints and the annotation's tight bbox come from projecting them with each camera. The fits
of `bad_fit` frames are perturbed after the ground truth was computed (fit error well above 25 mm); `missing_fit`
frames have no fit. Both are sets of (subject, frame).
Image id = 1000 * subject + 10 * frame + cam; annotation id = image id + 500000.
"""
import json
import os

import cv2
import numpy as np
import torch

IMAGE_SIZE = (320, 240)  # width, height
PRINCPT_X = (IMAGE_SIZE[0] - 1) / 2  # at the image centre: flipping the image mirrors the camera too
DOT_RADIUS = 3
ACTION, SUBACTION = 2, 1
# cam_idx -> (yaw about the world z axis in degrees, camera-frame position of the person's root in metres, focal)
CAMERAS = {1: (20.0, (0.1, 0.05, 4.5), (300.0, 305.0)), 2: (-35.0, (-0.15, -0.05, 5.0), (320.0, 318.0))}
ANN_ID_OFFSET = 500000


def rot_x(angle):
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_z(angle):
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


# World (x, y, z up) -> camera (x right, y down, z forward) for a level camera looking along world +y.
WORLD_TO_LEVEL_CAMERA = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


def camera_rotation(yaw_deg, tilt_deg=8.0):
    return rot_x(np.deg2rad(tilt_deg)) @ WORLD_TO_LEVEL_CAMERA @ rot_z(np.deg2rad(yaw_deg))


def image_id(subject, frame, cam):
    return 1000 * subject + 10 * frame + cam


def file_name(subject, frame, cam):
    folder = f"s_{subject:02d}_act_{ACTION:02d}_subact_{SUBACTION:02d}_ca_{cam:02d}"
    return f"{folder}/{folder}_{frame + 1:06d}.jpg"


def project(points_cam, focal, princpt):
    return points_cam[:, :2] / points_cam[:, 2:] * np.asarray(focal) + np.asarray(princpt)


def _smpl(body_model, pose, shape, trans):
    with torch.no_grad():
        verts = body_model(*(torch.tensor(np.asarray(v), dtype=torch.float32)[None] for v in (pose, shape, trans)))
    return verts[0].double().numpy()


def _write_image(path, joints_img, rng):
    width, height = IMAGE_SIZE
    xs, ys = np.meshgrid(np.linspace(0, 1, width), np.linspace(0, 1, height))
    bgr = np.stack([20 + 20 * ys, 30 + 20 * xs, 40 + 10 * xs * ys], axis=-1) + rng.uniform(-3, 3)
    bgr = bgr.clip(0, 255).astype(np.uint8)
    for x, y in joints_img:
        cv2.circle(bgr, (int(round(x)), int(round(y))), DOT_RADIUS, (255, 255, 255), -1)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(path, bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])


def write_tiny_h36m(root, body_model, joint_regressor_30, h36m_regressor, subjects=(1, 5, 6, 7, 8, 9), n_frames=6,
                    seed=0, bad_fit=(), missing_fit=()):
    """Write root/data/Human36M (module docstring). Returns {'data_dir': root/data, 'ann_ids': {(subject, frame,
    cam): annotation id} of every written annotation, 'cameras': {subject: {cam: (R (3, 3), t_mm (3,), focal,
    princpt)}}, 'world_fits': {(subject, frame): (pose, shape, trans)} as written}."""
    rng = np.random.default_rng(seed)
    data_dir = os.path.join(os.fspath(root), "data")
    h36m_dir = os.path.join(data_dir, "Human36M")
    os.makedirs(os.path.join(h36m_dir, "annotations"), exist_ok=True)
    j30 = np.asarray(joint_regressor_30, np.float64)
    h36m = np.asarray(h36m_regressor, np.float64)
    ann_ids, cameras_out, world_fits = {}, {}, {}
    for subject in subjects:
        rotations = {cam: camera_rotation(yaw) for cam, (yaw, _, _) in CAMERAS.items()}
        base = np.array([rng.uniform(-1, 1), rng.uniform(-1, 1), 0.9])  # the person's world position
        root_orient = rotations[1].T @ rot_x(np.pi)  # facing camera 1, upright in the world
        frames = []
        for frame in range(n_frames):
            pose = rng.normal(0.0, 0.25, 72)
            pose[:3] = cv2.Rodrigues(root_orient @ cv2.Rodrigues(rng.normal(0.0, 0.1, 3))[0])[0][:, 0]
            shape = rng.normal(0.0, 0.5, 10)
            trans = base + np.array([0.02 * frame, 0.0, 0.0])
            verts = _smpl(body_model, pose, shape, trans)
            frames.append((pose, shape, trans, verts))
        root_world = j30[0] @ frames[0][3]
        cameras = {}
        for cam, (_, target, focal) in CAMERAS.items():
            t_m = np.asarray(target) - rotations[cam] @ root_world
            cameras[cam] = (rotations[cam], t_m * 1000.0, focal, (PRINCPT_X, 118.0 + cam))
        cameras_out[subject] = cameras

        images, annotations, joint_3d, smpl_param = [], [], {}, {}
        for frame, (pose, shape, trans, verts) in enumerate(frames):
            joints_world = h36m @ verts * 1000.0  # (17, 3) mm
            joint_3d[str(frame)] = joints_world.tolist()
            if (subject, frame) in bad_fit:
                pose = pose.copy()
                pose[3:] += rng.choice([-1.0, 1.0], 69) * 0.8  # every body joint turned by ~0.8 rad
            world_fits[(subject, frame)] = (pose, shape, trans)
            if (subject, frame) not in missing_fit:
                smpl_param[str(frame)] = {"pose": pose.tolist(), "shape": shape.tolist(), "trans": trans.tolist(),
                                          "fitted_3d_pose": joints_world.tolist()}
            for cam, (rotation, t_mm, focal, princpt) in cameras.items():
                joints_img = project(joints_world @ rotation.T + t_mm, focal, princpt)
                img_id = image_id(subject, frame, cam)
                name = file_name(subject, frame, cam)
                _write_image(os.path.join(h36m_dir, "images", name), joints_img, rng)
                images.append({"id": img_id, "file_name": name, "width": IMAGE_SIZE[0], "height": IMAGE_SIZE[1],
                               "subject": subject, "action_name": "Directions", "action_idx": ACTION,
                               "subaction_idx": SUBACTION, "frame_idx": frame, "cam_idx": cam})
                (x0, y0), (x1, y1) = joints_img.min(0), joints_img.max(0)
                ann_ids[(subject, frame, cam)] = img_id + ANN_ID_OFFSET
                annotations.append({"id": img_id + ANN_ID_OFFSET, "image_id": img_id,
                                    "bbox": [x0, y0, x1 - x0, y1 - y0], "keypoints_vis": [True] * 17})
        files = {
            "data": {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "person"}]},
            "camera": {str(cam): {"R": r.tolist(), "t": t.tolist(), "f": list(f), "c": list(c)}
                       for cam, (r, t, f, c) in cameras.items()},
            "joint_3d": {str(ACTION): {str(SUBACTION): joint_3d}},
            "smpl_param": {str(ACTION): {str(SUBACTION): smpl_param}},
        }
        for kind, content in files.items():
            with open(os.path.join(h36m_dir, "annotations", f"Human36M_subject{subject}_{kind}.json"), "w") as f:
                json.dump(content, f)
    return {"data_dir": data_dir, "ann_ids": ann_ids, "cameras": cameras_out, "world_fits": world_fits}
