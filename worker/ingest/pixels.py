"""Pixel steps in the standard's order, each a pure function of the array and the data set.

stored values → padding mask → Modality LUT → VOI LUT / window / robust window → [0, 1] →
MONOCHROME1 inversion → padding shown black. Colour images skip the grey-scale pipeline and become
luminance. Modelled on ``pydicom.pixels.processing``: a step whose attributes are absent returns
its input unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_voi
from pydicom.pixels import apply_modality_lut as _pydicom_modality_lut

from pneumoscreen.worker.ingest.metadata import text

# ITU-R BT.601 luma, the weights PIL's convert("L") uses: one rule for DICOM colour and PNG/JPEG.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)
# Percentiles are estimated on at most this many pixels (a strided sample): same window, less time.
_STATS_PIXELS = 1 << 20


def _first(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else None  # type: ignore[index]
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def lut_problem(item: Dataset) -> str | None:
    """What is wrong with a LUT item (Modality or VOI LUT Sequence), or None if it is usable.

    PS3.3 C.11.1.1: LUT Descriptor = entries (0 means 65536), first mapped value, bits (8-16);
    LUT Data holds at least that many entries.
    """
    try:
        descriptor = [int(v) for v in item.get("LUTDescriptor")]
    except Exception:  # absent, a single number, or not numbers
        return "LUT Descriptor (0028,3002) is not three numbers"
    if len(descriptor) != 3:
        return f"LUT Descriptor (0028,3002) has {len(descriptor)} values, not 3"
    entries, bits = descriptor[0] or 65536, descriptor[2]
    if not 8 <= bits <= 16:
        return f"LUT Descriptor (0028,3002) declares {bits} bits per entry (allowed: 8-16)"
    try:
        data = item.get("LUTData")
    except Exception:
        data = None
    if data is None or (hasattr(data, "__len__") and len(data) == 0):
        return "LUT Data (0028,3006) is missing or empty"
    if isinstance(data, (bytes, bytearray)):
        found = len(data) // (2 if bits > 8 else 1)
    elif isinstance(data, (int, float)):
        found = 1
    else:
        found = len(data)
    if found < entries:
        return f"LUT Data (0028,3006) holds {found} entries, the descriptor says {entries}"
    return None


def rescale_problem(ds: Dataset) -> str | None:
    """What is wrong with Rescale Slope / Intercept when present (empty, not a number)."""
    for keyword, tag in (("RescaleSlope", "(0028,1053)"), ("RescaleIntercept", "(0028,1052)")):
        if keyword not in ds:
            continue
        name = "Rescale Slope" if keyword == "RescaleSlope" else "Rescale Intercept"
        try:
            value = ds[keyword].value
        except Exception:
            value = "?"
        if value is None or str(value).strip() == "":
            return f"{name} {tag} is empty"
        if _first(value) is None:
            return f"{name} {tag} is not a finite number"
    return None


def padding_mask(arr: np.ndarray, ds: Dataset) -> np.ndarray | None:
    """Stored values that are Pixel Padding Value (or within its Range Limit), or None."""
    pad = _first(ds.get("PixelPaddingValue"))
    if pad is None:
        return None
    limit = _first(ds.get("PixelPaddingRangeLimit"))
    if limit is None:
        mask = arr == pad
    else:
        lo, hi = sorted((pad, limit))
        mask = (arr >= lo) & (arr <= hi)
    return mask if mask.any() else None


def apply_modality_lut(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    """Rescale Slope/Intercept or the Modality LUT Sequence, as float64 (pydicom's rules)."""
    if "ModalityLUTSequence" not in ds and ds.get("RescaleSlope") is None and ds.get(
        "RescaleIntercept"
    ) is None:
        return arr.astype(np.float64)
    return np.asarray(_pydicom_modality_lut(arr, ds), dtype=np.float64)


def window_to_unit(arr: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """Window to [0, 1] with the formulas of PS3.3 C.11.2.1.2 (output range 0..1).

    Not pydicom's ``apply_windowing`` (which takes the dataset and keeps the stored range): this
    takes one window's values and always maps to the unit range, as the network needs.
    """
    function = function.upper()
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(np.clip(-4.0 * (arr - center) / width, -700, 700)))
    if function == "LINEAR_EXACT":
        out = (arr - center) / width + 0.5
    elif width == 1.0:  # LINEAR with the narrowest window is a threshold
        out = np.where(arr > center - 0.5, 1.0, 0.0)
    else:  # LINEAR
        out = (arr - (center - 0.5)) / (width - 1) + 0.5
    return np.clip(out, 0.0, 1.0)


@dataclass(frozen=True)
class Window:
    """The VOI transform chosen for an image, and how it reads in ``screen inspect``."""

    kind: str  # "lut", "window" or "percentile"
    description: str
    center: float = 0.0
    width: float = 1.0
    function: str = "LINEAR"


def choose_voi(ds: Dataset) -> tuple[Window | None, str | None]:
    """The first VOI LUT, else the first valid window; a note when a present one is unusable."""
    seq = ds.get("VOILUTSequence")
    if seq:
        item = seq[0]
        if "LUTDescriptor" in item and "LUTData" in item:
            entries = int(item.LUTDescriptor[0]) or 65536  # lut_problem checked it is 3 numbers
            return Window("lut", f"VOI LUT Sequence item 1 ({entries} entries)"), None
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if center is None or width is None:
        return None, None
    function = (text(ds, "VOILUTFunction") or "LINEAR").upper()
    note = None
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        note = f"VOI LUT Function {function} is unknown (allowed: LINEAR, LINEAR_EXACT, SIGMOID)"
        function = "LINEAR"
    invalid = width < 1.0 if function == "LINEAR" else width <= 0.0
    if invalid:
        limit = "at least 1" if function == "LINEAR" else "positive"
        return None, (
            f"Window Width {width:g} is invalid ({function} needs {limit}); robust window used"
        )
    desc = f"window centre {center:g} width {width:g} {function}"
    return Window("window", desc, center, width, function), note


def apply_voi_lut_sequence(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    """The first VOI LUT Sequence item, scaled to [0, 1] by the LUT's bit depth."""
    item = ds.VOILUTSequence[0]
    out = np.asarray(apply_voi(np.rint(arr).astype(np.int64), ds, index=0), dtype=np.float64)
    bits = int(item.LUTDescriptor[2])
    top = float(2**bits - 1)
    # Some writers declare 16 bits for 12-bit LUTs or the reverse: trust the data when it says more.
    peak = float(out.max()) if out.size else 0.0
    if peak > top:
        top = float(2 ** math.ceil(math.log2(peak + 1)) - 1)
    return np.clip(out / top, 0.0, 1.0)


def robust_range(
    arr: np.ndarray, percentiles: tuple[float, float], mask: np.ndarray | None = None
) -> tuple[float, float]:
    """Low and high percentiles of the non-padding pixels; min/max if they coincide."""
    values = arr if mask is None else arr[~mask]
    if values.size == 0:
        values = arr
    values = values.ravel()
    step = max(1, values.size // _STATS_PIXELS)
    sample = values[::step]
    lo, hi = (float(v) for v in np.percentile(sample, percentiles))
    if hi <= lo:
        lo, hi = float(values.min()), float(values.max())
    return lo, hi


def apply_percentile_window(arr: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Linear map of [lo, hi] to [0, 1], clipped; a uniform image maps to 0."""
    if hi <= lo:
        return np.zeros_like(arr, dtype=np.float64)
    return np.clip((arr - lo) / (hi - lo), 0.0, 1.0)


def apply_inversion(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    """MONOCHROME1 (minimum is white) → MONOCHROME2 sense; other images unchanged."""
    if (text(ds, "PhotometricInterpretation") or "").upper() == "MONOCHROME1":
        return 1.0 - arr
    return arr


def apply_padding(arr: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Padding pixels are not anatomy: show them black, whatever the window did to them."""
    if mask is None:
        return arr
    out = arr.copy()
    out[mask] = 0.0
    return out


def colour_to_grey(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    """RGB (pydicom already converted YBR) or PALETTE COLOR → luminance in [0, 1], no stretching."""
    pi = (text(ds, "PhotometricInterpretation") or "").upper()
    if pi == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        top = float(2**bits - 1)
        if bits == 16 and int(arr.max(initial=0)) <= 255:
            top = 255.0  # 8-bit entries declared as 16-bit, a common writer quirk
    else:
        top = float(2 ** int(ds.BitsStored) - 1)
    grey = arr[..., :3].astype(np.float64) @ LUMA
    return np.clip(grey / top, 0.0, 1.0)
