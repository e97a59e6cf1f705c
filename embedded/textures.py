"""Procedural textures and colours of the synthetic scenes: tileable patterns, random colours, people's clothing."""
import colorsys

import numpy as np

TILE = 64


def periodic_noise(rng, falloff=1.6, size=TILE):
    """(size, size) tileable noise in [0, 1] (random spectrum with 1/f^falloff amplitude)."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    amplitude = 1.0 / np.maximum(np.hypot(fx, fy), 1.0 / size) ** falloff
    spectrum = amplitude * (rng.standard_normal(amplitude.shape) + 1j * rng.standard_normal(amplitude.shape))
    spectrum[0, 0] = 0
    noise = np.fft.irfft2(spectrum, s=(size, size))
    return ((noise - noise.min()) / max(np.ptp(noise), 1e-9)).astype(np.float32)


def texture_pattern(rng, kind=None):
    """(64, 64) float32 tileable pattern in [0, 1]: checker, bricks, planks, stripes or noise."""
    kind = kind or ("checker", "bricks", "planks", "stripes", "noise")[rng.integers(5)]
    y, x = np.mgrid[:TILE, :TILE]
    noise = periodic_noise(rng)
    if kind == "checker":
        cells = int(rng.choice([2, 4]))
        base = (((x * cells) // TILE + (y * cells) // TILE) % 2).astype(np.float32)
        grout = (((x * cells) % TILE) < 2) | (((y * cells) % TILE) < 2)
        pattern = np.where(grout, 0.15, 0.35 + 0.5 * base)
    elif kind == "bricks":
        rows = int(rng.choice([4, 8]))
        row = (y * rows) // TILE
        shifted = (x + (row % 2) * TILE // 4) % TILE
        brick = (row * 7 + (shifted * 2) // TILE * 3) % 5 / 4.0
        mortar = ((y * rows) % TILE < 3) | ((shifted * 2) % TILE < 3)
        pattern = np.where(mortar, 0.9, 0.35 + 0.3 * brick)
    elif kind == "planks":
        planks = int(rng.choice([4, 8]))
        shade = rng.uniform(0.4, 0.9, planks)[(x * planks) // TILE]
        grain = periodic_noise(rng, falloff=1.0)[:, :1].repeat(TILE, 1) if rng.random() < 0.5 else noise
        pattern = np.where((x * planks) % TILE < 2, 0.1, shade * (0.8 + 0.2 * grain))
    elif kind == "stripes":
        stripes = int(rng.choice([2, 4, 8]))
        pattern = 0.3 + 0.6 * ((((x if rng.random() < 0.5 else y) * stripes * 2) // TILE) % 2)
    elif kind == "noise":
        pattern = noise
    else:
        raise ValueError(f"unknown texture kind {kind!r}")
    return np.clip(0.85 * pattern + 0.15 * noise, 0, 1).astype(np.float32)


def random_colour(rng, saturation=(0.1, 0.8), value=(0.3, 0.95)):
    """(3,) RGB in [0, 1]: uniform hue, saturation and value in the given ranges."""
    return np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(*saturation), rng.uniform(*value)))


_SKIN = np.array([[0.98, 0.84, 0.72], [0.93, 0.74, 0.60], [0.80, 0.60, 0.45], [0.62, 0.43, 0.30],
                  [0.45, 0.30, 0.20], [0.30, 0.20, 0.14]])
_HAIR = np.array([[0.08, 0.06, 0.05], [0.25, 0.15, 0.08], [0.55, 0.40, 0.20], [0.85, 0.75, 0.50],
                  [0.60, 0.60, 0.60]])


def person_colours(rng):
    """Region -> RGB for one person (skin, hair, shirt, trousers, shoes; short sleeves / shorts sometimes), and the
    shirt's stripe period (metres; 0 = plain)."""
    skin = np.clip(_SKIN[rng.integers(len(_SKIN))] * rng.uniform(0.92, 1.08), 0, 1)
    shirt, trousers = random_colour(rng), random_colour(rng, value=(0.15, 0.7))
    colours = {"face": skin, "hands": skin, "hair": _HAIR[rng.integers(len(_HAIR))], "torso": shirt,
               "upper_arms": shirt, "forearms": shirt if rng.random() < 0.6 else skin, "hips_thighs": trousers,
               "shins": trousers if rng.random() < 0.8 else skin, "feet": random_colour(rng, value=(0.05, 0.5))}
    return colours, (rng.uniform(0.04, 0.12) if rng.random() < 0.35 else 0.0)
