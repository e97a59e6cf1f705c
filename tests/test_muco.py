import json
import os
import shutil

import numpy as np
import pytest
import torch

from common.body.joint_sets import MUCO21, SMPL30
from data.muco import MuCo, fit_error_mm
from tests.muco_format import FOCAL, PRINCPT, project, symmetric_body_model, write_tiny_muco

MUCO_IN_SMPL30 = [SMPL30.index(n) for n in MUCO21 if n in SMPL30]
PELVIS = MUCO21.index("Pelvis")
BAD_FIT_IMAGE, NO_FIT_IMAGE = 4, 3


@pytest.fixture(scope="module")
def symmetric():
    return symmetric_body_model(seed=0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, symmetric):
    return write_tiny_muco(tmp_path_factory.mktemp("muco"), *symmetric, bad_fit_images=(BAD_FIT_IMAGE,),
                           missing_fit_images=(NO_FIT_IMAGE,))


def _muco(data_dir, body, **kwargs):
    return MuCo(data_dir, *body, **kwargs)


def _load(data_dir):
    with open(os.path.join(data_dir, "MuCo", "MuCo-3DHP.json")) as f:
        return json.load(f)


def test_one_sample_per_image_the_person_closest_to_the_camera(tiny, symmetric):
    ds = _muco(tiny["data_dir"], symmetric)
    db = _load(tiny["data_dir"])
    closest = {}
    for ann in db["annotations"]:
        depth = ann["keypoints_cam"][PELVIS][2]
        if ann["image_id"] not in closest or depth < closest[ann["image_id"]][0]:
            closest[ann["image_id"]] = (depth, ann["id"])
    assert len(db["annotations"]) == 8 and len(ds) == 4
    assert [s.ann_id for s in ds.samples] == [closest[i][1] for i in sorted(closest)]
    assert [s.ann_id for s in ds.samples] == [tiny["closest"][i] for i in sorted(tiny["closest"])]


def test_ground_truth_projects_onto_the_2d_joints_before_and_after_the_crop(tiny, symmetric):
    ds = _muco(tiny["data_dir"], symmetric, augment=False)
    anns = {ann["id"]: ann for ann in _load(tiny["data_dir"])["annotations"]}
    for index, sample in enumerate(ds.samples):
        ann = anns[sample.ann_id]
        joints_cam, joints_img = np.array(ann["keypoints_cam"]), np.array(ann["keypoints_img"])
        np.testing.assert_allclose(project(joints_cam, FOCAL, PRINCPT), joints_img, atol=1e-3)
        _, targets, _, geometry = ds.item(index, return_geometry=True)
        crop = joints_img @ geometry.img2bb[:, :2].T.astype(np.float64) + geometry.img2bb[:, 2]
        for k, name in enumerate(MUCO21):
            if name in SMPL30:
                row = SMPL30.index(name)
                np.testing.assert_allclose(targets["orig_joint_img"][row, :2], crop[k] / 4, atol=1e-3)
                np.testing.assert_allclose(targets["orig_joint_cam"][row], (joints_cam[k] - joints_cam[PELVIS]) / 1000,
                                           atol=1e-6)


def test_fits_agree_with_the_annotated_joints_under_augmentation(tiny, symmetric):
    # The tiny set's ground truth is made from the fits with a mirror-symmetric body model and a principal point
    # at the image centre, so the ground-truth path (2D flip, 3D mirror, rotations) and the fit path (SMPL flip,
    # translation correction, projection) must give the same joints for every augmentation.
    ds = _muco(tiny["data_dir"], symmetric, augment=True)
    seen_flip = seen_rot = 0
    for epoch in range(4):
        ds.set_epoch(epoch)
        for index in range(len(ds)):
            _, targets, meta, geometry = ds.item(index, return_geometry=True)
            if not meta["is_valid_fit"]:
                continue
            seen_flip += geometry.aug.do_flip
            seen_rot += geometry.aug.rot_deg != 0
            rows = MUCO_IN_SMPL30
            np.testing.assert_allclose(targets["fit_joint_img"][rows], targets["orig_joint_img"][rows], atol=1e-3)
            np.testing.assert_allclose(targets["fit_joint_cam"][rows], targets["orig_joint_cam"][rows], atol=1e-5)
            np.testing.assert_array_equal(meta["fit_joint_trunc"][rows], meta["orig_joint_trunc"][rows])
    assert seen_flip and seen_rot


def test_pose_param_reproduces_the_fit_joints(tiny, symmetric):
    layer, j30, _ = symmetric
    ds = _muco(tiny["data_dir"], symmetric, augment=True)
    ds.set_epoch(3)
    for index in (0, 1):
        _, targets, _, _ = ds.item(index, return_geometry=True)
        with torch.no_grad():
            verts = layer(torch.from_numpy(targets["pose_param"])[None], torch.from_numpy(targets["shape_param"])[None])
        joints = j30 @ verts[0].double().numpy()
        np.testing.assert_allclose(targets["fit_joint_cam"], joints - joints[0], atol=2e-5)


def test_fit_validity(tiny, symmetric):
    ds = _muco(tiny["data_dir"], symmetric)
    by_image = {s.image_id: i for i, s in enumerate(ds.samples)}
    for image_id, index in by_image.items():
        error = ds.fit_error_mm(index)
        _, targets, meta = ds[index]
        if image_id == NO_FIT_IMAGE:
            assert error is None and meta["is_valid_fit"] == 0
            assert not targets["pose_param"].any() and not targets["fit_joint_img"].any()
        elif image_id == BAD_FIT_IMAGE:
            assert error > 25 and meta["is_valid_fit"] == 0
        else:
            assert error < 1e-3 and meta["is_valid_fit"] == 1
        assert meta["is_3D"] == 1


@pytest.fixture(scope="module")
def random_tiny(tmp_path_factory, body):
    """A tiny MuCo set (image 2's fit bad) on the random body model, whose H36M regressor is unrelated to its J30."""
    tiny = write_tiny_muco(tmp_path_factory.mktemp("muco_random"), *body, n_images=3, bad_fit_images=(2,), seed=1)
    return tiny, MuCo(tiny["data_dir"], *body)


def test_fit_validity_with_separate_regressors(random_tiny):
    # The check must use the H36M regressor, not the J30 one.
    tiny, ds = random_tiny
    valid = {s.ann_id: ds[i][2]["is_valid_fit"] for i, s in enumerate(ds.samples)}
    assert valid == {ann: float(ann not in tiny["bad_fit"]) for ann in tiny["closest"].values()}
    assert sum(valid.values()) == 2


def test_fit_error_is_measured_on_the_fits_mesh(random_tiny, body):
    # The check regresses the H36M joints without building the mesh; it must equal the regressor applied to the mesh.
    layer, _, h36m = body
    _, ds = random_tiny
    for index, sample in enumerate(ds.samples):
        smpl = sample.smpl
        with torch.no_grad():
            verts = layer(torch.tensor(smpl["pose"], dtype=torch.float32)[None],
                          torch.tensor(smpl["shape"], dtype=torch.float32)[None],
                          torch.tensor(smpl["trans"], dtype=torch.float32)[None])[0].double().numpy()
        expected = fit_error_mm(h36m @ verts, sample.joints_cam)
        assert ds.fit_error_mm(index) == pytest.approx(expected, abs=1e-3)


def _same_items(items_a, items_b):
    for a, b in zip(items_a, items_b):
        for group_a, group_b in zip(a, b):
            for key in group_a:
                np.testing.assert_array_equal(np.asarray(group_a[key]), np.asarray(group_b[key]), err_msg=key)


def test_items_depend_only_on_seed_epoch_and_index(tiny, symmetric):
    first = _muco(tiny["data_dir"], symmetric, seed=7)
    second = _muco(tiny["data_dir"], symmetric, seed=7)
    first.set_epoch(2)
    second.set_epoch(2)
    _same_items([first[i] for i in range(4)], [second[i] for i in reversed(range(4))][::-1])
    second.set_epoch(3)
    assert not np.array_equal(first[0][0]["img"], second[0][0]["img"])
    # The same batches with two worker processes as in the main process: the random draws are identical; the
    # SMPL-derived fields may differ by float32 rounding (workers run torch with one thread, a different
    # summation order).
    batches = [list(torch.utils.data.DataLoader(first, batch_size=2, num_workers=workers)) for workers in (0, 2)]
    for batch_a, batch_b in zip(*batches):
        for group_a, group_b in zip(batch_a, batch_b):
            for key in group_a:
                atol = 1e-4 if key.startswith("fit_joint") else 0
                torch.testing.assert_close(group_a[key], group_b[key], rtol=0, atol=atol, msg=key)


def test_fixed_boxes_without_update_bbox(tiny, symmetric):
    ds = _muco(tiny["data_dir"], symmetric, update_bbox=False)
    boxes = []
    for epoch in range(3):
        ds.set_epoch(epoch)
        boxes.append(ds.item(0, return_geometry=True)[3].bbox)
    np.testing.assert_array_equal(boxes[0], boxes[1])
    np.testing.assert_array_equal(boxes[0], boxes[2])
    changing = _muco(tiny["data_dir"], symmetric, update_bbox=True)
    assert not np.array_equal(changing.item(0, return_geometry=True)[3].bbox,
                              (changing.set_epoch(1), changing.item(0, return_geometry=True))[1][3].bbox)


def _copy(tiny, tmp_path):
    target = tmp_path / "data"
    shutil.copytree(tiny["data_dir"], target)
    return target


@pytest.mark.parametrize("name,source", [("MuCo-3DHP.json", "3DMPPE"), ("smpl_param.json", "3DCrowdNet")])
def test_missing_annotation_file(tiny, symmetric, tmp_path, name, source):
    data_dir = _copy(tiny, tmp_path)
    os.remove(data_dir / "MuCo" / name)
    with pytest.raises(FileNotFoundError, match=rf"data/MuCo/{name}.*{source}"):
        _muco(data_dir, symmetric)


@pytest.mark.parametrize("field,value,message", [
    ("keypoints_cam", [[0.0, 0.0, 4000.0]] * 20, "keypoints_cam must be 21 x 3"),
    ("keypoints_img", [[float("nan"), 1.0]] + [[1.0, 1.0]] * 20, "keypoints_img contains NaN"),
    ("bbox", [1.0, 2.0, 3.0], "bbox must be 4"),
])
def test_malformed_annotation_names_its_id(tiny, symmetric, tmp_path, field, value, message):
    data_dir = _copy(tiny, tmp_path)
    path = data_dir / "MuCo" / "MuCo-3DHP.json"
    db = json.loads(path.read_text())
    db["annotations"][1][field] = value
    path.write_text(json.dumps(db))
    with pytest.raises(ValueError, match=rf"annotation {db['annotations'][1]['id']}: {message}"):
        _muco(data_dir, symmetric)


def test_malformed_smpl_fit_names_its_id(tiny, symmetric, tmp_path):
    data_dir = _copy(tiny, tmp_path)
    path = data_dir / "MuCo" / "smpl_param.json"
    fits = json.loads(path.read_text())
    fits["101"]["pose"] = fits["101"]["pose"][:69]
    path.write_text(json.dumps(fits))
    with pytest.raises(ValueError, match=r"annotation 101: smpl_param.json 'pose' must be 72"):
        _muco(data_dir, symmetric)


def test_a_missing_image_is_an_error_naming_the_file(tiny, symmetric, tmp_path):
    data_dir = _copy(tiny, tmp_path)
    ds = _muco(data_dir, symmetric, augment=False)
    os.remove(ds.samples[1].img_path)
    with pytest.raises(FileNotFoundError, match=rf"MuCo image missing or unreadable: {ds.samples[1].img_path}"):
        ds[1]
