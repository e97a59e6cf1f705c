"""The demo end to end on a synthetic mannequin scene: inputs built as the 3DPW loader builds them, ground-truth
people placed back onto their image silhouettes, the written files (overlay, side view, OBJ, parameters), video
in -> video out with the same frame count, and the clear errors (offline detector, missing checkpoint)."""
import json
import urllib.error
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from common.body.body_model import joint_regressor_30, load_regressor, load_smpl
from common.body.joint_sets import COCO17, SMPL30, map_joints
from common.camera import default_image_camera
from common.errors import run_entry_point
from common.renderer import amodal_masks, project, render
from common.training.checkpoint import FORMAT, save_atomic, to_official_state_dict
from data.keypoints_io import person_from_keypoints
from data.preprocessing import patch_transform
from data.pw3d import PW3D
from main import demo
from main.config import load_config
from tests.pw3d_format import IMAGE_SIZE, toy_setup, write_tiny_pw3d
from tests.test_camera import translation_image_to_crop
from tools.render_mannequin import demo_poses

try:
    import trimesh
except ImportError:  # pragma: no cover - trimesh is in requirements.txt
    trimesh = None

HEIGHT, WIDTH = 240, 320
IMG_FOCAL, IMG_PRINCPT = default_image_camera(HEIGHT, WIDTH)  # f = 400 px, principal point (160, 120)
CROP_FOCAL, CROP_PRINCPT, CROP_SHAPE, HM_SHAPE = (5000.0, 5000.0), (128.0, 128.0), (256, 256), (64, 64, 64)
BACKGROUND = 128
# (body pose from tools.render_mannequin.demo_poses, yaw in degrees, SMPL translation in the image camera, m).
PEOPLE = ((1, 25.0, (-0.3, 0.15, 4.0)), (2, -15.0, (0.05, 0.25, 5.5)))



def exit_status(main, argv):
    """The status a user sees: main run as its `python -m` entry point (user errors end with status 2)."""
    with pytest.raises(SystemExit) as stop:
        run_entry_point(main, argv)
    return stop.value.code

def _camera_pose(body_index, yaw):
    """SMPL pose (72,) in the camera frame: the body turned by `yaw` about its vertical axis, then flipped from
    SMPL's y-up frame to the camera's y-down frame (180 degrees about x), so it stands upright facing the camera."""
    pose = demo_poses()[body_index].copy()
    root = Rotation.from_euler("x", 180, degrees=True) * Rotation.from_euler("y", yaw, degrees=True)
    pose[:3] = root.as_rotvec()
    return pose


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Mannequin body model, a 320 x 240 image of two people (the nearer one overlapping the other), their COCO
    keypoints file, the config overrides and a random-weights checkpoint in the official layout."""
    from embedded.mannequin import write_mannequin

    root = tmp_path_factory.mktemp("demo_world")
    paths = write_mannequin(root / "body_models")
    smpl = load_smpl(root / "body_models" / "smpl", "neutral")
    extra = load_regressor(paths["J_regressor_extra"], (9, 6890), "extra", "mannequin")
    j30 = joint_regressor_30(smpl.arrays["J_regressor"], extra).astype(np.float64)

    poses = np.stack([_camera_pose(b, yaw) for b, yaw, _ in PEOPLE])
    shapes = np.zeros((len(PEOPLE), 10))
    trans = np.array([t for _, _, t in PEOPLE])
    with torch.no_grad():
        verts = smpl(*(torch.tensor(a, dtype=torch.float32) for a in (poses, shapes, trans))).double().numpy()
    joints = np.einsum("jv,bvc->bjc", j30, verts)
    meshes = [(v, smpl.faces) for v in verts]
    background = np.full((HEIGHT, WIDTH, 3), BACKGROUND, np.uint8)
    scene = render(meshes, IMG_FOCAL, IMG_PRINCPT, (HEIGHT, WIDTH), colors=[(200, 140, 100)], background=background)
    image_path = root / "scene.png"
    cv2.imwrite(str(image_path), scene.image[..., ::-1])

    joints_2d = project(joints, IMG_FOCAL, IMG_PRINCPT)
    assert (joints_2d >= 0).all() and (joints_2d[..., 0] < WIDTH).all() and (joints_2d[..., 1] < HEIGHT).all()
    coco = [np.concatenate([map_joints(j, SMPL30, COCO17), np.full((17, 1), 2.0)], axis=1) for j in joints_2d]
    keypoints_path = root / "scene_keypoints_coco.json"
    keypoints_path.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "scene.png", "width": WIDTH, "height": HEIGHT}],
        "annotations": [{"id": k + 1, "image_id": 1, "category_id": 1, "keypoints": c.reshape(-1).tolist()}
                        for k, c in enumerate(coco)]}))

    overrides = [f"smpl_dir={root / 'body_models' / 'smpl'}", f"j_regressor_extra_path={paths['J_regressor_extra']}",
                 "resnet_type=18", "pose_head=rot6d", "device=cpu", "hidden_dim=64", "nheads=4", "dim_feedforward=128",
                 "voxel_dim_feedforward=128", "enc_layers=1", "dec_layers=2"]  # small and fast: random weights
    from main.build import build_model

    torch.manual_seed(0)
    model = build_model(load_config(None, overrides)).eval()
    ckpt = root / "random_official.pth.tar"
    save_atomic(to_official_state_dict(model, module_prefix=True), ckpt)
    return {"root": root, "smpl": smpl, "j30": j30, "poses": poses, "shapes": shapes, "trans": trans, "verts": verts,
            "joints": joints, "joints_2d": joints_2d, "coco": coco, "scene": scene, "image_path": image_path,
            "keypoints": keypoints_path, "overrides": overrides, "model": model, "ckpt": ckpt}


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


def _people(world):
    return [person_from_keypoints(c, "coco17", WIDTH, HEIGHT) for c in world["coco"]]


def _read_obj(path):
    """Vertices and 0-based faces of an OBJ, with trimesh when installed (what users will load it with)."""
    if trimesh is not None:
        mesh = trimesh.load(path, process=False)
        return np.asarray(mesh.vertices), np.asarray(mesh.faces)
    rows = [line.split() for line in Path(path).read_text().splitlines()]
    verts = np.array([[float(x) for x in r[1:4]] for r in rows if r and r[0] == "v"])
    faces = np.array([[int(x.split("/")[0]) - 1 for x in r[1:4]] for r in rows if r and r[0] == "f"])
    return verts, faces


class OracleJOTR(torch.nn.Module):
    """Stands in for JOTR with the ground truth: for each crop box it is given, the person whose image root is
    nearest the box centre, expressed in the crop camera by the inverse placement (common.camera)."""

    def __init__(self, world):
        super().__init__()
        self.body_model, self.world = world["smpl"], world
        self.focal, self.princpt, self.input_img_shape, self.output_hm_shape = CROP_FOCAL, CROP_PRINCPT, CROP_SHAPE, \
            HM_SHAPE

    def forward(self, img, joints, joints_mask, bbox):
        w = self.world
        roots_px = project(w["joints"][:, 0], IMG_FOCAL, IMG_PRINCPT)
        out = {k: [] for k in ("smpl_pose", "smpl_shape", "cam_trans", "mesh_cam_render", "smpl_mesh_cam",
                               "joint_cam")}
        for x, y, bw, bh in bbox.double().numpy():
            k = int(np.argmin(np.linalg.norm(roots_px - [x + bw / 2, y + bh / 2], axis=1)))
            bb2img = patch_transform(x + bw / 2, y + bh / 2, bw, bh, 1.0, 0.0, CROP_SHAPE)[1]
            trans = translation_image_to_crop(w["trans"][k], w["joints"][k, 0], bb2img, CROP_FOCAL, CROP_PRINCPT,
                                              IMG_FOCAL, IMG_PRINCPT)
            with torch.no_grad():
                mesh = self.body_model(*(torch.tensor(a, dtype=torch.float32)[None] for a in
                                         (w["poses"][k], w["shapes"][k], trans)))[0].double()
            joint_cam = torch.from_numpy(w["j30"]) @ mesh
            for key, value in (("smpl_pose", w["poses"][k]), ("smpl_shape", w["shapes"][k]), ("cam_trans", trans),
                               ("mesh_cam_render", mesh), ("smpl_mesh_cam", mesh - joint_cam[0]),
                               ("joint_cam", joint_cam - joint_cam[0])):
                out[key].append(torch.as_tensor(value, dtype=torch.float32))
        return {k: torch.stack(v) for k, v in out.items()}


def test_inputs_are_built_as_the_3dpw_loader_builds_them(tmp_path):
    data_dir = write_tiny_pw3d(tmp_path, toy_setup()[3])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pw3d = PW3D(data_dir, "3dpw")
    db = json.loads((Path(data_dir) / "3DPW_latest_test.json").read_text())
    openpose = {ann["id"]: np.asarray(ann["openpose_result"]).reshape(18, 3) for ann in db["annotations"]}
    compared = 0
    for idx, sample in enumerate(pw3d.samples):
        person = person_from_keypoints(openpose[sample.ann_id], "openpose18", *IMAGE_SIZE)
        if person is None:
            continue
        inputs, _, meta = pw3d[idx]
        image = demo.read_image(sample.img_path)
        prepared = demo.prepare_person(image, person, CROP_SHAPE, HM_SHAPE)
        np.testing.assert_array_equal(prepared["img"], inputs["img"].numpy())
        np.testing.assert_allclose(prepared["joints"], inputs["joints"].numpy(), atol=1e-6)
        np.testing.assert_array_equal(prepared["joints_mask"], inputs["joints_mask"].numpy())
        np.testing.assert_allclose(prepared["bb2img"], meta["bb2img_trans"].numpy(), atol=1e-6)
        compared += 1
    assert compared == 3


def test_ground_truth_in_the_crop_camera_covers_the_person_in_the_crop(world):
    """The inverse placement puts each person where the crop shows it: its mesh, rendered with the model's crop
    camera, covers the person's image silhouette warped into the crop, and its joints match the input joints.
    Not exactly: the crop camera (focal 5000) sees the body almost orthographically, the 400 px image camera with
    strong perspective at 4-5.5 m, so feet and hands that stick out in depth shift by a few pixels (common.camera;
    the bounds leave room for that, about IoU 0.84 and 0.91 here)."""
    image = demo.read_image(world["image_path"])
    masks = amodal_masks([(v, world["smpl"].faces) for v in world["verts"]], IMG_FOCAL, IMG_PRINCPT,
                         (HEIGHT, WIDTH))
    for k, person in enumerate(_people(world)):
        prepared = demo.prepare_person(image, person, CROP_SHAPE, HM_SHAPE)
        trans = translation_image_to_crop(world["trans"][k], world["joints"][k, 0], prepared["bb2img"], CROP_FOCAL,
                                          CROP_PRINCPT, IMG_FOCAL, IMG_PRINCPT)
        with torch.no_grad():
            mesh = world["smpl"](*(torch.tensor(a, dtype=torch.float32)[None] for a in
                                   (world["poses"][k], world["shapes"][k], trans)))[0].double().numpy()
        in_crop = render([(mesh, world["smpl"].faces)], CROP_FOCAL, CROP_PRINCPT, CROP_SHAPE).person_index >= 0
        img2bb = cv2.invertAffineTransform(prepared["bb2img"])
        expected = cv2.warpAffine(masks[k].astype(np.uint8), img2bb, CROP_SHAPE[::-1], flags=cv2.INTER_NEAREST) > 0
        assert expected.sum() > 3000
        assert _iou(in_crop, expected) > 0.8
        # Joints in the heatmap frame: the root exactly where the image shows it, the others (here the COCO
        # joints, which the input pose gives exactly) within the perspective difference.
        joints_hm = project(world["j30"] @ mesh, CROP_FOCAL, CROP_PRINCPT) * 64 / 256
        root_hm = cv2.transform(world["joints_2d"][k, None, :1], img2bb)[0, 0] * 64 / 256
        np.testing.assert_allclose(joints_hm[0], root_hm, atol=1e-3)
        coco = [SMPL30.index(name) for name in COCO17]
        assert prepared["joints_mask"][coco].all()
        error = np.linalg.norm(joints_hm[coco] - prepared["joints"][coco, :2], axis=1)
        assert np.median(error) < 0.5 and error.max() < 2.5  # heatmap pixels (1 = 4 crop pixels)


def test_ground_truth_people_land_on_their_silhouettes(world, tmp_path):
    """Acceptance: fed the ground truth (in the crop camera) through the demo's placement and overlay writer, the
    overlay covers exactly the people's pixels, the meshes and parameters are the ground truth in the image
    camera, and depth ordering matches the scene."""
    frame = demo.Frame("scene", demo.read_image(world["image_path"]))
    (summary,) = demo.run_demo(OracleJOTR(world), [frame], [_people(world)], tmp_path, device="cpu",
                               progress=False)
    overlay = cv2.imread(str(summary["overlay"]))[..., ::-1]
    covered = np.any(overlay != frame.image, axis=-1)
    gt_mask = world["scene"].person_index >= 0
    assert _iou(covered, gt_mask) > 0.95

    params = json.loads(summary["params_json"].read_text())
    assert params["focal"] == list(IMG_FOCAL) and params["princpt"] == list(IMG_PRINCPT)
    placed = []
    for k, person in enumerate(params["people"]):
        np.testing.assert_allclose(person["cam_trans"], world["trans"][k], atol=1e-4)
        np.testing.assert_allclose(person["joints_2d_pred"], world["joints_2d"][k], atol=0.02)
        verts, faces = _read_obj(summary["objs"][k])
        np.testing.assert_allclose(verts, world["verts"][k], atol=1e-4)
        np.testing.assert_array_equal(faces, world["smpl"].faces)
        placed.append(verts)
    _, result = demo.render_overlay(frame.image, np.stack(placed), world["smpl"].faces, IMG_FOCAL, IMG_PRINCPT)
    for k in range(len(PEOPLE)):  # the nearer person hides part of the farther one, as in the scene
        assert _iou(result.masks(2)[k], world["scene"].masks(2)[k]) > 0.95
    assert world["scene"].masks(2)[1].sum() < amodal_masks([(world["verts"][1], faces)], IMG_FOCAL, IMG_PRINCPT,
                                                           (HEIGHT, WIDTH))[0].sum()


def test_cli_on_an_image_writes_every_output(world, tmp_path):
    out = tmp_path / "out"
    code = demo.main(["--input", str(world["image_path"]), "--keypoints", str(world["keypoints"]), "--ckpt",
                      str(world["ckpt"]), "--out", str(out), "--side-view", "--batch-size", "1", *world["overrides"]])
    assert code == 0
    for name in ("scene_overlay.png", "scene_side.png"):
        picture = cv2.imread(str(out / name))
        assert picture.shape == (HEIGHT, WIDTH, 3)
    verts, faces = _read_obj(out / "scene_person1.obj")
    assert verts.shape == (6890, 3) and np.isfinite(verts).all()
    np.testing.assert_array_equal(faces, world["smpl"].faces)

    params = json.loads((out / "scene_params.json").read_text())
    assert params["image_size"] == [HEIGHT, WIDTH] and len(params["people"]) == 2
    shapes = {"smpl_pose": (72,), "smpl_shape": (10,), "cam_trans": (3,), "crop_cam_trans": (3,), "bbox": (4,),
              "joints_2d_input": (30, 3), "joints_2d_pred": (30, 2), "joints_3d": (30, 3), "focal": (2,),
              "princpt": (2,)}
    npz = np.load(out / "scene_params.npz")
    for k, person in enumerate(params["people"]):
        for key, shape in shapes.items():
            assert np.shape(person[key]) == shape, key
            if key not in ("focal", "princpt"):
                np.testing.assert_allclose(npz[key][k], person[key], rtol=1e-6, atol=1e-6)
        # The input pose as given (COCO joints), in SMPL-30 order, image pixels + confidence.
        given = np.asarray(person["joints_2d_input"])
        np.testing.assert_allclose(given[SMPL30.index("L_Shoulder")], world["coco"][k][COCO17.index("L_Shoulder")],
                                   atol=1e-4)
        # The OBJ is the SMPL mesh with the written parameters, in the image camera.
        with torch.no_grad():
            expected = world["smpl"](*(torch.tensor(person[key], dtype=torch.float32)[None] for key in
                                       ("smpl_pose", "smpl_shape", "cam_trans")))[0].numpy()
        np.testing.assert_allclose(_read_obj(out / f"scene_person{k}.obj")[0], expected, atol=1e-4)
        # The predicted 2D joints are the 3D joints seen by the image camera.
        np.testing.assert_allclose(person["joints_2d_pred"], project(np.asarray(person["joints_3d"]), IMG_FOCAL,
                                                                     IMG_PRINCPT), atol=1e-3)


def test_batch_size_does_not_change_the_results(world, tmp_path):
    frames = [demo.Frame(f"f{i}", demo.read_image(world["image_path"])) for i in range(2)]
    people = [_people(world), _people(world)[:1]]
    results = {}
    for batch_size in (1, 3):  # 3: the people of both frames in one batch
        summaries = demo.run_demo(world["model"], frames, people, tmp_path / str(batch_size), batch_size=batch_size,
                                  progress=False)
        results[batch_size] = [np.load(s["params_npz"]) for s in summaries]
    for one, three in zip(results[1], results[3]):
        for key in ("smpl_pose", "cam_trans"):
            np.testing.assert_allclose(one[key], three[key], rtol=1e-4, atol=1e-4)
        # Pixels: float32 sums in another order (batch 1 vs 3) differ by ~1e-4 px after the projection's x f / Z.
        np.testing.assert_allclose(one["joints_2d_pred"], three["joints_2d_pred"], rtol=1e-4, atol=1e-3)


def test_video_in_video_out_with_the_same_frame_count(world, tmp_path):
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 12.0, (WIDTH, HEIGHT))
    image = cv2.imread(str(world["image_path"]))
    for shift in (0, 2, 4):
        writer.write(np.roll(image, shift, axis=1))
    writer.release()
    # Frames 0 and 2 have keypoints (file names are frame indices); frame 1 has nobody.
    annotations = [{"image_id": i, "file_name": f"{i:06d}.jpg", "keypoints": world["coco"][0].reshape(-1).tolist()}
                   for i in (0, 2)]
    keypoints = tmp_path / "video_keypoints.json"
    keypoints.write_text(json.dumps(annotations))
    ckpt = tmp_path / "ours.pth.tar"  # our own checkpoint format this time
    save_atomic({"format": FORMAT, "model": world["model"].state_dict()}, ckpt)

    out = tmp_path / "out"
    code = demo.main(["--input", str(video), "--keypoints", str(keypoints), "--ckpt", str(ckpt), "--out", str(out),
                      *world["overrides"]])
    assert code == 0
    capture = cv2.VideoCapture(str(out / "clip_overlay.mp4"))
    frames = 0
    while capture.read()[0]:
        frames += 1
    assert frames == 3
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(12.0)
    assert capture.get(cv2.CAP_PROP_FRAME_WIDTH) == WIDTH and capture.get(cv2.CAP_PROP_FRAME_HEIGHT) == HEIGHT
    capture.release()
    counts = [len(json.loads((out / f"{i:06d}_params.json").read_text())["people"]) for i in range(3)]
    assert counts == [1, 0, 1]
    assert sorted(p.name for p in out.glob("*.obj")) == ["000000_person0.obj", "000002_person0.obj"]


def test_offline_without_keypoints_exits_with_instructions(world, tmp_path, monkeypatch, capsys):
    import torchvision.models.detection

    def no_network(**kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torchvision.models.detection, "keypointrcnn_resnet50_fpn", no_network)
    code = exit_status(demo.main, ["--input", str(world["image_path"]), "--ckpt", str(world["ckpt"]), "--out",
                                   str(tmp_path), *world["overrides"]])
    assert code == 2
    message = capsys.readouterr().err
    assert "--keypoints" in message and "OpenPose" in message and "TORCH_HOME" in message
    assert not list(tmp_path.iterdir())  # failed before writing anything


def test_clear_errors(world, tmp_path, capsys):
    base = ["--input", str(world["image_path"]), "--keypoints", str(world["keypoints"]), *world["overrides"]]
    assert exit_status(demo.main, [*base, "--ckpt", str(tmp_path / "nope.pth.tar")]) == 2
    message = capsys.readouterr().err
    assert "nope.pth.tar" in message and "checkpoint/" in message and "JOTR README" in message

    other = tmp_path / "other.json"
    other.write_text(json.dumps([{"file_name": "someone_else.png", "keypoints": [0] * 51}]))
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(folder / name), np.zeros((8, 8, 3), np.uint8))
    code = exit_status(demo.main, ["--input", str(folder), "--keypoints", str(other), "--ckpt", str(world["ckpt"]),
                                   *world["overrides"]])
    assert code == 2 and "someone_else.png" in capsys.readouterr().err

    assert exit_status(demo.main, ["--input", str(tmp_path / "missing.jpg"), "--ckpt", str(world["ckpt"])]) == 2
    assert "missing.jpg" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("x")
    assert exit_status(demo.main, ["--input", str(tmp_path / "notes.txt"), "--ckpt", str(world["ckpt"])]) == 2
    assert "unsupported file type" in capsys.readouterr().err


def test_side_view_turns_the_scene_about_its_vertical_axis():
    people = np.array([[[0.0, 0.0, 4.0], [0.0, -1.0, 4.0]], [[1.0, 0.0, 6.0], [1.0, -1.0, 6.0]]])
    turned = demo.side_view_meshes(people)
    centre = np.array([0.5, -0.5, 5.0])
    np.testing.assert_allclose(turned.mean(axis=(0, 1)), centre, atol=1e-12)
    # The farther person (+1 m in depth from the centre) moves to the right (+x) and comes to the centre's depth.
    np.testing.assert_allclose(turned[1, 0], [0.5 + 1.0, 0.0, 5.0 - 0.5], atol=1e-12)
    np.testing.assert_allclose(turned[:, 1, 1] - turned[:, 0, 1], [-1.0, -1.0])  # heights unchanged
