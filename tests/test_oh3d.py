import json
import os
import shutil
import warnings

import numpy as np
import pytest
import torch

from common.body.joint_sets import COCO17, H36M_EVAL14_IDX, SMPL30
from common.training.engine import evaluate
from data.oh3d import OH3D
from data.registry import TEST_DATASETS, build_test_dataset
from tests.muco_format import symmetric_body_model
from tests.oh3d_format import KEYS, LOW_WRIST_KEY, NO_DETECTION_KEY, write_tiny_oh3d

COCO_IN_SMPL30 = [SMPL30.index(n) for n in COCO17]
PW3D_KEYS = ({"img", "joints", "joints_mask"}, {"smpl_pose", "smpl_shape", "smpl_trans", "gender"},
             {"bb2img_trans", "img2bb_trans", "bbox", "idx", "ann_id", "bbox_from_gt"})


@pytest.fixture(scope="module")
def symmetric():
    return symmetric_body_model(seed=2)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, symmetric):
    return write_tiny_oh3d(tmp_path_factory.mktemp("oh3d"), *symmetric)


def _oh3d(tiny, **kwargs):
    with pytest.warns(UserWarning, match="1 of 5 people have no usable input joints"):
        return OH3D(os.path.join(tiny["data_dir"], "OH3D"), **kwargs)


def _square_box(x, y, w, h, image_size=(320, 240), scale=1.1):
    """The 3DPW test crop by hand (spec 5.2): clip (x2 = x1 + w - 1), make square about the centre, enlarge."""
    x1, y1 = max(0.0, x), max(0.0, y)
    x2, y2 = min(image_size[0] - 1.0, x1 + max(0.0, w - 1)), min(image_size[1] - 1.0, y1 + max(0.0, h - 1))
    side = max(x2 - x1, y2 - y1) * scale
    return np.array([(x1 + x2) / 2 - side / 2, (y1 + y2) / 2 - side / 2, side, side])


def test_items_have_the_3dpw_layout(tiny, symmetric):
    layer = symmetric[0]
    ds = _oh3d(tiny, smpl_fn_by_gender={"neutral": layer})
    assert len(ds) == len(KEYS) and [s.key for s in ds.samples] == list(KEYS)
    for index, key in enumerate(KEYS):
        assert os.path.isfile(ds.samples[index].img_path), key  # every key spelling finds its image
        inputs, targets, meta = ds[index]
        assert (set(inputs), set(targets) - {"smpl_mesh_cam"}, set(meta)) == PW3D_KEYS
        assert inputs["img"].shape == (3, 256, 256) and inputs["img"].dtype == torch.float32
        assert inputs["joints"].shape == (30, 3) and inputs["joints_mask"].shape == (30, 1)
        assert targets["gender"].item() == 0 and targets["gender"].dtype == torch.int64
        person = tiny["people"][key]
        with torch.no_grad():
            mesh = layer(*(torch.tensor(person[k], dtype=torch.float32)[None] for k in ("pose", "shape", "trans")))
        torch.testing.assert_close(targets["smpl_mesh_cam"], mesh[0])
        assert meta["idx"] == index and meta["bbox_from_gt"] == (key == NO_DETECTION_KEY)


def test_input_pose_and_crop_follow_the_3dpw_protocol(tiny):
    ds = _oh3d(tiny)
    for index, key in enumerate(KEYS):
        if key == NO_DETECTION_KEY:
            continue
        inputs, _, meta = ds[index]
        joints_img = tiny["people"][key]["joints_img"]
        valid = np.ones(30, bool)
        valid[[SMPL30.index(n) for n in SMPL30 if n not in COCO17 + ("Pelvis", "Neck")]] = False
        if key == LOW_WRIST_KEY:
            valid[SMPL30.index("L_Wrist")] = False
        coco = joints_img[COCO_IN_SMPL30]
        pelvis = (joints_img[SMPL30.index("L_Hip")] + joints_img[SMPL30.index("R_Hip")]) / 2
        neck = (joints_img[SMPL30.index("L_Shoulder")] + joints_img[SMPL30.index("R_Shoulder")]) / 2
        used = np.concatenate([coco, [pelvis, neck]])[
            [i for i, n in enumerate(COCO17 + ("Pelvis", "Neck")) if valid[SMPL30.index(n)]]]
        (x0, y0), (x1, y1) = used.min(0), used.max(0)
        cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) * 1.2, (y1 - y0) * 1.2
        np.testing.assert_allclose(meta["bbox"].numpy(), _square_box(cx - w / 2, cy - h / 2, w, h),
                                   rtol=1e-5, atol=1e-3)
        bbox = meta["bbox"].numpy()
        expected = (coco - bbox[:2]) / bbox[2:] * 64  # no rotation: the crop is the box scaled to 64 x 64
        np.testing.assert_allclose(inputs["joints"][COCO_IN_SMPL30, :2].numpy(), expected, atol=2e-3)
        np.testing.assert_allclose(inputs["joints"][SMPL30.index("Pelvis"), :2].numpy(),
                                   (pelvis - bbox[:2]) / bbox[2:] * 64, atol=2e-3)
        np.testing.assert_array_equal(inputs["joints_mask"][:, 0].numpy(), valid)
        assert inputs["joints"][SMPL30.index("Neck"), 2] == pytest.approx(0.81)  # confidence = 0.9 x 0.9


def test_without_detections_the_box_is_read_as_corners(tiny):
    index = KEYS.index(NO_DETECTION_KEY)
    x0, y0, x1, y1 = tiny["people"][NO_DETECTION_KEY]["bbox_xyxy"]
    _, _, meta = _oh3d(tiny)[index]
    assert meta["bbox_from_gt"]
    # The corners are pixels of the box: it spans x0 .. x1, i.e. x0 + w - 1 = x1.
    np.testing.assert_allclose(meta["bbox"].numpy(), _square_box(x0, y0, x1 - x0 + 1, y1 - y0 + 1), rtol=1e-5,
                               atol=1e-3)
    # The official code's reading (x, y, w, h) gives another box.
    _, _, meta = _oh3d(tiny, bbox_format="xywh")[index]
    np.testing.assert_allclose(meta["bbox"].numpy(), _square_box(x0, y0, x1, y1), rtol=1e-5, atol=1e-3)


class FixedMeshModel(torch.nn.Module):
    """Predicts the same root-relative mesh for everyone."""

    def __init__(self, mesh, joint_regressor):
        super().__init__()
        self.register_buffer("mesh", mesh)
        self.register_buffer("joint_regressor", torch.as_tensor(joint_regressor, dtype=torch.float32))

    def forward(self, img, joints, joints_mask, bbox=None):
        return {"smpl_mesh_cam": self.mesh.expand(len(img), -1, -1)}


def test_the_3dpw_evaluation_runs_unchanged_with_the_own_regressor(tiny, symmetric):
    layer, j30, h36m = symmetric
    ds = _oh3d(tiny)
    np.testing.assert_array_equal(ds.h36m_regressor, np.asarray(h36m, np.float32))
    with torch.no_grad():
        pred = layer(torch.zeros(1, 72), torch.zeros(1, 10))[0]
    pred = pred - torch.as_tensor(j30[0], dtype=torch.float32) @ pred
    model = FixedMeshModel(pred, j30)
    loader = torch.utils.data.DataLoader(ds, batch_size=2)
    summary, _ = evaluate(model, loader, smpl_by_gender={"neutral": layer}, h36m_regressor=ds.h36m_regressor,
                          device=torch.device("cpu"), expected_count=len(ds), progress=False)
    # Independently: MPJPE over the 14 scored H36M joints, each skeleton relative to its own H36M pelvis.
    errors = []
    reg = np.asarray(h36m, np.float64)
    pred_joints = reg @ pred.double().numpy()
    pred_joints = (pred_joints - pred_joints[0])[H36M_EVAL14_IDX]
    for person in tiny["people"].values():
        with torch.no_grad():
            mesh = layer(*(torch.tensor(person[k], dtype=torch.float32)[None] for k in ("pose", "shape", "trans")))
        gt = reg @ mesh[0].double().numpy()
        gt = (gt - gt[0])[H36M_EVAL14_IDX]
        errors.append(np.linalg.norm(pred_joints - gt, axis=1).mean() * 1000)
    assert summary["n"] == 5
    assert summary["mpjpe"] == pytest.approx(np.mean(errors), rel=1e-4)


def test_registry_builds_3doh_from_data_oh3d(tiny):
    assert TEST_DATASETS["3doh"] is OH3D
    with pytest.warns(UserWarning, match="no usable input joints"):
        ds = build_test_dataset("3doh", data_dir=tiny["data_dir"], input_img_shape=(256, 256))
    assert isinstance(ds, OH3D) and len(ds) == 5 and ds.data_dir == os.path.join(tiny["data_dir"], "OH3D")


def _copy(tiny, tmp_path):
    target = tmp_path / "data"
    shutil.copytree(tiny["data_dir"], target)
    return target


def test_missing_files(tiny, tmp_path):
    data_dir = _copy(tiny, tmp_path)
    os.remove(data_dir / "OH3D" / "J_regressor_h36m_correct.npy")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*no usable input joints")
        with pytest.warns(UserWarning, match="J_regressor_h36m_correct.npy not found.*configured H36M regressor"):
            ds = OH3D(data_dir / "OH3D")
    assert ds.h36m_regressor is None
    os.remove(ds.samples[1].img_path)
    with pytest.raises(FileNotFoundError, match=r"3DOH50K image missing or unreadable: .*0001.jpg \(annotation 0001"):
        ds[1]
    os.remove(data_dir / "OH3D" / "3doh_test_annots_scale_1.json")
    with pytest.raises(FileNotFoundError, match=r"data/OH3D/3doh_test_annots_scale_1.json; it comes from .*3DOH50K"):
        OH3D(data_dir / "OH3D")


@pytest.mark.parametrize("field,value,message", [
    ("hrnet_results", [[1.0, 2.0, 0.9]] * 16, "hrnet_results must be 17 x 3 numbers"),
    ("pose", [float("nan")] * 72, "pose contains NaN"),
    ("bbox", [1.0, 2.0, 3.0], "bbox must be 4 numbers"),
])
def test_malformed_annotation_names_its_image(tiny, tmp_path, field, value, message):
    data_dir = _copy(tiny, tmp_path)
    path = data_dir / "OH3D" / "3doh_test_annots_scale_1.json"
    annots = json.loads(path.read_text())
    annots["0001.jpg"][field] = value
    path.write_text(json.dumps(annots))
    with pytest.raises(ValueError, match=rf"annotation 0001.jpg: {message}"):
        OH3D(data_dir / "OH3D")
