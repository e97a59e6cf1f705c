"""The synthetic scenes written in the real on-disk formats: 3DPW-style test and crowd splits (data.pw3d reads them),
the MuCo-3DHP-style training split (data.muco) and the same training scenes as an MSCOCO-style 2D split
(data.mscoco), plus a `synthetic` field with what the real formats lack."""
import json
import os

import cv2
import numpy as np

from common.body.joint_sets import COCO17, H36M17, MUCO21, OPENPOSE18, SMPL30
from embedded.detections import (
    COCO_IN_SMPL30,
    FAILURE_STREAM,
    OPENPOSE_IN_SMPL30,
    detector_pose,
    occlusion_failures,
    outside_image,
)
from embedded.scene import SPLITS, make_scene, occlusion_type

CROWD_SEQUENCES = ("courtyard_hug_00_synth", "courtyard_dancing_00_synth")  # data.pw3d.CROWD_SEQUENCES + suffix
TEST_SEQUENCE_LENGTH = 500  # images per 3DPW-style test sequence
CROWD_IMAGE_ID_OFFSET = 10_000_000


def muco_joints(vertices, j30, h36m):
    """(21, 3) MUCO21 joints from vertices (V, 3): the H36M-regressed joint for names Human3.6M has (so that the
    MuCo loader's fit check, which uses the H36M regressor, finds the fit exact), the J30 joint for the other SMPL30
    names, and the mean of the two collars (J30 L_Thorax, R_Thorax) for Thorax. Same unit as `vertices`."""
    joints30, joints_h36m = j30 @ vertices, h36m @ vertices
    out = np.zeros((len(MUCO21), 3))
    for i, name in enumerate(MUCO21):
        if name in H36M17:
            out[i] = joints_h36m[H36M17.index(name)]
        elif name in SMPL30:
            out[i] = joints30[SMPL30.index(name)]
        else:
            out[i] = (joints30[SMPL30.index("L_Thorax")] + joints30[SMPL30.index("R_Thorax")]) / 2
    return out


def _round(array, decimals=6):
    return np.round(np.asarray(array, np.float64), decimals).tolist()


def _synthetic_fields(person):
    return {
        "occlusion": round(person.occlusion, 6), "object_occlusion": round(person.object_occlusion, 6),
        "person_occlusion": round(person.person_occlusion, 6), "occlusion_type": occlusion_type(person),
        "pose_family": person.family,
        "joints_img": _round(person.joints_img),  # (30, 2) noise-free J30 projection
        "joints_visible": person.visible.astype(int).tolist(),  # (30,) z-buffer visibility
    }


def pw3d_annotation(rng, person, ann_id, image_id, image_size, failures=None):
    """One 3DPW-format annotation (the fields data.pw3d reads, plus `synthetic`). failures: None, or (random
    generator, scene) to add occlusion_failures to the OpenPose result."""
    openpose, noise = detector_pose(rng, person, OPENPOSE_IN_SMPL30, OPENPOSE18, image_size)
    if failures is not None:
        failure_rng, scene = failures
        openpose, noise["occlusion_failures"] = occlusion_failures(
            failure_rng, openpose, person, scene.people, scene.front_layer, OPENPOSE_IN_SMPL30, OPENPOSE18)
    extra = _synthetic_fields(person)
    extra["openpose_noise"] = noise
    return {
        "id": ann_id, "image_id": image_id, "bbox": _round(person.bbox, 3),
        "smpl_param": {"pose": person.pose.tolist(), "shape": person.betas.tolist(), "trans": person.trans.tolist(),
                       "gender": person.gender},
        "openpose_result": _round(openpose.reshape(-1), 4),
        "synthetic": extra,
    }


def muco_annotation(person, ann_id, image_id, bodies, camera):
    """One MuCo-format annotation (keypoints in MUCO21 order, camera joints in mm) and its SMPL fit."""
    joints_cam = muco_joints(person.vertices, bodies.j30[person.gender], bodies.h36m) * 1000.0
    joints_cam = np.round(joints_cam, 4)
    joints_img = camera.project(joints_cam)
    ann = {"id": ann_id, "image_id": image_id, "bbox": _round(person.bbox, 3),
           "keypoints_img": _round(joints_img, 4), "keypoints_cam": joints_cam.tolist(),
           "synthetic": _synthetic_fields(person)}
    fit = {"pose": person.pose.tolist(), "shape": person.betas.tolist(), "trans": person.trans.tolist()}
    return ann, fit


# An annotator labels a keypoint hidden behind another surface (COCO visibility 1) only when they can place it; the
# others stay unlabelled (visibility 0), as do keypoints outside the image. Half is a choice, not a COCO statistic:
# labelling none changed the embedded model's MPJPE by at most 1 mm (docs/EMBEDDED.md, "The 2D training set").
COCO_HIDDEN_LABELLED = 0.5


def coco_annotation(rng, person, ann_id, image_id, image_size, camera):
    """One MSCOCO-format annotation of `person` (17 keypoints [x, y, v] flat in COCO17 order, noise-free projected
    joints; v = 2 visible, 1 hidden but labelled, 0 unlabelled with x = y = 0) and its NeuralAnnot-format fit
    ({'smpl_param', 'cam_param'}: the same SMPL parameters as the MuCo file, with the image's camera)."""
    xy = person.joints_img[COCO_IN_SMPL30]
    visible = person.visible[COCO_IN_SMPL30]
    inside = person.in_image[COCO_IN_SMPL30] & ~outside_image(xy, image_size)
    labelled_hidden = rng.random(len(xy)) < COCO_HIDDEN_LABELLED
    v = np.where(visible & inside, 2, np.where(inside & labelled_hidden, 1, 0))
    keypoints = np.concatenate([np.where(v[:, None] > 0, xy, 0.0), v[:, None]], axis=1)
    ann = {"id": ann_id, "image_id": image_id, "bbox": _round(person.bbox, 3), "iscrowd": 0, "category_id": 1,
           "num_keypoints": int((v > 0).sum()), "keypoints": _round(keypoints.reshape(-1), 4),
           "synthetic": _synthetic_fields(person)}
    focal, princpt = _camera_fields(camera)
    fit = {"smpl_param": {"pose": person.pose.tolist(), "shape": person.betas.tolist(), "trans": person.trans.tolist()},
           "cam_param": {"focal": focal, "princpt": princpt}}
    return ann, fit


def _write_jpeg(paths, image):
    """`image` (H, W, 3) RGB uint8 as one JPEG, written to each of `paths`."""
    ok, data = cv2.imencode(".jpg", image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not ok:
        raise OSError(f"could not encode image {paths[0]}")
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.tobytes())


def write_json(path, content):
    """`content` as JSON at `path` (a pathlib.Path), written through a temporary file so that a reader never sees
    a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        json.dump(content, f)
    os.replace(tmp, path)


def _camera_fields(camera):
    return [camera.focal, camera.focal], camera.princpt.tolist()


def _scene_fields(scene, annotated):
    """The image's `synthetic` field: the object meshes (camera frame, metres) and the people not annotated in
    this file (SMPL parameters), so that the occlusion numbers can be recomputed from the files alone."""
    return {
        "occluders": [{"kind": o.kind, "vertices": _round(o.vertices), "faces": o.faces.tolist()}
                      for o in scene.occluders],
        "other_people": [{"pose": p.pose.tolist(), "shape": p.betas.tolist(), "trans": p.trans.tolist(),
                          "gender": p.gender} for k, p in enumerate(scene.people) if k not in annotated],
    }


# ----------------------------------------------------------------------------------------------------------------------
# Splits


def write_pw3d_split(out, split, indices, seed, bodies, image_size, log, detector_failures=False):
    """Images `indices` of a 3DPW-style split (files written); returns (images, annotations, hhrnet results).
    detector_failures: add occlusion_failures to the input poses, drawn from their own random stream so that the
    images, ground truth and other noise stay what they are without them."""
    spec = SPLITS[split]
    images, annotations, hhrnet = [], [], {}
    for done, index in enumerate(indices, 1):
        rng = np.random.default_rng([seed, spec.split_id, index])
        scene = make_scene(rng, bodies, split, image_size)
        failures = None
        if detector_failures:
            failures = (np.random.default_rng([seed, spec.split_id, index, FAILURE_STREAM]), scene)
        if split == "crowd":
            image_id = CROWD_IMAGE_ID_OFFSET + index + 1
            sequence = CROWD_SEQUENCES[index % 2]
        else:
            image_id = index + 1
            sequence = f"synthetic_test_{index // TEST_SEQUENCE_LENGTH:02d}"
        file_name = f"image_{index:06d}.jpg"
        _write_jpeg([out / "3DPW" / "imageFiles" / sequence / file_name], scene.image)
        focal, princpt = _camera_fields(scene.camera)
        images.append({"id": image_id, "file_name": file_name, "sequence": sequence, "width": image_size[1],
                       "height": image_size[0], "cam_param": {"focal": focal, "princpt": princpt},
                       "synthetic": _scene_fields(scene, {k for k, p in enumerate(scene.people) if p.annotated})})
        for k, person in enumerate(scene.people):
            if not person.annotated:
                continue
            ann = pw3d_annotation(rng, person, image_id * 10 + k, image_id, image_size, failures)
            annotations.append(ann)
            if split == "crowd":
                coco, noise = detector_pose(rng, person, COCO_IN_SMPL30, COCO17, image_size)
                if failures is not None:
                    coco, noise["occlusion_failures"] = occlusion_failures(
                        failures[0], coco, person, scene.people, scene.front_layer, COCO_IN_SMPL30, COCO17)
                hhrnet[str(ann["id"])] = {"coco_joints": _round(coco, 4), "synthetic_noise": noise}
        if log and done % 200 == 0:
            log(f"{split}: {done}/{len(indices)} images")
    return images, annotations, hhrnet


def write_train_split(out, indices, seed, bodies, image_size, log):
    """Images `indices` of the training split (files written), in two formats: MuCo-3DHP with one annotation per
    image (a random annotatable person, often occluded), so the loader's closest-person rule keeps it, and MSCOCO
    with the same person's 2D keypoints (coco_annotation). Returns (images, annotations, SMPL fits by annotation id)
    of the MuCo files and (annotations, NeuralAnnot fits by annotation id) of the MSCOCO files."""
    spec = SPLITS["train"]
    images, annotations, fits, coco_annotations, coco_fits = [], [], {}, [], {}
    for done, index in enumerate(indices, 1):
        rng = np.random.default_rng([seed, spec.split_id, index])
        scene = make_scene(rng, bodies, "train", image_size)
        image_id = index + 1
        file_name = f"images/{index // 1000:03d}/{index:06d}.jpg"
        _write_jpeg([out / "MuCo" / file_name, out / "MSCOCO" / "images" / "train2017" / file_name], scene.image)
        focal, princpt = _camera_fields(scene.camera)
        candidates = [k for k, p in enumerate(scene.people) if p.annotated]
        k = candidates[rng.integers(len(candidates))]
        images.append({"id": image_id, "file_name": file_name, "width": image_size[1], "height": image_size[0],
                       "f": focal, "c": princpt, "synthetic": _scene_fields(scene, {k})})
        ann, fit = muco_annotation(scene.people[k], image_id * 10 + k, image_id, bodies, scene.camera)
        annotations.append(ann)
        fits[str(ann["id"])] = fit
        coco, coco_fit = coco_annotation(rng, scene.people[k], ann["id"], image_id, image_size, scene.camera)
        coco_annotations.append(coco)
        coco_fits[str(ann["id"])] = coco_fit
        if log and done % 200 == 0:
            log(f"train: {done}/{len(indices)} images")
    return images, annotations, fits, coco_annotations, coco_fits
