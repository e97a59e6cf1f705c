import json
import os
import warnings

import cv2
import numpy as np
import pytest
import torch

from common.body.body_model import gendered_meshes
from common.body.joint_sets import COCO17, OPENPOSE18, SMPL30
from common.evaluation.metrics import MetricAccumulator, mesh_metrics
from data.pw3d import PW3D
from tests.pw3d_format import HHRNET_CONFIDENCE, OPENPOSE_CONFIDENCE, toy_setup, write_tiny_pw3d

VARIANT_FILES = {"3dpw": "3DPW_latest_test.json", "3dpw-crowd": "3DPW_latest_validation.json",
                 "3dpw-pc": "3DPW_pc.json", "3dpw-oc": "3DPW_oc.json"}
VARIANT_ANN_IDS = {"3dpw": [101, 102, 103, 104], "3dpw-crowd": [201, 202, 203, 204], "3dpw-pc": [101, 104],
                   "3dpw-oc": [102]}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    models, j30, h36m, joints_fn = toy_setup()
    data_dir = write_tiny_pw3d(tmp_path_factory.mktemp("pw3d"), joints_fn)
    return data_dir, models, j30, h36m, joints_fn


def _dataset(data_dir, variant, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 3dpw warns about its one undetected person
        return PW3D(data_dir, variant, **kwargs)


def _annotations(data_dir, file_name):
    with open(os.path.join(data_dir, file_name)) as f:
        db = json.load(f)
    return {ann["id"]: ann for ann in db["annotations"]}, {img["id"]: img for img in db["images"]}


def _expected_input_pose(ann, hhrnet):
    """(30, 3) image pixels + confidence, SMPL30 order, from the raw JSON: HigherHRNet (COCO + Pelvis +
    Neck) if present, else OpenPose (+ Pelvis)."""
    if str(ann["id"]) in hhrnet:
        names, raw = COCO17, np.array(hhrnet[str(ann["id"])]["coco_joints"])
    else:
        names, raw = OPENPOSE18, np.array(ann["openpose_result"]).reshape(18, 3)
    out = np.zeros((30, 3))
    for name, row in zip(names, raw):
        out[SMPL30.index(name)] = row
    added = [("Pelvis", "L_Hip", "R_Hip")] + ([("Neck", "L_Shoulder", "R_Shoulder")] if names == COCO17 else [])
    for name, left, right in added:  # mean position, product of confidences
        pair = raw[[names.index(left), names.index(right)]]
        out[SMPL30.index(name)] = [*pair[:, :2].mean(0), pair[0, 2] * pair[1, 2]]
    return out


@pytest.mark.parametrize("variant, crowd_pose_source", [(v, "openpose") for v in VARIANT_FILES]
                         + [("3dpw-crowd", "higherhrnet")])
def test_samples_shapes_and_frames(tiny, variant, crowd_pose_source):
    data_dir = tiny[0]
    ds = _dataset(data_dir, variant, crowd_pose_source=crowd_pose_source)
    anns, images = _annotations(data_dir, VARIANT_FILES[variant])
    with open(os.path.join(data_dir, "3DPW_validation_crowd_hhrnet_result.json")) as f:
        hhrnet = json.load(f) if variant == "3dpw-crowd" and crowd_pose_source == "higherhrnet" else {}
    assert len(ds) == len(VARIANT_ANN_IDS[variant])

    for idx in range(len(ds)):
        inputs, targets, meta = ds[idx]
        ann = anns[VARIANT_ANN_IDS[variant][idx]]
        assert meta["idx"] == idx and meta["ann_id"] == ann["id"]
        assert inputs["img"].shape == (3, 256, 256) and inputs["img"].dtype == torch.float32
        assert inputs["joints"].shape == (30, 3) and inputs["joints_mask"].shape == (30, 1)
        assert meta["bb2img_trans"].shape == (2, 3) and meta["bbox"].shape == (4,)
        smpl = ann["smpl_param"]
        np.testing.assert_allclose(targets["smpl_pose"].numpy(), smpl["pose"], rtol=1e-6)
        np.testing.assert_allclose(targets["smpl_shape"].numpy(), smpl["shape"], rtol=1e-6)
        np.testing.assert_allclose(targets["smpl_trans"].numpy(), smpl["trans"], rtol=1e-6)
        assert targets["gender"].item() == {"male": 1, "female": 2}[smpl["gender"]]

        # Input joints: the 64-frame positions go back to the annotated image positions through bb2img.
        expected = _expected_input_pose(ann, hhrnet)
        valid = expected[:, 2] > 0.05
        bb2img = meta["bb2img_trans"].numpy().astype(np.float64)
        crop_xy = inputs["joints"][:, :2].numpy() * 256 / 64
        img_xy = crop_xy @ bb2img[:, :2].T + bb2img[:, 2]
        np.testing.assert_allclose(img_xy[valid], expected[valid, :2], atol=1e-2)
        np.testing.assert_allclose(inputs["joints"][:, 2].numpy(), expected[:, 2], atol=1e-6)
        np.testing.assert_array_equal(inputs["joints_mask"][:, 0].numpy(), valid.astype(np.float32))

        # The picture: RGB in [0, 1], and the crop shows the image where bb2img says.
        img = inputs["img"].numpy()
        assert img.min() >= 0 and img.max() <= 1
        assert img[0].mean() > img[2].mean() + 0.3  # red-dominant image: channels are RGB, not BGR
        image_info = images[ann["image_id"]]
        picture = cv2.imread(os.path.join(data_dir, "imageFiles", image_info["sequence"], image_info["file_name"]))
        for crop_point in ([128, 128], [30, 220]):  # both inside the image for every person written
            x, y = np.array(crop_point, dtype=np.float64) @ bb2img[:, :2].T + bb2img[:, 2]
            expected_rgb = picture[int(round(y)), int(round(x)), ::-1] / 255.0
            np.testing.assert_allclose(img[:, crop_point[1], crop_point[0]], expected_rgb, atol=0.06)


def test_crop_box_follows_the_test_protocol(tiny):
    data_dir = tiny[0]
    ds = _dataset(data_dir, "3dpw")
    anns, _ = _annotations(data_dir, "3DPW_latest_test.json")
    for idx, ann_id in enumerate(VARIANT_ANN_IDS["3dpw"]):
        _, _, meta = ds[idx]
        x, y, w, h = meta["bbox"].numpy()
        assert w == pytest.approx(h)
        if ann_id == 103:  # no detected joint: cropped from the annotated box instead of being dropped
            assert meta["bbox_from_gt"]
            gx, gy, gw, gh = anns[ann_id]["bbox"]
            assert (x + w / 2, y + h / 2) == pytest.approx((gx + (gw - 1) / 2, gy + (gh - 1) / 2), abs=1e-3)
            assert w == pytest.approx(1.1 * (max(gw, gh) - 1), abs=1e-3)
            continue
        assert not meta["bbox_from_gt"]
        pose = _expected_input_pose(anns[ann_id], {})
        xy = pose[pose[:, 2] > 0.05, :2]
        (x0, y0), (x1, y1) = xy.min(0), xy.max(0)
        # Tight box x1.2 about its centre, clipped to x2 = x1 + w - 1, squared, x1.1.
        side = 1.1 * (max(x1 - x0, y1 - y0) * 1.2 - 1)
        assert w == pytest.approx(side, abs=1e-3)
        assert (x + w / 2, y + h / 2) == pytest.approx(((x0 + x1) / 2 - 0.5, (y0 + y1) / 2 - 0.5), abs=1e-3)
    with pytest.warns(UserWarning, match="1 of 4 people"):
        PW3D(data_dir, "3dpw")


def test_crowd_chooses_the_input_pose_per_person(tiny):
    ds = _dataset(tiny[0], "3dpw-crowd", crowd_pose_source="higherhrnet")
    assert [s.ann_id for s in ds.samples] == VARIANT_ANN_IDS["3dpw-crowd"]  # courtyard_basketball_00 is not crowd
    assert [s.pose_source for s in ds.samples] == ["higherhrnet", "openpose", "higherhrnet", "openpose"]
    head_top, neck = SMPL30.index("Head_top"), SMPL30.index("Neck")
    for idx, source in enumerate(s.pose_source for s in ds.samples):
        joints = ds[idx][0]["joints"].numpy()
        if source == "higherhrnet":  # COCO + Pelvis + Neck: Neck from the shoulders, confidence product
            assert joints[neck, 2] == pytest.approx(HHRNET_CONFIDENCE ** 2)
            assert joints[SMPL30.index("Nose"), 2] == pytest.approx(HHRNET_CONFIDENCE)
        else:
            assert joints[neck, 2] == pytest.approx(OPENPOSE_CONFIDENCE)
        assert joints[head_top, 2] == 0
    assert ds.report()["pose_source"] == "higherhrnet"
    assert [ds.describe(i)["pose_source"] for i in range(len(ds))] == [s.pose_source for s in ds.samples]
    # Other variants never read the HigherHRNet file, even for the same people.
    assert {s.pose_source for s in _dataset(tiny[0], "3dpw").samples} == {"openpose"}


def test_crowd_defaults_to_the_openpose_input_of_the_published_numbers(tiny, tmp_path):
    data_dir = write_tiny_pw3d(tmp_path, tiny[4])
    os.remove(os.path.join(data_dir, "3DPW_validation_crowd_hhrnet_result.json"))  # not needed for OpenPose input
    ds = _dataset(data_dir, "3dpw-crowd")
    assert [s.ann_id for s in ds.samples] == VARIANT_ANN_IDS["3dpw-crowd"]
    assert {s.pose_source for s in ds.samples} == {"openpose"} and ds.report()["pose_source"] == "openpose"
    with pytest.raises(ValueError, match="crowd_pose_source must be one of"):
        PW3D(data_dir, "3dpw-crowd", crowd_pose_source="hrnet")


def _rewrite_annotations(data_dir, file_name, change):
    path = os.path.join(data_dir, file_name)
    with open(path) as f:
        db = json.load(f)
    change(db)
    with open(path, "w") as f:
        json.dump(db, f)


def test_people_the_official_selection_leaves_out_are_reported(tiny, tmp_path):
    data_dir = write_tiny_pw3d(tmp_path, tiny[4])
    sizes = {}

    def change(db):
        sizes.update({img["id"]: (img["width"], img["height"]) for img in db["images"]})
        anns = {ann["id"]: ann for ann in db["annotations"]}
        anns[101]["bbox"][2] = 0.0  # zero width
        width = sizes[anns[104]["image_id"]][0]
        anns[104]["bbox"][0] = width + 5.0  # right of the image
        anns[102]["bbox"][0] = -anns[102]["bbox"][2] / 2  # half outside on the left: clipped, kept

    _rewrite_annotations(data_dir, "3DPW_latest_test.json", change)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = PW3D(data_dir, "3dpw")
    assert any("3dpw: 2 people excluded (ground-truth box" in str(w.message) for w in caught)
    assert [s.ann_id for s in ds.samples] == [102, 103]
    report = ds.report()
    assert list(report["excluded"].values()) == [2] and list(report["excluded_ann_ids"].values()) == [[101, 104]]
    assert [ds[i][2]["ann_id"] for i in range(len(ds))] == [102, 103]  # sample ids stay 0..n-1


def test_empty_openpose_result_is_an_empty_pose(tiny, tmp_path):
    data_dir = write_tiny_pw3d(tmp_path, tiny[4])
    _rewrite_annotations(data_dir, "3DPW_latest_test.json",
                         lambda db: db["annotations"][0].update(openpose_result=[]))
    ds = _dataset(data_dir, "3dpw")
    assert [s.ann_id for s in ds.samples] == VARIANT_ANN_IDS["3dpw"]
    inputs, _, meta = ds[0]
    assert inputs["joints_mask"].sum() == 0 and meta["bbox_from_gt"]
    _rewrite_annotations(data_dir, "3DPW_latest_test.json",
                         lambda db: db["annotations"][0].update(openpose_result=[1.0, 2.0, 0.5]))
    with pytest.raises(ValueError, match="annotation 101 has an openpose_result of 3 numbers; expected 18 x 3"):
        PW3D(data_dir, "3dpw")


def test_low_confidence_and_missing_joints_are_masked(tiny):
    ds = _dataset(tiny[0], "3dpw")
    by_ann = {s.ann_id: i for i, s in enumerate(ds.samples)}
    mask = ds[by_ann[104]][0]["joints_mask"][:, 0].numpy()
    assert mask[SMPL30.index("L_Wrist")] == 0 and mask[SMPL30.index("R_Wrist")] == 1
    assert mask[SMPL30.index("Head_top")] == 0 and mask[SMPL30.index("L_Hand")] == 0
    assert mask.sum() == 18  # 18 OpenPose joints + Pelvis, minus the low-confidence wrist
    inputs, _, meta = ds[by_ann[103]]
    assert inputs["joints_mask"].sum() == 0 and inputs["joints"][:, 2].sum() == 0


def test_gt_meshes_use_each_persons_gender(tiny):
    data_dir, models, *_ = tiny
    ds = _dataset(data_dir, "3dpw")
    anns, _ = _annotations(data_dir, "3DPW_latest_test.json")
    _, targets, meta = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    meshes = gendered_meshes(targets, models)
    assert meshes.shape == (4, 50, 3)
    for row, ann_id in enumerate(meta["ann_id"].tolist()):
        smpl = anns[ann_id]["smpl_param"]
        direct = models[smpl["gender"]](*(torch.tensor([smpl[k]], dtype=torch.float32)
                                          for k in ("pose", "shape", "trans")))
        np.testing.assert_allclose(meshes[row].numpy(), direct[0].numpy(), atol=1e-6)
    with pytest.raises(KeyError, match="female"):
        gendered_meshes(targets, {"male": models["male"]})
    # The per-item option gives the same meshes.
    per_item = _dataset(data_dir, "3dpw", smpl_fn_by_gender=models)
    np.testing.assert_allclose(per_item[2][1]["smpl_mesh_cam"].numpy(), meshes[2].numpy(), atol=1e-6)


@pytest.mark.parametrize("variant", list(VARIANT_FILES))
def test_ground_truth_predictions_score_zero(tiny, variant):
    data_dir, models, j30, h36m, _ = tiny
    ds = _dataset(data_dir, variant)
    swapped = {"male": models["female"], "female": models["male"]}
    perfect, wrong = MetricAccumulator(expected_count=len(ds)), MetricAccumulator(expected_count=len(ds))
    for _, targets, meta in torch.utils.data.DataLoader(ds, batch_size=3):
        gt = gendered_meshes(targets, models).double()
        # The model's output convention: root-relative w.r.t. the J30 pelvis.
        pred = gt - (j30[0] @ gt)[:, None]
        perfect.add(mesh_metrics(pred, gt, h36m, j30[0]), meta["idx"])
        other = gendered_meshes(targets, swapped).double()
        wrong.add(mesh_metrics(other - (j30[0] @ other)[:, None], gt, h36m, j30[0]), meta["idx"])
    summary = perfect.summary()
    assert summary["n"] == len(ds)
    for name in ("mpjpe", "pa_mpjpe", "mpvpe"):
        assert summary[name] == pytest.approx(0, abs=1e-6)
        assert wrong.summary()[name] > 1.0  # millimetres: the pipeline does see a wrong body


def test_real_smpl_layer_ground_truth_scores_zero(random_body_model_dir, tmp_path):
    """The same round trip with the project's SMPL layer and regressors (a random SMPL-layout model; the
    fixture has only a neutral model, which here stands in for both genders)."""
    from common.body.body_model import joint_regressor_30, load_regressor, load_smpl

    smpl = load_smpl(random_body_model_dir / "smpl", "neutral")
    models = {"male": smpl, "female": smpl}
    extra = load_regressor(random_body_model_dir / "J_regressor_extra.npy", (9, 6890), "extra regressor", "test")
    h36m = load_regressor(random_body_model_dir / "J_regressor_h36m_correct.npy", (17, 6890), "H36M", "test")
    j30 = torch.from_numpy(joint_regressor_30(smpl.smpl.J_regressor.numpy(), extra)).double()

    def joints_fn(pose, shape, trans, gender):
        verts = models[gender](*(torch.tensor(np.asarray(v)[None], dtype=torch.float32) for v in (pose, shape, trans)))
        return (j30 @ verts[0].double()).numpy()

    ds = _dataset(write_tiny_pw3d(tmp_path, joints_fn), "3dpw-oc")
    acc = MetricAccumulator(expected_count=len(ds))
    for _, targets, meta in torch.utils.data.DataLoader(ds, batch_size=2):
        gt = gendered_meshes(targets, models).double()
        assert gt.shape == (len(meta["idx"]), 6890, 3)
        acc.add(mesh_metrics(gt - (j30[0] @ gt)[:, None], gt, h36m, j30[0]), meta["idx"])
    # 1e-3 mm: the float32 regressors' rows sum to 1 only within ~1e-7, which leaves ~1e-4 mm of a 4 m translation.
    assert acc.summary() == pytest.approx({"mpjpe": 0, "pa_mpjpe": 0, "mpvpe": 0, "n": 1}, abs=1e-3)


def test_clear_errors(tiny, tmp_path):
    with pytest.raises(ValueError, match="unknown 3DPW variant"):
        PW3D(tiny[0], "3dpw-test")
    with pytest.raises(FileNotFoundError, match=r"3DPW_oc\.json.*data/3DPW.*JOTR's README"):
        PW3D(tmp_path, "3dpw-oc")
    with pytest.raises(FileNotFoundError, match=r"3DPW_latest_test\.json.*virtualhumans\.mpi-inf\.mpg\.de/3DPW"):
        PW3D(tmp_path, "3dpw")

    data_dir = write_tiny_pw3d(tmp_path, tiny[4])
    os.remove(os.path.join(data_dir, "3DPW_validation_crowd_hhrnet_result.json"))
    with pytest.raises(FileNotFoundError, match="3DPW_validation_crowd_hhrnet_result.json"):
        PW3D(data_dir, "3dpw-crowd", crowd_pose_source="higherhrnet")
    ds = _dataset(data_dir, "3dpw")
    os.remove(ds.samples[0].img_path)
    with pytest.raises(FileNotFoundError, match="image_00001.jpg"):
        ds[0]
    with open(ds.samples[2].img_path, "wb") as f:
        f.write(b"not a jpeg")
    with pytest.raises(FileNotFoundError, match="unreadable.*image_00002.jpg"):
        ds[2]


def test_a_corrupt_test_image_is_an_error_naming_the_file(tmp_path):
    """Evaluation never skips a sample (training does: data.skip_unreadable)."""
    _, _, _, joints_fn = toy_setup()
    ds = _dataset(write_tiny_pw3d(tmp_path, joints_fn), "3dpw")
    path = ds.samples[0].img_path
    with open(path, "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 not a JPEG")
    with pytest.raises(FileNotFoundError, match=rf"3DPW image missing or unreadable: {path}"):
        ds[0]
