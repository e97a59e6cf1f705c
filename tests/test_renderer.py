"""The CPU renderer: coverage and depth against analytic projections, occlusion, masks, shading, overlay."""
import cv2
import numpy as np
import pytest

from common.renderer import amodal_masks, overlay, project, render, smpl_to_camera

FOCAL, PRINCPT, SIZE = (500.0, 480.0), (95.3, 70.6), (150, 200)  # (H, W)


def _pixel_centres(size):
    rows, cols = np.mgrid[:size[0], :size[1]]
    return np.stack([cols.ravel(), rows.ravel()], 1).astype(np.float64)


def _inside_polygon(polygon, size, margin=1e-3):
    """(H, W) mask of pixel centres inside a convex image polygon (N, 2) by OpenCV's point-in-polygon test, and
    a mask of the centres closer than `margin` px to its outline (where the rasteriser's tie rule decides)."""
    contour = polygon.astype(np.float32).reshape(-1, 1, 2)
    signed = np.array([cv2.pointPolygonTest(contour, (float(u), float(v)), True) for u, v in _pixel_centres(size)])
    return (signed > 0).reshape(size), (np.abs(signed) < margin).reshape(size)


def _cube(centre, half, rotation):
    corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64) * half
    faces = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                      [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
    return corners @ rotation.T + centre, faces


def _rotation(rx, ry):
    return cv2.Rodrigues(np.array([rx, 0.0, 0.0]))[0] @ cv2.Rodrigues(np.array([0.0, ry, 0.0]))[0]


def test_triangle_covers_its_projection_with_perspective_depth():
    tri = np.array([[-0.31, -0.22, 2.0], [0.27, -0.05, 2.6], [-0.05, 0.29, 3.1]])
    result = render([(tri, np.array([[0, 1, 2]]))], FOCAL, PRINCPT, SIZE)
    expected, border = _inside_polygon(project(tri, FOCAL, PRINCPT), SIZE)
    assert expected.sum() > 500 and not border.any()
    np.testing.assert_array_equal(result.person_index >= 0, expected)
    np.testing.assert_array_equal(result.masks(1)[0], expected)
    # Depth: where the pixel's ray meets the triangle's plane (n . X = d, X = t * ((u-cx)/fx, (v-cy)/fy, 1)).
    normal = np.cross(tri[1] - tri[0], tri[2] - tri[0])
    uv = _pixel_centres(SIZE)
    rays = np.stack([(uv[:, 0] - PRINCPT[0]) / FOCAL[0], (uv[:, 1] - PRINCPT[1]) / FOCAL[1], np.ones(len(uv))], 1)
    plane_depth = ((normal @ tri[0]) / (rays @ normal)).reshape(SIZE)
    np.testing.assert_allclose(result.depth[expected], plane_depth[expected], rtol=1e-5)
    assert np.isinf(result.depth[~expected]).all()
    assert result.depth.dtype == np.float32 and result.image.dtype == np.uint8


@pytest.mark.parametrize("rx,ry", [(0.0, 0.0), (0.5, -0.7), (-1.1, 2.3)])
def test_cube_silhouette_and_depth(rx, ry):
    centre, half = np.array([0.13, -0.07, 3.0]), 0.25
    rotation = _rotation(rx, ry)
    verts, faces = _cube(centre, half, rotation)
    result = render([(verts, faces)], FOCAL, PRINCPT, SIZE)
    hull = cv2.convexHull(project(verts, FOCAL, PRINCPT).astype(np.float32))[:, 0]
    expected, border = _inside_polygon(hull, SIZE, margin=1e-2)
    assert expected.sum() > 1000
    np.testing.assert_array_equal((result.person_index >= 0)[~border], expected[~border])
    # Depth: nearest ray/box intersection (slab method in the cube's frame).
    uv = _pixel_centres(SIZE)
    rays = np.stack([(uv[:, 0] - PRINCPT[0]) / FOCAL[0], (uv[:, 1] - PRINCPT[1]) / FOCAL[1], np.ones(len(uv))], 1)
    origin, direction = (-centre) @ rotation, rays @ rotation  # camera origin and rays in the cube frame
    with np.errstate(divide="ignore", invalid="ignore"):
        t0, t1 = (-half - origin) / direction, (half - origin) / direction
    t_near = np.minimum(t0, t1).max(1).reshape(SIZE)  # ray parameter = camera z (rays have z = 1)
    inside = expected & ~border
    np.testing.assert_allclose(result.depth[inside], t_near[inside], rtol=1e-5)


def test_nearer_mesh_occludes_the_farther_one():
    quad = np.array([[0, 1, 2], [0, 2, 3]])
    far = (np.array([[-0.4, -0.3, 4.0], [0.2, -0.3, 4.0], [0.2, 0.3, 4.0], [-0.4, 0.3, 4.0]]), quad)
    near = (np.array([[-0.1, -0.2, 2.0], [0.3, -0.2, 2.0], [0.3, 0.25, 2.0], [-0.1, 0.25, 2.0]]), quad)
    for meshes, near_index in (([far, near], 1), ([near, far], 0)):
        result = render(meshes, FOCAL, PRINCPT, SIZE)
        alone = [render([mesh], FOCAL, PRINCPT, SIZE).person_index == 0 for mesh in meshes]
        both = alone[0] & alone[1]
        assert both.sum() > 100
        assert (result.person_index[both] == near_index).all()
        np.testing.assert_allclose(result.depth[both], 2.0, rtol=1e-6)
        masks = result.masks(2)
        assert not (masks[0] & masks[1]).any()
        np.testing.assert_array_equal(masks[0] | masks[1], result.person_index >= 0)
        np.testing.assert_array_equal(masks[near_index], alone[near_index])
        np.testing.assert_array_equal(masks[1 - near_index], alone[1 - near_index] & ~alone[near_index])
        np.testing.assert_array_equal(amodal_masks(meshes, FOCAL, PRINCPT, SIZE), np.stack(alone))


def test_lambert_shading_colours_and_background():
    quad = (np.array([[-0.5, -0.5, 3.0], [0.5, -0.5, 3.0], [0.5, 0.5, 3.0], [-0.5, 0.5, 3.0]]),
            np.array([[0, 1, 2], [0, 2, 3]]))
    background = np.full(SIZE + (3,), 17, dtype=np.uint8)
    princpt = (SIZE[1] / 2, SIZE[0] / 2)
    result = render([quad], FOCAL, princpt, SIZE, colors=[(200, 100, 50)], background=background, ambient=0.2)
    row, col = SIZE[0] // 2, SIZE[1] // 2
    # Facing the camera on the optical axis: full brightness; off-axis the light hits at cos = z / |X|.
    np.testing.assert_allclose(result.image[row, col], [200, 100, 50], atol=1)
    u, v = 25, 10
    x, y = (u - princpt[0]) / FOCAL[0] * 3.0, (v - princpt[1]) / FOCAL[1] * 3.0
    cos = 3.0 / np.sqrt(x * x + y * y + 9.0)
    np.testing.assert_allclose(result.image[v, u], np.array([200, 100, 50]) * (0.2 + 0.8 * cos), atol=1)
    empty = result.person_index < 0
    assert empty.any() and (result.image[empty] == 17).all()
    assert (background == 17).all()  # the caller's background is not drawn on


def test_smpl_to_camera_stands_the_body_upright_facing_the_camera():
    head, feet, nose, left_hand = [0.0, 0.5, 0.0], [0.0, -1.1, 0.0], [0.0, 0.4, 0.12], [0.8, 0.2, 0.0]
    cam = smpl_to_camera(np.array([head, feet, nose, left_hand]), (0.0, 0.0, 3.0))
    uv = project(cam, FOCAL, PRINCPT)
    assert uv[0, 1] < uv[1, 1]  # head above the feet in the image
    assert cam[2, 2] < 3.0  # the nose is nearer to the camera than the body's axis
    assert uv[3, 0] > PRINCPT[0]  # the person's left hand appears on the image's right


def test_geometry_behind_the_camera_is_not_drawn():
    tri = np.array([[-0.3, -0.2, -2.0], [0.3, -0.2, -2.0], [0.0, 0.3, -2.0]])
    crossing = np.array([[-0.3, -0.2, -1.0], [0.3, -0.2, 2.0], [0.0, 0.3, 2.0]])
    result = render([(tri, np.array([[0, 1, 2]])), (crossing, np.array([[0, 1, 2]]))], FOCAL, PRINCPT, SIZE)
    assert (result.person_index == -1).all() and np.isinf(result.depth).all()


def test_overlay_blends_only_where_a_mesh_is_visible():
    tri = np.array([[-0.3, -0.2, 2.0], [0.3, -0.2, 2.0], [0.0, 0.3, 2.0]])
    result = render([(tri, np.array([[0, 1, 2]]))], FOCAL, PRINCPT, SIZE, colors=[(1.0, 1.0, 1.0)])
    image = np.full(SIZE + (3,), 100, dtype=np.uint8)
    out = overlay(image, result, alpha=0.25)
    mask = result.person_index >= 0
    expected = np.round(0.25 * result.image[mask].astype(np.float64) + 0.75 * 100)
    np.testing.assert_allclose(out[mask], expected, atol=1)
    assert (out[~mask] == 100).all()
    with pytest.raises(ValueError, match="differ in size"):
        overlay(image[:10], result)


def test_mesh_entirely_off_screen_renders_nothing():
    from common.renderer import render

    verts = np.array([[5.0, 5.0, 2.0], [5.1, 5.0, 2.0], [5.0, 5.1, 2.0]])  # projects far outside the image
    result = render([(verts, np.array([[0, 1, 2]]))], (100.0, 100.0), (16.0, 16.0), (32, 32))
    assert (result.person_index == -1).all() and np.isinf(result.depth).all()
