"""Radiograph augmentation: stays in [0, 1], keeps the shape, changes the image, and is off for
``none``; the presets are what the CLI offers."""

from __future__ import annotations

import numpy as np
import pytest

from pneumoscreen.model.augment import PRESETS, STRONG, make_augmenter


def _batch() -> np.ndarray:
    rng = np.random.default_rng(0)
    x = np.zeros((6, 40, 40, 1), np.float32)
    x[:, 8:32, 6:20] = 0.8  # a bright "lung" on the left only
    return np.clip(x + rng.normal(0, 0.02, x.shape).astype(np.float32), 0, 1)


@pytest.mark.parametrize("name", ["standard", "strong"])
def test_output_range_and_shape(name: str) -> None:
    aug = make_augmenter(PRESETS[name], seed=1)  # type: ignore[arg-type]
    x = _batch()
    out = np.asarray(aug(x))
    assert out.shape == x.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert np.abs(out - x).mean() > 1e-3


def test_strong_never_mirrors_the_chest() -> None:
    """No flips: the bright half stays on the left in every augmented image."""
    out = np.asarray(make_augmenter(STRONG, seed=2)(_batch()))
    left, right = out[:, :, :20].mean(axis=(1, 2, 3)), out[:, :, 20:].mean(axis=(1, 2, 3))
    assert np.all(left > right)


def test_none_means_no_augmentation() -> None:
    assert PRESETS["none"] is None


def _film(n: int = 4, size: int = 64) -> np.ndarray:
    """Grey films with a white "R" marker block in the top corners and a textured centre."""
    rng = np.random.default_rng(3)
    x = rng.uniform(0.2, 0.5, (n, size, size, 1)).astype(np.float32)
    x[:, 3:9, 3:7] = 1.0  # a letter in the top-left corner
    x[:, 3:9, size - 9:size - 4] = 1.0  # "A-P" in the top-right corner
    return x


def _centre(x: np.ndarray) -> np.ndarray:
    s = x.shape[1]
    return x[:, s // 4:3 * s // 4, s // 4:3 * s // 4]


def test_antishortcut_erases_corners_and_leaves_the_centre() -> None:
    """Only the erasing step (no crop, rotation or exposure): the markers are inpainted, the
    centre box is bit-for-bit the same."""
    from pneumoscreen.model.augment import AugmentConfig

    cfg = AugmentConfig(rotation_deg=0, shift=0, zoom=0, brightness=0, contrast=0,
                        corner_probability=1.0, corner_size=(0.2, 0.25), blob_probability=0.0)
    x = _film()
    out = np.asarray(make_augmenter(cfg, seed=4)(x))
    np.testing.assert_array_equal(_centre(out), _centre(x))
    corners = (slice(None), slice(3, 9), slice(3, 7))
    assert out[corners].max() < 0.9  # the white marker is gone
    assert np.abs(out[corners] - x[corners]).mean() > 0.3


def test_blob_eraser_finds_markers_outside_the_lungs_only() -> None:
    """A bright letter away from the corners (left edge, mid-height) is inpainted; the same
    letter inside the lung box (a rib edge looks alike) or the centre is not."""
    from pneumoscreen.model.augment import AugmentConfig

    x = _film()
    x[:, 28:34, 2:6] = 1.0  # a marker on the left edge
    x[:, 28:34, 30:34] = 1.0  # the same blob in the centre
    x[:, 28:34, 12:16] = 1.0  # and in the lung box's lateral part
    cfg = AugmentConfig(rotation_deg=0, shift=0, zoom=0, brightness=0, contrast=0,
                        corner_probability=0.0, blob_probability=1.0)
    out = np.asarray(make_augmenter(cfg, seed=5)(x))
    assert out[:, 28:34, 2:6].max() < 0.9
    assert out[:, 3:9, 3:7].max() < 0.9  # the corner letters are text-like blobs too
    np.testing.assert_array_equal(out[:, 26:36, 10:18], x[:, 26:36, 10:18])
    np.testing.assert_array_equal(_centre(out), _centre(x))


def test_antishortcut_crops_keep_the_lung_box() -> None:
    """The preset is offered by name; its crops never cut the lung box: bright dots at the
    box's four corners are all still in every cropped image (crops alone, 32 draws)."""
    from pneumoscreen.model.augment import ANTISHORTCUT, LUNG_BOX, AugmentConfig

    assert PRESETS["antishortcut"] is ANTISHORTCUT and ANTISHORTCUT.keep_box == LUNG_BOX
    size = 64
    x = np.full((32, size, size, 1), 0.2, np.float32)
    y0, x0, y1, x1 = (round(v * size) for v in LUNG_BOX)
    for r in (y0, y1 - 3):
        for c in (x0, x1 - 3):
            x[:, r:r + 3, c:c + 3] = 1.0
    cfg = AugmentConfig(rotation_deg=0, shift=0, zoom=0, brightness=0, contrast=0,
                        crop_area=ANTISHORTCUT.crop_area, crop_aspect=ANTISHORTCUT.crop_aspect,
                        keep_box=LUNG_BOX)
    out = np.asarray(make_augmenter(cfg, seed=6)(x))[..., 0]
    assert np.abs(out - x[..., 0]).mean() > 1e-3  # it did crop
    h = size // 2
    for quadrant in (out[:, :h, :h], out[:, :h, h:], out[:, h:, :h], out[:, h:, h:]):
        assert (quadrant.max(axis=(1, 2)) > 0.5).all()
    unkept = AugmentConfig(rotation_deg=0, shift=0, zoom=0, brightness=0, contrast=0,
                           crop_area=(0.3, 0.4), crop_aspect=(1.0, 1.0))
    cut = np.asarray(make_augmenter(unkept, seed=6)(x))[..., 0]
    # Without the box a small crop loses some corner dot: the check above can fail.
    assert min(int((q.max(axis=(1, 2)) > 0.5).sum()) for q in (
        cut[:, :h, :h], cut[:, :h, h:], cut[:, h:, :h], cut[:, h:, h:])) < 32


def test_antishortcut_preset_in_range() -> None:
    out = np.asarray(make_augmenter(PRESETS["antishortcut"], seed=7)(_film()))  # type: ignore
    assert out.shape == (4, 64, 64, 1) and out.min() >= 0.0 and out.max() <= 1.0


@pytest.mark.parametrize("shape", [(2, 40, 40, 1), (1, 33, 50, 1)])
def test_the_matrix_filters_are_the_pools_they_replace(shape: tuple[int, ...]) -> None:
    """The blob eraser's 15 x 15 average, its 7 x 7 maximum and the 5 x 5 blur, computed as
    matrix products and shifted maxima (far faster on some CPUs), are TensorFlow's "SAME"
    pools and convolution, edges included."""
    import tensorflow as tf

    from pneumoscreen.model.augment import _gaussian_blur, max_filter, separable_filter

    x = tf.constant(np.random.default_rng(1).random(shape, dtype=np.float32))
    np.testing.assert_allclose(separable_filter(x, [1.0] * 15, normalise=True),
                               tf.nn.avg_pool2d(x, 15, 1, "SAME"), atol=1e-5)
    np.testing.assert_array_equal(max_filter(x, 7), tf.nn.max_pool2d(x, 7, 1, "SAME"))
    k = np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]).astype(np.float32) / 256.0
    np.testing.assert_allclose(_gaussian_blur(x),
                               tf.nn.depthwise_conv2d(x, k[..., None, None], [1, 1, 1, 1], "SAME"),
                               atol=1e-5)
    with pytest.raises(ValueError, match="odd"):
        separable_filter(x, [1.0] * 4)
    with pytest.raises(ValueError, match="odd"):
        max_filter(x, 6)
