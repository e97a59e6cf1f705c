"""The synthetic data generator: real loaders read its output, its geometry round-trips through the SMPL layer and
the renderer, its occlusion labels are right, and it is deterministic."""
import json
import warnings

import cv2
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from common.body.body_model import joint_regressor_30, load_smpl
from common.body.joint_sets import COCO17, MUCO21, OPENPOSE18, SMPL30
from common.renderer import project, render
from data.mscoco import MSCOCO
from data.muco import MuCo
from data.pw3d import PW3D
from embedded import detections
from embedded.bodies import Bodies
from embedded.generate import OC_MIN_OBJECT_OCCLUSION, PC_MIN_PERSON_OCCLUSION, generate
from embedded.poses import POSE_FAMILIES, sample_body_pose
from embedded.render import VISIBILITY_MARGIN

GENDERS = ("neutral", "male", "female")
OPENPOSE_IDX = [SMPL30.index(n) for n in OPENPOSE18]
COCO_IDX = [SMPL30.index(n) for n in COCO17]
VARIANT_FILES = {"3dpw": "3DPW_latest_test.json", "3dpw-oc": "3DPW_oc.json", "3dpw-pc": "3DPW_pc.json",
                 "3dpw-crowd": "3DPW_latest_validation.json"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    return out, generate(out, seed=0, n_train=6, n_test=8, n_crowd=4)  # a few images per split: seconds


@pytest.fixture(scope="module")
def models(tiny):
    """Float64 SMPL layers read from the written files, and their J30 regressors."""
    out, _ = tiny
    extra = np.load(out / "body_models" / "J_regressor_extra.npy")
    layers = {g: load_smpl(out / "body_models" / "smpl", g).double() for g in GENDERS}
    j30 = {g: joint_regressor_30(layers[g].arrays["J_regressor"], extra).astype(np.float64) for g in GENDERS}
    return layers, j30


def _load(path):
    with open(path) as f:
        return json.load(f)


def _mesh(layers, smpl_param, gender=None):
    layer = layers[gender or smpl_param["gender"]]
    args = [torch.tensor([smpl_param[k]], dtype=torch.float64) for k in ("pose", "shape", "trans")]
    with torch.no_grad():
        return layer(*args)[0].numpy()


def _cam(image):
    if "cam_param" in image:
        return np.array(image["cam_param"]["focal"]), np.array(image["cam_param"]["princpt"])
    return np.array(image["f"]), np.array(image["c"])


@pytest.mark.parametrize("variant", sorted(VARIANT_FILES))
def test_the_3dpw_loader_reads_every_variant(tiny, variant):
    out, manifest = tiny
    db = _load(out / "3DPW" / VARIANT_FILES[variant])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every person has usable input joints (no GT-box fallback warning)
        # The generator writes HigherHRNet-format crowd detections; read them (the loader's default is OpenPose).
        ds = PW3D(out / "3DPW", variant, crowd_pose_source="higherhrnet")
    assert len(ds) == len(db["annotations"]) > 0
    assert [s.ann_id for s in ds.samples] == [a["id"] for a in db["annotations"]]
    expected_source = "higherhrnet" if variant == "3dpw-crowd" else "openpose"
    assert all(s.pose_source == expected_source for s in ds.samples)
    inputs, targets, _ = ds[0]
    assert inputs["img"].shape == (3, 256, 256) and float(inputs["img"].std()) > 0.02
    assert inputs["joints_mask"].sum() >= 4
    if variant == "3dpw":
        assert len(ds) == manifest["counts"]["test"]["annotations"]
        assert len({img["id"] for img in db["images"]}) == manifest["sizes"]["test"]


def test_subsets_are_the_occluded_test_people(tiny):
    out, _ = tiny
    test = _load(out / "3DPW" / "3DPW_latest_test.json")["annotations"]
    oc = {a["id"] for a in _load(out / "3DPW" / "3DPW_oc.json")["annotations"]}
    pc = {a["id"] for a in _load(out / "3DPW" / "3DPW_pc.json")["annotations"]}
    assert oc == {a["id"] for a in test if a["synthetic"]["object_occlusion"] >= OC_MIN_OBJECT_OCCLUSION}
    assert pc == {a["id"] for a in test if a["synthetic"]["person_occlusion"] >= PC_MIN_PERSON_OCCLUSION}
    assert oc and pc
    for ann in test:
        s = ann["synthetic"]
        assert 0 <= s["object_occlusion"] <= s["occlusion"] <= 1 and 0 <= s["person_occlusion"] <= 1
        assert s["object_occlusion"] + s["person_occlusion"] == pytest.approx(s["occlusion"], abs=1e-5)
    crowd = _load(out / "3DPW" / "3DPW_latest_validation.json")
    people = {}
    for ann in crowd["annotations"]:
        people[ann["image_id"]] = people.get(ann["image_id"], 0) + 1
    assert all(img["sequence"].startswith(("courtyard_hug_00", "courtyard_dancing_00")) for img in crowd["images"])
    assert max(people.values()) >= 3


def test_ground_truth_mesh_projects_onto_the_stored_2d_joints(tiny, models):
    """The acceptance check: the SMPL layer's mesh of the stored parameters, projected with the stored camera,
    lands on the noise-free joints, and the detector-like poses lie within their stated noise of it."""
    out, _ = tiny
    layers, j30 = models
    hhrnet = _load(out / "3DPW" / "3DPW_validation_crowd_hhrnet_result.json")
    checked = 0
    for name in ("3DPW_latest_test.json", "3DPW_latest_validation.json"):
        db = _load(out / "3DPW" / name)
        images = {img["id"]: img for img in db["images"]}
        for ann in db["annotations"]:
            image = images[ann["image_id"]]
            focal, princpt = _cam(image)
            joints_img = project(j30[ann["smpl_param"]["gender"]] @ _mesh(layers, ann["smpl_param"]), focal, princpt)
            np.testing.assert_allclose(joints_img, ann["synthetic"]["joints_img"], atol=1e-3)
            openpose = np.reshape(ann["openpose_result"], (18, 3))
            detections = [(openpose, OPENPOSE_IDX, ann["synthetic"]["openpose_noise"])]
            if name == "3DPW_latest_validation.json":
                entry = hhrnet[str(ann["id"])]
                detections.append((np.array(entry["coco_joints"]), COCO_IDX, entry["synthetic_noise"]))
            for pose, idx, noise in detections:
                sigma, swapped = noise["noise_sigma_px"], noise["swapped"]
                assert 0.5 <= sigma <= max(0.5, 0.016 * ann["bbox"][3]) + 1e-6
                error = np.abs(pose[:, :2] - joints_img[idx]).max(1)
                kept = ~np.isin(np.arange(len(pose)), swapped)
                confident = (pose[:, 2] >= 0.35) & kept
                low = (pose[:, 2] > 0) & (pose[:, 2] < 0.35) & kept
                assert np.all(error[confident] <= 3 * sigma + 1e-3)
                assert np.all(error[low] <= 9 * sigma + 1e-3)
                assert np.all(pose[pose[:, 2] == 0, :2] == 0)
                visible = np.array(ann["synthetic"]["joints_visible"], bool)[idx]
                assert np.all(pose[~visible & kept, 2] < 0.35)  # occluded joints are dropped or low-confidence
                checked += confident.sum()
            # The box is the tight amodal box (projected mesh, clipped to the image).
            verts_px = project(_mesh(layers, ann["smpl_param"]), focal, princpt)
            lo = np.clip(verts_px.min(0), 0, [image["width"] - 1, image["height"] - 1])
            hi = np.clip(verts_px.max(0), 0, [image["width"] - 1, image["height"] - 1])
            np.testing.assert_allclose(ann["bbox"], [*lo, *(hi - lo)], atol=2e-3)
    assert checked > 100


def _scene_meshes(image, anns, layers):
    """Annotated people, the other people and the objects of one image as (vertices, faces), plus the count of
    people."""
    meshes = [(_mesh(layers, a["smpl_param"]), layers[a["smpl_param"]["gender"]].faces) for a in anns]
    meshes += [(_mesh(layers, p), layers[p["gender"]].faces) for p in image["synthetic"]["other_people"]]
    n_people = len(meshes)
    meshes += [(np.array(o["vertices"]), np.array(o["faces"])) for o in image["synthetic"]["occluders"]]
    return meshes, n_people


def test_occlusion_labels_match_an_independent_render(tiny, models):
    """Re-render every test image from the stored people and objects (full meshes, no culling): the occlusion
    ratios by type and the joint visibility agree with the stored labels."""
    out, _ = tiny
    layers, j30 = models
    db = _load(out / "3DPW" / "3DPW_latest_test.json")
    by_image = {}
    for ann in db["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    agree = total = 0
    for image in db["images"]:
        anns = by_image.get(image["id"], [])
        focal, princpt = _cam(image)
        size = (image["height"], image["width"])
        meshes, n_people = _scene_meshes(image, anns, layers)
        scene = render(meshes, focal, princpt, size)
        for k, ann in enumerate(anns):
            alone = render([meshes[k]], focal, princpt, size).person_index == 0
            hidden = alone & (scene.person_index != k)
            area = alone.sum()
            by_objects = (hidden & (scene.person_index >= n_people)).sum() / area
            by_people = (hidden & (scene.person_index >= 0) & (scene.person_index < n_people)).sum() / area
            assert by_objects == pytest.approx(ann["synthetic"]["object_occlusion"], abs=0.02)
            assert by_people == pytest.approx(ann["synthetic"]["person_occlusion"], abs=0.02)
            joints = j30[ann["smpl_param"]["gender"]] @ meshes[k][0]
            cols, rows = np.round(project(joints, focal, princpt)).astype(int).T
            inside = (cols >= 0) & (cols < size[1]) & (rows >= 0) & (rows < size[0])
            rows, cols = rows.clip(0, size[0] - 1), cols.clip(0, size[1] - 1)
            front = scene.person_index[rows, cols]
            covered = (front >= 0) & (front != k) & (scene.depth[rows, cols] < joints[:, 2] - VISIBILITY_MARGIN)
            visible = inside & ~covered
            agree += (visible == np.array(ann["synthetic"]["joints_visible"], bool)).sum()
            total += len(visible)
    assert agree >= 0.97 * total


def test_muco_split_round_trips_and_loads(tiny, models):
    out, manifest = tiny
    layers, j30 = models
    db = _load(out / "MuCo" / "MuCo-3DHP.json")
    fits = _load(out / "MuCo" / "smpl_param.json")
    images = {img["id"]: img for img in db["images"]}
    assert len(db["images"]) == len(db["annotations"]) == manifest["sizes"]["train"]
    for ann in db["annotations"]:
        focal, princpt = _cam(images[ann["image_id"]])
        joints_cam = np.array(ann["keypoints_cam"]) / 1000.0
        np.testing.assert_allclose(project(joints_cam, focal, princpt), ann["keypoints_img"], atol=1e-3)
        # The camera joints are the neutral SMPL fit's joints (checked on the names J30 has without H36M's help).
        joints = j30["neutral"] @ _mesh(layers, fits[str(ann["id"])], gender="neutral")
        for name in ("R_Hand", "L_Hand", "R_Toe", "L_Toe", "Head"):
            np.testing.assert_allclose(joints_cam[MUCO21.index(name)], joints[SMPL30.index(name)], atol=1e-5)
    h36m = np.load(out / "body_models" / "J_regressor_h36m_correct.npy")
    ds = MuCo(out, load_smpl(out / "body_models" / "smpl", "neutral"), j30["neutral"].astype(np.float32), h36m)
    assert len(ds) == manifest["sizes"]["train"]
    assert max(ds.fit_error_mm(i) for i in range(len(ds))) < 0.5
    inputs, targets, meta = ds[0]
    assert inputs["img"].shape == (3, 256, 256) and float(meta["is_valid_fit"]) == 1.0


def test_mscoco_split_is_the_training_people_in_2d(tiny, models):
    """The MSCOCO-format 2D split holds the MuCo split's people and images: keypoints are the fit's projected COCO
    joints, flagged 2 where the z-buffer sees them, 0 (and zeroed) outside the image, and the loader reads it with
    the face keypoints present and the joints COCO lacks absent from the input pose."""
    out, manifest = tiny
    layers, j30 = models
    muco = _load(out / "MuCo" / "MuCo-3DHP.json")
    coco = _load(out / "MSCOCO" / "annotations" / "person_keypoints_train2017.json")
    fits = _load(out / "MSCOCO" / "annotations" / "MSCOCO_train_SMPL_NeuralAnnot.json")
    muco_fits = _load(out / "MuCo" / "smpl_param.json")
    assert [a["id"] for a in coco["annotations"]] == [a["id"] for a in muco["annotations"]]
    images = {img["id"]: img for img in muco["images"]}
    flags = []
    for ann in coco["annotations"]:
        img = images[ann["image_id"]]
        assert (out / "MSCOCO" / "images" / "train2017" / img["file_name"]).read_bytes() == \
            (out / "MuCo" / img["file_name"]).read_bytes()
        fit = fits[str(ann["id"])]
        assert fit["smpl_param"] == muco_fits[str(ann["id"])]
        joints = j30["neutral"] @ _mesh(layers, fit["smpl_param"], gender="neutral")
        xy = project(joints, fit["cam_param"]["focal"], fit["cam_param"]["princpt"])[COCO_IDX]
        keypoints = np.array(ann["keypoints"]).reshape(17, 3)
        v = keypoints[:, 2]
        visible = np.array(ann["synthetic"]["joints_visible"], bool)[COCO_IDX]
        inside = (xy[:, 0] >= 0) & (xy[:, 0] <= img["width"] - 1) & (xy[:, 1] >= 0) & (xy[:, 1] <= img["height"] - 1)
        np.testing.assert_allclose(keypoints[v > 0, :2], xy[v > 0], atol=1e-3)
        assert (keypoints[v == 0, :2] == 0).all()
        assert ((v == 2) == (visible & inside)).all() and (v[~inside] == 0).all()
        flags += v.tolist()
    assert 2 in flags
    ds = MSCOCO(out, load_smpl(out / "body_models" / "smpl", "neutral"), j30["neutral"].astype(np.float32))
    assert len(ds) == manifest["sizes"]["train"]
    inputs, targets, meta = ds[0]
    assert float(meta["is_valid_fit"]) == 1.0 and float(meta["is_3D"]) == 0.0
    present = np.asarray(inputs["joints_mask"]).reshape(-1) > 0
    assert not present[[SMPL30.index(n) for n in ("Head_top", "L_Hand", "R_Toe")]].any()
    assert present[[SMPL30.index(n) for n in COCO17]].any()


def test_images_look_like_scenes(tiny):
    out, _ = tiny
    db = _load(out / "3DPW" / "3DPW_latest_test.json")
    img = db["images"][0]
    image = cv2.imread(str(out / "3DPW" / "imageFiles" / img["sequence"] / img["file_name"]))
    assert image.shape == (img["height"], img["width"], 3)
    assert 30 < image.mean() < 230 and image.std() > 15


def test_numpy_skinning_matches_the_smpl_layer(random_body_model_dir):
    """Bodies.forward (numpy) against common.body.body_model.SMPLLayer, on a model with pose blend shapes."""
    extra = np.load(random_body_model_dir / "J_regressor_extra.npy")
    h36m = np.load(random_body_model_dir / "J_regressor_h36m_correct.npy")
    bodies = Bodies(random_body_model_dir / "smpl", extra, h36m, genders=("neutral",))
    assert np.any(bodies.layers["neutral"].arrays["posedirs"])
    rng = np.random.default_rng(0)
    poses, betas = rng.normal(0, 0.4, (3, 72)), rng.normal(0, 1, (3, 10))
    verts, joints = bodies.forward("neutral", poses, betas)
    with torch.no_grad():
        expected = bodies.layers["neutral"].double()(torch.tensor(poses), torch.tensor(betas)).numpy()
    np.testing.assert_allclose(verts, expected, atol=1e-6)
    np.testing.assert_allclose(joints, np.einsum("jv,nvc->njc", bodies.j30["neutral"], expected), atol=1e-6)


def test_knees_and_elbows_bend_one_way():
    rng = np.random.default_rng(0)
    for _ in range(60):
        for family in POSE_FAMILIES:
            pose = sample_body_pose(rng, family).reshape(23, 3)
            rot = {name: Rotation.from_rotvec(pose[i]).as_matrix() for i, name in enumerate(SMPL30[1:24])}
            for side in ("L_", "R_"):
                shin = rot[side + "Knee"] @ [0.0, -1.0, 0.0]  # SMPL frame: y up, z forward
                assert shin[2] <= 1e-9  # the shin swings backwards only
                forearm = rot[side + "Elbow"] @ [1.0 if side == "L_" else -1.0, 0.0, 0.0]
                assert forearm[2] >= -1e-9  # the forearm swings forwards only
            assert np.all(np.linalg.norm(pose, axis=1) < np.deg2rad(170))


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "manifest.json"}


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*hold no person")  # two test images may have no object-occluded person
def test_deterministic_reusable_and_safe(tmp_path, monkeypatch):
    sizes = {"n_train": 2, "n_test": 2, "n_crowd": 1}
    first = generate(tmp_path / "a", seed=3, **sizes)
    # The same output from two worker processes, each split shared out one image per task.
    monkeypatch.setattr("embedded.generate.CHUNK_IMAGES", 1)
    second = generate(tmp_path / "b", seed=3, workers=2, **sizes)
    files_a = _files(tmp_path / "a")
    assert files_a == _files(tmp_path / "b")
    assert first["counts"] == second["counts"]

    # A matching manifest: nothing is rewritten.
    stamp = (tmp_path / "a" / "3DPW" / "3DPW_latest_test.json").stat().st_mtime_ns
    assert generate(tmp_path / "a", seed=3, **sizes) == first
    assert (tmp_path / "a" / "3DPW" / "3DPW_latest_test.json").stat().st_mtime_ns == stamp

    # A bigger split keeps the earlier images; another seed changes everything.
    generate(tmp_path / "b", seed=3, n_train=2, n_test=3, n_crowd=1)
    files_b = _files(tmp_path / "b")
    test_images = [p for p in files_a if p.parts[:2] == ("3DPW", "imageFiles") and "synthetic_test" in str(p)]
    assert len(test_images) == 2 and all(files_b[p] == files_a[p] for p in test_images)
    assert len([p for p in files_b if p.suffix == ".jpg" and "synthetic_test" in str(p)]) == 3
    generate(tmp_path / "c", seed=4, **sizes)
    files_c = _files(tmp_path / "c")
    for name in ("3DPW/3DPW_latest_test.json", "MuCo/MuCo-3DHP.json",
                 "MSCOCO/annotations/person_keypoints_train2017.json"):
        key = next(p for p in files_a if str(p) == name)
        assert files_c[key] != files_a[key]

    # A directory with data the generator did not write is refused.
    (tmp_path / "real" / "3DPW").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="refusing"):
        generate(tmp_path / "real", **sizes)


@pytest.mark.filterwarnings("ignore:.*hold no person")
def test_detector_failures_change_only_hidden_joints_of_the_input_poses(tmp_path, monkeypatch):
    """With detector_failures the images and ground truth stay byte-identical; the input poses change only on
    joints another surface hides (and on their twins when a limb swaps), and every kind of failure occurs."""
    monkeypatch.setattr(detections, "FAILURE_ONTO_OCCLUDER", 0.6)  # more failures of each kind in a few images
    sizes = {"n_train": 1, "n_test": 12, "n_crowd": 2}
    plain = generate(tmp_path / "plain", seed=5, **sizes)
    failing = generate(tmp_path / "failing", seed=5, detector_failures=True, **sizes)
    assert failing["detector_failures"] and not plain["detector_failures"]
    files_plain, files_failing = _files(tmp_path / "plain"), _files(tmp_path / "failing")
    training = ("MuCo", "MSCOCO")
    assert [p for p in files_plain if files_plain[p] != files_failing[p]] and all(
        files_plain[p] == files_failing[p] for p in files_plain if p.suffix == ".jpg" or p.parts[0] in training)
    kinds = {"onto_person": 0, "onto_object": 0, "missed": 0, "swapped": 0}
    for name in ("3DPW_latest_test.json", "3DPW_latest_validation.json"):
        before = {a["id"]: a for a in _load(tmp_path / "plain" / "3DPW" / name)["annotations"]}
        for ann in _load(tmp_path / "failing" / "3DPW" / name)["annotations"]:
            old = before[ann["id"]]
            assert ann["smpl_param"] == old["smpl_param"] and ann["bbox"] == old["bbox"]
            record = ann["synthetic"]["openpose_noise"]["occlusion_failures"]
            new_pose, old_pose = (np.reshape(a["openpose_result"], (18, 3)) for a in (ann, old))
            changed = np.flatnonzero(np.any(new_pose != old_pose, axis=1))
            visible = np.array(ann["synthetic"]["joints_visible"], bool)[OPENPOSE_IDX]
            # Only hidden joints fail; a swap also moves the visible twin of a hidden joint.
            assert set(changed) <= set(np.flatnonzero(~visible)) | set(record["swapped"])
            assert not (set(record["onto_person"]) | set(record["onto_object"])) & set(np.flatnonzero(visible))
            for kind in kinds:
                kinds[kind] += len(record[kind])
    assert all(count > 0 for count in kinds.values()), kinds
