import cv2
import numpy as np
import pytest
import torch

from common.body.joint_sets import COCO17, MUCO21, SMPL30, flip_pairs
from data.posefix import ERROR_TYPES, UNTOUCHED
from data.preprocessing import AugConfig
from data.train_sample import SMPLFit, TrainSampleBuilder, input_pose_noise, read_rgb
from tests.muco_format import muco_ground_truth

WIDTH, HEIGHT = 320, 240
FOCAL = (300.0, 300.0)  # fx = fy: a rotation about the optical axis then rotates the projection rigidly
PRINCPT = (163.3, 117.6)  # deliberately not the image centre

INPUT_KEYS = {"img", "joints", "joints_mask"}
TARGET_KEYS = {"orig_joint_img", "fit_joint_img", "orig_joint_cam", "fit_joint_cam", "pose_param", "shape_param"}
META_KEYS = {"orig_joint_valid", "orig_joint_trunc", "fit_param_valid", "fit_joint_trunc", "is_valid_fit", "is_3D"}
SHAPES = {"img": (3, 256, 256), "joints": (30, 2), "joints_mask": (30, 1), "orig_joint_img": (30, 3),
          "fit_joint_img": (30, 3), "orig_joint_cam": (30, 3), "fit_joint_cam": (30, 3), "pose_param": (72,),
          "shape_param": (10,), "orig_joint_valid": (30, 1), "orig_joint_trunc": (30, 1), "fit_param_valid": (72,),
          "fit_joint_trunc": (30, 1), "is_valid_fit": (), "is_3D": ()}
# SMPL30 joints that MuCo annotates (all but Neck, the 5 face joints, Chest, Torso, the thoraxes)
MUCO_IN_SMPL30 = [SMPL30.index(n) for n in MUCO21 if n in SMPL30]


def _smpl(layer, pose, shape, trans=(0.0, 0.0, 0.0)):
    """Vertices (V, 3) float64 metres, run directly on the body model."""
    with torch.no_grad():
        verts = layer(*(torch.tensor(np.asarray(v), dtype=torch.float32)[None] for v in (pose, shape, trans)))
    return verts[0].double().numpy()


def _project(points, focal=FOCAL, princpt=PRINCPT):
    return points[:, :2] / points[:, 2:] * np.asarray(focal) + np.asarray(princpt)


def _person(body, seed=0, trans=(0.1, 0.05, 4.5)):
    """A person in MUCO21 whose ground truth is derived from its SMPL fit: dict with the builder's arguments."""
    layer, j30, h36m = body
    rng = np.random.default_rng(seed)
    pose = rng.normal(0.0, 0.2, 72)
    pose[:3] = [np.pi + 0.1, 0.2, -0.1]
    shape = rng.normal(0.0, 0.5, 10)
    trans = np.asarray(trans, dtype=np.float64)
    joints_cam = muco_ground_truth(_smpl(layer, pose, shape, trans), j30, h36m)  # metres
    joints_img = _project(joints_cam)
    (x0, y0), (x1, y1) = joints_img.min(0), joints_img.max(0)
    return {"joints_img": joints_img, "joints_cam": joints_cam, "bbox": np.array([x0, y0, x1 - x0, y1 - y0]),
            "valid": np.ones(len(MUCO21)), "pose": pose, "shape": shape, "trans": trans}


def _image(seed=0):
    rng = np.random.default_rng(seed)
    xs, ys = np.meshgrid(np.linspace(0, 1, WIDTH), np.linspace(0, 1, HEIGHT))
    img = np.stack([200 * xs, 200 * ys, 100 + 50 * xs * ys], axis=-1) + rng.uniform(0, 40, (HEIGHT, WIDTH, 3))
    return img.astype(np.uint8)


def _build(body, person, aug=None, augment=True, seed=0, image=None, fit=True, with_3d=True, check=None,
           builder_kwargs=None, **kwargs):
    layer, j30, _ = body
    builder = TrainSampleBuilder(layer, j30, **(builder_kwargs or {}))
    smpl_fit = SMPLFit(person["pose"], person["shape"], person["trans"], FOCAL, PRINCPT, check) if fit else None
    return builder(_image() if image is None else image, person["bbox"], person["joints_img"], person["valid"],
                   MUCO21, np.random.default_rng(seed), augment, joints_cam=person["joints_cam"] if with_3d else None,
                   smpl_fit=smpl_fit, aug=aug, return_geometry=True, **kwargs)


def _aug(scale=1.0, rot=0.0, flip=False, gains=(1.0, 1.0, 1.0)):
    return AugConfig(scale=scale, rot_deg=rot, color_gains=np.asarray(gains, np.float32), do_flip=flip)


def _to_smpl30(joints_muco):
    out = np.zeros((30,) + joints_muco.shape[1:])
    for i, name in enumerate(MUCO21):
        if name in SMPL30:
            out[SMPL30.index(name)] = joints_muco[i]
    return out


def _affine(points, trans):
    return points @ np.asarray(trans, np.float64)[:, :2].T + np.asarray(trans, np.float64)[:, 2]


def _mirror_2d(joints, pairs, width=WIDTH):
    out = np.array(joints, dtype=np.float64, copy=True)
    out[:, 0] = width - 1 - out[:, 0]
    for a, b in pairs:
        out[[a, b]] = out[[b, a]]
    return out


@pytest.mark.parametrize("with_3d,fit", [(True, True), (False, False)])
def test_fields_shapes_and_dtypes(body, with_3d, fit):
    inputs, targets, meta, _ = _build(body, _person(body), with_3d=with_3d, fit=fit)
    assert set(inputs) == INPUT_KEYS and set(targets) == TARGET_KEYS and set(meta) == META_KEYS
    for group in (inputs, targets, meta):
        for key, value in group.items():
            assert isinstance(value, np.ndarray) and value.dtype == np.float32, key
            assert value.shape == SHAPES[key], key
    assert 0.0 <= inputs["img"].min() and inputs["img"].max() <= 1.0 and inputs["img"].max() > 0.5
    assert meta["is_3D"] == float(with_3d) and meta["is_valid_fit"] == float(fit)
    np.testing.assert_array_equal(inputs["joints_mask"], meta["orig_joint_trunc"])
    batch = torch.utils.data.default_collate([(inputs, targets, meta)] * 2)
    assert batch[2]["is_3D"].shape == (2,) and batch[2]["is_3D"].dtype == torch.float32


def test_fit_param_valid_masks_ankles_toes_wrists_hands(body):
    _, _, meta, _ = _build(body, _person(body))
    unsupervised = {"L_Ankle", "R_Ankle", "L_Toe", "R_Toe", "L_Wrist", "R_Wrist", "L_Hand", "R_Hand"}
    expected = np.repeat([0.0 if name in unsupervised else 1.0 for name in SMPL30[:24]], 3)
    np.testing.assert_array_equal(meta["fit_param_valid"], expected)


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("rot", [0.0, 25.0])
def test_joints_follow_the_image_through_the_crop(body, flip, rot):
    person = _person(body)
    wrist = person["joints_img"][MUCO21.index("L_Wrist")]
    xs, ys = np.meshgrid(np.arange(WIDTH), np.arange(HEIGHT))
    blob = np.exp(-((xs - wrist[0]) ** 2 + (ys - wrist[1]) ** 2) / (2 * 2.0**2))
    image = np.repeat((255 * blob)[..., None], 3, axis=2).astype(np.uint8)
    inputs, targets, _, geometry = _build(body, person, aug=_aug(1.1, rot, flip), image=image)

    # The annotated 2D joints (mirrored first when flipped), through the crop affine, scaled 256 -> 64.
    joints = _mirror_2d(person["joints_img"], flip_pairs(MUCO21)) if flip else person["joints_img"]
    expected = _to_smpl30(_affine(joints, geometry.img2bb) / 4)
    np.testing.assert_allclose(targets["orig_joint_img"][MUCO_IN_SMPL30, :2], expected[MUCO_IN_SMPL30], atol=1e-3)
    # The image moved with them: the blob drawn at the left wrist is where the (relabelled) wrist joint is.
    label = SMPL30.index("R_Wrist" if flip else "L_Wrist")
    peak = np.unravel_index(inputs["img"][0].argmax(), inputs["img"][0].shape)[::-1]
    np.testing.assert_allclose(peak, targets["orig_joint_img"][label, :2] * 4, atol=1.5)


def _rotation_z(deg):
    c, s = np.cos(np.deg2rad(deg)), np.sin(np.deg2rad(deg))
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _similarity_residual(source, target):
    """Max residual of the least-squares fit target ~ a * source + t (a scalar, t a 2D translation)."""
    n = len(source)
    design = np.zeros((2 * n, 3))
    design[0::2, 0], design[1::2, 0] = source[:, 0], source[:, 1]
    design[0::2, 1], design[1::2, 2] = 1, 1
    solution, *_ = np.linalg.lstsq(design, target.reshape(-1), rcond=None)
    return np.abs(design @ solution - target.reshape(-1)).max(), solution[0]


@pytest.mark.parametrize("rot", [30.0, -50.0])
def test_rotated_3d_targets_project_onto_the_rotated_crop(body, rot):
    # The crop turns the image by -rot about the box centre; the 3D targets must turn about the camera axis by
    # the same angle. Then the rotated joints, put back at the rotated root, project (camera with fx = fy) onto
    # the crop joints up to a scale and a shift (the crop's zoom and its centring on the box).
    person = _person(body)
    _, targets, meta, _ = _build(body, person, aug=_aug(1.2, rot))
    root = person["joints_cam"][MUCO21.index("Pelvis")]
    rows = [i for i in MUCO_IN_SMPL30 if meta["orig_joint_valid"][i, 0]]
    for cam_key, img_key in (("orig_joint_cam", "orig_joint_img"), ("fit_joint_cam", "fit_joint_img")):
        rotated_root = root if cam_key == "orig_joint_cam" else None
        if rotated_root is None:  # the fit's own root: its J30 pelvis
            _, j30, _ = body
            rotated_root = (j30 @ _smpl(body[0], person["pose"], person["shape"], person["trans"]))[0]
        residual, scale = _similarity_residual(
            _project(targets[cam_key][rows] + _rotation_z(-rot) @ rotated_root), targets[img_key][rows, :2])
        assert residual < 1e-3 and scale > 0, cam_key
    # The opposite rotation does not fit: the check can fail.
    residual, _ = _similarity_residual(_project(targets["orig_joint_cam"][rows] + _rotation_z(rot) @ root),
                                       targets["orig_joint_img"][rows, :2])
    assert residual > 0.05


def test_depth_bins_and_depth_truncation(body):
    person = _person(body)
    hand = MUCO21.index("L_Hand")
    person["joints_cam"][hand, 2] = person["joints_cam"][MUCO21.index("Pelvis"), 2] + 1.2  # beyond +-1 m
    _, targets, meta, geometry = _build(body, person, aug=_aug())
    relative = _to_smpl30(person["joints_cam"] - person["joints_cam"][MUCO21.index("Pelvis")])
    np.testing.assert_allclose(targets["orig_joint_img"][MUCO_IN_SMPL30, 2],
                               (relative[MUCO_IN_SMPL30, 2] / 1.0 + 1) / 2 * 64, atol=1e-4)
    np.testing.assert_allclose(targets["orig_joint_cam"][MUCO_IN_SMPL30], relative[MUCO_IN_SMPL30], atol=1e-6)
    crop = _to_smpl30(_affine(person["joints_img"], geometry.img2bb))
    inside = (crop >= 0).all(1) & (crop < 256).all(1)
    assert inside[SMPL30.index("L_Hand")]  # inside the crop, cut by depth only
    assert meta["orig_joint_trunc"][SMPL30.index("L_Hand"), 0] == 0
    assert meta["orig_joint_valid"][SMPL30.index("L_Hand"), 0] == 1


@pytest.mark.parametrize("with_3d", [True, False])
def test_truncation_is_zero_exactly_for_joints_outside_the_crop(body, with_3d):
    person = _person(body)
    top = np.argsort(person["joints_img"][:, 1])[:8]  # box around the 8 highest joints only
    (x0, y0), (x1, y1) = person["joints_img"][top].min(0), person["joints_img"][top].max(0)
    person["bbox"] = np.array([x0, y0, x1 - x0, y1 - y0])
    person["valid"][top[0]] = 0  # an unannotated joint is never kept
    _, targets, meta, geometry = _build(body, person, aug=_aug(), with_3d=with_3d)
    crop = _to_smpl30(_affine(person["joints_img"], geometry.img2bb))
    valid = _to_smpl30(person["valid"][:, None])[:, 0]
    expected = valid * (crop >= 0).all(1) * (crop < 256).all(1)
    rows = MUCO_IN_SMPL30
    assert 0 < expected[rows].sum() < len(rows) - 1  # some joints in, some out
    np.testing.assert_array_equal(meta["orig_joint_trunc"][rows, 0], expected[rows])
    np.testing.assert_array_equal(meta["orig_joint_trunc"][[i for i in range(30) if i not in rows]], 0)


def test_2d_sample_has_visibility_depth_and_no_3d_targets(body):
    person = _person(body)
    person["valid"][MUCO21.index("R_Knee")] = 0
    _, targets, meta, _ = _build(body, person, aug=_aug(), with_3d=False, fit=False)
    np.testing.assert_array_equal(targets["orig_joint_img"][:, 2], meta["orig_joint_valid"][:, 0])
    assert meta["orig_joint_valid"][SMPL30.index("R_Knee"), 0] == 0
    assert meta["orig_joint_valid"][SMPL30.index("L_Knee"), 0] == 1
    for key in ("orig_joint_cam", "fit_joint_img", "fit_joint_cam", "pose_param", "shape_param"):
        assert not targets[key].any(), key
    assert not meta["fit_joint_trunc"].any() and meta["is_valid_fit"] == 0 and meta["is_3D"] == 0


@pytest.mark.parametrize("aug", [_aug(), _aug(0.9, -35.0, True, (1.1, 0.9, 1.0)), _aug(1.2, 40.0, False)])
def test_fit_targets_agree_with_the_body_model(body, aug):
    layer, j30, _ = body
    person = _person(body)
    _, targets, meta, geometry = _build(body, person, aug=aug)
    # pose_param / shape_param (flipped and rotated with the sample) give back the fit's root-relative joints.
    joints = j30 @ _smpl(layer, targets["pose_param"], targets["shape_param"])
    np.testing.assert_allclose(targets["fit_joint_cam"], joints - joints[0], atol=2e-5)
    np.testing.assert_allclose(targets["shape_param"], person["shape"], atol=1e-6)
    if not aug.do_flip:  # the annotated fit's joints, projected with the dataset camera and cropped
        fit_joints = j30 @ _smpl(layer, person["pose"], person["shape"], person["trans"])
        np.testing.assert_allclose(targets["fit_joint_img"][:, :2], _affine(_project(fit_joints), geometry.img2bb) / 4,
                                   atol=1e-3)
        np.testing.assert_allclose(targets["fit_joint_img"][:, 2], ((fit_joints - fit_joints[0])[:, 2] + 1) / 2 * 64,
                                   atol=1e-4)
    inside = ((targets["fit_joint_img"] >= 0) & (targets["fit_joint_img"] < 64)).all(1)
    np.testing.assert_array_equal(meta["fit_joint_trunc"][:, 0], inside)
    assert meta["is_valid_fit"] == 1


def test_large_betas_reset_only_the_shape_target(body):
    """Official loaders: the fit's mesh and joints come from the original betas; only shape_param is zeroed."""
    layer, j30, _ = body
    person = _person(body)
    person["shape"] = person["shape"].copy()
    person["shape"][3] = -3.5
    seen = []
    _, targets, meta, geometry = _build(body, person, aug=_aug(), check=lambda verts: seen.append(verts) or True)
    assert not targets["shape_param"].any()
    fit_verts = _smpl(layer, person["pose"], person["shape"], person["trans"])
    joints = j30 @ fit_verts
    np.testing.assert_allclose(targets["fit_joint_cam"], joints - joints[0], atol=2e-5)
    np.testing.assert_allclose(targets["fit_joint_img"][:, :2], _affine(_project(joints), geometry.img2bb) / 4,
                               atol=1e-3)
    np.testing.assert_allclose(seen[0], fit_verts, atol=1e-5)
    reset = j30 @ _smpl(layer, person["pose"], np.zeros(10))
    assert np.abs(targets["fit_joint_cam"] - (reset - reset[0])).max() > 1e-3  # the betas matter for this model


@pytest.mark.parametrize("verdict", [True, False])
def test_fit_check_sees_the_annotated_mesh(body, verdict):
    layer = body[0]
    person = _person(body)
    seen = []

    def check(vertices):
        seen.append(vertices)
        return verdict

    _, _, meta, _ = _build(body, person, aug=_aug(1.0, 30.0, True), check=check)
    assert meta["is_valid_fit"] == float(verdict) and len(seen) == 1
    np.testing.assert_allclose(seen[0], _smpl(layer, person["pose"], person["shape"], person["trans"]), atol=1e-5)


def _mirror_fit(layer, j30, pose, shape, trans):
    """The mirrored annotation of an SMPL fit: left/right rotations swapped, y and z axis-angle components negated,
    translation moved along x so that the root appears at the mirrored image position of the original root."""
    mirrored = np.asarray(pose, np.float64).reshape(24, 3).copy()
    for name in SMPL30[:24]:
        if name.startswith("L_"):
            left, right = SMPL30.index(name), SMPL30.index("R_" + name[2:])
            mirrored[[left, right]] = mirrored[[right, left]]
    mirrored[:, 1:] *= -1
    root = (j30 @ _smpl(layer, pose, shape, trans))[0]
    root_mirrored = (j30 @ _smpl(layer, mirrored.reshape(72), shape, trans))[0]
    target_x = WIDTH - 1 - _project(root[None])[0, 0]
    new_x = (target_x - PRINCPT[0]) / FOCAL[0] * root_mirrored[2]
    return mirrored.reshape(72), np.asarray(trans) + [new_x - root_mirrored[0], 0.0, 0.0]


def test_flipping_twice_gives_the_sample_back(body):
    # A sample built from the mirrored image and annotation with flipping equals the unflipped original.
    # The random body model is not left/right symmetric, so this holds only if flipping is exactly self-inverse.
    layer, j30, _ = body
    person = _person(body)
    pairs = flip_pairs(MUCO21)
    mirrored = dict(person)
    mirrored["joints_img"] = _mirror_2d(person["joints_img"], pairs)
    mirrored["joints_cam"] = _mirror_2d(person["joints_cam"], pairs, width=1)  # x -> -x, swapped
    mirrored["bbox"] = person["bbox"].copy()
    mirrored["bbox"][0] = WIDTH - person["bbox"][0] - person["bbox"][2]
    mirrored["pose"], mirrored["trans"] = _mirror_fit(layer, j30, person["pose"], person["shape"], person["trans"])
    image = _image()

    gains = (1.1, 0.95, 0.85)
    original = _build(body, person, aug=_aug(1.1, 20.0, False, gains), image=image, bbox_scale=1.1)
    twice = _build(body, mirrored, aug=_aug(1.1, 20.0, True, gains), image=image[:, ::-1], bbox_scale=1.1)
    for group_a, group_b in zip(original[:3], twice[:3]):
        for key in group_a:
            np.testing.assert_allclose(group_b[key], group_a[key], atol=2e-3 if key == "img" else 1e-4, err_msg=key)
    # ... and the flipped sample really differs from the unflipped one of the mirrored data.
    once = _build(body, mirrored, aug=_aug(1.1, 20.0, False, gains), image=image[:, ::-1], bbox_scale=1.1)
    assert np.abs(once[1]["fit_joint_img"] - original[1]["fit_joint_img"]).max() > 1


def test_randomness_comes_only_from_the_given_generator(body):
    person = _person(body)
    state = np.random.get_state()
    first = _build(body, person, seed=5)
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state()[1:], state[1:])), "global RNG used"
    again = _build(body, person, seed=5)
    other = _build(body, person, seed=6)
    for key in ("img", "joints"):
        np.testing.assert_array_equal(first[0][key], again[0][key])
    np.testing.assert_array_equal(first[3].aug.color_gains, again[3].aug.color_gains)
    assert (first[3].aug.scale, first[3].aug.rot_deg) == (again[3].aug.scale, again[3].aug.rot_deg)
    assert not np.array_equal(first[0]["joints"], other[0]["joints"])


def test_without_augmentation_the_input_pose_is_the_ground_truth(body):
    inputs, targets, _, geometry = _build(body, _person(body), augment=False)
    assert not geometry.aug.do_flip and geometry.aug.rot_deg == 0 and geometry.aug.scale == 1
    np.testing.assert_array_equal(inputs["joints"], targets["orig_joint_img"][:, :2])


def test_input_pose_noise():
    joints = np.random.default_rng(0).uniform(10, 50, (30, 2)).astype(np.float32)
    valid = np.ones((30, 1), np.float32)
    noisy = input_pose_noise(joints, valid, np.random.default_rng(1))
    np.testing.assert_array_equal(noisy, input_pose_noise(joints, valid, np.random.default_rng(1)))
    assert noisy.shape == (30, 2) and noisy.dtype == np.float32
    assert 0.3 < np.median(np.linalg.norm(noisy - joints, axis=1)) < 3  # a few heatmap pixels
    thrown = input_pose_noise(joints, valid, np.random.default_rng(1), jitter_px=0.0, miss_prob=1.0, swap_prob=0.0)
    distance = np.linalg.norm(thrown - joints, axis=1)
    assert (distance >= 4 - 1e-4).all() and (distance <= 10 + 1e-4).all()
    swapped = input_pose_noise(joints, valid, np.random.default_rng(1), jitter_px=0.0, miss_prob=0.0, swap_prob=1.0)
    np.testing.assert_array_equal(swapped, _mirror_2d(joints, flip_pairs(SMPL30), width=1)[:, :2] * [-1, 1])


def test_missing_image_path_names_the_file(body, tmp_path):
    layer, j30, _ = body
    person = _person(body)
    missing = tmp_path / "nowhere.jpg"
    with pytest.raises(FileNotFoundError, match="nowhere.jpg"):
        TrainSampleBuilder(layer, j30)(missing, person["bbox"], person["joints_img"], person["valid"], MUCO21,
                                       np.random.default_rng(0), True)


def _neighbour(person, shift):
    """Another person's MUCO21 joints (x, y, visibility), the target's pose shifted by `shift` image pixels."""
    return np.concatenate([person["joints_img"] + np.asarray(shift), np.ones((len(MUCO21), 1))], axis=1)


@pytest.mark.parametrize("flip", [False, True])
def test_near_joints_follow_the_target_into_the_crop(body, flip):
    person = _person(body)
    width = person["bbox"][2]
    near = _neighbour(person, (0.3 * width, 4.0))  # box IoU ~0.5: overlapping
    far = _neighbour(person, (1.2 * width, 0.0))  # boxes do not intersect: not a PoseFix neighbour
    _, _, _, geometry = _build(body, person, aug=_aug(1.1, 20.0, flip), near_joints=[far, near])
    assert len(geometry.near_joints) == 1
    pairs = flip_pairs(MUCO21)
    expected = _mirror_2d(near[:, :2], pairs) if flip else near[:, :2]
    np.testing.assert_allclose(geometry.near_joints[0][:, :2], _affine(expected, geometry.img2bb), atol=1e-3)
    np.testing.assert_array_equal(geometry.near_joints[0][:, 2], 1.0)


def _oks_radius(level, area, name):
    sigma = {"Shoulder": 0.079, "Elbow": 0.072, "Wrist": 0.062, "Hip": 0.107, "Knee": 0.087,
             "Ankle": 0.089}[name.split("_")[-1]]
    return np.sqrt(-2 * np.log(level) * area) * 2 * sigma


def test_posefix_is_the_default_input_pose_and_works_in_the_crop_frame(body):
    person = _person(body)
    coco_rows = [SMPL30.index(n) for n in MUCO21 if n in COCO17]
    other_rows = [i for i in MUCO_IN_SMPL30 if i not in coco_rows]
    kinds_seen = set()
    for seed in range(12):
        aug = _aug(0.9, -25.0, seed % 2 == 1)
        inputs, targets, _, geometry = _build(body, person, aug=aug, seed=seed)
        gt = targets["orig_joint_img"][:, :2]
        # Joints COCO does not have (pelvis, head top, toes, ...) stay exactly at the ground truth.
        np.testing.assert_array_equal(inputs["joints"][other_rows], gt[other_rows])
        # The tight box's area in crop pixels: the crop maps crop_bbox side * scale onto 256 pixels.
        crop_px_per_image_px = 256 / (geometry.bbox[2] * aug.scale)
        area = person["bbox"][2] * person["bbox"][3] * crop_px_per_image_px ** 2
        for i, name in enumerate(MUCO21):
            kind = geometry.pose_kinds[i]
            if name not in COCO17:
                assert kind == UNTOUCHED
                continue
            kinds_seen.add(ERROR_TYPES[kind])
            row = SMPL30.index(name)
            distance_crop = 4 * np.linalg.norm(inputs["joints"][row] - gt[row])  # heatmap -> crop pixels
            if ERROR_TYPES[kind] == "good":
                assert distance_crop <= _oks_radius(0.85, area, name) + 1e-3
            elif ERROR_TYPES[kind] == "jitter":
                assert _oks_radius(0.85, area, name) - 1e-3 <= distance_crop <= _oks_radius(0.5, area, name) + 1e-3
    assert {"good", "jitter"} <= kinds_seen


def test_overlapping_people_make_swaps_possible(body):
    person = _person(body)
    near = _neighbour(person, (0.25 * person["bbox"][2], 0.0))
    swaps = {"with": 0, "without": 0}
    for seed in range(60):
        for key, extra in (("with", [near]), ("without", None)):
            _, _, _, geometry = _build(body, person, aug=_aug(), seed=seed, near_joints=extra)
            swaps[key] += int((geometry.pose_kinds == ERROR_TYPES.index("swap")).sum())
    assert swaps["with"] > 0 and swaps["without"] == 0


def test_near_joints_must_match_the_joint_set(body):
    person = _person(body)
    with pytest.raises(ValueError, match="near_joints"):
        _build(body, person, aug=_aug(), near_joints=[np.zeros((17, 3))])


def test_occluders_change_only_the_image(body):
    person = _person(body)
    covered_joint = False
    for seed in range(20):
        plain = _build(body, person, aug=_aug(1.1, 10.0), seed=seed)
        occluded = _build(body, person, aug=_aug(1.1, 10.0), seed=seed, builder_kwargs={"occlusion_prob": 1.0})
        mask = occluded[3].occluder_mask
        assert plain[3].occluder_mask is None and mask is not None and mask.shape == (256, 256)
        # Targets, masks and the input pose are those of the unoccluded sample, also for joints under an occluder.
        for group_plain, group_occluded in zip(plain[:3], occluded[:3]):
            for key in group_plain:
                if key != "img":
                    np.testing.assert_array_equal(group_occluded[key], group_plain[key], err_msg=key)
        changed = np.abs(occluded[0]["img"] - plain[0]["img"]).max(0) > 0
        assert changed.any() and not (changed & (mask == 0)).any()
        crop = np.round(plain[1]["orig_joint_img"][:, :2] * 4).astype(int)
        for row in np.flatnonzero(plain[2]["orig_joint_trunc"][:, 0]):
            x, y = crop[row]
            covered_joint |= bool(mask[y, x] > 0.5)
    assert covered_joint  # some annotated joint was under an occluder and kept its target


def test_occlusion_failures_change_the_input_pose_only_where_the_occluder_hides_a_joint(body):
    person = _person(body)
    kinds = {"onto_occluder": 0, "missed": 0, "swapped": 0}
    for seed in range(30):
        kwargs = {"occlusion_prob": 1.0}
        plain = _build(body, person, aug=_aug(1.1, 10.0), seed=seed, builder_kwargs=kwargs)
        failing = _build(body, person, aug=_aug(1.1, 10.0), seed=seed,
                         builder_kwargs={**kwargs, "occlusion_failures": True})
        mask, record = failing[3].occluder_mask, failing[3].occlusion_failures
        assert plain[3].occlusion_failures is None
        # The same crop, occluder and targets: only the input pose changes.
        np.testing.assert_array_equal(failing[0]["img"], plain[0]["img"])
        for group_plain, group_failing in zip(plain[1:3], failing[1:3]):
            for key in group_plain:
                np.testing.assert_array_equal(group_failing[key], group_plain[key], err_msg=key)
        crop_truth = plain[1]["orig_joint_img"][:, :2] * 4  # heatmap frame (64) -> crop pixels (256)
        on_occluder = np.zeros(len(SMPL30), bool)
        for j in np.flatnonzero(plain[2]["orig_joint_trunc"][:, 0]):
            x, y = np.round(crop_truth[j]).astype(int)
            on_occluder[j] = 0 <= x < 256 and 0 <= y < 256 and mask[y, x] > 0.5
        changed = (failing[0]["joints"] != plain[0]["joints"]).any(1) | \
            (failing[0]["joints_mask"] != plain[0]["joints_mask"]).any(1)
        allowed = on_occluder.copy()
        allowed[record["swapped"]] = True
        assert not (changed & ~allowed).any()
        for j in set(record["onto_occluder"]) - set(record["swapped"]):  # a swap moves the joint to its partner
            x, y = np.round(failing[0]["joints"][j] * 4).astype(int)
            assert mask[y, x] > 0.5 and on_occluder[j]
        for j in set(record["missed"]) - set(record["swapped"]):
            assert failing[0]["joints_mask"][j, 0] == 0 and on_occluder[j]
        for kind in kinds:
            kinds[kind] += len(record[kind])
    assert all(count > 0 for count in kinds.values()), kinds


def test_occlusion_is_off_by_default_and_checked(body):
    layer, j30, _ = body
    for seed in range(10):
        assert _build(body, _person(body), seed=seed)[3].occluder_mask is None
    with pytest.raises(ValueError, match="occlusion_prob"):
        TrainSampleBuilder(layer, j30, occlusion_prob=1.5)


def _jpeg_with_exif_orientation(path, img, orientation):
    """A JPEG of `img` (RGB) whose EXIF says to display it rotated (orientation 6 = 90 degrees clockwise)."""
    ok, jpeg = cv2.imencode(".jpg", img[..., ::-1])
    assert ok
    tiff = (b"MM\x00\x2a\x00\x00\x00\x08" + b"\x00\x01"  # big-endian TIFF header, one IFD entry
            + b"\x01\x12\x00\x03\x00\x00\x00\x01" + orientation.to_bytes(2, "big") + b"\x00\x00"  # Orientation
            + b"\x00\x00\x00\x00")  # no next IFD
    app1 = b"Exif\x00\x00" + tiff
    data = jpeg.tobytes()
    path.write_bytes(data[:2] + b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big") + app1 + data[2:])


def test_dataset_images_ignore_the_exif_orientation(tmp_path):
    """Annotations refer to the stored pixel grid, so loaders read images as stored (as the official ones do)."""
    img = _image()
    path = tmp_path / "rotated.jpg"
    _jpeg_with_exif_orientation(path, img, 6)
    upright = cv2.imread(str(path))[..., ::-1]  # OpenCV's default turns it as the EXIF says
    assert upright.shape[:2] == (WIDTH, HEIGHT)
    pixels = read_rgb(path)
    assert pixels.shape == (HEIGHT, WIDTH, 3)
    np.testing.assert_array_equal(pixels, np.rot90(upright, k=1))  # the stored grid, turned back


@pytest.mark.parametrize("verdict", [True, False])
def test_a_validity_decided_by_the_dataset_gives_the_same_targets_as_the_mesh_check(body, verdict):
    person = _person(body)
    _, by_mesh, meta_mesh, _ = _build(body, person, aug=_aug(1.1, 20.0, True), check=lambda vertices: verdict)
    _, decided, meta_decided, _ = _build(body, person, aug=_aug(1.1, 20.0, True), check=verdict)
    assert meta_decided["is_valid_fit"] == meta_mesh["is_valid_fit"] == float(verdict)
    for key in by_mesh:
        np.testing.assert_allclose(decided[key], by_mesh[key], atol=1e-4, err_msg=key)
