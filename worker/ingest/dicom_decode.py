"""DICOM pixel data -> stored values (full or reduced resolution) -> grey in [0, 1].

Decoding goes through pydicom's decoders (pylibjpeg, pylibjpeg-libjpeg, pylibjpeg-openjpeg,
pylibjpeg-rle). Reduced-resolution decoding asks the codec for fewer pixels where it can: a
JPEG 2000 resolution level (Pillow's OpenJPEG, ``reduce``) or libjpeg's DCT scaling for 8-bit
baseline JPEG (Pillow's ``draft``). Both keep stored values unchanged, so every later step is
the same.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import JPEG2000, UID, JPEG2000Lossless, JPEGBaseline8Bit

from pneumoscreen.worker.ingest import pixels
from pneumoscreen.worker.ingest.codestream import CodestreamInfo, codestream_info
from pneumoscreen.worker.ingest.dicom_header import COLOUR, PIXEL_DATA, short
from pneumoscreen.worker.ingest.errors import FailedStudy, must_propagate
from pneumoscreen.worker.ingest.metadata import redact, text, transfer_syntax
from pneumoscreen.worker.ingest.vr import tag_name

_ALL_PLUGINS_FAILED = "Unable to decode as exceptions were raised by all available plugins:"


@dataclass(frozen=True)
class DecodeOptions:
    """What the decoder may do: pixel limit, reduced resolution and its floor, robust window."""

    max_pixels: int = 60_000_000
    reduced: bool = True
    min_side: int = 256
    percentiles: tuple[float, float] = (0.5, 99.5)


def expected_native_length(ds: Dataset) -> int:
    """Bytes of native (uncompressed) Pixel Data for one frame, per PS3.5 8.1.1."""
    rows, cols, alloc = int(ds.Rows), int(ds.Columns), int(ds.BitsAllocated)
    samples = int(ds.SamplesPerPixel)
    if (text(ds, "PhotometricInterpretation") or "").upper() == "YBR_FULL_422":
        samples = 2  # two chroma samples shared by each pair of pixels
    bits = rows * cols * samples * alloc
    return (bits + 7) // 8


def first_frame(ds: Dataset) -> bytes:
    """The first encapsulated frame, or FailedStudy if the fragments are malformed."""
    try:
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    except StopIteration as exc:
        raise FailedStudy("encapsulated Pixel Data holds no frame") from exc
    except Exception as exc:
        raise FailedStudy(f"encapsulated Pixel Data is malformed: {short(exc)}") from exc
    if not frame:
        raise FailedStudy("encapsulated Pixel Data holds an empty frame")
    return frame


def check_pixel_data(ds: Dataset, opts: DecodeOptions) -> CodestreamInfo | None:
    """Presence, length and codestream dimensions of Pixel Data, before decoding it."""
    if PIXEL_DATA not in ds:
        for keyword in ("FloatPixelData", "DoubleFloatPixelData"):
            if keyword in ds:
                raise FailedStudy(f"{keyword} is not supported (integer Pixel Data only)")
        raise FailedStudy("no Pixel Data (7FE0,0010): nothing to decode")
    ts = transfer_syntax(ds)
    if ts is None:
        raise FailedStudy("no Transfer Syntax UID (0002,0010) and none could be inferred")
    elem = ds[PIXEL_DATA]
    if ts.is_encapsulated or elem.is_undefined_length:
        if not ts.is_encapsulated:
            raise FailedStudy(f"Pixel Data is encapsulated but the transfer syntax is {ts.name}")
        info = codestream_info(first_frame(ds))
        if info is not None:
            if info.rows * info.columns > opts.max_pixels:
                raise FailedStudy(
                    f"codestream declares {info.rows} x {info.columns} pixels, beyond the limit "
                    f"of {opts.max_pixels} (max_pixels)"
                )
            if (info.rows, info.columns) != (int(ds.Rows), int(ds.Columns)):
                raise FailedStudy(
                    f"codestream is {info.rows} x {info.columns} but Rows x Columns is "
                    f"{ds.Rows} x {ds.Columns}"
                )
        return info
    found, expected = len(elem.value or b""), expected_native_length(ds)
    if found < expected:
        raise FailedStudy(f"pixel data truncated: {expected} bytes expected, {found} found")
    return None


def reduce_level(rows: int, cols: int, levels: int, min_side: int) -> int:
    """The largest r ≤ levels that keeps min(rows, cols) / 2**r ≥ min_side."""
    r = 0
    while r < levels and min(rows, cols) >> (r + 1) >= min_side:
        r += 1
    return r


def decode_reduced(
    ds: Dataset, info: CodestreamInfo | None, opts: DecodeOptions
) -> tuple[np.ndarray, str] | None:
    """Stored values at reduced resolution, or None where the codec or the data do not allow it.

    Only single-component, unsigned codestreams whose precision equals Bits Stored qualify: Pillow
    returns those scaled to its 8/16-bit modes, which we undo exactly with a right shift.
    """
    ts = transfer_syntax(ds)
    if not opts.reduced or info is None or ts is None or info.components != 1 or info.signed:
        return None
    if int(ds.PixelRepresentation) != 0 or info.precision != int(ds.BitsStored):
        return None
    rows, cols = int(ds.Rows), int(ds.Columns)
    frame = first_frame(ds)
    if ts in (JPEG2000Lossless, JPEG2000) and info.precision <= 16:
        r = reduce_level(rows, cols, info.levels or 0, opts.min_side)
        if r == 0:
            return None
        im, r = _j2k_reduced(frame, r)
        how = f"JPEG 2000 resolution level 1/{2**r}"
    elif ts == JPEGBaseline8Bit and info.precision == 8:
        scale = 8
        while scale > 1 and min(rows, cols) // scale < opts.min_side:
            scale //= 2
        if scale == 1:
            return None
        im = Image.open(io.BytesIO(frame))
        im.draft("L", (cols // scale, rows // scale))  # libjpeg DCT scaling: 1/2, 1/4 or 1/8
        im.load()
        how = f"JPEG DCT scaling 1/{scale}"
    else:
        return None
    with im:
        arr = np.asarray(im)
        mode = im.mode
    if mode.startswith("I;16"):
        arr = arr.astype(np.uint16) >> (16 - info.precision)
    elif mode == "L":
        arr = arr >> (8 - info.precision) if info.precision < 8 else arr
    else:
        return None
    return arr, f"{how}: {rows} x {cols} -> {arr.shape[0]} x {arr.shape[1]}"


def _j2k_reduced(frame: bytes, level: int) -> tuple[Image.Image, int]:
    """Decode at ``level``, else at the next finer levels (OpenJPEG via Pillow refuses some
    levels of some codestreams, e.g. lossy files whose precincts are coarser than the level)."""
    for r in range(level, 0, -1):
        im = Image.open(io.BytesIO(frame))
        im.reduce = r  # OpenJPEG decodes only the resolution levels it needs
        try:
            im.load()
        except OSError:
            im.close()
            if r == 1:
                raise
            continue
        return im, r
    raise ValueError("no reduction level to try")


def decode_stored(ds: Dataset, opts: DecodeOptions, steps: list[str]) -> np.ndarray:
    """Stored pixel values (RGB for colour), reduced where allowed; FailedStudy on any error."""
    info = check_pixel_data(ds, opts)
    ts: UID = transfer_syntax(ds)  # type: ignore[assignment]  # checked above
    try:
        reduced = decode_reduced(ds, info, opts)
    except BaseException as exc:  # an odd codestream for Pillow: the full decoder gets its chance
        if must_propagate(exc):
            raise
        reduced = None
        steps.append(f"reduced decoding failed ({short(exc, 80)}); full resolution")
    if reduced is not None:
        arr, note = reduced
        steps.append(f"decoded {ts.name} at reduced resolution ({note})")
        return arr
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            arr = ds.pixel_array
        steps.extend(redact(f"pydicom: {short(w.message, 120)}", ds) for w in caught[:3])
    except MemoryError as exc:
        raise FailedStudy(f"out of memory decoding {ts.name} pixel data") from exc
    except BaseException as exc:  # not just Exception: a Rust codec's panic is a BaseException
        if must_propagate(exc):
            raise
        # pydicom's preamble adds nothing to a reason: keep each plugin's own words.
        why = str(exc).replace(_ALL_PLUGINS_FAILED, "")
        reason = f"cannot decode {ts.name} pixel data: {short(ValueError(why), 200)}"
        raise FailedStudy(redact(reason, ds)) from exc
    shape = (int(ds.Rows), int(ds.Columns))
    if arr.shape[:2] != shape:
        raise FailedStudy(f"decoded pixel array has shape {arr.shape}, expected {shape}")
    steps.append(f"decoded {ts.name} at full resolution ({shape[0]} x {shape[1]})")
    return arr


def _lut_item(ds: Dataset, keyword: str) -> Dataset | None:
    """The first item of a LUT sequence, checked; FailedStudy naming the sequence if broken."""
    if keyword not in ds:
        return None
    name = tag_name(keyword)
    try:
        seq = ds[keyword].value
        item = seq[0] if seq else None
    except Exception as exc:
        raise FailedStudy(f"{name} is malformed ({type(exc).__name__})") from exc
    if item is None:
        return None
    if not isinstance(item, Dataset):
        raise FailedStudy(f"{name} is malformed: its item is not a data set")
    problem = pixels.lut_problem(item)
    if problem:
        raise FailedStudy(f"{name} is malformed: {problem}")
    return item


def _step(keyword: str, what: str, func: Callable[[], np.ndarray]) -> np.ndarray:
    """Run one pixel step; an error in it becomes a reason naming its tag, not a catch-all."""
    try:
        return func()
    except (FailedStudy, MemoryError):
        raise
    except Exception as exc:
        raise FailedStudy(f"{tag_name(keyword)}: {what} failed ({type(exc).__name__})") from exc


def to_grey(arr: np.ndarray, ds: Dataset, opts: DecodeOptions, steps: list[str]) -> np.ndarray:
    """Apply the pixel steps in the standard's order; returns float32 in [0, 1]."""
    pi = (text(ds, "PhotometricInterpretation") or "").upper()
    if pi in COLOUR:
        steps.append(f"{pi} -> luminance (ITU-R 601), value/max, no stretching")
        keyword = "RedPaletteColorLookupTableDescriptor" if pi == "PALETTE COLOR" else (
            "PhotometricInterpretation")
        return _step(keyword, f"{pi} to grey",
                     lambda: pixels.colour_to_grey(arr, ds)).astype(np.float32)
    mask = pixels.padding_mask(arr, ds)
    if mask is not None:
        steps.append(f"Pixel Padding Value: {int(mask.sum())} pixels excluded, shown black")
    if _lut_item(ds, "ModalityLUTSequence") is not None:
        values = _step("ModalityLUTSequence", "applying the Modality LUT",
                       lambda: pixels.apply_modality_lut(arr, ds))
        steps.append("Modality LUT Sequence")
    else:
        problem = pixels.rescale_problem(ds)
        if problem:
            raise FailedStudy(problem)
        values = _step("RescaleSlope", "rescaling", lambda: pixels.apply_modality_lut(arr, ds))
        if ds.get("RescaleSlope") is not None or ds.get("RescaleIntercept") is not None:
            steps.append(f"rescale slope {ds.get('RescaleSlope', 1)} "
                         f"intercept {ds.get('RescaleIntercept', 0)}")
    if not np.isfinite(values).all():
        raise FailedStudy("Modality LUT produced non-finite values (check Rescale Slope/Intercept)")
    lo, hi = float(values.min()), float(values.max())
    if lo == hi:
        raise FailedStudy(f"image is uniform (every pixel is {lo:g}): nothing to screen")
    _lut_item(ds, "VOILUTSequence")
    window, note = pixels.choose_voi(ds)
    if note:
        steps.append(note)
    if window is None:
        lo, hi = pixels.robust_range(values, opts.percentiles, mask)
        out = pixels.apply_percentile_window(values, lo, hi)
        p_lo, p_hi = opts.percentiles
        steps.append(f"robust window: percentiles {p_lo:g}-{p_hi:g} = {lo:g}..{hi:g}")
    elif window.kind == "lut":
        out = _step("VOILUTSequence", "applying the VOI LUT",
                    lambda: pixels.apply_voi_lut_sequence(values, ds))
        steps.append(window.description)
    else:
        out = pixels.apply_windowing(values, window.center, window.width, window.function)
        steps.append(window.description)
    if pi == "MONOCHROME1":
        out = pixels.apply_inversion(out, ds)
        steps.append("MONOCHROME1 inverted")
    out = pixels.apply_padding(out, mask)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def decode_grey(ds: Dataset, opts: DecodeOptions, steps: list[str]) -> np.ndarray:
    """Decode ``ds``'s first (only) frame to grey in [0, 1]."""
    return to_grey(decode_stored(ds, opts, steps), ds, opts, steps)
