"""A made chest film for tests that need anatomy where it should be (registration, heatmaps)
without ../shared."""

from __future__ import annotations

import numpy as np

from pneumoscreen.model import registration as R


def chest(size: int) -> np.ndarray:
    """A made chest: a bright body on a dark background, two dark lung fields, a bright spine
    and a diaphragm; ``(size, size)`` in [0, 1]."""
    yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size
    body = ((xx - 0.5) / 0.46) ** 2 + ((yy - 0.55) / 0.6) ** 2 < 1
    img = np.where(body, 0.75, 0.05)
    for cx in (0.32, 0.68):
        lung = ((xx - cx) / 0.15) ** 2 + ((yy - 0.45) / 0.28) ** 2 < 1
        img = np.where(lung, 0.25, img)
    img = np.where((np.abs(xx - 0.5) < 0.04) & (yy > 0.1), 0.95, img)
    img = np.where(yy > 0.8, 0.9, img)
    return img.astype(np.float32)


def moved(img: np.ndarray, scale: float, dy: float, dx: float) -> np.ndarray:
    """``img`` with its content scaled by ``scale`` about the centre and moved by (dy, dx)."""
    x = img[None, ..., None]
    return np.asarray(R.affine(x, [scale], [dy], [dx], inverse=True))[0, ..., 0]
