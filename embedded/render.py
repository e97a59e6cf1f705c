"""Rendering of a synthetic scene: the procedural background, the people and objects through the z-buffer renderer
(common.renderer), and what the z-buffer says about occlusion (each person's hidden share, each joint's visibility).
"""
import cv2
import numpy as np

from common.renderer import render
from embedded.bodies import REGIONS
from embedded.camera import Camera, rot_y
from embedded.textures import TILE, periodic_noise, random_colour, texture_pattern

# A joint counts as occluded when another surface lies in front of it by more than this (metres).
VISIBILITY_MARGIN = 0.05


# ----------------------------------------------------------------------------------------------------------------------
# Background


def _rays_world(camera):
    """(H, W, 3) float32 ray directions (z_camera = 1) of the pixel centres, in the world frame."""
    height, width = camera.size
    v, u = np.mgrid[:height, :width].astype(np.float32)
    rays = np.stack([(u - camera.princpt[0]) / camera.focal, (v - camera.princpt[1]) / camera.focal,
                     np.ones_like(u)], -1)
    return (rays @ camera.world_to_camera).astype(np.float32)


def _sample_tile(tile_rgb, a, b, scale):
    """Texture (64, 64, 3) sampled bilinearly at surface coordinates a, b (metres), `scale` metres per tile."""
    # BORDER_WRAP repeats the tile for any coordinate; the clip only keeps cv2's fixed-point maths in range.
    map_x = np.clip(a * np.float32(TILE / scale), -1e5, 1e5).astype(np.float32)
    map_y = np.clip(b * np.float32(TILE / scale), -1e5, 1e5).astype(np.float32)
    return cv2.remap(tile_rgb, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)


def _coloured_tile(rng):
    pattern = texture_pattern(rng)
    dark, light = random_colour(rng, value=(0.15, 0.5)), random_colour(rng, value=(0.5, 0.95))
    return (dark + pattern[..., None] * (light - dark)).astype(np.float32)


def background(rng, camera, people):
    """(H, W, 3) float32 RGB in [0, 1]: floor and back wall (indoor) or facade and sky (outdoor), textured in
    perspective, with a soft shadow under each person and smooth illumination (computed at half resolution and
    upsampled, a slight defocus), then random distractor shapes at full resolution."""
    height, width = camera.size
    half = Camera(camera.focal / 2, (camera.princpt + 0.5) / 2 - 0.5, camera.height, camera.pitch,
                  ((height + 1) // 2, (width + 1) // 2))
    rays = _rays_world(half)
    far = max([p.ground[1] for p in people], default=8.0)
    indoor = rng.random() < 0.5
    wall_z = far + (rng.uniform(1.5, 8.0) if indoor else rng.uniform(15.0, 40.0))
    t_wall = wall_z / rays[..., 2]
    t_floor = np.where(rays[..., 1] > 1e-4, camera.height / np.maximum(rays[..., 1], 1e-4), np.inf)
    on_floor = t_floor < t_wall
    t_floor = np.where(on_floor, t_floor, 0.0).astype(np.float32)
    floor_x, floor_z = t_floor * rays[..., 0], t_floor * rays[..., 2]
    floor = _sample_tile(_coloured_tile(rng), floor_x, floor_z, rng.uniform(0.4, 1.5))
    # Far floor texture aliases at this resolution: fade it to its mean colour with distance.
    fade = np.clip((t_floor - 6.0) / 20.0, 0.0, 0.8)[..., None]
    floor = floor * (1 - fade) + floor.reshape(-1, 3).mean(0) * fade
    wall_height = camera.height - t_wall * rays[..., 1]
    wall_scale = rng.uniform(0.5, 3.0) * (1 if indoor else 4)
    image = np.where(on_floor[..., None], floor, _sample_tile(_coloured_tile(rng), t_wall * rays[..., 0],
                                                              wall_height, wall_scale))
    if not indoor:
        sky_top, sky_bottom = random_colour(rng, (0.2, 0.6), (0.6, 0.9)), random_colour(rng, (0.0, 0.3), (0.8, 1.0))
        level = np.linspace(0, 1, half.size[0], dtype=np.float32)[:, None, None]
        sky = sky_top + level * (sky_bottom - sky_top)
        skyline = periodic_noise(rng)[0][np.arange(half.size[1]) * TILE // half.size[1]]
        facade_top = rng.uniform(4.0, 25.0) + 3.0 * skyline[None, :]
        image = np.where(((wall_height > facade_top) & ~on_floor)[..., None], sky, image)
    shade = cv2.resize(rng.uniform(0.75, 1.2, (3, 4)).astype(np.float32), half.size[::-1],
                       interpolation=cv2.INTER_CUBIC)
    for person in people:
        d2 = (floor_x - person.ground[0]) ** 2 + (floor_z - person.ground[1]) ** 2
        shade *= 1 - 0.45 * np.exp(-d2 / (2 * 0.3 ** 2)) * on_floor
    image = cv2.resize((image * shade[..., None]).astype(np.float32), (width, height),
                       interpolation=cv2.INTER_LINEAR)

    # Distractor shapes, each blended with its own opacity (drawn into one layer and one opacity map).
    layer, alpha = image.copy(), np.zeros((height, width), np.float32)
    for _ in range(int(rng.integers(2, 9))):
        colour = tuple(float(c) for c in random_colour(rng))
        opacity = float(rng.uniform(0.4, 1.0))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        size = int(rng.integers(4, max(5, width // 5)))
        shape = rng.integers(4)
        for target, value in ((layer, colour), (alpha, opacity)):
            if shape == 0:
                cv2.circle(target, (x, y), size, value, -1, cv2.LINE_AA)
            elif shape == 1:
                cv2.rectangle(target, (x, y), (x + size, y + size // 2 + 4), value, -1)
            elif shape == 2:
                cv2.line(target, (x, y), (x + 4 * size, y + 2 * size - 3 * y // 4), value, 1 + size % 4, cv2.LINE_AA)
            else:
                cv2.ellipse(target, (x, y), (size, size // 3 + 2), float(x % 180), 0, 360, value, -1, cv2.LINE_AA)
    image = image + alpha[..., None] * (layer - image)
    return np.clip(image, 0, 1)


# ----------------------------------------------------------------------------------------------------------------------
# Rendering and analysis


def _front_faces(vertices, faces):
    """Faces turned towards the camera at the origin. The body is a closed, outward-oriented surface, so the
    back faces are never seen; dropping them makes rendering faster without changing the image."""
    tri = vertices[faces]
    # The normal (t1 - t0) x (t2 - t0) faces the camera when its dot product with t0 is negative; that product
    # equals the triple product t0 . (t1 x t2).
    return np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])) < 0


def _unproject(camera, rows, cols, depth):
    """Camera-frame points (n, 3) of pixels (rows, cols) at camera depth `depth` (n,)."""
    return np.stack([(cols - camera.princpt[0]) / camera.focal * depth,
                     (rows - camera.princpt[1]) / camera.focal * depth, depth], 1)


def _render_person(person, faces, regions, camera, ambient):
    """The person alone: RenderResult with the clothing colours (one mesh per colour), the shirt's stripes applied."""
    front = _front_faces(person.vertices, faces)
    colours = []
    region_mesh = np.zeros(len(REGIONS), dtype=np.int64)  # region -> mesh index (regions sharing a colour merge)
    for r, name in enumerate(REGIONS):
        match = [m for m, colour in enumerate(colours) if np.array_equal(colour, person.colours[name])]
        if not match:
            colours.append(person.colours[name])
        region_mesh[r] = match[0] if match else len(colours) - 1
    face_mesh = region_mesh[regions]
    meshes = [(person.vertices, faces[front & (face_mesh == m)]) for m in range(len(colours))]
    result = render(meshes, (camera.focal, camera.focal), camera.princpt, camera.size, colors=colours,
                    ambient=ambient, smooth=False)
    if person.stripes:
        rows, cols = np.nonzero(result.person_index == region_mesh[REGIONS.index("torso")])
        y = _unproject(camera, rows, cols, result.depth[rows, cols].astype(np.float64))[:, 1]
        factor = np.where(np.sin(2 * np.pi * y / person.stripes) > 0, 1.0, 0.65)
        result.image[rows, cols] = (result.image[rows, cols] * factor[:, None]).astype(np.uint8)
    return result


def _render_objects(occluders, camera, ambient):
    """All objects together: RenderResult whose image carries each object's texture (in its own 3D coordinates)."""
    result = render([(o.vertices, o.faces) for o in occluders], (camera.focal, camera.focal), camera.princpt,
                    camera.size, colors=[o.colour for o in occluders], ambient=ambient, smooth=False)
    for k, occluder in enumerate(occluders):
        rows, cols = np.nonzero(result.person_index == k)
        if len(rows) == 0:
            continue
        points = _unproject(camera, rows, cols, result.depth[rows, cols].astype(np.float64))
        local = (points @ camera.world_to_camera - occluder.centre) @ rot_y(occluder.yaw)
        a = (local[:, 0] + local[:, 2]) / occluder.texture_scale * TILE
        b = local[:, 1] / occluder.texture_scale * TILE
        pattern = occluder.texture[np.mod(b, TILE).astype(int), np.mod(a, TILE).astype(int)]
        result.image[rows, cols] = (result.image[rows, cols] * (0.55 + 0.45 * pattern[:, None])).astype(np.uint8)
    return result


def render_scene(rng, camera, people, occluders, bodies):
    """Compose the image and measure every person's occlusion.

    Each person is rendered alone (its amodal silhouette and depth), the objects together; the z-buffer of the
    scene is the per-pixel nearest of these layers, so the composite equals rendering everything at once.
    Fills each Person's joints_img, in_image, visible, hidden_by, bbox, amodal_area and occlusion numbers.
    Returns the (H, W, 3) uint8 RGB image and the (H, W) int map of the layer in front at each pixel: person k
    (index in `people`), len(people) for the objects, -1 for the background."""
    height, width = camera.size
    ambient = rng.uniform(0.3, 0.5)
    layers = [_render_person(p, bodies.layers[p.gender].faces, bodies.face_regions[p.gender], camera, ambient)
              for p in people]
    if occluders:
        layers.append(_render_objects(occluders, camera, ambient))
    depth = np.stack([layer.depth for layer in layers])  # (L, H, W), inf where a layer is empty
    winner = np.argmin(depth, axis=0)
    nearest = np.take_along_axis(depth, winner[None], 0)[0]
    covered = np.isfinite(nearest)
    winner = np.where(covered, winner, -1)

    image = background(rng, camera, people)
    for k, layer in enumerate(layers):
        mask = winner == k
        image[mask] = layer.image[mask].astype(np.float32) / 255.0
    noise = rng.standard_normal(image.shape, dtype=np.float32) * np.float32(rng.uniform(0.003, 0.015))
    image = image * rng.uniform(0.9, 1.1, 3).astype(np.float32) + noise
    if rng.random() < 0.3:
        image = cv2.GaussianBlur(image, (3, 3), rng.uniform(0.4, 0.9))
    image = np.clip(np.round(image * 255), 0, 255).astype(np.uint8)

    object_layer = len(people) if occluders else -2
    for k, person in enumerate(people):
        verts_px = camera.project(person.vertices)
        (x0, y0), (x1, y1) = np.clip(verts_px.min(0), 0, [width - 1, height - 1]), \
            np.clip(verts_px.max(0), 0, [width - 1, height - 1])
        person.bbox = np.array([x0, y0, x1 - x0, y1 - y0])
        # The silhouette lies inside the projected vertices' box: measure there only.
        window = (slice(int(y0), int(np.ceil(y1)) + 1), slice(int(x0), int(np.ceil(x1)) + 1))
        amodal = np.isfinite(depth[k][window])
        front = winner[window]
        hidden = amodal & (front != k)
        person.amodal_area = int(amodal.sum())
        area = max(person.amodal_area, 1)
        person.occlusion = float(hidden.sum() / area) if person.amodal_area else 1.0
        person.object_occlusion = float((hidden & (front == object_layer)).sum() / area)
        person.person_occlusion = float((hidden & (front >= 0) & (front != object_layer)).sum() / area)
        person.joints_img = camera.project(person.joints)
        cols, rows = np.round(person.joints_img).astype(int).T
        person.in_image = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
        rows, cols = np.clip(rows, 0, height - 1), np.clip(cols, 0, width - 1)
        in_front = winner[rows, cols]
        hidden_joint = (in_front >= 0) & (in_front != k) & \
            (nearest[rows, cols] < person.joints[:, 2] - VISIBILITY_MARGIN)
        person.visible = person.in_image & ~hidden_joint
        person.hidden_by = np.where(person.in_image & hidden_joint, in_front, -1)
    return image, winner
