"""No content, no screening: the checks between the pixel steps and the model.

A classifier answers whatever it is given; fed a uniform grey square, ours says "pneumonia" with
p 0.99. These checks refuse, with a reason naming the cause, what holds no radiograph:

* a stored image smaller than :data:`MIN_SIDE` pixels a side (a 1 x 1 JPEG, a 3 x 3 image);
* a grey image that is constant or nearly so: fewer than :data:`MIN_LEVELS` distinct levels
  (of 256) or a central spread (1st to 99th percentile) under :data:`MIN_SPREAD`;
* a VOI window or LUT that clips almost all pixels to one bound (:func:`clipped_to_one_bound`):
  the caller falls back on a percentile stretch of the stored values, and only if that is empty
  too does the image fail.

The thresholds come from data: on 400 Kermany training images (a seeded sample) and every chest
film of ``../shared/dicom`` and ``samples/``, the fewest distinct levels was 134, the smallest
spread 0.44 and the largest share of pixels at one bound 0.29, while the failures reported (a
window of width 1e38, a window covering none of the stored values, a 3 x 3 image) give 1-9 levels,
a spread of 0 and a share of 1. The bounds sit an order of magnitude from any film: a faint but
real image passes (``tests/worker/ingest/test_content.py`` checks both sides on real files).
"""

from __future__ import annotations

import numpy as np

# A radiograph below this many pixels a side has no anatomy left to see (the network's input
# is 224; the smallest training image is 224): such a file is a thumbnail, an icon or a fault.
MIN_SIDE = 32
# Distinct levels of the grey image quantised to 8 bits, and its 1st-99th percentile spread.
MIN_LEVELS = 16
MIN_SPREAD = 0.04
# A window that sends this share of the (non-padding) pixels to one bound shows no anatomy.
CLIP_SHARE = 0.95
_SAMPLE = 1 << 20


def _sample(grey: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    values = grey if mask is None else grey[~mask]
    values = np.ravel(values)
    if values.size == 0:
        values = np.ravel(grey)
    return values[:: max(1, values.size // _SAMPLE)]


def levels_and_spread(grey: np.ndarray) -> tuple[int, float]:
    """Distinct 8-bit levels of a [0, 1] image and its 1st-99th percentile spread."""
    values = _sample(grey)
    quantised = np.rint(np.clip(values, 0.0, 1.0) * 255).astype(np.uint8)
    levels = int(np.count_nonzero(np.bincount(quantised, minlength=256)))  # np.unique sorts
    lo, hi = np.percentile(values, (1.0, 99.0))
    return levels, float(hi - lo)


def size_problem(rows: int | None, columns: int | None, min_side: int = MIN_SIDE) -> str | None:
    """Why an image of ``rows`` x ``columns`` is too small to be a radiograph, or None."""
    if rows is None or columns is None or min(rows, columns) >= min_side:
        return None
    return (f"image is {rows} x {columns} pixels, smaller than a radiograph can be "
            f"(at least {min_side} a side): nothing to screen")


def content_problem(grey: np.ndarray) -> str | None:
    """Why a [0, 1] grey image holds nothing to screen (constant or nearly so), or None."""
    levels, spread = levels_and_spread(grey)
    if levels <= 1:
        return (f"no content: the image is one uniform grey ({float(np.ravel(grey)[0]):.3g} "
                "on 0-1): nothing to screen")
    if levels < MIN_LEVELS or spread < MIN_SPREAD:
        return (f"no content: the image is nearly uniform ({levels} grey levels of 256, "
                f"1st-99th percentile spread {spread:.3f}; a radiograph has at least "
                f"{MIN_LEVELS} and {MIN_SPREAD:g}): nothing to screen")
    return None


def clipped_to_one_bound(out: np.ndarray, mask: np.ndarray | None = None,
                         share: float = CLIP_SHARE) -> tuple[str, float] | None:
    """(``"black"`` or ``"white"``, share) if a windowed [0, 1] image sends at least ``share``
    of its non-padding pixels to that one bound, else None."""
    values = _sample(out, mask)
    if values.size == 0:
        return None
    low, high = float(np.mean(values <= 0.0)), float(np.mean(values >= 1.0))
    bound, found = ("black", low) if low >= high else ("white", high)
    return (bound, found) if found >= share else None
