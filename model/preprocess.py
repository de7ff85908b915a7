"""The one preprocessing function shared by training, evaluation and serving.

Input: a grey image as produced by ingestion, a 2-D array of floats in [0, 1] where 0 is black and
1 is white (MONOCHROME2 sense, after the modality LUT, the window and any inversion). Output: the
network's input, ``(size, size, 1)`` float32 in [0, 1]. The image is squashed, not cropped, to a
square, as the Kermany training images were.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


class InputRangeError(ValueError):
    """The image is not a grey image in [0, 1]: a normalisation bug upstream, never screened."""


def preprocess(grey: np.ndarray, size: int) -> np.ndarray:
    """Resize a [0, 1] grey image to the network's ``(size, size, 1)`` float32 input.

    ``size`` comes from the model's sidecar (``ModelSpec.input_size``): there is no default, so
    no caller can feed a model another size than its own.
    """
    arr = np.asarray(grey)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise InputRangeError(f"expected a 2-D grey image, got shape {arr.shape}")
    if arr.size == 0:
        raise InputRangeError("empty image")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise InputRangeError("image holds NaN or infinite values")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise InputRangeError(
            f"grey image must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]: normalise it first"
        )
    # PIL's resize filters the image first (anti-aliasing), which plain sampling does not.
    resized = Image.fromarray(arr).resize((size, size), Image.Resampling.BILINEAR)
    out = np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)
    return out[..., np.newaxis]
