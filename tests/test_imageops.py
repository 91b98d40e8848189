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
