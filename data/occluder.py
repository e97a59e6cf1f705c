"""Synthetic object occlusion: random textured shapes pasted over the training crop (an ablation, off by default).

The official JOTR ships an `occluder.py` that no loader imports (spec 4.5), so the paper's runs had no synthetic
occlusion; this module makes that ablation possible. Occluders are procedural (no extra data needed): an ellipse,
a rectangle or a random polygon with slightly soft edges, filled with a flat colour plus noise, stripes or a blotchy
two-colour pattern, in the spirit of the object-occlusion augmentation of Sarandi et al. (2018). They are centred
near the crop centre, where the person is, so most of them cover part of the body.

Only the image changes: the joints under an occluder keep their targets, their validity and their truncation mask
(the network must infer them, which is the point of occlusion-robust training). The patch is in the crop frame,
float32 in [0, 255] (as data.preprocessing.generate_patch_image returns it). All randomness comes from the numpy
Generator passed in.
"""
import cv2
import numpy as np

# Defaults: how many occluders, their area as a fraction of the crop, their aspect ratio (w / h), and how far from
# the crop centre their centres may fall (fraction of the crop side, uniform in +-CENTRE_SPREAD).
NUM_OCCLUDERS = (1, 2)
AREA_FRACTION = (0.03, 0.2)
ASPECT_RANGE = (0.4, 2.5)
CENTRE_SPREAD = 0.35
SHAPES = ("ellipse", "rectangle", "polygon")
TEXTURES = ("noise", "stripes", "blotches")


def _shape_mask(rng, height, width):
    """(height, width) float32 alpha in [0, 1] of one random shape filling most of its box."""
    mask = np.zeros((height, width), np.uint8)
    shape = SHAPES[rng.integers(len(SHAPES))]
    if shape == "ellipse":
        cv2.ellipse(mask, (width // 2, height // 2), (max(1, width // 2 - 1), max(1, height // 2 - 1)), 0.0, 0.0,
                    360.0, 255, thickness=-1)
    elif shape == "rectangle":
        mask[:] = 255
    else:
        count = int(rng.integers(5, 10))
        # Roughly evenly spread corners: a blob-like polygon rather than a sliver.
        angles = (np.arange(count) + rng.uniform(0.0, 0.7, count)) * 2 * np.pi / count
        radii = rng.uniform(0.6, 1.0, count)
        points = np.stack([(0.5 + 0.5 * radii * np.cos(angles)) * (width - 1),
                           (0.5 + 0.5 * radii * np.sin(angles)) * (height - 1)], axis=1)
        cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 255)
    alpha = mask.astype(np.float32) / 255.0
    # Soft edges: a hard-edged paste is an artefact the network could learn to look for.
    return cv2.GaussianBlur(alpha, (3, 3), 0.8)


def _texture(rng, height, width):
    """(height, width, 3) float32 RGB in [0, 255]."""
    base = rng.uniform(0.0, 255.0, 3).astype(np.float32)
    kind = TEXTURES[rng.integers(len(TEXTURES))]
    if kind == "noise":
        texture = base + rng.normal(0.0, rng.uniform(5.0, 40.0), (height, width, 3))
    elif kind == "stripes":
        other = rng.uniform(0.0, 255.0, 3)
        angle = rng.uniform(0.0, np.pi)
        period = rng.uniform(4.0, 24.0)
        ys, xs = np.mgrid[0:height, 0:width]
        phase = (xs * np.cos(angle) + ys * np.sin(angle)) * 2 * np.pi / period
        weight = (0.5 + 0.5 * np.sin(phase))[..., None]
        texture = base * weight + other * (1 - weight) + rng.normal(0.0, 5.0, (height, width, 3))
    else:
        other = rng.uniform(0.0, 255.0, 3)
        coarse = rng.random((int(rng.integers(2, 6)), int(rng.integers(2, 6)))).astype(np.float32)
        weight = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 1)[..., None]
        texture = base * weight + other * (1 - weight) + rng.normal(0.0, 5.0, (height, width, 3))
    return np.clip(texture, 0, 255).astype(np.float32)


def random_occluder(rng, height, width):
    """One occluder of the given size: (rgb (height, width, 3) float32 in [0, 255], alpha (height, width) float32
    in [0, 1])."""
    height, width = max(int(height), 2), max(int(width), 2)
    alpha = _shape_mask(rng, height, width)
    return _texture(rng, height, width), alpha


def paste_occluders(patch, rng, num_occluders=NUM_OCCLUDERS, area_fraction=AREA_FRACTION, aspect_range=ASPECT_RANGE,
                    centre_spread=CENTRE_SPREAD):
    """Paste random occluders over a crop.

    patch: (H, W, 3) float32 in [0, 255], crop frame (not modified); num_occluders: (min, max) inclusive;
    area_fraction: (min, max) occluder box area / crop area; aspect_range: (min, max) occluder w / h (log-uniform);
    centre_spread: occluder centres fall uniformly within +-centre_spread crop sides of the crop centre.
    Returns (occluded patch (H, W, 3) float32, coverage (H, W) float32 in [0, 1]: the pasted alpha).
    """
    out = np.array(patch, dtype=np.float32, copy=True)
    crop_h, crop_w = out.shape[:2]
    coverage = np.zeros((crop_h, crop_w), np.float32)
    for _ in range(int(rng.integers(num_occluders[0], num_occluders[1] + 1))):
        area = rng.uniform(*area_fraction) * crop_h * crop_w
        aspect = float(np.exp(rng.uniform(np.log(aspect_range[0]), np.log(aspect_range[1]))))
        occ_w = int(np.clip(round(np.sqrt(area * aspect)), 2, crop_w))
        occ_h = int(np.clip(round(np.sqrt(area / aspect)), 2, crop_h))
        centre_x = crop_w * (0.5 + rng.uniform(-centre_spread, centre_spread))
        centre_y = crop_h * (0.5 + rng.uniform(-centre_spread, centre_spread))
        rgb, alpha = random_occluder(rng, occ_h, occ_w)
        x0, y0 = int(round(centre_x - occ_w / 2)), int(round(centre_y - occ_h / 2))
        # The part of the occluder inside the crop.
        cx0, cy0 = max(x0, 0), max(y0, 0)
        cx1, cy1 = min(x0 + occ_w, crop_w), min(y0 + occ_h, crop_h)
        if cx1 <= cx0 or cy1 <= cy0:
            continue
        src = (slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0))
        dst = (slice(cy0, cy1), slice(cx0, cx1))
        a = alpha[src][..., None]
        out[dst] = out[dst] * (1 - a) + rgb[src] * a
        coverage[dst] = np.maximum(coverage[dst], alpha[src])
    return out, coverage


def occlude(patch, rng, prob, **kwargs):
    """With probability `prob`, paste_occluders(patch, rng, **kwargs). Returns (patch, coverage (H, W) or None when
    nothing was pasted). prob <= 0 draws nothing from rng (the default training stream stays unchanged)."""
    if prob <= 0 or rng.random() >= prob:
        return patch, None
    return paste_occluders(patch, rng, **kwargs)
