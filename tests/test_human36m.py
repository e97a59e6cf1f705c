import json
import os
import shutil

import cv2
import numpy as np
import pytest
import torch

from common.body.joint_sets import H36M17, SMPL30, SMPL30_FLIP_PAIRS
from data.human36m import FILE_KINDS, Human36M, fit_error_mm, fit_to_camera
from data.multiple_datasets import MultipleDatasets
from data.preprocessing import AugConfig, flip_smpl_pose
from data.registry import build_train_dataset
from data.train_sample import FIT_ERROR_THRESHOLD_MM
from tests.coco_format import write_tiny_crowdpose, write_tiny_mscoco
from tests.h36m_format import write_tiny_h36m
from tests.muco_format import symmetric_body_model, write_tiny_muco
from tests.test_train_sample import SHAPES

H36M_IN_SMPL30 = [SMPL30.index(n) for n in H36M17]
BAD_FIT, NO_FIT = (1, 5), (5, 0)  # (subject, frame)


@pytest.fixture(scope="module")
def symmetric():
    return symmetric_body_model(seed=0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, symmetric):
    return write_tiny_h36m(tmp_path_factory.mktemp("h36m"), *symmetric, bad_fit={BAD_FIT}, missing_fit={NO_FIT})


def _h36m(tiny, body, **kwargs):
    return Human36M(tiny["data_dir"], *body, **kwargs)


def _key(tiny, ann_id):
    return next(key for key, value in tiny["ann_ids"].items() if value == ann_id)


def _smpl(layer, pose, shape, trans):
    with torch.no_grad():
        verts = layer(*(torch.tensor(np.asarray(v), dtype=torch.float32)[None] for v in (pose, shape, trans)))
    return verts[0].double().numpy()


def test_samples_follow_the_training_protocol(tiny, symmetric):
    ds = _h36m(tiny, symmetric)
    expected = {ann for (subject, frame, _), ann in tiny["ann_ids"].items()
                if subject in (1, 5, 6, 7, 8) and frame % 5 == 0}
    assert len(expected) == 5 * 2 * 2  # 5 subjects, frames 0 and 5, 2 cameras; subject 9 is not for training
    assert {s.ann_id for s in ds.samples} == expected
    assert len(ds) == len(expected)


def test_fit_to_camera_gives_the_rigidly_moved_mesh(tiny, symmetric):
    layer = symmetric[0]
    j_regressor = np.asarray(layer.arrays["J_regressor"], np.float64)
    for (subject, _), (pose, shape, trans) in list(tiny["world_fits"].items())[:4]:
        mesh_world = _smpl(layer, pose, shape, trans)
        rest_root = j_regressor[0] @ _smpl(layer, np.zeros(72), shape, np.zeros(3))
        for rotation, t_mm, _, _ in tiny["cameras"][subject].values():
            pose_cam, trans_cam = fit_to_camera(pose, trans, rotation, t_mm / 1000, rest_root)
            expected = mesh_world @ rotation.T + t_mm / 1000
            np.testing.assert_allclose(_smpl(layer, pose_cam, shape, trans_cam), expected, atol=2e-5)
            # Turning the root and the translation about the SMPL origin instead would misplace the mesh.
            naive = _smpl(layer, pose_cam, shape, rotation @ trans + t_mm / 1000)
            assert np.abs(naive - expected).max() > 0.01


def test_camera_frame_fit_of_each_sample(tiny, symmetric):
    layer = symmetric[0]
    ds = _h36m(tiny, symmetric)
    for index, sample in enumerate(ds.samples):
        subject, frame, cam = _key(tiny, sample.ann_id)
        fit = ds.camera_fit(index)
        if (subject, frame) == NO_FIT:
            assert fit is None
            continue
        pose, shape, trans = tiny["world_fits"][(subject, frame)]
        rotation, t_mm, focal, princpt = tiny["cameras"][subject][cam]
        expected = _smpl(layer, pose, shape, trans) @ rotation.T + t_mm / 1000
        np.testing.assert_allclose(_smpl(layer, fit.pose, fit.shape, fit.trans), expected, atol=2e-5)
        np.testing.assert_allclose(fit.focal, focal)
        np.testing.assert_allclose(fit.princpt, princpt)


def _read_annotations(data_dir, subject):
    def load(kind):
        with open(os.path.join(data_dir, "Human36M", "annotations", f"Human36M_subject{subject}_{kind}.json")) as f:
            return json.load(f)
    return load("data"), load("camera"), load("joint_3d")


def test_ground_truth_projects_onto_the_image_joints(tiny, symmetric):
    # Independently of the loader: the annotated world joints, moved into each image's camera and projected, land on
    # the white dots drawn in that image, and the items' joints are exactly these projections, cropped.
    ds = _h36m(tiny, symmetric, augment=False)
    files = {subject: _read_annotations(tiny["data_dir"], subject) for subject in (1, 5, 6, 7, 8)}
    for index, sample in enumerate(ds.samples):
        db, cameras, joint_3d = files[_key(tiny, sample.ann_id)[0]]
        image = next(img for img in db["images"] if img["id"] == sample.image_id)
        camera = cameras[str(image["cam_idx"])]
        world = np.array(joint_3d[str(image["action_idx"])][str(image["subaction_idx"])][str(image["frame_idx"])])
        joints_cam = world @ np.array(camera["R"]).T + np.array(camera["t"])
        joints_img = joints_cam[:, :2] / joints_cam[:, 2:] * camera["f"] + camera["c"]
        pixels = cv2.imread(os.path.join(tiny["data_dir"], "Human36M", "images", image["file_name"]))
        for x, y in joints_img:
            assert pixels[int(round(y)), int(round(x))].min() > 200

        _, targets, meta, geometry = ds.item(index, return_geometry=True)
        crop = joints_img @ geometry.img2bb[:, :2].T.astype(np.float64) + geometry.img2bb[:, 2]
        np.testing.assert_allclose(targets["orig_joint_img"][H36M_IN_SMPL30, :2], crop / 4, atol=1e-3)
        root = joints_cam[H36M17.index("Pelvis")]
        np.testing.assert_allclose(targets["orig_joint_cam"][H36M_IN_SMPL30], (joints_cam - root) / 1000, atol=1e-6)
        depth_bins = ((joints_cam[:, 2] - root[2]) / 1000 + 1) / 2 * 64
        np.testing.assert_allclose(targets["orig_joint_img"][H36M_IN_SMPL30, 2], depth_bins, atol=1e-4)
        assert meta["orig_joint_valid"][H36M_IN_SMPL30].all() and meta["orig_joint_valid"].sum() == 17


def test_augmented_crops_show_the_joints_where_the_targets_put_them(tiny, symmetric):
    ds = _h36m(tiny, symmetric, augment=True)
    seen_flip = seen_rot = 0
    for epoch in range(2):
        ds.set_epoch(epoch)
        for index in range(0, len(ds), 2):
            inputs, targets, meta, geometry = ds.item(index, return_geometry=True)
            seen_flip += geometry.aug.do_flip
            seen_rot += geometry.aug.rot_deg != 0
            rows = [r for r in H36M_IN_SMPL30 if meta["orig_joint_trunc"][r, 0]]
            assert rows
            xy = np.round(targets["orig_joint_img"][rows, :2] * 4).astype(int)
            brightness = inputs["img"][:, xy[:, 1], xy[:, 0]].min(0)  # the dot's colour, times the colour gains
            assert (brightness > 0.6).all(), (index, brightness)
    assert seen_flip and seen_rot


def test_fits_agree_with_the_annotated_joints_where_valid(tiny, symmetric):
    ds = _h36m(tiny, symmetric, augment=True)
    valid_seen = 0
    for epoch in range(2):
        ds.set_epoch(epoch)
        for index in range(len(ds)):
            _, targets, meta = ds[index]
            if not meta["is_valid_fit"]:
                continue
            valid_seen += 1
            np.testing.assert_allclose(targets["fit_joint_img"][H36M_IN_SMPL30],
                                       targets["orig_joint_img"][H36M_IN_SMPL30], atol=2e-3)
            np.testing.assert_allclose(targets["fit_joint_cam"][H36M_IN_SMPL30],
                                       targets["orig_joint_cam"][H36M_IN_SMPL30], atol=2e-5)
    assert valid_seen == 2 * (len(ds) - 4)


def test_fit_validity(tiny, symmetric):
    ds = _h36m(tiny, symmetric)
    for index, sample in enumerate(ds.samples):
        subject, frame, _ = _key(tiny, sample.ann_id)
        error = ds.fit_error_mm(index)
        _, targets, meta = ds[index]
        if (subject, frame) == NO_FIT:
            assert error is None and meta["is_valid_fit"] == 0 and not targets["pose_param"].any()
        elif (subject, frame) == BAD_FIT:
            assert error > 25 and meta["is_valid_fit"] == 0
        else:
            assert error < 1e-2 and meta["is_valid_fit"] == 1
        assert meta["is_3D"] == 1


def test_fit_error_is_measured_on_the_fits_mesh(tmp_path, body):
    # The check regresses the H36M joints without building the mesh; it must equal the regressor applied to the mesh.
    # The random body model's H36M regressor has nothing to do with its J30.
    layer, _, h36m = body
    tiny = write_tiny_h36m(tmp_path, *body, subjects=(1,), n_frames=3, bad_fit={(1, 1)})
    ds = Human36M(tiny["data_dir"], *body, subjects=(1,), sampling_ratio=1)
    for index, sample in enumerate(ds.samples):
        fit = ds.camera_fit(index)
        expected = fit_error_mm(h36m @ _smpl(layer, fit.pose, fit.shape, fit.trans), sample.joints_cam)
        assert ds.fit_error_mm(index) == pytest.approx(expected, abs=1e-3)
        assert fit.check == (expected <= FIT_ERROR_THRESHOLD_MM)


def mirror_item(inputs, targets, meta):
    """The flip of an item in the heatmap/camera frames: x -> 64 - x (the crop is mirrored about its centre line,
    pixel u -> 256 - u), joint_cam x -> -x, left and right SMPL30 rows swapped, SMPL pose flipped."""
    def swap(rows):
        rows = rows.copy()
        for left, right in SMPL30_FLIP_PAIRS:
            rows[[left, right]] = rows[[right, left]]
        return rows

    out = {}
    for key in ("orig_joint_img", "fit_joint_img"):
        out[key] = swap(targets[key]) * np.array([-1, 1, 1]) + np.array([64, 0, 0])
    out["orig_joint_img"] *= swap(meta["orig_joint_valid"])  # joints the dataset lacks stay zero
    for key in ("orig_joint_cam", "fit_joint_cam"):
        out[key] = swap(targets[key]) * np.array([-1, 1, 1])
    for key in ("orig_joint_trunc", "orig_joint_valid", "fit_joint_trunc"):
        out[key] = swap(meta[key])
    out["pose_param"] = flip_smpl_pose(targets["pose_param"])
    out["img"] = inputs["img"][:, :, ::-1]
    return out


def test_flipping_a_sample_twice_gives_it_back(tiny, symmetric):
    ds = _h36m(tiny, symmetric, augment=True)
    gains = np.ones(3, np.float32)
    for index in (0, 9):
        plain = ds.item(index, aug=AugConfig(scale=1.1, rot_deg=20.0, color_gains=gains, do_flip=False))
        flipped = ds.item(index, aug=AugConfig(scale=1.1, rot_deg=-20.0, color_gains=gains, do_flip=True))
        assert plain[2]["is_valid_fit"] == 1
        back = mirror_item(*flipped)
        for key in ("orig_joint_img", "fit_joint_img"):
            np.testing.assert_allclose(back[key], plain[1][key], atol=2e-3, err_msg=key)
        for key in ("orig_joint_cam", "fit_joint_cam"):
            np.testing.assert_allclose(back[key], plain[1][key], atol=2e-5, err_msg=key)
        for key in ("orig_joint_trunc", "orig_joint_valid", "fit_joint_trunc"):
            np.testing.assert_array_equal(back[key], plain[2][key], err_msg=key)
        root_back = cv2.Rodrigues(back["pose_param"][:3].astype(np.float64))[0]
        np.testing.assert_allclose(root_back, cv2.Rodrigues(plain[1]["pose_param"][:3].astype(np.float64))[0],
                                   atol=1e-5)
        np.testing.assert_allclose(back["pose_param"][3:], plain[1]["pose_param"][3:], atol=1e-6)
        # Mirrored crop columns: u <-> 256 - u (column 0 has no partner inside the crop).
        np.testing.assert_allclose(back["img"][:, :, :-1], plain[0]["img"][:, :, 1:], atol=1.01 / 255)  # uint8 rounding


def test_item_fields(tiny, symmetric):
    ds = _h36m(tiny, symmetric)
    inputs, targets, meta = ds[0]
    for group in (inputs, targets, meta):
        for key, value in group.items():
            assert value.shape == SHAPES[key] and value.dtype == np.float32, key
    assert meta["is_3D"] == 1


def _copy(tiny, tmp_path):
    target = tmp_path / "data"
    shutil.copytree(tiny["data_dir"], target)
    return target


@pytest.mark.parametrize("kind", FILE_KINDS)
def test_missing_annotation_file_names_itself_and_its_source(tiny, symmetric, tmp_path, kind):
    data_dir = _copy(tiny, tmp_path)
    os.remove(data_dir / "Human36M" / "annotations" / f"Human36M_subject6_{kind}.json")
    name = f"Human36M_subject6_{kind}.json"
    with pytest.raises(FileNotFoundError, match=rf"data/Human36M/annotations/{name}; get it from .*I2L-MeshNet"):
        Human36M(data_dir, *symmetric)


def _edit(path, change):
    content = json.loads(path.read_text())
    change(content)
    path.write_text(json.dumps(content))


def test_malformed_annotations_name_their_id(tiny, symmetric, tmp_path):
    data_dir = _copy(tiny, tmp_path)
    annotations = data_dir / "Human36M" / "annotations"
    ann_id = tiny["ann_ids"][(7, 0, 2)]

    def short_joints(content):
        content["2"]["1"]["0"] = content["2"]["1"]["0"][:16]

    _edit(annotations / "Human36M_subject7_joint_3d.json", short_joints)
    message = rf"annotation {tiny['ann_ids'][(7, 0, 1)]}: joint_3d of action 2, subaction 1, frame 0 must be 17 x 3"
    with pytest.raises(ValueError, match=message):
        Human36M(data_dir, *symmetric)
    shutil.copy(tiny["data_dir"] + "/Human36M/annotations/Human36M_subject7_joint_3d.json", annotations)

    def nan_box(content):
        next(a for a in content["annotations"] if a["id"] == ann_id)["bbox"][1] = float("nan")

    _edit(annotations / "Human36M_subject7_data.json", nan_box)
    with pytest.raises(ValueError, match=rf"annotation {ann_id}: bbox contains NaN"):
        Human36M(data_dir, *symmetric)
    shutil.copy(tiny["data_dir"] + "/Human36M/annotations/Human36M_subject7_data.json", annotations)

    _edit(annotations / "Human36M_subject8_smpl_param.json", lambda c: c["2"]["1"]["5"].update(shape=[0.0] * 9))
    with pytest.raises(ValueError, match=rf"annotation {tiny['ann_ids'][(8, 5, 1)]}: smpl_param 'shape' must be 10"):
        Human36M(data_dir, *symmetric)


def test_a_missing_image_is_an_error_naming_the_file(tiny, symmetric, tmp_path):
    data_dir = _copy(tiny, tmp_path)
    ds = Human36M(data_dir, *symmetric, augment=False)
    os.remove(ds.samples[1].img_path)
    with pytest.raises(FileNotFoundError, match=rf"Human3.6M image missing or unreadable: {ds.samples[1].img_path}"):
        ds[1]


def test_items_depend_only_on_seed_epoch_and_index(tiny, symmetric):
    first, second = _h36m(tiny, symmetric, seed=3), _h36m(tiny, symmetric, seed=3)
    first.set_epoch(1)
    second.set_epoch(1)
    items = [second[i] for i in (5, 2)]
    for item_a, item_b in zip([first[2], first[5]], items[::-1]):
        for group_a, group_b in zip(item_a, item_b):
            for key in group_a:
                np.testing.assert_array_equal(group_a[key], group_b[key], err_msg=key)
    second.set_epoch(2)
    assert not np.array_equal(first[2][0]["img"], second[2][0]["img"])


def test_the_official_training_mix_collates(tmp_path, symmetric):
    # The official mix (spec 4.4): 3D = Human36M + MuCo, 2D = CrowdPose + MSCOCO, over the four tiny sets.
    layer, j30, h36m = symmetric
    write_tiny_h36m(tmp_path, layer, j30, h36m, subjects=(1, 5, 6, 7, 8), n_frames=1)
    write_tiny_muco(tmp_path, layer, j30, h36m, n_images=2)
    write_tiny_crowdpose(tmp_path, layer, j30)
    write_tiny_mscoco(tmp_path, layer, j30)
    mix = build_train_dataset(["Human36M", "MuCo"], ["CrowdPose", "MSCOCO"], data_dir=tmp_path / "data",
                              body_model=layer, joint_regressor_30=j30, h36m_regressor=h36m,
                              input_img_shape=(256, 256), output_hm_shape=(64, 64, 64), bbox_3d_size=2.0,
                              update_bbox=True, augment=True, seed=0, official_crowdpose_flip=False,
                              occlusion_prob=0.25, occlusion_failures=True)
    group_3d, group_2d = mix.dbs
    assert isinstance(mix, MultipleDatasets) and len(group_3d) == 10 + 2 and len(group_2d) == 7 + 5
    assert [type(db).__name__ for db in group_3d.dbs + group_2d.dbs] == ["Human36M", "MuCo", "CrowdPose", "MSCOCO"]
    for db in group_3d.dbs + group_2d.dbs:  # the occlusion settings reach every dataset's sample builder
        assert (db.builder.occlusion_prob, db.builder.occlusion_failures) == (0.25, True), type(db).__name__
    mix.set_epoch(1)
    loader = torch.utils.data.DataLoader(mix, batch_size=6, sampler=[0, 10, 11, 12, 19, 23])
    inputs, targets, meta = next(iter(loader))
    for group in (inputs, targets, meta):
        for key, value in group.items():
            assert value.shape == (6,) + SHAPES[key] and value.dtype == torch.float32, key
    assert meta["is_3D"].tolist() == [1, 1, 1, 0, 0, 0]
    assert torch.isfinite(inputs["joints"]).all()
