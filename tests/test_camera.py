"""Crop camera <-> image camera placement: the crop warp as a pinhole camera, the root's exact placement, the
size-preserving depth, round trips, and the residual perspective error of the other points."""
import numpy as np
import pytest

from common.camera import (
    crop_camera_in_image,
    crop_to_image,
    default_image_camera,
    image_to_crop,
    translation_crop_to_image,
)
from data.preprocessing import affine_points, patch_transform

CROP_FOCAL, CROP_PRINCPT, CROP_SHAPE = (5000.0, 5000.0), (128.0, 128.0), (256, 256)
IMG_FOCAL, IMG_PRINCPT = (800.0, 800.0), (320.0, 240.0)  # default_image_camera of a 480 x 640 image


def translation_image_to_crop(cam_trans_img, root_img, bb2img, crop_focal, crop_princpt, img_focal, img_princpt):
    """The inverse of translation_crop_to_image: (3,) or (N, 3) SMPL translation in the image camera and the root
    joint of that mesh -> the translation in the crop camera (what the model would have to predict)."""
    root_img = np.asarray(root_img, dtype=np.float64)
    root_crop = image_to_crop(root_img, bb2img, crop_focal, crop_princpt, img_focal, img_princpt)
    return np.asarray(cam_trans_img, dtype=np.float64) + (root_crop - root_img)


def _bb2img(x, y, size):
    """bb2img of a square test-time crop box (xywh), from the data pipeline's own transform."""
    return patch_transform(x + size / 2, y + size / 2, size, size, 1.0, 0.0, CROP_SHAPE)[1]


def _crop_to_image_pixels(points_crop, bb2img):
    """Independent reference: project with the crop camera, then warp the crop pixels to the image."""
    uv = points_crop[:, :2] / points_crop[:, 2:] * np.array(CROP_FOCAL) + np.array(CROP_PRINCPT)
    return affine_points(uv, bb2img).astype(np.float64)


def _project(points, focal, princpt):
    return points[:, :2] / points[:, 2:] * np.array(focal) + np.array(princpt)


def _body_cloud(rng, root, n=400):
    """Points of a person-sized box (0.5 x 1.7 x 0.3 m) around `root`, camera frame."""
    return root + (rng.random((n, 3)) - 0.5) * np.array([0.5, 1.7, 0.3])


def test_default_image_camera():
    assert default_image_camera(480, 640) == ((800.0, 800.0), (320.0, 240.0))


def test_crop_camera_seen_through_bb2img_is_a_pinhole_camera():
    rng = np.random.default_rng(0)
    bb2img = _bb2img(100.0, 50.0, 200.0)
    focal, princpt = crop_camera_in_image(bb2img, CROP_FOCAL, CROP_PRINCPT)
    np.testing.assert_allclose(focal, [5000 * 200 / 256] * 2, rtol=1e-6)
    np.testing.assert_allclose(princpt, [200.0, 150.0], atol=1e-4)  # the box centre
    points = _body_cloud(rng, np.array([0.1, -0.2, 40.0]))
    np.testing.assert_allclose(_project(points, focal, princpt), _crop_to_image_pixels(points, bb2img), atol=1e-3)


def test_root_keeps_its_pixel_and_its_image_size():
    rng = np.random.default_rng(1)
    roots = np.array([[0.12, -0.3, 42.0], [-0.5, 0.2, 30.0], [0.0, 0.0, 48.0]])
    bb2img = np.stack([_bb2img(100.0, 50.0, 200.0), _bb2img(400.0, 10.0, 150.0), _bb2img(-30.0, 200.0, 300.0)])
    placed = crop_to_image(roots, bb2img, CROP_FOCAL, CROP_PRINCPT, IMG_FOCAL, IMG_PRINCPT)
    expected = np.concatenate([_crop_to_image_pixels(r[None], w) for r, w in zip(roots, bb2img)])
    np.testing.assert_allclose(_project(placed, IMG_FOCAL, IMG_PRINCPT), expected, atol=1e-3)
    sizes = np.array([200.0, 150.0, 300.0])
    np.testing.assert_allclose(placed[:, 2], roots[:, 2] * 800.0 / (5000.0 * sizes / 256), rtol=1e-6)
    # Offsets at the root's depth (the body's extent across the image) project to the same pixels as via the crop.
    for root, root_img, warp in zip(roots, placed, bb2img):
        offsets = (rng.random((50, 3)) - 0.5) * np.array([1.0, 1.8, 0.0])
        np.testing.assert_allclose(_project(root_img + offsets, IMG_FOCAL, IMG_PRINCPT),
                                   _crop_to_image_pixels(root + offsets, warp), atol=1e-3)


def test_single_point_and_batch_agree_and_round_trip():
    rng = np.random.default_rng(2)
    roots = rng.normal([0, 0, 40], [0.5, 0.5, 5], size=(6, 3))
    bb2img = np.stack([_bb2img(*rng.uniform(0, 300, 2), rng.uniform(80, 300)) for _ in roots])
    batch = crop_to_image(roots, bb2img, CROP_FOCAL, CROP_PRINCPT, IMG_FOCAL, IMG_PRINCPT)
    single = crop_to_image(roots[2], bb2img[2], CROP_FOCAL, CROP_PRINCPT, IMG_FOCAL, IMG_PRINCPT)
    np.testing.assert_allclose(single, batch[2], rtol=1e-12)
    back = image_to_crop(batch, bb2img, CROP_FOCAL, CROP_PRINCPT, IMG_FOCAL, IMG_PRINCPT)
    np.testing.assert_allclose(back, roots, rtol=1e-9, atol=1e-9)

    # Translations: the mesh moves rigidly with its root.
    root_offset = np.array([0.0, -0.2, 0.01])
    trans_crop = roots - root_offset
    trans_img = translation_crop_to_image(trans_crop, roots, bb2img, CROP_FOCAL, CROP_PRINCPT, IMG_FOCAL,
                                          IMG_PRINCPT)
    np.testing.assert_allclose(trans_img + root_offset, batch, atol=1e-9)
    np.testing.assert_allclose(translation_image_to_crop(trans_img, trans_img + root_offset, bb2img, CROP_FOCAL,
                                                         CROP_PRINCPT, IMG_FOCAL, IMG_PRINCPT), trans_crop, atol=1e-9)


def test_other_points_follow_the_documented_perspective_error():
    """A placed body projects like the crop except for its depth relief: to first order in dz / Z', a point at
    depth offset dz from the root, which would project to x0 at the root's depth, moves by
    -(dz / Z') ((x0 - c) - (x0 - c_eff) f / f_eff) pixels."""
    rng = np.random.default_rng(3)
    root = np.array([0.3, 0.1, 45.0])
    bb2img = _bb2img(420.0, 120.0, 180.0)  # off the image centre
    points = _body_cloud(rng, root)
    root_img = crop_to_image(root, bb2img, CROP_FOCAL, CROP_PRINCPT, IMG_FOCAL, IMG_PRINCPT)
    placed = points + (root_img - root)
    error = _project(placed, IMG_FOCAL, IMG_PRINCPT) - _crop_to_image_pixels(points, bb2img)

    eff_focal, eff_princpt = 5000 * 180 / 256, np.array([510.0, 210.0])
    dz = (points[:, 2] - root[2])[:, None]
    x0 = _project(placed - dz * np.array([0.0, 0.0, 1.0]), IMG_FOCAL, IMG_PRINCPT)
    first_order = -dz / root_img[2] * ((x0 - IMG_PRINCPT) - (x0 - eff_princpt) * 800.0 / eff_focal)
    assert np.abs(first_order).max() > 1.0  # a real effect at this size and position
    np.testing.assert_allclose(error, first_order, atol=0.05 * np.abs(first_order).max())

    # With the image camera equal to the crop camera in image pixels, placement is exact for every point.
    same = crop_to_image(root, bb2img, CROP_FOCAL, CROP_PRINCPT, (eff_focal,) * 2, eff_princpt)
    np.testing.assert_allclose(_project(points + (same - root), (eff_focal,) * 2, eff_princpt),
                               _crop_to_image_pixels(points, bb2img), atol=1e-3)


def test_rotated_crops_are_rejected():
    _, bb2img = patch_transform(200.0, 150.0, 100.0, 100.0, 1.0, 30.0, CROP_SHAPE)
    with pytest.raises(ValueError, match="rotated"):
        crop_to_image(np.array([0.0, 0.0, 40.0]), bb2img, CROP_FOCAL, CROP_PRINCPT, IMG_FOCAL, IMG_PRINCPT)
