import json
import os
import pickle
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from common.model.vposer import VPoserV1
from embedded.mannequin import write_mannequin
from tests.muco_format import symmetric_body_model, write_tiny_muco
from tests.pw3d_format import toy_setup, write_tiny_pw3d
from tools.check_data import check_data, main

MUCO_IMAGES = 4  # write_tiny_muco's default; MuCo keeps one person (the closest) per image
# Annotations per 3DPW file written by tests/pw3d_format.py: test 4, validation courtyard_hug 4 (of 5), PC 2.
PW3D_COUNTS = {"3dpw": 4, "3dpw-crowd": 4, "3dpw-pc": 2}


def _write_crowdpose_malformed(data_dir):
    """CrowdPose with 13-joint keypoints (39 numbers instead of 14 x 3) and a truncated NeuralAnnot file."""
    folder = data_dir / "CrowdPose"
    (folder / "annotations").mkdir(parents=True)
    (folder / "images").mkdir()
    cv2.imwrite(str(folder / "images" / "100000.jpg"), np.full((32, 32, 3), 100, np.uint8))
    db = {"images": [{"id": 100000, "file_name": "100000.jpg", "width": 32, "height": 32}],
          "annotations": [{"id": 7, "image_id": 100000, "bbox": [1, 2, 20, 25], "keypoints": [5.0] * 39}]}
    (folder / "annotations" / "crowdpose_train.json").write_text(json.dumps(db))
    fits = json.dumps({"7": {"smpl_param": {"pose": [0.0] * 72, "shape": [0.0] * 10, "trans": [0.0] * 3},
                             "cam_param": {"focal": [500, 500], "princpt": [16, 16]}}})
    (folder / "annotations" / "CrowdPose_train_SMPL_NeuralAnnot.json").write_text(fits[: len(fits) // 2])


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """data/ with MuCo complete, 3DPW without 3DPW_oc.json, CrowdPose malformed, nothing else."""
    root = tmp_path_factory.mktemp("tree")
    write_tiny_muco(root, *symmetric_body_model(seed=0), n_images=MUCO_IMAGES)
    pw3d_dir = write_tiny_pw3d(root, toy_setup()[3])
    os.remove(os.path.join(pw3d_dir, "3DPW_oc.json"))
    _write_crowdpose_malformed(root / "data")
    return root / "data"


def _by_name(items):
    return {item.get("name", item.get("path")): item for item in items}


def test_complete_partial_and_malformed_datasets(tree):
    report = check_data(tree, ["MuCo", "3DPW", "CrowdPose", "OH3D"])
    datasets = _by_name(report["datasets"])
    assert {name: d["status"] for name, d in datasets.items()} == {
        "MuCo": "complete", "3DPW": "partial", "CrowdPose": "malformed", "OH3D": "missing"}
    assert report["ok"] is False

    muco = datasets["MuCo"]
    assert {f["status"] for f in muco["files"]} == {"present"}
    (loader,) = muco["loaders"]
    assert loader["status"] == "ok" and loader["samples"] == MUCO_IMAGES
    assert f"{MUCO_IMAGES} images referenced, 0 missing" in loader["detail"]

    pw3d = datasets["3DPW"]
    files = {f["path"]: f["status"] for f in pw3d["files"]}
    assert files.pop("3DPW/3DPW_oc.json") == "missing"
    assert set(files.values()) == {"present"} and "3DPW/imageFiles/" in files
    loaders = _by_name(pw3d["loaders"])
    assert {name: l["samples"] for name, l in loaders.items() if l["status"] == "ok"} == PW3D_COUNTS
    assert loaders["3dpw-oc"]["status"] == "skipped" and "3DPW_oc.json (missing)" in loaders["3dpw-oc"]["detail"]
    missing = next(f for f in pw3d["files"] if f["status"] == "missing")
    assert "JOTR" in missing["source"]

    crowdpose = _by_name(datasets["CrowdPose"]["files"])
    keypoints = crowdpose["CrowdPose/annotations/crowdpose_train.json"]
    assert keypoints["status"] == "malformed"
    assert "annotation 7" in keypoints["detail"] and "'keypoints' has 39 numbers, expected 42" in keypoints["detail"]
    fits = crowdpose["CrowdPose/annotations/CrowdPose_train_SMPL_NeuralAnnot.json"]
    assert fits["status"] == "malformed" and "not valid JSON" in fits["detail"]
    assert crowdpose["CrowdPose/images/"]["status"] == "present"
    assert datasets["CrowdPose"]["loaders"][0]["status"] == "skipped"


def test_exit_code_and_text_report(tree, capsys):
    assert main(["--data-dir", str(tree), "--datasets", "MuCo", "3DPW", "CrowdPose"]) == 1
    text = capsys.readouterr().out
    assert "MuCo: complete" in text and "3DPW: partial" in text and "CrowdPose: malformed" in text
    assert "loader 3dpw-pc (test): ok: 2 samples" in text
    assert main(["--data-dir", str(tree), "--datasets", "MuCo"]) == 0
    assert "summary: 1 complete -> OK" in capsys.readouterr().out


@pytest.mark.slow
def test_command_line_json(tree, repo_root):
    result = subprocess.run([sys.executable, "-m", "tools.check_data", "--data-dir", str(tree), "--datasets", "3DPW",
                             "--json"], cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert [d["status"] for d in report["datasets"]] == ["partial"]


def test_missing_images_and_loader_errors_are_reported(tmp_path):
    data_dir = write_tiny_muco(tmp_path, *symmetric_body_model(seed=0), n_images=4)["data_dir"]
    os.remove(os.path.join(data_dir, "MuCo", "augmented_set", "000001.jpg"))
    (loader,) = check_data(data_dir, ["MuCo"])["datasets"][0]["loaders"]
    assert loader["status"] == "incomplete" and "1 missing" in loader["detail"] and "000001.jpg" in loader["detail"]
    assert check_data(data_dir, ["MuCo"])["datasets"][0]["status"] == "partial"
    assert check_data(data_dir, ["MuCo"], check_images=False)["datasets"][0]["status"] == "complete"

    # A file that passes the structural check but that the loader rejects: the loader's error is reported.
    path = os.path.join(data_dir, "MuCo", "MuCo-3DHP.json")
    with open(path) as f:
        db = json.load(f)
    db["annotations"][0]["image_id"] = 999
    with open(path, "w") as f:
        json.dump(db, f)
    dataset = check_data(data_dir, ["MuCo"])["datasets"][0]
    assert dataset["status"] == "error"
    assert dataset["loaders"][0]["status"] == "error" and "999" in dataset["loaders"][0]["detail"]


def test_body_models(tmp_path):
    folder = tmp_path / "data" / "body_models"
    write_mannequin(folder)
    (folder / "vposer_v1_0" / "snapshots").mkdir(parents=True)
    torch.save(VPoserV1().state_dict(), folder / "vposer_v1_0" / "snapshots" / "TR00_E096.pt")
    report = check_data(tmp_path / "data", ["body_models"])
    assert report["ok"] and report["datasets"][0]["status"] == "complete"

    np.save(folder / "J_regressor_extra.npy", np.zeros((8, 6890), np.float32))
    with open(folder / "smpl" / "SMPL_FEMALE.pkl", "wb") as f:
        pickle.dump({"v_template": np.zeros((10, 3))}, f)
    files = _by_name(check_data(tmp_path / "data", ["body_models"])["datasets"][0]["files"])
    assert files["body_models/J_regressor_extra.npy"]["status"] == "malformed"
    assert "(9, 6890)" in files["body_models/J_regressor_extra.npy"]["detail"]
    assert files["body_models/smpl/SMPL_FEMALE.pkl"]["status"] == "malformed"
    assert files["body_models/smpl/SMPL_MALE.pkl"]["status"] == "present"


def test_unknown_dataset_is_an_error(tree):
    with pytest.raises(ValueError, match="unknown dataset"):
        check_data(tree, ["Nope"])


def test_every_dataset_in_its_loaders_format_checks_out(tmp_path):
    """The structural checks accept what the loaders read: a tiny copy of every dataset, in each loader's format."""
    from tests.coco_format import write_tiny_crowdpose, write_tiny_mscoco
    from tests.h36m_format import write_tiny_h36m
    from tests.oh3d_format import write_tiny_oh3d

    body = symmetric_body_model(seed=0)
    write_tiny_h36m(tmp_path, *body, n_frames=5)
    write_tiny_muco(tmp_path, *body)
    write_tiny_mscoco(tmp_path, *body[:2])
    write_tiny_crowdpose(tmp_path, *body[:2])
    write_tiny_pw3d(tmp_path, toy_setup()[3])
    write_tiny_oh3d(tmp_path, *body)
    folder = tmp_path / "data" / "body_models"
    write_mannequin(folder)
    (folder / "vposer_v1_0" / "snapshots").mkdir(parents=True)
    torch.save(VPoserV1().state_dict(), folder / "vposer_v1_0" / "snapshots" / "TR00_E096.pt")

    report = check_data(tmp_path / "data")
    problems = {d["name"]: [f for f in d["files"] if f["status"] != "present"] +
                [loader for loader in d["loaders"] if loader["status"] != "ok"]
                for d in report["datasets"] if d["status"] != "complete"}
    assert report["ok"], problems
    for dataset in report["datasets"]:
        for loader in dataset["loaders"]:
            assert loader["samples"] > 0, loader
