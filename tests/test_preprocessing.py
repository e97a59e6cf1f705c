import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from common.body.joint_sets import SMPL30, SMPL30_FLIP_PAIRS
from data.preprocessing import (
    affine_points,
    apply_color_gains,
    bbox_is_usable,
    depth_to_bin,
    flip_joints_2d,
    flip_smpl_pose,
    generate_patch_image,
    get_aug_config,
    get_bbox,
    process_bbox,
    rotate_root_pose,
    to_heatmap_frame,
    trunc_mask,
)


def test_process_bbox_test_mode_by_hand():
    # Clipped to x2 = x + w - 1: 40 x 20 about (30, 30) -> square 40 -> x1.1 = 44.
    np.testing.assert_allclose(process_bbox([10, 20, 41, 21], 320, 240), [8, 8, 44, 44], atol=1e-5)
    # A box over the left/top edge is moved inside, not cut: (0, 0)-(60, 35) about (30, 17.5) -> 66 x 66.
    np.testing.assert_allclose(process_bbox([-10, -5, 61, 36], 320, 240), [-3, -15.5, 66, 66], atol=1e-5)
    # Over the right/bottom edge it is cut: (300, 200)-(319, 239) -> 19 x 39 about (309.5, 219.5) -> 42.9.
    np.testing.assert_allclose(process_bbox([300, 200, 61, 61], 320, 240), [288.05, 198.05, 42.9, 42.9], atol=1e-4)
    # A 4:3 aspect widens the height-limited side.
    np.testing.assert_allclose(process_bbox([0, 0, 41, 41], 320, 240, aspect_ratio=4 / 3, scale=1.0),
                               [-20 / 3, 0, 160 / 3, 40], atol=1e-5)
    # Test mode keeps a box that is a line (it becomes a square) and rejects one outside the image.
    np.testing.assert_allclose(process_bbox([10, 10, 21, 1], 320, 240, scale=1.0), [10, 0, 20, 20], atol=1e-5)
    assert process_bbox([400, 10, 20, 20], 320, 240) is None


def test_process_bbox_training_mode():
    assert process_bbox([10, 10, 0, 20], 320, 240, scale=None, rng=np.random.default_rng(0)) is None
    assert process_bbox([10, 10, 21, 1], 320, 240, scale=None, rng=np.random.default_rng(0)) is None
    with pytest.raises(ValueError, match="rng"):
        process_bbox([10, 10, 21, 21], 320, 240, scale=None)
    sides = [process_bbox([100, 100, 41, 21], 320, 240, scale=None, rng=np.random.default_rng(seed))[2]
             for seed in range(200)]
    assert 40 <= min(sides) and max(sides) < 48 and max(sides) - min(sides) > 6  # U[1.0, 1.2) x 40
    again = process_bbox([100, 100, 41, 21], 320, 240, scale=None, rng=np.random.default_rng(0))
    assert again[2] == sides[0]


def test_get_bbox():
    joints = np.array([[10, 20], [30, 60], [1000, -1000], [20, 40]], dtype=np.float32)
    # Valid joints span x 10..30, y 20..60: centre (20, 40), size 20 x 40 -> x1.2 = 24 x 48.
    np.testing.assert_allclose(get_bbox(joints, [1, 1, 0, 1]), [8, 16, 24, 48], atol=1e-5)
    with pytest.raises(ValueError, match="no valid joint"):
        get_bbox(joints, np.zeros(4))


def _blob_image(width, height, center, sigma=4.0):
    xs, ys = np.meshgrid(np.arange(width), np.arange(height))
    blob = np.exp(-((xs - center[0]) ** 2 + (ys - center[1]) ** 2) / (2 * sigma ** 2))
    return np.repeat((255 * blob)[..., None], 3, axis=2).astype(np.uint8)


def _centroid(patch):
    weights = patch[..., 0].astype(np.float64)
    ys, xs = np.mgrid[: patch.shape[0], : patch.shape[1]]
    return np.array([(weights * xs).sum(), (weights * ys).sum()]) / weights.sum()


def test_affine_maps_box_to_crop():
    img = np.zeros((240, 320, 3), np.uint8)
    bbox = [100, 50, 80, 80]
    _, img2bb, bb2img = generate_patch_image(img, bbox, 1.0, 0.0, False, (256, 256))
    corners = np.array([[140, 90], [100, 50], [180, 130], [100, 130]])
    np.testing.assert_allclose(affine_points(corners, img2bb), [[128, 128], [0, 0], [256, 256], [0, 256]], atol=1e-3)
    points = np.random.default_rng(0).uniform(0, 256, (10, 2))
    np.testing.assert_allclose(affine_points(affine_points(points, bb2img), img2bb), points, atol=1e-3)
    # Rotation by +90 deg: the image point left of the box centre lands at the bottom of the crop, the
    # image point below it at the crop's right edge; scale 0.5 zooms in twice.
    _, img2bb, _ = generate_patch_image(img, bbox, 0.5, 90.0, False, (256, 256))
    np.testing.assert_allclose(affine_points([[140, 90], [120, 90], [140, 110]], img2bb),
                               [[128, 128], [128, 256], [256, 128]], atol=1e-3)


@pytest.mark.parametrize("scale, rot, flip", [(1.0, 0.0, False), (1.2, 25.0, False), (0.8, -40.0, True)])
def test_points_and_image_warp_agree(scale, rot, flip):
    width, height, center = 320, 240, (140.0, 100.0)
    img = _blob_image(width, height, center)
    patch, img2bb, _ = generate_patch_image(img, [90, 60, 100, 80], scale, rot, flip, (256, 256))
    assert patch.dtype == np.float32 and patch.shape == (256, 256, 3)
    point = np.array([center])
    if flip:
        point = flip_joints_2d(point, width, pairs=())
    np.testing.assert_allclose(_centroid(patch), affine_points(point, img2bb)[0], atol=0.3)


def test_flipping_twice_is_identity():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    bbox = np.array([90, 60, 100, 80], dtype=np.float32)
    mirrored_bbox = bbox.copy()
    mirrored_bbox[0] = 320 - 1 - (bbox[0] + bbox[2])
    plain = generate_patch_image(img, bbox, 1.1, 10.0, False, (256, 256))
    twice = generate_patch_image(img[:, ::-1], mirrored_bbox, 1.1, 10.0, True, (256, 256))
    for a, b in zip(plain, twice):
        np.testing.assert_allclose(a, b, atol=1e-3)

    joints = rng.uniform(0, 300, (30, 3)).astype(np.float32)
    flipped = flip_joints_2d(joints, 320, SMPL30_FLIP_PAIRS)
    assert flipped[SMPL30.index("L_Wrist"), 0] == pytest.approx(319 - joints[SMPL30.index("R_Wrist"), 0])
    np.testing.assert_array_equal(flipped[SMPL30.index("L_Wrist"), 1:], joints[SMPL30.index("R_Wrist"), 1:])
    np.testing.assert_allclose(flip_joints_2d(flipped, 320, SMPL30_FLIP_PAIRS), joints, atol=1e-4)


def test_heatmap_frame_and_masks():
    points = np.array([[0, 0, 0.7], [128, 64, 0.2], [255.9, 256, 1.0]], dtype=np.float32)
    np.testing.assert_allclose(to_heatmap_frame(points, (256, 256), (64, 64, 64)),
                               [[0, 0, 0.7], [32, 16, 0.2], [63.975, 64, 1.0]], rtol=1e-6)
    np.testing.assert_allclose(to_heatmap_frame(points[:, :2], (256, 128), (64, 64))[1], [64, 16])

    joints = np.array([[0, 0, 0], [63.9, 10, 63.9], [64, 10, 10], [10, -0.1, 10], [10, 10, 64], [5, 5, 5]])
    valid = np.array([1, 1, 1, 1, 1, 0])
    np.testing.assert_array_equal(trunc_mask(joints, valid, (64, 64, 64), check_depth=True)[:, 0], [1, 1, 0, 0, 0, 0])
    mask = trunc_mask(joints, valid[:, None], (64, 64, 64), check_depth=False)
    assert mask.shape == (6, 1) and mask.dtype == np.float32
    np.testing.assert_array_equal(mask[:, 0], [1, 1, 0, 0, 1, 0])


def test_depth_to_bin():
    np.testing.assert_allclose(depth_to_bin([-1.0, 0.0, 0.5, 1.0], 2, 64), [0, 32, 48, 64])
    np.testing.assert_allclose(depth_to_bin([-1000.0, 250.0], 2000, 64), [0, 40])


def test_aug_config_distribution():
    draws = [get_aug_config(np.random.default_rng(seed)) for seed in range(2000)]
    scales = np.array([d.scale for d in draws])
    rots = np.array([d.rot_deg for d in draws])
    gains = np.stack([d.color_gains for d in draws])
    assert scales.min() >= 0.75 and scales.max() <= 1.25 and np.isclose(scales.mean(), 1.0, atol=0.02)
    assert np.mean(scales == 1.25) > 0.1  # N(0,1) clipped at +-1: ~16% at each bound
    assert np.abs(rots).max() <= 60 and np.mean(rots == 60) > 0.005
    assert np.mean(rots == 0) == pytest.approx(0.4, abs=0.04)
    assert gains.min() >= 0.8 and gains.max() < 1.2 and gains.shape == (2000, 3)
    assert np.mean([d.do_flip for d in draws]) == pytest.approx(0.5, abs=0.04)
    assert get_aug_config(np.random.default_rng(7)).scale == get_aug_config(np.random.default_rng(7)).scale


def test_color_gains_clip():
    patch = np.full((2, 2, 3), 200, np.float32)
    out = apply_color_gains(patch, [1.2, 1.0, 0.5])
    np.testing.assert_allclose(out[0, 0], [240, 200, 100])
    np.testing.assert_allclose(apply_color_gains(np.full((1, 1, 3), 230, np.float32), [1.2, 1.2, 1.2]), 255)


def test_smpl_pose_flip_mirrors_rotations():
    pose = np.random.default_rng(2).normal(0, 0.5, 72).astype(np.float32)
    flipped = flip_smpl_pose(pose)
    mirror = np.diag([-1.0, 1.0, 1.0])  # x -> -x in the camera frame
    for joint, source in ((0, 0), (1, 2), (2, 1), (21, 20), (15, 15)):
        expected = mirror @ Rotation.from_rotvec(pose[3 * source: 3 * source + 3]).as_matrix() @ mirror
        np.testing.assert_allclose(Rotation.from_rotvec(flipped[3 * joint: 3 * joint + 3]).as_matrix(), expected,
                                   atol=1e-6)
    np.testing.assert_allclose(flip_smpl_pose(flipped), pose)


def test_root_rotation_matches_the_crop_rotation():
    pose = np.random.default_rng(3).normal(0, 0.5, 72).astype(np.float32)
    rotated = rotate_root_pose(pose, 30.0)
    rot_aug = Rotation.from_euler("z", -30.0, degrees=True).as_matrix()
    np.testing.assert_allclose(Rotation.from_rotvec(rotated[:3]).as_matrix(),
                               rot_aug @ Rotation.from_rotvec(pose[:3]).as_matrix(), atol=1e-5)
    np.testing.assert_array_equal(rotated[3:], pose[3:])
    # The same rotation turns image directions as the crop warp does (camera x, y = image x, y).
    _, img2bb, _ = generate_patch_image(np.zeros((240, 320, 3), np.uint8), [90, 60, 100, 100], 1.0, 30.0, False,
                                        (256, 256))
    crop_direction = img2bb[:, :2] @ np.array([1.0, 0.0])
    np.testing.assert_allclose(crop_direction / np.linalg.norm(crop_direction), rot_aug[:2, :2] @ [1.0, 0.0],
                               atol=1e-6)


def test_bbox_is_usable_is_the_official_load_time_test():
    assert bbox_is_usable([10, 20, 41, 21], 320, 240)
    assert bbox_is_usable([-30, -5, 61, 36], 320, 240)  # partly outside: clipped, kept
    assert not bbox_is_usable([10, 10, 0, 20], 320, 240)  # no area
    assert not bbox_is_usable([325, 10, 20, 20], 320, 240)  # right of the image
    assert not bbox_is_usable([10, 250, 20, 20], 320, 240)  # below the image
    # The official clipping moves a box over the left/top edge inside instead of cutting it (x1 = max(0, x) keeps
    # the width), so even a box wholly above the image passes.
    assert bbox_is_usable([10, -50, 20, 20], 320, 240)


def test_crop_is_interpolated_from_the_unrounded_image():
    """Bilinear sampling of the original pixel values, not rounded to 8 bits (the official loaders warp float32)."""
    ys, xs = np.mgrid[:240, :320]
    img = np.stack([0.37 * xs + 0.21 * ys, 200 - 0.29 * xs, 60 + 0.43 * ys], axis=-1).round().astype(np.uint8)
    patch, _, bb2img = generate_patch_image(img, [90.3, 60.7, 101.1, 80.9], 1.0, 17.0, False, (256, 256))
    grid = np.stack(np.mgrid[20:236:7, 20:236:7][::-1], axis=-1).reshape(-1, 2)  # (x, y) crop pixels
    src = affine_points(grid, bb2img).astype(np.float64)
    x0, y0 = np.floor(src).astype(int).T
    fx, fy = (src - np.floor(src)).T[..., None]
    f = img.astype(np.float64)
    expected = ((1 - fx) * (1 - fy) * f[y0, x0] + fx * (1 - fy) * f[y0, x0 + 1] + (1 - fx) * fy * f[y0 + 1, x0]
                + fx * fy * f[y0 + 1, x0 + 1])
    ours = patch[grid[:, 1], grid[:, 0]]
    # OpenCV quantises the sampling position to 1/32 pixel: < 0.02 grey levels on these slopes; an 8-bit warp would
    # be off by up to 0.5.
    assert np.abs(ours - expected).max() < 0.05
    rounded = cv2.warpAffine(img, cv2.invertAffineTransform(bb2img), (256, 256), flags=cv2.INTER_LINEAR)
    assert np.abs(rounded[grid[:, 1], grid[:, 0]] - expected).max() > 0.3  # the test tells the two apart


@pytest.mark.parametrize("bbox, scale, rot, flip", [([90.3, 60.7, 101.1, 80.9], 1.0, 0.0, False),
                                                    ([-40.0, 150.0, 120.0, 140.0], 1.2, 35.0, False),
                                                    ([250.5, -20.0, 90.0, 60.0], 0.8, -20.0, True),
                                                    ([-10.0, -10.0, 340.0, 260.0], 1.1, 0.0, True),
                                                    ([2.0, 3.0, 0.5, 0.5], 1.0, 10.0, False)])
def test_crop_equals_the_warp_of_the_whole_float_image(bbox, scale, rot, flip):
    """Converting only the sampled region is a speed measure: the crop is the float32 image's warp."""
    img = np.random.default_rng(3).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    patch, img2bb, _ = generate_patch_image(img, bbox, scale, rot, flip, (256, 256))
    source = np.ascontiguousarray(img[:, ::-1] if flip else img, dtype=np.float32)
    whole = cv2.warpAffine(source, img2bb, (256, 256), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                           borderValue=0)
    np.testing.assert_allclose(patch, whole, atol=1e-3)
    assert patch.dtype == np.float32


def test_crop_outside_the_image_is_black():
    img = np.full((240, 320, 3), 200, np.uint8)
    patch, _, _ = generate_patch_image(img, [500.0, 400.0, 50.0, 50.0], 1.0, 0.0, False, (64, 64))
    assert patch.shape == (64, 64, 3) and not patch.any()
