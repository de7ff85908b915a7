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
