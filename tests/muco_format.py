"""Test helper: a tiny dataset in the exact on-disk format of data/MuCo, and a mirror-symmetric body model.

`write_tiny_muco(root, body_model, joint_regressor_30, h36m_regressor)` writes root/data/MuCo:
    MuCo-3DHP.json    images 1..n_images (320 x 240 JPEGs under augmented_set/ and unaugmented_set/), each with
                      people_per_image people; annotation id = 100 * image id + k (k = 0 .. people_per_image - 1)
    smpl_param.json   a fit for every annotation except the people of `missing_fit_images`
The ground truth is derived from each person's SMPL fit with the given body model, so joints and fits agree:
keypoints_cam (mm) = the H36M-regressed fit joints for the MuCo joints Human3.6M has, the J30 joints for the other
MuCo joints SMPL30 has, the mean of J30 L_Thorax and R_Thorax for Thorax; keypoints_img = their projection with
the image's f, c; bbox = the tight box of keypoints_img. Person k of image i stands at depth 4 m + 1 m x rank,
where rank 0 (the closest) is person k = i % people_per_image. The fits of the closest people of `bad_fit_images`
are perturbed after the ground truth was computed, so their fit error is well above 25 mm.

`symmetric_body_model(seed)` is an SMPL-layout body model whose mesh, joint regressors and skinning are exactly
mirror-symmetric about the x = 0 plane (random otherwise, not human-looking), so that flipping an SMPL pose
mirrors the mesh exactly, as it (nearly) does for real SMPL.
"""
import json
import os

import cv2
import numpy as np
import torch

from common.body.body_model import NUM_JOINTS, NUM_VERTICES, SMPLLayer, joint_regressor_30
from common.body.joint_sets import H36M17, MUCO21, SMPL30, SMPL30_FACE_VERTICES, SMPL_PARENTS, flip_pairs

IMAGE_SIZE = (320, 240)  # width, height
FOCAL = (300.0, 310.0)
PRINCPT = ((IMAGE_SIZE[0] - 1) / 2, 118.0)  # x at the image centre: flipping the image mirrors the camera too


def _mirror_permutations(rng):
    """Vertex mirror permutation (an involution) with the face vertices of SMPL30 placed consistently, and the
    SMPL-24 joint left/right permutation."""
    nose, l_eye, r_eye, l_ear, r_ear = SMPL30_FACE_VERTICES
    others = np.array(sorted(set(range(NUM_VERTICES)) - set(SMPL30_FACE_VERTICES)))
    others = rng.permutation(others)
    centre = [nose] + others[:99].tolist()  # on the symmetry plane (an even count leaves an even rest)
    rest = others[99:]
    pairs = [(l_eye, r_eye), (l_ear, r_ear)] + list(zip(rest[0::2].tolist(), rest[1::2].tolist()))
    vertex_mirror = np.arange(NUM_VERTICES)
    for a, b in pairs:
        vertex_mirror[a], vertex_mirror[b] = b, a
    joint_mirror = np.arange(NUM_JOINTS)
    for left, right in flip_pairs(SMPL30[:NUM_JOINTS]):
        joint_mirror[left], joint_mirror[right] = right, left
    return vertex_mirror, joint_mirror, np.array(centre), np.array(pairs)


def _sparse_rows(rng, rows, per_row=8):
    reg = np.zeros((rows, NUM_VERTICES))
    for r in range(rows):
        idx = rng.choice(NUM_VERTICES, per_row, replace=False)
        reg[r, idx] = rng.random(per_row) + 0.1
    return reg / reg.sum(1, keepdims=True)


def symmetric_body_model(seed=0):
    """(SMPLLayer, J30 regressor (30, 6890), H36M regressor (17, 6890)). The H36M regressor is the J30 rows of the
    H36M joint names, so H36M-regressed and J30 joints coincide (ground truth and fits then agree exactly)."""
    rng = np.random.default_rng(seed)
    vertex_mirror, joint_mirror, centre, pairs = _mirror_permutations(rng)
    template = rng.standard_normal((NUM_VERTICES, 3)) * np.array([0.15, 0.5, 0.1])
    template[centre, 0] = 0.0
    template[pairs[:, 0], 0] = np.abs(template[pairs[:, 0], 0])
    template[pairs[:, 1]] = template[pairs[:, 0]] * np.array([-1.0, 1.0, 1.0])
    mirror_x = np.array([-1.0, 1.0, 1.0])

    shapedirs = 0.02 * rng.standard_normal((NUM_VERTICES, 3, 10))
    shapedirs = (shapedirs + mirror_x[None, :, None] * shapedirs[vertex_mirror]) / 2
    j_regressor = _sparse_rows(rng, NUM_JOINTS)
    j_regressor = (j_regressor + j_regressor[joint_mirror][:, vertex_mirror]) / 2
    weights = np.zeros((NUM_VERTICES, NUM_JOINTS))
    for v in range(NUM_VERTICES):
        idx = rng.choice(NUM_JOINTS, 3, replace=False)
        weights[v, idx] = rng.random(3) + 0.1
    weights /= weights.sum(1, keepdims=True)
    weights = (weights + weights[vertex_mirror][:, joint_mirror]) / 2
    extra = _sparse_rows(rng, 9)
    extra = (extra + extra[:, vertex_mirror]) / 2

    arrays = {
        "v_template": template.astype(np.float32),
        "shapedirs": shapedirs.astype(np.float32),
        "posedirs": np.zeros((NUM_VERTICES, 3, 207), np.float32),
        "J_regressor": j_regressor.astype(np.float32),
        "weights": weights.astype(np.float32),
        "kintree_table": np.array([[2**32 - 1 if p < 0 else p for p in SMPL_PARENTS], list(range(NUM_JOINTS))],
                                  dtype=np.int64),
        "f": rng.integers(0, NUM_VERTICES, size=(13776, 3)).astype(np.int64),
    }
    j30 = joint_regressor_30(arrays["J_regressor"], extra)
    h36m = j30[[SMPL30.index(name) for name in H36M17]]
    return SMPLLayer(arrays), j30, h36m


def _write_image(path, rng):
    width, height = IMAGE_SIZE
    xs, ys = np.meshgrid(np.linspace(0, 1, width), np.linspace(0, 1, height))
    bgr = np.stack([40 + 30 * ys, 60 + 120 * xs, 170 + 60 * xs * ys], axis=-1) + rng.uniform(-5, 5)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(path, bgr.clip(0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 95])


def muco_ground_truth(vertices, joint_regressor_30, h36m_regressor):
    """(21, 3) MUCO21 joints (same unit as vertices (V, 3)) as write_tiny_muco defines them."""
    j30 = np.asarray(joint_regressor_30, np.float64) @ vertices
    h36m = np.asarray(h36m_regressor, np.float64) @ vertices
    out = np.zeros((len(MUCO21), 3))
    for i, name in enumerate(MUCO21):
        if name in H36M17:
            out[i] = h36m[H36M17.index(name)]
        elif name in SMPL30:
            out[i] = j30[SMPL30.index(name)]
        else:  # Thorax
            out[i] = (j30[SMPL30.index("L_Thorax")] + j30[SMPL30.index("R_Thorax")]) / 2
    return out


def project(points_cam, focal=FOCAL, princpt=PRINCPT):
    """(N, 3) camera frame -> (N, 2) image pixels."""
    return points_cam[:, :2] / points_cam[:, 2:] * np.asarray(focal) + np.asarray(princpt)


def write_tiny_muco(root, body_model, joint_regressor_30, h36m_regressor, n_images=4, people_per_image=2, seed=0,
                    bad_fit_images=(), missing_fit_images=()):
    """Write root/data/MuCo (module docstring). Returns {'data_dir': root/data (what MuCo takes), 'closest':
    {image id: annotation id of its closest person}, 'bad_fit': [annotation ids], 'no_fit': [annotation ids]}."""
    rng = np.random.default_rng(seed)
    data_dir = os.path.join(os.fspath(root), "data")
    muco_dir = os.path.join(data_dir, "MuCo")
    images, annotations, smpl_params = [], [], {}
    closest, bad_fit, no_fit = {}, [], []
    for image_id in range(1, n_images + 1):
        subset = "augmented_set" if image_id % 2 else "unaugmented_set"
        file_name = f"{subset}/{image_id:06d}.jpg"
        _write_image(os.path.join(muco_dir, file_name), rng)
        images.append({"id": image_id, "file_name": file_name, "width": IMAGE_SIZE[0], "height": IMAGE_SIZE[1],
                       "f": list(FOCAL), "c": list(PRINCPT)})
        nearest = image_id % people_per_image
        for k in range(people_per_image):
            ann_id = 100 * image_id + k
            rank = (k - nearest) % people_per_image
            pose = rng.normal(0.0, 0.25, 72)
            pose[:3] = np.array([np.pi, 0.0, 0.0]) + rng.normal(0.0, 0.15, 3)
            shape = rng.normal(0.0, 0.5, 10)
            trans = np.array([(k - (people_per_image - 1) / 2) * 0.6, rng.uniform(-0.1, 0.1), 4.0 + rank])
            with torch.no_grad():
                verts = body_model(*(torch.tensor(v, dtype=torch.float32)[None] for v in (pose, shape, trans)))
            joints_cam = muco_ground_truth(verts[0].double().numpy(), joint_regressor_30, h36m_regressor)
            joints_img = project(joints_cam)
            (x0, y0), (x1, y1) = joints_img.min(0), joints_img.max(0)
            annotations.append({"id": ann_id, "image_id": image_id, "bbox": [x0, y0, x1 - x0, y1 - y0],
                                "keypoints_img": joints_img.tolist(), "keypoints_cam": (joints_cam * 1000).tolist()})
            if rank == 0:
                closest[image_id] = ann_id
                if image_id in bad_fit_images:
                    pose = pose.copy()
                    pose[3:] += rng.choice([-1.0, 1.0], 69) * 0.8  # every body joint turned by ~0.8 rad
                    bad_fit.append(ann_id)
            if image_id in missing_fit_images:
                no_fit.append(ann_id)
            else:
                smpl_params[str(ann_id)] = {"pose": pose.tolist(), "shape": shape.tolist(), "trans": trans.tolist()}
    with open(os.path.join(muco_dir, "MuCo-3DHP.json"), "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "person"}]}, f)
    with open(os.path.join(muco_dir, "smpl_param.json"), "w") as f:
        json.dump(smpl_params, f)
    return {"data_dir": data_dir, "closest": closest, "bad_fit": bad_fit, "no_fit": no_fit}
