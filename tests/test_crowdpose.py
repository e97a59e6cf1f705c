import json
import os
import shutil

import cv2
import numpy as np
import pytest

from common.body.joint_sets import CROWDPOSE14, CROWDPOSE14_PELVIS, SMPL30
from data.crowdpose import OFFICIAL_FLIP_PAIRS, CrowdPose
from data.mscoco import MSCOCO
from data.multiple_datasets import MultipleDatasets
from data.preprocessing import AugConfig, flip_joints_2d
from data.registry import build_train_dataset
from tests.coco_format import CROWDPOSE_SIZE, write_tiny_crowdpose, write_tiny_mscoco
from tests.muco_format import symmetric_body_model
from tests.test_human36m import mirror_item
from tests.test_train_sample import SHAPES

CROWDPOSE_IN_SMPL30 = [SMPL30.index(n) for n in CROWDPOSE14]
GOOD_FITS, BAD_FITS = {101, 103, 201, 203, 301}, {102, 202}
NO_FLIP = AugConfig(scale=1.0, rot_deg=10.0, color_gains=np.ones(3, np.float32), do_flip=False)
FLIP = AugConfig(scale=1.0, rot_deg=-10.0, color_gains=np.ones(3, np.float32), do_flip=True)


@pytest.fixture(scope="module")
def symmetric():
    return symmetric_body_model(seed=0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, symmetric):
    return write_tiny_crowdpose(tmp_path_factory.mktemp("crowdpose"), *symmetric[:2])


def _crowdpose(data_dir, body, **kwargs):
    return CrowdPose(data_dir, *body, **kwargs)


def _keypoints(data_dir):
    with open(os.path.join(data_dir, "CrowdPose", "annotations", "crowdpose_train.json")) as f:
        return {a["id"]: np.array(a["keypoints"], np.float64).reshape(14, 3) for a in json.load(f)["annotations"]}


def test_swapped_image_sizes_are_detected_and_swapped_back(tiny, symmetric, tmp_path):
    ds = _crowdpose(tiny["data_dir"], symmetric)
    assert ds.image_size_swapped
    assert {(s.img_width, s.img_height) for s in ds.samples} == {CROWDPOSE_SIZE}
    # Person 201 stands below y = 240: with the file's (swapped) height of 240 its box would be dropped.
    assert sorted(s.ann_id for s in ds.samples) == sorted(tiny["persons"])
    assert ds.samples[[s.ann_id for s in ds.samples].index(201)].bbox[1] > 240
    ds.item(3)  # the image is read at its real size

    unswapped = write_tiny_crowdpose(tmp_path / "plain", *symmetric[:2], swap_sizes=False)
    plain = _crowdpose(unswapped["data_dir"], symmetric)
    assert not plain.image_size_swapped
    assert [(s.ann_id, s.img_width, s.img_height) for s in plain.samples] == \
           [(s.ann_id, s.img_width, s.img_height) for s in ds.samples]


def test_image_sizes_that_fit_neither_way_are_an_error(tiny, symmetric, tmp_path):
    data_dir = tmp_path / "data"
    shutil.copytree(tiny["data_dir"], data_dir)
    image = data_dir / "CrowdPose" / "images" / "100001.jpg"
    cv2.imwrite(str(image), np.zeros((100, 90, 3), np.uint8))
    with pytest.raises(ValueError, match=r"image 1 .*100001.jpg\) is 90x100, but the annotation says 320x240"):
        _crowdpose(data_dir, symmetric)


def test_without_readable_images_the_official_swap_is_assumed(tiny, symmetric, tmp_path):
    data_dir = tmp_path / "data"
    shutil.copytree(tiny["data_dir"], data_dir)
    shutil.rmtree(data_dir / "CrowdPose" / "images")
    with pytest.warns(UserWarning, match="assuming width and height are swapped"):
        ds = _crowdpose(data_dir, symmetric)
    assert ds.image_size_swapped and len(ds) == 7


def test_items_carry_the_annotated_keypoints_and_pelvis(tiny, symmetric):
    ds = _crowdpose(tiny["data_dir"], symmetric, augment=False)
    keypoints = _keypoints(tiny["data_dir"])
    for index, sample in enumerate(ds.samples):
        _, targets, meta, geometry = ds.item(index, return_geometry=True)
        points = keypoints[sample.ann_id]
        shown = points[:, 2] > 0
        crop = points[:, :2] @ geometry.img2bb[:, :2].T.astype(np.float64) + geometry.img2bb[:, 2]
        rows = np.array(CROWDPOSE_IN_SMPL30)
        np.testing.assert_allclose(targets["orig_joint_img"][rows[shown], :2], crop[shown] / 4, atol=1e-3)
        np.testing.assert_array_equal(meta["orig_joint_valid"][rows, 0], shown)
        pelvis_valid = meta["orig_joint_valid"][SMPL30.index("Pelvis"), 0]
        assert pelvis_valid == (0 if sample.ann_id == 203 else 1)  # 203's L_Hip is not annotated
        assert meta["orig_joint_valid"].sum() == shown.sum() + pelvis_valid
        assert meta["is_3D"] == 0
    inputs, targets, meta = ds[0]
    for group in (inputs, targets, meta):
        for key, value in group.items():
            assert value.shape == SHAPES[key] and value.dtype == np.float32, key


def _flipped_keypoints_in_crop(points, geometry, width):
    """Annotated keypoints mirrored in the image (x -> W - 1 - x, NO left/right swap), in the heatmap frame."""
    mirrored = np.array(points, np.float64)
    mirrored[:, 0] = width - 1 - mirrored[:, 0]
    return (mirrored[:, :2] @ geometry.img2bb[:, :2].T.astype(np.float64) + geometry.img2bb[:, 2]) / 4


def _row(name):
    return SMPL30.index(name)


def test_flip_swaps_left_and_right_by_name(tiny, symmetric):
    ds = _crowdpose(tiny["data_dir"], symmetric)
    keypoints = _keypoints(tiny["data_dir"])
    index = [s.ann_id for s in ds.samples].index(101)
    _, targets, _, geometry = ds.item(index, return_geometry=True, aug=FLIP)
    mirrored = _flipped_keypoints_in_crop(keypoints[101], geometry, CROWDPOSE_SIZE[0])
    for name in CROWDPOSE14:
        other = name.replace("L_", "R_") if name.startswith("L_") else name.replace("R_", "L_")
        np.testing.assert_allclose(targets["orig_joint_img"][_row(other), :2], mirrored[CROWDPOSE14.index(name)],
                                   atol=1e-3, err_msg=name)


def test_flipping_a_sample_twice_gives_it_back(tiny, symmetric):
    ds = _crowdpose(tiny["data_dir"], symmetric)
    for index in range(len(ds)):
        plain, flipped = ds.item(index, aug=NO_FLIP), ds.item(index, aug=FLIP)
        back = mirror_item(*flipped)
        valid = plain[2]["orig_joint_valid"][:, 0] > 0
        np.testing.assert_allclose(back["orig_joint_img"][valid], plain[1]["orig_joint_img"][valid], atol=2e-3)
        np.testing.assert_array_equal(back["orig_joint_valid"], plain[2]["orig_joint_valid"])
        if plain[2]["is_valid_fit"]:
            np.testing.assert_allclose(back["fit_joint_img"], plain[1]["fit_joint_img"], atol=2e-3)


def test_official_flip_pairs_are_reproduced_on_request(tiny, symmetric):
    # Spec 7.9: with the official pairs R_Shoulder received L_Elbow and R_Wrist received L_Hip.
    official = _crowdpose(tiny["data_dir"], symmetric, official_crowdpose_flip=True)
    fixed = _crowdpose(tiny["data_dir"], symmetric)
    keypoints = _keypoints(tiny["data_dir"])
    index = [s.ann_id for s in official.samples].index(103)
    _, targets, _, geometry = official.item(index, return_geometry=True, aug=FLIP)
    mirrored = _flipped_keypoints_in_crop(keypoints[103], geometry, CROWDPOSE_SIZE[0])
    # Independently: the official list applied to the mirrored joints as consecutive swaps.
    expected = mirrored.copy()
    for a, b in OFFICIAL_FLIP_PAIRS:
        expected[[a, b]] = expected[[b, a]]
    np.testing.assert_allclose(targets["orig_joint_img"][CROWDPOSE_IN_SMPL30, :2], expected, atol=1e-3)
    for receiver, source in (("R_Shoulder", "L_Elbow"), ("R_Wrist", "L_Hip"), ("L_Shoulder", "R_Shoulder"),
                             ("L_Knee", "R_Knee"), ("Head_top", "Head_top")):
        np.testing.assert_allclose(targets["orig_joint_img"][_row(receiver), :2], mirrored[CROWDPOSE14.index(source)],
                                   atol=1e-3, err_msg=receiver)
    # Unflipped items and the random draws are the same with and without the switch; flipping twice no longer
    # gives the sample back.
    for epoch in range(3):
        official.set_epoch(epoch)
        fixed.set_epoch(epoch)
        for i in range(len(fixed)):
            (in_a, a, _, geo_a), (in_b, b, _, geo_b) = official.item(i, True), fixed.item(i, True)
            assert (geo_a.aug.scale, geo_a.aug.rot_deg, geo_a.aug.do_flip) == \
                   (geo_b.aug.scale, geo_b.aug.rot_deg, geo_b.aug.do_flip)
            np.testing.assert_array_equal(geo_a.bbox, geo_b.bbox)
            np.testing.assert_array_equal(in_a["img"], in_b["img"])
            legs = [_row(n) for n in ("L_Knee", "R_Knee", "L_Ankle", "R_Ankle", "Head_top", "Neck")]
            np.testing.assert_allclose(a["orig_joint_img"][legs], b["orig_joint_img"][legs], atol=1e-5)
            if not geo_a.aug.do_flip:
                np.testing.assert_array_equal(a["orig_joint_img"], b["orig_joint_img"])
                np.testing.assert_array_equal(in_a["joints"], in_b["joints"])
    back = mirror_item(*official.item(index, aug=FLIP))
    assert not np.allclose(back["orig_joint_img"], official.item(index, aug=NO_FLIP)[1]["orig_joint_img"], atol=1)
    flip_twice = flip_joints_2d(flip_joints_2d(keypoints[103], 240, OFFICIAL_FLIP_PAIRS), 240, OFFICIAL_FLIP_PAIRS)
    assert not np.allclose(flip_twice, keypoints[103])


def _valid_fits(ds):
    return {s.ann_id for i, s in enumerate(ds.samples) if ds[i][2]["is_valid_fit"]}


def test_fit_filter_keeps_the_good_fits(tiny, symmetric):
    fixed = _crowdpose(tiny["data_dir"], symmetric)
    assert _valid_fits(fixed) == GOOD_FITS and fixed.num_rejected_fits == 2  # fit_err < 5 (4.99 included)
    official = _crowdpose(tiny["data_dir"], symmetric, official_crowdpose_fit_filter=True)
    assert _valid_fits(official) == BAD_FITS  # the official, inverted test kept fit_err >= 5
    assert len(official) == len(fixed)  # a rejected fit removes the fit targets, not the person
    for ds, must_agree in ((fixed, True), (official, False)):
        for index in range(len(ds)):
            _, targets, meta = ds[index]
            if meta["is_valid_fit"]:
                rows = [r for r in CROWDPOSE_IN_SMPL30 if meta["orig_joint_valid"][r, 0]]
                agree = np.allclose(targets["fit_joint_img"][rows, :2], targets["orig_joint_img"][rows, :2], atol=2e-3)
                assert agree == must_agree


def test_fit_without_fit_err_names_its_annotation(tiny, symmetric, tmp_path):
    data_dir = tmp_path / "data"
    shutil.copytree(tiny["data_dir"], data_dir)
    path = data_dir / "CrowdPose" / "annotations" / "CrowdPose_train_SMPL_NeuralAnnot.json"
    fits = json.loads(path.read_text())
    del fits["203"]["fit_err"]
    path.write_text(json.dumps(fits))
    with pytest.raises(ValueError, match=r"annotation 203: 'fit_err' must be a finite number"):
        _crowdpose(data_dir, symmetric)


@pytest.mark.parametrize("name", ["crowdpose_train.json", "CrowdPose_train_SMPL_NeuralAnnot.json"])
def test_missing_annotation_file_names_itself_and_its_source(tiny, symmetric, tmp_path, name):
    data_dir = tmp_path / "data"
    shutil.copytree(tiny["data_dir"], data_dir)
    os.remove(data_dir / "CrowdPose" / "annotations" / name)
    source = "CrowdPose" if name.startswith("crowdpose") else "NeuralAnnot"
    with pytest.raises(FileNotFoundError, match=rf"data/CrowdPose/annotations/{name}; get it from .*{source}"):
        _crowdpose(data_dir, symmetric)


def test_malformed_keypoints_name_their_annotation(tiny, symmetric, tmp_path):
    data_dir = tmp_path / "data"
    shutil.copytree(tiny["data_dir"], data_dir)
    path = data_dir / "CrowdPose" / "annotations" / "crowdpose_train.json"
    db = json.loads(path.read_text())
    db["annotations"][2]["keypoints"] += [0.0] * 9  # 17 COCO joints instead of 14
    path.write_text(json.dumps(db))
    with pytest.raises(ValueError, match=r"annotation 103: keypoints must be 14 x 3 numbers, got 51"):
        _crowdpose(data_dir, symmetric)


def test_registry_passes_the_switches_to_crowdpose_only(tiny, symmetric, tmp_path):
    layer, j30, h36m = symmetric
    root = tmp_path / "both"
    write_tiny_crowdpose(root, layer, j30)
    write_tiny_mscoco(root, layer, j30)
    kwargs = {"data_dir": root / "data", "body_model": layer, "joint_regressor_30": j30, "h36m_regressor": h36m}
    mix = build_train_dataset([], ["CrowdPose", "MSCOCO"], official_crowdpose_flip=True,
                              official_crowdpose_fit_filter=True, **kwargs)
    assert isinstance(mix, MultipleDatasets)
    crowdpose, coco = mix.dbs
    assert isinstance(coco, MSCOCO) and coco.flip_input_order is None
    assert crowdpose.official_crowdpose_flip and crowdpose.official_crowdpose_fit_filter
    assert crowdpose.joint_set == CROWDPOSE14_PELVIS
    with pytest.raises(TypeError, match="unexpected keyword argument 'official_crowdpose_flp'"):
        build_train_dataset([], ["MSCOCO"], official_crowdpose_flp=True, **kwargs)
