"""Image arithmetic: box blur against a direct computation, foreground estimation, compositing."""

from __future__ import annotations

import numpy as np
import pytest

import reference
from cutout_guard.core import imageops
from cutout_guard.core.errors import BadInput


@pytest.mark.parametrize("radius", [1, 2, 5, 8])
def test_box_blur_matches_direct_window_mean(radius):
    image = np.random.default_rng(radius).random((9, 13, 2)).astype(np.float32)
    np.testing.assert_allclose(imageops.box_blur(image, radius), reference.box_blur(image, radius), atol=1e-5)


def test_box_blur_on_images_smaller_than_the_window():
    image = np.random.default_rng(0).random((2, 3, 1)).astype(np.float32)
    out = imageops.box_blur(image, 9)
    assert out.shape == image.shape and np.isfinite(out).all()
    assert imageops.box_blur(np.ones((1, 1, 3), np.float32), 5).tolist() == [[[1.0, 1.0, 1.0]]]


def test_foreground_estimation_removes_background_bleed():
    """Soft edges (an 8-pixel ramp, like hair) mixing a red subject with a green background come back red."""
    height, width = 64, 256
    xx = np.tile(np.arange(width, dtype=np.float32), (height, 1))
    alpha = np.clip((140 - xx) / 8, 0, 1)  # opaque left, a soft ramp, clear right
    subject, background = np.array([0.9, 0.1, 0.1], np.float32), np.array([0.1, 0.9, 0.1], np.float32)
    image = alpha[..., None] * subject + (1 - alpha[..., None]) * background
    estimate = imageops.estimate_foreground(image, alpha)
    edge = (alpha > 0.2) & (alpha < 0.8)
    raw_error = np.abs(image[edge] - subject).mean()
    refined_error = np.abs(estimate[edge] - subject).mean()
    assert refined_error < 0.25 * raw_error
    np.testing.assert_allclose(estimate[alpha == 1], image[alpha == 1], atol=0.02)


def test_cutout_rgba_and_colour_into_a_given_array():
    rng = np.random.default_rng(3)
    image, alpha = rng.random((5, 6, 3)).astype(np.float32), rng.random((5, 6)).astype(np.float32)
    rgba = imageops.cutout(image, alpha)
    np.testing.assert_array_equal(rgba[..., :3], image)
    np.testing.assert_array_equal(rgba[..., 3], alpha)
    out = np.zeros((5, 6, 3), np.float32)
    color = np.array([0.0, 1.0, 0.5], np.float32)
    assert imageops.cutout(image, alpha, color=color, out=out) is out
    np.testing.assert_allclose(out, image * alpha[..., None] + color * (1 - alpha[..., None]), atol=1e-6)


@pytest.mark.parametrize("text,expected", [("#FF8000", [1.0, 128 / 255, 0.0]), ("00ff00", [0.0, 1.0, 0.0])])
def test_parse_color(text, expected):
    np.testing.assert_allclose(imageops.parse_color(text), expected, atol=1e-6)


def test_parse_color_rejects_names():
    with pytest.raises(BadInput, match="#00FF00"):
        imageops.parse_color("red")


def test_resize_matches_pillow_algorithm_reference():
    plane = np.random.default_rng(4).random((37, 53)).astype(np.float32)
    for width, height in ((20, 11), (100, 80), (53, 37)):
        np.testing.assert_allclose(imageops.resize_plane(plane, width, height), reference.resize(plane, width, height), atol=1e-5)


def test_box_blur_in_bands_matches_the_direct_mean_across_band_edges():
    """Wider and taller than one band (256): the banded sums must join without seams."""
    image = np.random.default_rng(7).random((9, imageops.BAND_ROWS + 37, 2)).astype(np.float32)
    np.testing.assert_allclose(imageops.box_blur(image, 6), reference.box_blur(image, 6), atol=1e-5)
    tall = np.ascontiguousarray(image.transpose(1, 0, 2))
    np.testing.assert_allclose(imageops.box_blur(tall, 5), reference.box_blur(tall, 5), atol=1e-5)
    same = tall.copy()
    assert imageops.box_blur(same, 5, out=same) is same
    np.testing.assert_allclose(same, reference.box_blur(tall, 5), atol=1e-5)


def test_foreground_estimate_matches_the_blur_fusion_formula():
    """Forte & Pitié's two passes, written out on whole arrays with the direct window mean."""
    rng = np.random.default_rng(8)
    image = rng.random((20, 24, 3)).astype(np.float32)
    alpha = rng.random((20, 24)).astype(np.float32)

    def fusion(fg, bg, radius):
        a = alpha[..., None].astype(np.float64)
        blurred_a = reference.box_blur(a, radius)
        blurred_f = reference.box_blur(fg * a, radius) / (blurred_a + 1e-5)
        blurred_b = reference.box_blur(bg * (1 - a), radius) / ((1 - blurred_a) + 1e-5)
        return np.clip(blurred_f + a * (image - a * blurred_f - (1 - a) * blurred_b), 0, 1), blurred_b

    fg, bg = fusion(image, image, 3)  # the radii for a 24-pixel image: max(3, ·) and max(1, ·)
    expected, _ = fusion(fg, bg, 1)
    np.testing.assert_allclose(imageops.estimate_foreground(image, alpha), expected, atol=1e-4)


def test_to_uint8_rounds_clips_and_maps_nan_to_zero():
    image = np.array([[[0.0, 0.5 / 255, 1.5 / 255], [1.2, -0.3, np.nan]]], np.float32)
    assert imageops.to_uint8(image).tolist() == [[[0, 0, 2], [255, 0, 0]]]


def test_resize_to_uint8_is_bilinear_by_row_bands():
    small = np.random.default_rng(9).random((5, 7, 4)).astype(np.float32)
    big = imageops.resize_to_uint8(small, 70, 150, rows=16)  # several bands
    expected = np.stack([reference.resize(small[..., c], 70, 150) for c in range(4)], axis=-1)
    np.testing.assert_allclose(big.astype(np.float64), np.round(np.clip(expected, 0, 1) * 255), atol=1.01)


def test_rgba_uint8_packs_colour_and_alpha_rounded_band_by_band():
    rng = np.random.default_rng(4)
    rows = imageops.BAND_ROWS + 37  # more than one band
    rgb = rng.random((rows, 11, 3)).astype(np.float32)
    alpha = rng.random((rows, 11)).astype(np.float32)
    packed = imageops.rgba_uint8(rgb, alpha)
    assert packed.dtype == np.uint8 and packed.shape == (rows, 11, 4)
    expected = np.concatenate([rgb, alpha[..., None]], axis=-1).astype(np.float64) * 255
    assert np.abs(packed - expected).max() <= 0.5 + 1e-4  # rounded to the nearest level
    back = imageops.as_float(packed)
    assert back.dtype == np.float32 and np.abs(back - expected / 255).max() <= 0.5 / 255 + 1e-6
