import json
import os
import shutil

import numpy as np
import pytest
import torch

from common.body.joint_sets import COCO17, SMPL30
from data.mscoco import MSCOCO
from data.preprocessing import AugConfig
from tests.coco_format import write_tiny_mscoco
from tests.muco_format import symmetric_body_model
from tests.test_human36m import mirror_item
from tests.test_train_sample import SHAPES

COCO_IN_SMPL30 = [SMPL30.index(n) for n in COCO17]
PELVIS = SMPL30.index("Pelvis")


@pytest.fixture(scope="module")
def symmetric():
    return symmetric_body_model(seed=0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, symmetric):
    return write_tiny_mscoco(tmp_path_factory.mktemp("coco"), *symmetric[:2])


def _coco(tiny, body, **kwargs):
    return MSCOCO(tiny["data_dir"], *body, **kwargs)


def _json(tiny, name):
    with open(os.path.join(tiny["data_dir"], "MSCOCO", "annotations", name)) as f:
        return json.load(f)


def _keypoints(tiny):
    annotations = _json(tiny, "person_keypoints_train2017.json")["annotations"]
    return {a["id"]: np.array(a["keypoints"], np.float64).reshape(17, 3) for a in annotations}


def test_samples_are_the_non_crowd_people_with_keypoints_and_a_usable_box(tiny, symmetric):
    ds = _coco(tiny, symmetric)
    assert [s.ann_id for s in ds.samples] == [11, 12, 21, 22, 31]  # not 13 (crowd), 14 (no keypoint), 23 (no box)
    assert ds.num_unusable_boxes == 1
    assert ds.samples[0].img_path.endswith(os.path.join("MSCOCO", "images", "train2017", "000000000001.jpg"))


def test_fits_project_onto_the_annotated_keypoints(tiny, symmetric):
    # Independently of the loader: each NeuralAnnot fit, run through the body model and projected with its camera,
    # lands on the person's annotated keypoints.
    layer, j30, _ = symmetric
    keypoints = _keypoints(tiny)
    for ann_id, entry in _json(tiny, "MSCOCO_train_SMPL_NeuralAnnot.json").items():
        smpl, cam = entry["smpl_param"], entry["cam_param"]
        with torch.no_grad():
            verts = layer(*(torch.tensor(smpl[k], dtype=torch.float32)[None] for k in ("pose", "shape", "trans")))
        joints = (j30 @ verts[0].double().numpy())[COCO_IN_SMPL30]
        projected = joints[:, :2] / joints[:, 2:] * cam["focal"] + cam["princpt"]
        shown = keypoints[int(ann_id)][:, 2] > 0
        np.testing.assert_allclose(projected[shown], keypoints[int(ann_id)][shown, :2], atol=1e-3)


def test_items_carry_the_annotated_keypoints(tiny, symmetric):
    ds = _coco(tiny, symmetric, augment=False)
    keypoints = _keypoints(tiny)
    for index, sample in enumerate(ds.samples):
        _, targets, meta, geometry = ds.item(index, return_geometry=True)
        points = keypoints[sample.ann_id]
        shown = (points[:, 2] > 0).astype(np.float32)
        crop = points[:, :2] @ geometry.img2bb[:, :2].T.astype(np.float64) + geometry.img2bb[:, 2]
        rows = np.array(COCO_IN_SMPL30)[shown > 0]
        np.testing.assert_allclose(targets["orig_joint_img"][rows, :2], crop[shown > 0] / 4, atol=1e-3)
        np.testing.assert_array_equal(targets["orig_joint_img"][COCO_IN_SMPL30, 2], shown)  # z = visibility
        np.testing.assert_array_equal(meta["orig_joint_valid"][COCO_IN_SMPL30, 0], shown)
        hips = [COCO17.index("L_Hip"), COCO17.index("R_Hip")]
        np.testing.assert_allclose(targets["orig_joint_img"][PELVIS, :2], crop[hips].mean(0) / 4, atol=1e-3)
        assert meta["orig_joint_valid"][PELVIS, 0] == shown[hips].prod()
        assert meta["orig_joint_valid"].sum() == shown.sum() + shown[hips].prod()  # nothing else (no Neck, Head_top)
        assert not targets["orig_joint_cam"].any() and meta["is_3D"] == 0
        if sample.ann_id == 21:
            assert meta["orig_joint_valid"][SMPL30.index("L_Wrist"), 0] == 0
            assert meta["orig_joint_valid"][SMPL30.index("R_Ankle"), 0] == 0


def test_fits_agree_with_the_keypoints_and_give_metric_depth(tiny, symmetric):
    ds = _coco(tiny, symmetric, augment=True)
    seen_flip = seen_rot = 0
    for epoch in range(3):
        ds.set_epoch(epoch)
        for index, sample in enumerate(ds.samples):
            _, targets, meta, geometry = ds.item(index, return_geometry=True)
            if sample.ann_id == 22:
                assert meta["is_valid_fit"] == 0 and not targets["pose_param"].any()
                assert not targets["fit_joint_img"].any() and not meta["fit_joint_trunc"].any()
                continue
            assert meta["is_valid_fit"] == 1  # MSCOCO fits are always used
            seen_flip += geometry.aug.do_flip
            seen_rot += geometry.aug.rot_deg != 0
            rows = [r for r in COCO_IN_SMPL30 if meta["orig_joint_valid"][r, 0]]
            np.testing.assert_allclose(targets["fit_joint_img"][rows, :2], targets["orig_joint_img"][rows, :2],
                                       atol=2e-3)
            # Depth bins over bbox_3d_size = 2 m of root-relative depth in metres (the rotation is about z).
            depth_bins = (targets["fit_joint_cam"][:, 2] / 1.0 + 1) / 2 * 64
            np.testing.assert_allclose(targets["fit_joint_img"][:, 2], depth_bins, atol=1e-4)
    assert seen_flip and seen_rot


def test_flipping_a_sample_twice_gives_it_back(tiny, symmetric):
    ds = _coco(tiny, symmetric, augment=True)
    gains = np.ones(3, np.float32)
    for index in range(len(ds)):
        plain = ds.item(index, aug=AugConfig(scale=1.0, rot_deg=15.0, color_gains=gains, do_flip=False))
        flipped = ds.item(index, aug=AugConfig(scale=1.0, rot_deg=-15.0, color_gains=gains, do_flip=True))
        back = mirror_item(*flipped)
        valid = plain[2]["orig_joint_valid"][:, 0] > 0
        np.testing.assert_allclose(back["orig_joint_img"][valid], plain[1]["orig_joint_img"][valid], atol=2e-3)
        if plain[2]["is_valid_fit"]:
            np.testing.assert_allclose(back["fit_joint_img"], plain[1]["fit_joint_img"], atol=2e-3)
            np.testing.assert_allclose(back["fit_joint_cam"], plain[1]["fit_joint_cam"], atol=2e-5)
        np.testing.assert_array_equal(back["orig_joint_valid"], plain[2]["orig_joint_valid"])
        np.testing.assert_array_equal(back["orig_joint_trunc"], plain[2]["orig_joint_trunc"])


def test_other_people_of_the_image_are_the_posefix_near_joints(tiny, symmetric):
    ds = _coco(tiny, symmetric, augment=False)
    anns = {a["id"]: a for a in _json(tiny, "person_keypoints_train2017.json")["annotations"]}
    index = [s.ann_id for s in ds.samples].index(11)
    _, _, _, geometry = ds.item(index, return_geometry=True)
    (near,) = geometry.near_joints  # person 12 stands next to 11; 13 (crowd) and 14 (no keypoint) are not people
    other = np.array(anns[12]["keypoints"]).reshape(17, 3)
    crop = other[:, :2] @ geometry.img2bb[:, :2].T.astype(np.float64) + geometry.img2bb[:, 2]
    np.testing.assert_allclose(near[:17, :2], crop, atol=1e-3)


def test_item_fields(tiny, symmetric):
    inputs, targets, meta = _coco(tiny, symmetric)[0]
    for group in (inputs, targets, meta):
        for key, value in group.items():
            assert value.shape == SHAPES[key] and value.dtype == np.float32, key


def _copy(tiny, tmp_path):
    target = tmp_path / "data"
    shutil.copytree(tiny["data_dir"], target)
    return target


@pytest.mark.parametrize("name,source", [("person_keypoints_train2017.json", "cocodataset.org"),
                                         ("MSCOCO_train_SMPL_NeuralAnnot.json", "NeuralAnnot")])
def test_missing_annotation_file_names_itself_and_its_source(tiny, symmetric, tmp_path, name, source):
    data_dir = _copy(tiny, tmp_path)
    os.remove(data_dir / "MSCOCO" / "annotations" / name)
    with pytest.raises(FileNotFoundError, match=rf"data/MSCOCO/annotations/{name}; get it from .*{source}"):
        MSCOCO(data_dir, *symmetric)


def _edit(path, change):
    content = json.loads(path.read_text())
    change(content)
    path.write_text(json.dumps(content))


@pytest.mark.parametrize("field,value,message", [
    ("keypoints", [1.0] * 48, "keypoints must be 17 x 3 numbers, got 48"),
    ("keypoints", [float("nan")] + [1.0] * 50, "keypoints contains NaN"),
    ("bbox", [1.0, 2.0], "bbox must be 4 numbers"),
])
def test_malformed_annotation_names_its_id(tiny, symmetric, tmp_path, field, value, message):
    data_dir = _copy(tiny, tmp_path)
    _edit(data_dir / "MSCOCO" / "annotations" / "person_keypoints_train2017.json",
          lambda db: db["annotations"][4].update({field: value}))
    with pytest.raises(ValueError, match=rf"annotation 21: {message}"):
        MSCOCO(data_dir, *symmetric)


def test_malformed_fit_names_its_id(tiny, symmetric, tmp_path):
    data_dir = _copy(tiny, tmp_path)
    _edit(data_dir / "MSCOCO" / "annotations" / "MSCOCO_train_SMPL_NeuralAnnot.json",
          lambda fits: fits["12"]["cam_param"].update(focal=[300.0]))
    with pytest.raises(ValueError, match=r"annotation 12: MSCOCO_train_SMPL_NeuralAnnot.json cam_param 'focal' must"):
        MSCOCO(data_dir, *symmetric)


def test_a_missing_image_is_an_error_naming_the_file(tiny, symmetric, tmp_path):
    data_dir = _copy(tiny, tmp_path)
    ds = MSCOCO(data_dir, *symmetric, augment=False, update_bbox=False)
    os.remove(ds.samples[2].img_path)
    # Training skips and counts such samples (data.skip_unreadable); the dataset itself never substitutes one.
    with pytest.raises(FileNotFoundError, match=rf"MSCOCO image missing or unreadable: {ds.samples[2].img_path}.*"
                                                r"train2017"):
        ds[2]
