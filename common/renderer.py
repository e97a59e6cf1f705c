"""A small CPU renderer for triangle meshes (numpy z-buffer, no OpenGL).

Camera frame: x right, y down, z forward (away from the camera), metres, as in 3DPW and as SMPL meshes are
given once placed in a camera. Pinhole projection u = fx * X / Z + cx, v = fy * Y / Z + cy in pixels; pixel
(row r, column c) is covered by a triangle when its centre (u, v) = (c, r) lies inside the projected triangle
(the cv2 convention: integer coordinates are pixel centres). SMPL's own frame has y up and z toward the
viewer, so a body facing the camera must be rotated by 180 degrees about x first: `smpl_to_camera`.

`render` draws meshes with Lambert shading (light at the camera, both faces lit) and returns the image, the
per-pixel depth (camera z, metres) and which mesh is visible at each pixel; `RenderResult.masks()` gives the
visible (occluded) masks, `amodal_masks` each mesh's full silhouette as if it were alone.
"""
import dataclasses

import numpy as np

NEAR = 1e-3  # triangles with a vertex closer than this (metres) are not drawn
_CHUNK_PIXELS = 1 << 19  # candidate pixels rasterised at once (bounds the memory of one chunk)
_BOX_LEVELS = np.array([1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536,
                        2048, 3072, 4096, 1 << 30])


@dataclasses.dataclass
class RenderResult:
    """image (H, W, 3) uint8 RGB; depth (H, W) float32 metres (camera z; inf where empty);
    person_index (H, W) int64 (-1 where empty, else the index of the visible mesh)."""
    image: np.ndarray
    depth: np.ndarray
    person_index: np.ndarray

    def masks(self, num_meshes=None):
        """(N, H, W) bool: where each mesh is visible (after occlusion). N defaults to the largest index + 1."""
        if num_meshes is None:
            num_meshes = int(self.person_index.max()) + 1
        return self.person_index[None] == np.arange(num_meshes)[:, None, None]


def smpl_to_camera(vertices, transl=(0.0, 0.0, 0.0)):
    """SMPL-frame points (..., 3) (y up, z toward the viewer) -> camera frame (y down, z forward): a rotation by
    180 degrees about x, then `transl` (3,) metres. A body facing +z in SMPL then faces the camera, upright."""
    vertices = np.asarray(vertices, dtype=np.float64)
    return vertices * np.array([1.0, -1.0, -1.0]) + np.asarray(transl, dtype=np.float64)


def project(points, focal, princpt):
    """Camera-frame points (..., 3) -> pixel coordinates (..., 2): u = fx X/Z + cx, v = fy Y/Z + cy."""
    points = np.asarray(points, dtype=np.float64)
    z = points[..., 2]
    return np.stack([focal[0] * points[..., 0] / z + princpt[0], focal[1] * points[..., 1] / z + princpt[1]], -1)


def _vertex_normals(vertices, faces):
    """Area-weighted vertex normals (V, 3), unit length (zero for unused vertices)."""
    tri = vertices[faces]
    face_normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals = np.zeros_like(vertices)
    for k in range(3):
        np.add.at(normals, faces[:, k], face_normals)
    norm = np.linalg.norm(normals, axis=1, keepdims=True)
    return normals / np.maximum(norm, 1e-12)


def _triangles(meshes, focal, princpt):
    """Stack all meshes' triangles in front of the near plane: screen (T, 3, 2), z (T, 3), mesh id (T,),
    face id within the mesh (T,)."""
    screen, depth, mesh_id, face_id = [], [], [], []
    for i, (vertices, faces) in enumerate(meshes):
        vertices = np.asarray(vertices, dtype=np.float64)
        faces = np.asarray(faces, dtype=np.int64)
        if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
            raise ValueError(f"mesh {i}: expected vertices (V, 3) and faces (F, 3), got {vertices.shape}, "
                             f"{faces.shape}")
        z = vertices[faces, 2]
        front = (z > NEAR).all(1)
        uv = project(vertices, focal, princpt)
        screen.append(uv[faces[front]])
        depth.append(z[front])
        mesh_id.append(np.full(front.sum(), i))
        face_id.append(np.flatnonzero(front))
    return np.concatenate(screen), np.concatenate(depth), np.concatenate(mesh_id), np.concatenate(face_id)


def _rasterize(screen, depth, height, width):
    """Z-buffer of screen-space triangles (T, 3, 2) with vertex depths (T, 3).

    Returns the winning triangle per pixel (H*W,) (-1 where empty) and its depth (H*W,) (inf where empty).
    Depth is interpolated perspective-correctly (1/z is affine in screen space)."""
    lo = np.ceil(screen.min(1)).astype(np.int64)
    hi = np.floor(screen.max(1)).astype(np.int64)
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, [width - 1, height - 1])
    (x0, y0), (x1, y1), (x2, y2) = screen[:, 0].T, screen[:, 1].T, screen[:, 2].T
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    valid = (hi >= lo).all(1) & (np.abs(area) > 1e-12)
    ids = np.flatnonzero(valid)
    # Triangles are grouped by bounding-box size (rounded up to a few levels) and rasterised a chunk at a time
    # over their padded boxes, so one numpy pass handles thousands of small triangles.
    levels = np.searchsorted(_BOX_LEVELS, hi[ids] - lo[ids] + 1)
    key = levels[:, 0] * len(_BOX_LEVELS) + levels[:, 1]
    order = np.argsort(key, kind="stable")
    ids, key = ids[order], key[order]
    inv_z = 1.0 / depth
    pixels, z_values, tri_values = [], [], []
    for group in np.split(ids, np.flatnonzero(np.diff(key)) + 1):
        if len(group) == 0:  # no triangle covers a pixel (e.g. the mesh is entirely off-screen)
            continue
        box = (hi[group] - lo[group] + 1).max(0)
        per_chunk = max(1, _CHUNK_PIXELS // int(box[0] * box[1]))
        for chunk in np.array_split(group, -(-len(group) // per_chunk)):
            gx = lo[chunk, 0, None, None] + np.arange(box[0])[None, None, :]  # (K, 1, bw)
            gy = lo[chunk, 1, None, None] + np.arange(box[1])[None, :, None]  # (K, bh, 1)
            tri = screen[chunk]
            a = area[chunk, None, None]
            # Barycentric coordinates from edge functions, normalised by the signed area (either winding).
            dx0, dy0 = tri[:, 0, 0, None, None] - gx, tri[:, 0, 1, None, None] - gy
            dx1, dy1 = tri[:, 1, 0, None, None] - gx, tri[:, 1, 1, None, None] - gy
            dx2, dy2 = tri[:, 2, 0, None, None] - gx, tri[:, 2, 1, None, None] - gy
            w0 = (dx1 * dy2 - dx2 * dy1) / a
            w1 = (dx2 * dy0 - dx0 * dy2) / a
            w2 = 1 - w0 - w1
            inside = (w0 >= 0) & (w1 >= 0) & (w2 >= 0) & (gx <= hi[chunk, 0, None, None]) \
                & (gy <= hi[chunk, 1, None, None])
            k, r, c = np.nonzero(inside)
            t = chunk[k]
            iz = inv_z[t, 0] * w0[k, r, c] + inv_z[t, 1] * w1[k, r, c] + inv_z[t, 2] * w2[k, r, c]
            pixels.append(gy[k, r, 0] * width + gx[k, 0, c])
            z_values.append(1.0 / iz)
            tri_values.append(t)
    winner = np.full(height * width, -1, dtype=np.int64)
    zbuf = np.full(height * width, np.inf)
    if pixels:
        pixels, z_values, tri_values = np.concatenate(pixels), np.concatenate(z_values), np.concatenate(tri_values)
        order = np.lexsort((z_values, pixels))
        pixels, z_values, tri_values = pixels[order], z_values[order], tri_values[order]
        first = np.ones(len(pixels), dtype=bool)
        first[1:] = pixels[1:] != pixels[:-1]
        winner[pixels[first]] = tri_values[first]
        zbuf[pixels[first]] = z_values[first]
    return winner, zbuf


# The default mesh colours (RGB in [0, 1]), mesh i taking PALETTE[i % len(PALETTE)].
PALETTE = np.array([[0.70, 0.75, 0.85], [0.85, 0.70, 0.55], [0.60, 0.80, 0.60], [0.85, 0.60, 0.65],
                    [0.75, 0.70, 0.90], [0.90, 0.85, 0.55]])


def _mesh_colors(colors, n):
    if colors is None:
        return PALETTE[np.arange(n) % len(PALETTE)]
    colors = np.asarray(colors, dtype=np.float64).reshape(-1, 3)
    if len(colors) == 1:
        colors = np.repeat(colors, n, axis=0)
    if len(colors) != n:
        raise ValueError(f"colors: expected one RGB colour or one per mesh ({n}), got {len(colors)}")
    return colors / 255.0 if colors.max() > 1 else colors


def render(meshes, focal, princpt, image_size, colors=None, background=None, ambient=0.25, smooth=True):
    """Render meshes seen by a pinhole camera.

    meshes: list of (vertices (V, 3) camera frame metres, faces (F, 3) int). focal (fx, fy), princpt (cx, cy)
    pixels; image_size (H, W). colors: None (a palette), one RGB or (N, 3) per mesh, in [0, 1] or 0-255.
    background: None (black) or (H, W, 3) uint8. Shading: ambient + (1 - ambient) * |n . l| with the light at
    the camera, n the interpolated vertex normal (smooth=True) or the face normal.
    Returns a RenderResult (image, depth, person_index).
    """
    height, width = (int(s) for s in image_size)
    n = len(meshes)
    rgb = _mesh_colors(colors, n)
    image = np.zeros((height, width, 3), dtype=np.uint8) if background is None else np.array(background, np.uint8)
    if image.shape != (height, width, 3):
        raise ValueError(f"background must be ({height}, {width}, 3) uint8, got {image.shape}")
    depth = np.full((height, width), np.inf, dtype=np.float32)
    person = np.full((height, width), -1, dtype=np.int64)
    if n == 0:
        return RenderResult(image, depth, person)
    screen, tri_z, mesh_id, face_id = _triangles(meshes, focal, princpt)
    if len(screen) == 0:
        return RenderResult(image, depth, person)
    winner, zbuf = _rasterize(screen, tri_z, height, width)
    hit = np.flatnonzero(winner >= 0)
    tri = winner[hit]
    person.reshape(-1)[hit] = mesh_id[tri]
    depth.reshape(-1)[hit] = zbuf[hit]

    # Shading of the visible pixels: barycentrics again for the winners only.
    px = (hit % width).astype(np.float64)
    py = (hit // width).astype(np.float64)
    s = screen[tri]
    area = (s[:, 1, 0] - s[:, 0, 0]) * (s[:, 2, 1] - s[:, 0, 1]) - (s[:, 2, 0] - s[:, 0, 0]) * (s[:, 1, 1] - s[:, 0, 1])
    w0 = ((s[:, 1, 0] - px) * (s[:, 2, 1] - py) - (s[:, 2, 0] - px) * (s[:, 1, 1] - py)) / area
    w1 = ((s[:, 2, 0] - px) * (s[:, 0, 1] - py) - (s[:, 0, 0] - px) * (s[:, 2, 1] - py)) / area
    bary = np.stack([w0, w1, 1 - w0 - w1], 1) / tri_z[tri]  # perspective-correct
    bary /= bary.sum(1, keepdims=True)
    normal = np.zeros((len(hit), 3))
    for i, (vertices, faces) in enumerate(meshes):
        sel = np.flatnonzero(mesh_id[tri] == i)
        if len(sel) == 0:
            continue
        vertices = np.asarray(vertices, dtype=np.float64)
        faces = np.asarray(faces, dtype=np.int64)[face_id[tri[sel]]]
        if smooth:
            vn = _vertex_normals(vertices, np.asarray(meshes[i][1], dtype=np.int64))
            normal[sel] = np.einsum("pk,pkc->pc", bary[sel], vn[faces])
        else:
            t = vertices[faces]
            normal[sel] = np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0])
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
    z = zbuf[hit]
    point = np.stack([(px - princpt[0]) / focal[0] * z, (py - princpt[1]) / focal[1] * z, z], 1)
    light = -point / np.linalg.norm(point, axis=1, keepdims=True)
    shade = ambient + (1 - ambient) * np.abs((normal * light).sum(1))
    color = rgb[mesh_id[tri]] * shade[:, None]
    image.reshape(-1, 3)[hit] = np.clip(np.round(color * 255), 0, 255).astype(np.uint8)
    return RenderResult(image, depth, person)


def amodal_masks(meshes, focal, princpt, image_size):
    """(N, H, W) bool: each mesh's silhouette rendered alone (ignoring the others), e.g. for occlusion ratios
    (visible pixels of RenderResult.masks() / amodal pixels)."""
    height, width = (int(s) for s in image_size)
    out = np.zeros((len(meshes), height, width), dtype=bool)
    for i, mesh in enumerate(meshes):
        screen, tri_z, _, _ = _triangles([mesh], focal, princpt)
        if len(screen):
            out[i] = (_rasterize(screen, tri_z, height, width)[0] >= 0).reshape(height, width)
    return out


def overlay(image, result, alpha=0.8):
    """Blend the rendered meshes over `image` (H, W, 3) uint8 where a mesh is visible: alpha * render +
    (1 - alpha) * image. Returns a new uint8 image."""
    image = np.asarray(image)
    if image.shape != result.image.shape:
        raise ValueError(f"overlay: image {image.shape} and render {result.image.shape} differ in size")
    out = image.astype(np.float32)
    mask = result.person_index >= 0
    out[mask] = alpha * result.image[mask].astype(np.float32) + (1 - alpha) * out[mask]
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
