"""Placing a person predicted in the crop camera into the camera of the whole image (pure numpy functions).

JOTR predicts each person in a virtual *crop camera*: focal 5000 px and principal point (128, 128) over the
256 x 256 crop (spec 1.1). The crop is the image region `bbox` mapped to 256 x 256 by the affine `img2bb`
(inverse `bb2img`) of data.preprocessing.patch_transform, with no rotation at test time. Composed with `bb2img`,
the crop camera is a pinhole camera in *image* pixels (`crop_camera_in_image`):

    focal_eff = crop_focal * bbox_size / 256    principal point = the bbox centre (bb2img of the crop centre)

The image camera is a different pinhole camera (focal f, principal point c; by default `default_image_camera`),
so no rigid motion of the mesh reproduces the crop projection exactly. `crop_to_image` moves a person's anchor
point (its root joint) so that
  * the root projects to the same image pixel as through the crop (exact), and
  * the person keeps its image size: depth Z' = Z * f / focal_eff.
The mesh is then translated by the root's displacement (rotation and shape unchanged). Other points differ from
the crop projection by about |x - c| * dz / Z' pixels (x the point's image position, dz its depth offset from
the root): the crop camera sees the body almost orthographically, the image camera with its real perspective.

Camera frame everywhere: x right, y down, z forward, metres (as the model's outputs and common.renderer).
Shapes: one point (3,) with one (2, 3) affine, or batches (N, 3) with (N, 2, 3); focals/principal points are
(fx, fy) and (cx, cy) in pixels, shared by the batch.
"""
import numpy as np

# Largest |off-diagonal| / scale of bb2img's linear part accepted as "not rotated" (float32 affines from cv2).
_MAX_ROTATION = 1e-4


def default_image_camera(height, width):
    """A plausible camera for an image of unknown intrinsics: focal f = sqrt(H^2 + W^2) px (about a 53 degree
    diagonal field of view, typical of phones and webcams) and the principal point at the image centre
    (W / 2, H / 2) (the crop camera's convention: 128 for a 256-pixel crop). Returns ((f, f), (cx, cy))."""
    focal = float(np.hypot(height, width))
    return (focal, focal), (width / 2.0, height / 2.0)


def crop_camera_in_image(bb2img, crop_focal, crop_princpt):
    """The crop camera seen through `bb2img` (..., 2, 3) as a pinhole camera in image pixels.

    Returns (focal (..., 2), princpt (..., 2)): crop_focal times the crop-to-image scale per axis, and the image
    position of the crop's principal point. Raises ValueError if an affine rotates or shears (placement assumes
    the test-time crop, which only scales and shifts)."""
    bb2img = np.asarray(bb2img, dtype=np.float64)
    linear = bb2img[..., :2]
    scale = np.stack([linear[..., 0, 0], linear[..., 1, 1]], axis=-1)
    off_diagonal = np.abs(np.stack([linear[..., 0, 1], linear[..., 1, 0]], axis=-1))
    if np.any(scale <= 0) or np.any(off_diagonal > _MAX_ROTATION * np.abs(scale).max(-1, keepdims=True)):
        raise ValueError(f"bb2img must only scale (positively) and shift, got linear part(s) {linear.tolist()}; "
                         f"a rotated or flipped crop cannot be placed in the image camera")
    focal = np.asarray(crop_focal, dtype=np.float64) * scale
    princpt = linear @ np.asarray(crop_princpt, dtype=np.float64) + bb2img[..., 2]
    return focal, princpt


def _project(points, focal, princpt):
    return points[..., :2] / points[..., 2:3] * focal + princpt


def _back_project(pixels, depth, focal, princpt):
    return np.concatenate([(pixels - princpt) / focal * depth[..., None], depth[..., None]], axis=-1)


def crop_to_image(points_crop, bb2img, crop_focal, crop_princpt, img_focal, img_princpt):
    """Anchor points (e.g. root joints) from the crop camera to the image camera.

    points_crop: (3,) or (N, 3) metres, crop camera frame; bb2img: (2, 3) or (N, 2, 3) crop -> image pixels.
    Returns (3,) or (N, 3) metres, image camera frame: same image pixel as the crop projection mapped through
    bb2img, depth scaled by sqrt(fx fy) / sqrt(fx_eff fy_eff) (the ratio of the focals in image pixels)."""
    points = np.asarray(points_crop, dtype=np.float64)
    eff_focal, eff_princpt = crop_camera_in_image(bb2img, crop_focal, crop_princpt)
    img_focal, img_princpt = np.asarray(img_focal, np.float64), np.asarray(img_princpt, np.float64)
    pixels = _project(points, eff_focal, eff_princpt)
    depth = points[..., 2] * np.sqrt(img_focal.prod() / eff_focal.prod(-1))
    return _back_project(pixels, depth, img_focal, img_princpt)


def image_to_crop(points_img, bb2img, crop_focal, crop_princpt, img_focal, img_princpt):
    """The inverse of crop_to_image: anchor points (3,) or (N, 3) from the image camera to the crop camera
    (metres); bb2img as there (the crop's crop -> image affine)."""
    points = np.asarray(points_img, dtype=np.float64)
    eff_focal, eff_princpt = crop_camera_in_image(bb2img, crop_focal, crop_princpt)
    img_focal, img_princpt = np.asarray(img_focal, np.float64), np.asarray(img_princpt, np.float64)
    pixels = _project(points, img_focal, img_princpt)
    depth = points[..., 2] * np.sqrt(eff_focal.prod(-1) / img_focal.prod())
    return _back_project(pixels, depth, eff_focal, eff_princpt)


def translation_crop_to_image(cam_trans_crop, root_crop, bb2img, crop_focal, crop_princpt, img_focal, img_princpt):
    """The SMPL translation in the image camera for a person predicted in the crop camera.

    cam_trans_crop: (3,) or (N, 3) the model's translation (metres, crop camera); root_crop: the root joint of
    the posed mesh with that translation, same shape. The mesh moves rigidly with its root (crop_to_image), so
    SMPL(pose, shape, returned translation) is the placed mesh, and mesh_img = mesh_crop + (t_img - t_crop)."""
    root_crop = np.asarray(root_crop, dtype=np.float64)
    root_img = crop_to_image(root_crop, bb2img, crop_focal, crop_princpt, img_focal, img_princpt)
    return np.asarray(cam_trans_crop, dtype=np.float64) + (root_img - root_crop)
