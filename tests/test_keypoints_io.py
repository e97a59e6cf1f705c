"""Keypoint files and the detector wrapper: poses from OpenPose (BODY_25, COCO-18) and COCO files reach the model
exactly as the 3DPW loader's inputs do; file lookup by name / index; clear errors; the offline message."""
import json
import urllib.error
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from common.joint_sets import COCO17, OPENPOSE18, SMPL30
from data.keypoints_io import (
    DetectorUnavailableError,
    KeypointFileError,
    KeypointRCNNDetector,
    load_keypoint_rcnn,
    person_from_keypoints,
    read_keypoint_file,
)
from data.pw3d import PW3D
from tests.pw3d_format import IMAGE_SIZE, toy_setup, write_tiny_pw3d

# OpenPose documents BODY_25 as COCO-18's order with MidHip inserted at index 8 (then feet): COCO-18 joint i is
# BODY_25 joint i for i < 8 and i + 1 after.
BODY25_INDEX_OF_COCO18 = [i if i < 8 else i + 1 for i in range(18)]
MIDHIP = 8


@pytest.fixture(scope="module")
def tiny_pw3d(tmp_path_factory):
    data_dir = Path(write_tiny_pw3d(tmp_path_factory.mktemp("pw3d"), toy_setup()[3]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one person of the test split has no detection
        return data_dir, PW3D(data_dir, "3dpw"), PW3D(data_dir, "3dpw-crowd", crowd_pose_source="higherhrnet")


def _annotations(path):
    db = json.loads(path.read_text())
    return db, {img["id"]: img for img in db["images"]}


def _body25(openpose18, rng):
    body = np.zeros((25, 3), np.float32)
    body[BODY25_INDEX_OF_COCO18] = openpose18
    body[MIDHIP] = [5.0, 7.0, 0.9]  # deliberately not the hips' mean: the 3DPW path never uses it
    body[19:] = np.concatenate([rng.uniform(0, 300, (6, 2)), np.full((6, 1), 0.8)], axis=1)  # feet
    return body


def _assert_same_person(person, sample):
    np.testing.assert_allclose(person.joints, sample.joints, atol=1e-5)
    np.testing.assert_array_equal(person.valid, sample.joints_valid)
    np.testing.assert_allclose(person.bbox, sample.bbox, atol=1e-4)


@pytest.mark.parametrize("layout", ["openpose18", "body25"])
def test_openpose_folder_gives_the_3dpw_loader_pose_and_box(tiny_pw3d, tmp_path, layout):
    data_dir, pw3d, _ = tiny_pw3d
    db, images = _annotations(data_dir / "3DPW_latest_test.json")
    rng = np.random.default_rng(0)
    people = {}
    for ann in db["annotations"]:
        op = np.asarray(ann["openpose_result"], np.float32).reshape(18, 3)
        flat = (_body25(op, rng) if layout == "body25" else op).reshape(-1).tolist()
        people.setdefault(images[ann["image_id"]]["file_name"], []).append({"pose_keypoints_2d": flat})
    for file_name, persons in people.items():
        (tmp_path / file_name.replace(".jpg", "_keypoints.json")).write_text(json.dumps({"people": persons}))

    keypoints = read_keypoint_file(tmp_path)
    compared = 0
    for sample in pw3d.samples:
        file_name = sample.img_path.rsplit("/", 1)[1]
        detections = keypoints.lookup(file_name)
        position = [s.ann_id for s in pw3d.samples if s.img_path == sample.img_path].index(sample.ann_id)
        det = detections[position]
        assert det.layout == layout
        person = person_from_keypoints(det.keypoints, det.layout, *IMAGE_SIZE)
        if sample.bbox_from_gt:  # no detected joint: the loader falls back to the GT box, the demo skips
            assert person is None
            continue
        _assert_same_person(person, sample)
        compared += 1
    assert compared == 3


def test_a_3dpw_annotation_file_is_a_keypoint_file(tiny_pw3d):
    data_dir, pw3d, _ = tiny_pw3d
    keypoints = read_keypoint_file(data_dir / "3DPW_latest_test.json")
    for sample in pw3d.samples:
        if sample.bbox_from_gt:
            continue
        same_image = [s.ann_id for s in pw3d.samples if s.img_path == sample.img_path]
        det = keypoints.lookup(sample.img_path.rsplit("/", 1)[1])[same_image.index(sample.ann_id)]
        _assert_same_person(person_from_keypoints(det.keypoints, det.layout, *IMAGE_SIZE), sample)


def test_coco_file_gives_the_higherhrnet_path(tiny_pw3d, tmp_path):
    data_dir, _, crowd = tiny_pw3d
    db, images = _annotations(data_dir / "3DPW_latest_validation.json")
    hhrnet = json.loads((data_dir / "3DPW_validation_crowd_hhrnet_result.json").read_text())
    annotations = [{"id": ann["id"], "image_id": ann["image_id"], "category_id": 1, "score": 0.9,
                    "keypoints": np.asarray(hhrnet[str(ann["id"])]["coco_joints"]).reshape(-1).tolist()}
                   for ann in db["annotations"] if str(ann["id"]) in hhrnet]
    path = tmp_path / "coco.json"
    path.write_text(json.dumps({"images": list(images.values()), "annotations": annotations}))
    keypoints = read_keypoint_file(path)
    compared = 0
    for sample in crowd.samples:
        if sample.pose_source != "higherhrnet":
            continue
        (det,) = keypoints.lookup(sample.img_path.rsplit("/", 1)[1])
        person = person_from_keypoints(det.keypoints, det.layout, *IMAGE_SIZE, score=det.score)
        _assert_same_person(person, sample)
        assert person.score == pytest.approx(0.9)
        compared += 1
    assert compared == 2


def test_coco_to_smpl30_adds_pelvis_and_neck():
    rng = np.random.default_rng(1)
    coco = np.concatenate([rng.uniform(0, 200, (17, 2)), rng.uniform(0.5, 1, (17, 1))], axis=1)
    person = person_from_keypoints(coco, "coco17", 640, 480)
    for name in COCO17:
        np.testing.assert_allclose(person.joints[SMPL30.index(name)], coco[COCO17.index(name)], rtol=1e-6)
    for added, (a, b) in (("Pelvis", ("L_Hip", "R_Hip")), ("Neck", ("L_Shoulder", "R_Shoulder"))):
        ja, jb = coco[COCO17.index(a)], coco[COCO17.index(b)]
        np.testing.assert_allclose(person.joints[SMPL30.index(added)], [*(ja[:2] + jb[:2]) / 2, ja[2] * jb[2]],
                                   rtol=1e-6)
    assert person.joints[SMPL30.index("Head_top")].tolist() == [0, 0, 0]
    assert person.valid.sum() == 19


def test_confidence_threshold_and_unusable_people():
    rng = np.random.default_rng(2)
    op = np.concatenate([rng.uniform(50, 250, (18, 2)), np.full((18, 1), 0.9)], axis=1)
    op[OPENPOSE18.index("L_Wrist"), 2] = 0.05  # at the threshold: invalid (confidence must exceed 0.05)
    op[OPENPOSE18.index("R_Wrist"), 2] = 0.051
    person = person_from_keypoints(op, "openpose18", 300, 300)
    assert person.valid[SMPL30.index("L_Wrist")] == 0 and person.valid[SMPL30.index("R_Wrist")] == 1
    op[:, 2] = 0.0
    assert person_from_keypoints(op, "openpose18", 300, 300) is None  # nothing valid
    op[0, 2] = 1.0
    assert person_from_keypoints(op, "openpose18", 300, 300) is None  # one joint: no box


def test_lookup_by_name_stem_and_frame_index(tmp_path):
    kp = np.zeros(51).tolist()
    coco = {"images": [{"id": 7, "file_name": "dir/a.jpg"}, {"id": 8, "file_name": "000003.png"},
                       {"id": 9, "file_name": "empty.jpg"}],
            "annotations": [{"image_id": 7, "keypoints": kp}, {"image_id": 7, "keypoints": kp, "category_id": 2},
                            {"image_id": 7, "keypoints": kp, "iscrowd": 1}, {"image_id": 8, "keypoints": kp},
                            {"image_id": 8, "keypoints": kp}]}
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    table = read_keypoint_file(tmp_path / "coco.json")
    assert len(table.lookup("a.jpg")) == 1  # the other category and the crowd region are skipped
    assert len(table.lookup("a.png")) == 1  # by name without extension
    assert table.lookup("empty.jpg") == []  # listed image, nobody in it
    assert table.lookup("b.jpg") is None  # not in the file
    assert len(table.lookup("000003", video_index=3)) == 2
    assert table.lookup("000004", video_index=4) is None

    listing = [{"image_id": 12, "keypoints": kp}, {"file_name": "frame_x.jpg", "keypoints": kp}]
    (tmp_path / "list.json").write_text(json.dumps(listing))
    table = read_keypoint_file(tmp_path / "list.json")
    assert len(table.lookup("000012.jpg")) == 1  # numbered image <-> image_id
    assert len(table.lookup("000012", video_index=12)) == 1  # video frame <-> image_id
    assert len(table.lookup("frame_x.jpg")) == 1
    assert table.lookup("frame_12.jpg") is None  # only bare-number names match ids for images

    # OpenPose names video frames <video>_<12-digit index>_keypoints.json.
    folder = tmp_path / "openpose"
    folder.mkdir()
    (folder / "clip_000000000002_keypoints.json").write_text(json.dumps({"people": [
        {"pose_keypoints_2d": np.ones(54).tolist()}]}))
    table = read_keypoint_file(folder)
    assert len(table.lookup("000002", video_index=2)) == 1 and table.lookup("000001", video_index=1) is None


def test_bad_keypoint_files_say_what_is_expected(tmp_path):
    cases = {
        "short.json": {"annotations": [{"image_id": 1, "keypoints": [1.0] * 50}]},
        "openpose.json": {"people": [{"pose_keypoints_2d": [1.0] * 60}]},
        "other.json": {"something": 1},
    }
    for name, content in cases.items():
        (tmp_path / name).write_text(json.dumps(content))
        with pytest.raises(KeypointFileError, match=name) as err:
            read_keypoint_file(tmp_path / name)
        assert "expected" in str(err.value)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(KeypointFileError, match="broken.json"):
        read_keypoint_file(tmp_path / "broken.json")
    with pytest.raises(KeypointFileError, match="not found: .*missing.json.*COCO"):
        read_keypoint_file(tmp_path / "missing.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(KeypointFileError, match="_keypoints.json"):
        read_keypoint_file(tmp_path / "empty")


def test_offline_detector_explains_what_to_do(monkeypatch):
    import torchvision.models.detection

    def no_network(**kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.models.detection, "keypointrcnn_resnet50_fpn", no_network)
    with pytest.raises(DetectorUnavailableError) as err:
        load_keypoint_rcnn("cpu")
    message = str(err.value)
    for needle in ("--keypoints", "OpenPose", "COCO", "TORCH_HOME", "keypointrcnn_resnet50_fpn_coco",
                   "name resolution"):
        assert needle in message


def test_detector_keeps_confident_people_with_sigmoid_confidences():
    class FakeRCNN(torch.nn.Module):
        def forward(self, images):
            assert images[0].shape == (3, 20, 30) and float(images[0].max()) <= 1.0
            keypoints = torch.arange(4 * 17 * 3, dtype=torch.float32).reshape(4, 17, 3)
            return [{"labels": torch.tensor([1, 1, 2, 1]), "scores": torch.tensor([0.8, 0.95, 0.99, 0.3]),
                     "keypoints": keypoints, "keypoints_scores": torch.full((4, 17), -1.0)}]

    detector = KeypointRCNNDetector("cpu", score_threshold=0.5, model=FakeRCNN())
    detections = detector(np.full((20, 30, 3), 255, np.uint8))
    assert [d.score for d in detections] == pytest.approx([0.95, 0.8])  # label 2 and the 0.3 person dropped
    assert all(d.layout == "coco17" and d.keypoints.shape == (17, 3) for d in detections)
    np.testing.assert_allclose(detections[0].keypoints[:, :2], np.arange(51, 102).reshape(17, 3)[:, :2])
    np.testing.assert_allclose(detections[0].keypoints[:, 2], 1 / (1 + np.e), rtol=1e-6)
