import numpy as np
import pytest

from data.occluder import occlude, paste_occluders, random_occluder


def _patch(size=64, seed=0):
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:size, 0:size]
    base = np.stack([2 * xs, 2 * ys, 128 + xs - ys], axis=-1) + rng.uniform(0, 20, (size, size, 3))
    return base.clip(0, 255).astype(np.float32)


def test_zero_probability_leaves_the_patch_and_the_generator_alone():
    patch = _patch()
    rng = np.random.default_rng(0)
    before = rng.bit_generator.state
    out, mask = occlude(patch, rng, 0.0)
    assert out is patch and mask is None
    assert rng.bit_generator.state == before


def test_occluders_replace_pixels_only_where_they_cover():
    patch = _patch()
    original = patch.copy()
    for seed in range(30):
        out, mask = occlude(patch, np.random.default_rng(seed), 1.0)
        np.testing.assert_array_equal(patch, original)  # the input is not modified
        assert out.shape == patch.shape and out.dtype == np.float32 and mask.shape == patch.shape[:2]
        assert out.min() >= 0 and out.max() <= 255 and mask.min() >= 0 and mask.max() <= 1
        np.testing.assert_array_equal(out[mask == 0], patch[mask == 0])
        full = mask == 1
        if full.any():  # fully covered pixels show the occluder, not the image
            assert np.abs(out[full] - patch[full]).mean() > 1


def test_occlusion_happens_with_the_requested_probability():
    rng = np.random.default_rng(1)
    patch = _patch(16)
    hits = sum(occlude(patch, rng, 0.3)[1] is not None for _ in range(2000))
    assert 0.26 < hits / 2000 < 0.34


def test_occluders_cover_a_moderate_part_near_the_centre():
    size = 64
    coverage, centres = [], []
    for seed in range(200):
        _, mask = paste_occluders(_patch(size), np.random.default_rng(seed))
        coverage.append(mask.mean())
        if mask.sum() > 0:
            ys, xs = np.mgrid[0:size, 0:size]
            centres.append([(xs * mask).sum() / mask.sum(), (ys * mask).sum() / mask.sum()])
    coverage = np.asarray(coverage)
    assert (coverage > 0).mean() > 0.95 and coverage.max() < 0.6
    assert 0.04 < coverage.mean() < 0.3
    np.testing.assert_allclose(np.mean(centres, axis=0), [size / 2, size / 2], atol=4)


def test_deterministic_given_the_generator_and_varied_across_seeds():
    state = np.random.get_state()
    patch = _patch()
    first = paste_occluders(patch, np.random.default_rng(7))
    again = paste_occluders(patch, np.random.default_rng(7))
    other = paste_occluders(patch, np.random.default_rng(8))
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state()[1:], state[1:]))
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[1], other[1])


@pytest.mark.parametrize("height,width", [(10, 30), (40, 12)])
def test_random_occluder_is_a_textured_shape(height, width):
    textured = 0
    for seed in range(20):
        rgb, alpha = random_occluder(np.random.default_rng(seed), height, width)
        assert rgb.shape == (height, width, 3) and alpha.shape == (height, width)
        assert rgb.min() >= 0 and rgb.max() <= 255 and 0 <= alpha.min() and alpha.max() <= 1
        assert alpha.mean() > 0.25  # the shape fills a good part of its box
        textured += rgb.std(axis=(0, 1)).max() > 2
    assert textured >= 18
