"""DICOM pixel data -> stored values (full or reduced resolution) -> grey in [0, 1].

Decoding goes through pydicom's decoders (pylibjpeg, pylibjpeg-libjpeg, pylibjpeg-openjpeg,
pylibjpeg-rle). Reduced-resolution decoding asks the codec for fewer pixels where it can: a
JPEG 2000 resolution level (Pillow's OpenJPEG, ``reduce``) or libjpeg's DCT scaling for 8-bit
baseline JPEG (Pillow's ``draft``). Both keep stored values unchanged, so every later step is
the same.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    UID,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
)

from pneumoscreen.worker.ingest import content, pixels
from pneumoscreen.worker.ingest.codestream import CodestreamInfo, codestream_info
from pneumoscreen.worker.ingest.dicom_header import COLOUR, PIXEL_DATA, short
from pneumoscreen.worker.ingest.errors import FailedImage, must_propagate
from pneumoscreen.worker.ingest.jpeg_check import decode_strict, libjpeg_words
from pneumoscreen.worker.ingest.metadata import redact, text, transfer_syntax
from pneumoscreen.worker.ingest.vr import tag_name

# JPEG 2000 Part 1 and High-Throughput JPEG 2000: Pillow's OpenJPEG (2.5+) decodes both at a
# resolution level.
HTJ2K_SYNTAXES = frozenset({HTJ2KLossless, HTJ2KLosslessRPCL, HTJ2K})
J2K_SYNTAXES = frozenset({JPEG2000Lossless, JPEG2000, *HTJ2K_SYNTAXES})
_ALL_PLUGINS_FAILED = "Unable to decode as exceptions were raised by all available plugins:"
_FILE_OBJECT = re.compile(r"<_io\.\w+[^>]*>")


@dataclass(frozen=True)
class DecodeOptions:
    """What the decoder may do: pixel limit, memory budget, reduced resolution and its floor,
    robust window."""

    max_pixels: int = 60_000_000
    # Bytes of stored values one decode may produce (rows x cols x samples x bytes per sample),
    # checked from the headers before decoding: a 4300 x 3500 16-bit film needs 30 MB.
    budget_bytes: int = 64 << 20
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
    """The first encapsulated frame, or FailedImage if the fragments are malformed."""
    try:
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    except StopIteration as exc:
        raise FailedImage("encapsulated Pixel Data holds no frame") from exc
    except Exception as exc:
        raise FailedImage(f"encapsulated Pixel Data is malformed: {short(exc)}") from exc
    if not frame:
        raise FailedImage("encapsulated Pixel Data holds an empty frame")
    return frame


def check_pixel_data(ds: Dataset, opts: DecodeOptions) -> CodestreamInfo | None:
    """Presence, length and codestream dimensions of Pixel Data, before decoding it."""
    if PIXEL_DATA not in ds:
        for keyword in ("FloatPixelData", "DoubleFloatPixelData"):
            if keyword in ds:
                raise FailedImage(f"{keyword} is not supported (integer Pixel Data only)")
        raise FailedImage("no Pixel Data (7FE0,0010): nothing to decode")
    ts = transfer_syntax(ds)
    if ts is None:
        raise FailedImage("no Transfer Syntax UID (0002,0010) and none could be inferred")
    elem = ds[PIXEL_DATA]
    if ts.is_encapsulated or elem.is_undefined_length:
        if not ts.is_encapsulated:
            raise FailedImage(f"Pixel Data is encapsulated but the transfer syntax is {ts.name}")
        frame = first_frame(ds)
        info = codestream_info(frame)
        if info is not None:
            if info.rows * info.columns > opts.max_pixels:
                raise FailedImage(
                    f"codestream declares {info.rows} x {info.columns} pixels, beyond the limit "
                    f"of {opts.max_pixels} (max_pixels)"
                )
            if (info.rows, info.columns) != (int(ds.Rows), int(ds.Columns)):
                raise FailedImage(
                    f"codestream is {info.rows} x {info.columns} but Rows x Columns is "
                    f"{ds.Rows} x {ds.Columns}"
                )
            check_codestream_plausible(frame, info)
        return info
    found, expected = len(elem.value or b""), expected_native_length(ds)
    if found < expected:
        raise FailedImage(f"pixel data truncated: {expected} bytes expected, {found} found")
    return None


# A chest film's codestream never holds less than this many bits per pixel (lossy JPEG 2000 at
# 100:1 on 12 bits is 0.12): fewer means a tiny file claiming a huge image.
MIN_BITS_PER_PIXEL = 0.01


def check_codestream_plausible(frame: bytes, info: CodestreamInfo) -> None:
    """Refuse a codestream that ends before its end marker or is far too small for its image."""
    end = frame.rstrip(b"\x00")  # the last fragment is padded to an even length
    if not end.endswith(b"\xff\xd9"):  # JPEG EOI (T.81 B.2.1), JPEG 2000 EOC (15444-1 A.4.4)
        raise FailedImage(f"pixel data truncated: the {_codec_name(info)} codestream ends "
                          "before its end marker")
    pixels_ = info.rows * info.columns * max(info.components, 1)
    if 8 * len(frame) < MIN_BITS_PER_PIXEL * pixels_:
        raise FailedImage(f"implausible pixel data: a {len(frame)}-byte {_codec_name(info)} "
                          f"codestream cannot hold {info.rows} x {info.columns} pixels")


def _codec_name(info: CodestreamInfo) -> str:
    return "JPEG 2000" if info.kind == "j2k" else "JPEG"


def decoded_bytes(rows: int, cols: int, ds: Dataset, info: CodestreamInfo | None) -> int:
    """Bytes of the stored-value array a decoder returns for ``rows`` x ``cols``."""
    bits = max(int(ds.BitsAllocated), info.precision if info else 0)
    samples = max(int(ds.SamplesPerPixel), info.components if info else 0)
    return rows * cols * samples * ((bits + 7) // 8)


def check_budget(rows: int, cols: int, ds: Dataset, info: CodestreamInfo | None,
                 opts: DecodeOptions, how: str = "") -> None:
    """FailedImage if decoding ``rows`` x ``cols`` would exceed the memory budget."""
    need = decoded_bytes(rows, cols, ds, info)
    if need > opts.budget_bytes:
        raise FailedImage(
            f"decoding {rows} x {cols} pixels{how} needs {need / 2**20:.3g} MiB, beyond the "
            f"budget of {opts.budget_bytes / 2**20:.3g} MiB (decode_budget_mb)")


def reduced_shape(ds: Dataset, info: CodestreamInfo | None,
                  opts: DecodeOptions) -> tuple[int, int, str] | None:
    """The shape reduced decoding will produce, from the headers alone, or None if it won't."""
    ts = transfer_syntax(ds)
    if not opts.reduced or info is None or ts is None or info.components != 1 or info.signed:
        return None
    # A codestream may carry more bits than stored (HTJ2K encoders write 16 for 12-bit data).
    if int(ds.PixelRepresentation) != 0 or info.precision < int(ds.BitsStored):
        return None
    rows, cols = int(ds.Rows), int(ds.Columns)
    if ts in J2K_SYNTAXES and info.precision <= 16:
        r = reduce_level(rows, cols, info.levels or 0, opts.min_side)
        return (-(-rows >> r), -(-cols >> r), f"JPEG 2000 resolution level 1/{2**r}") if r else None
    if ts == JPEGBaseline8Bit and info.precision == 8:
        scale = jpeg_scale(rows, cols, opts.min_side)
        return (-(-rows // scale), -(-cols // scale), f"JPEG DCT scaling 1/{scale}") \
            if scale > 1 else None
    return None


def jpeg_scale(rows: int, cols: int, min_side: int) -> int:
    """The largest DCT scaling denominator (8, 4, 2 or 1) that keeps ``min_side``."""
    scale = 8
    while scale > 1 and min(rows, cols) // scale < min_side:
        scale //= 2
    return scale


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

    Only single-component, unsigned codestreams of at least Bits Stored bits qualify: Pillow
    returns those scaled to its 8/16-bit modes, which we undo exactly with a right shift.
    """
    ts = transfer_syntax(ds)
    if info is None or reduced_shape(ds, info, opts) is None:
        return None
    rows, cols = int(ds.Rows), int(ds.Columns)
    frame = first_frame(ds)
    if ts in HTJ2K_SYNTAXES and (arr := _htj2k_reduced(frame, info, rows, cols, opts)) is not None:
        return arr
    if ts in J2K_SYNTAXES:
        r = reduce_level(rows, cols, info.levels or 0, opts.min_side)
        # Finer levels are a fallback only while they fit the memory budget.
        finest = next((k for k in range(1, r + 1) if decoded_bytes(
            -(-rows >> k), -(-cols >> k), ds, info) <= opts.budget_bytes), r)
        im, r = _j2k_reduced(frame, r, finest)
        how = f"JPEG 2000 resolution level 1/{2**r}"
    else:  # JPEG baseline, 8 bits
        scale = jpeg_scale(rows, cols, opts.min_side)
        how = f"JPEG DCT scaling 1/{scale}"
        # libjpeg-turbo with its warnings as errors: Pillow would decode a corrupt stream mutely.
        strict = decode_strict(frame, rows // scale, cols // scale)
        if strict is not None:
            return strict, f"{how}: {rows} x {cols} -> {strict.shape[0]} x {strict.shape[1]}"
        im = Image.open(io.BytesIO(frame))
        im.draft("L", (cols // scale, rows // scale))  # libjpeg DCT scaling: 1/2, 1/4 or 1/8
        im.load()
        how = f"JPEG DCT scaling 1/{scale}"
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


def _htj2k_reduced(frame: bytes, info: CodestreamInfo, rows: int, cols: int,
                   opts: DecodeOptions) -> tuple[np.ndarray, str] | None:
    """HTJ2K at a resolution level with OpenJPH (imagecodecs): 3-7x faster than OpenJPEG here,
    and it takes every level (Pillow refuses levels >= 2 of some odd-sized images)."""
    try:
        import imagecodecs
    except ImportError:
        return None
    r = reduce_level(rows, cols, info.levels or 0, opts.min_side)
    arr = imagecodecs.htj2k_decode(frame, skipres=r)
    if arr.ndim != 2:
        return None
    return arr, f"HTJ2K resolution level 1/{2**r} (OpenJPH): {rows} x {cols} -> " \
        f"{arr.shape[0]} x {arr.shape[1]}"


def _j2k_ceil_sized(frame: bytes, level: int) -> Image.Image | None:
    """Pillow's OpenJPEG at ``level`` with the image sized as OpenJPEG sizes it, or None.

    Pillow 13 sizes a reduced image by rounding (1841 / 4 -> 460) where OpenJPEG takes the ceiling
    (461), and then refuses the tile as a "broken data stream": every odd-sized film fell back to
    level 1 (156 ms against 40 ms at level 2 for a 1955 x 1841 frame). This sets the size and
    the tile as ``Jpeg2KImageFile.load`` would, with the ceiling; on any surprise (another Pillow)
    the caller takes Pillow's own path.
    """
    from PIL import ImageFile

    try:
        im = Image.open(io.BytesIO(frame))
        w, h = im.size
        power = 1 << level
        tile = im.tile[0]
        args = tile[3]
        im._size = (-(-w // power), -(-h // power))
        im.tile = [ImageFile._Tile(tile[0], (0, 0, *im.size), tile[2],
                                   (args[0], level, im.layers, args[3], args[4]))]
        ImageFile.ImageFile.load(im)
    except Exception:
        return None
    return im


def _j2k_reduced(frame: bytes, level: int, finest: int = 1) -> tuple[Image.Image, int]:
    """Decode at ``level``, else at the next finer levels down to ``finest`` (OpenJPEG via Pillow
    refuses some levels of some codestreams, e.g. lossy files whose precincts are coarser)."""
    for r in range(level, finest - 1, -1):
        ceil = _j2k_ceil_sized(frame, r)
        if ceil is not None:
            return ceil, r
        im = Image.open(io.BytesIO(frame))
        im.reduce = r  # OpenJPEG decodes only the resolution levels it needs
        try:
            im.load()
        except OSError:
            im.close()
            if r == finest:
                raise
            continue
        return im, r
    raise ValueError("no reduction level to try")


def decode_stored(ds: Dataset, opts: DecodeOptions, steps: list[str]) -> np.ndarray:
    """Stored pixel values (RGB for colour), reduced where allowed; FailedImage on any error."""
    info = check_pixel_data(ds, opts)
    ts: UID = transfer_syntax(ds)  # type: ignore[assignment]  # checked above
    rows, cols = int(ds.Rows), int(ds.Columns)
    planned = reduced_shape(ds, info, opts)
    if planned is not None:  # the codec decodes fewer pixels: the budget is theirs
        check_budget(planned[0], planned[1], ds, info, opts, f" ({planned[2]})")
    else:
        check_budget(rows, cols, ds, info, opts)
    try:
        reduced = decode_reduced(ds, info, opts)
    except FailedImage:  # the data are corrupt (the strict JPEG decoder said so): no second try
        raise
    except BaseException as exc:  # an odd codestream for Pillow: the full decoder gets its chance
        if must_propagate(exc):
            raise
        reduced = None
        steps.append(f"reduced decoding failed ({short(exc, 80)}); full resolution")
    if reduced is not None:
        arr, note = reduced
        steps.append(f"decoded {ts.name} at reduced resolution ({note})")
        return shrink(arr, ds, opts, steps)  # a level finer than planned: the rest by block means
    if planned is not None:  # reduced decoding failed: full resolution must fit the budget too
        check_budget(rows, cols, ds, info, opts)
    arr = decode_fast(ds, info, steps)
    by = f", {_FAST_NAMES[ts]}" if arr is not None else ""
    if arr is None:
        arr = _decode_pydicom(ds, ts, steps)
    shape = (int(ds.Rows), int(ds.Columns))
    if arr.shape[:2] != shape:
        raise FailedImage(f"decoded pixel array has shape {arr.shape}, expected {shape}")
    steps.append(f"decoded {ts.name} at full resolution ({shape[0]} x {shape[1]}{by})")
    return shrink(arr, ds, opts, steps)


def _decode_pydicom(ds: Dataset, ts: UID, steps: list[str]) -> np.ndarray:
    """The whole frame through pydicom's decoders; FailedImage naming the codec's complaint."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            arr = ds.pixel_array
        steps.extend(redact(f"pydicom: {short(w.message, 120)}", ds) for w in caught[:3])
    except MemoryError as exc:
        raise FailedImage(f"out of memory decoding {ts.name} pixel data") from exc
    except BaseException as exc:  # not just Exception: a Rust codec's panic is a BaseException
        if must_propagate(exc):
            raise
        # pydicom's preamble adds nothing to a reason: keep each plugin's own words.
        why = str(exc).replace(_ALL_PLUGINS_FAILED, "")
        why = _FILE_OBJECT.sub("the data", why)  # Pillow names its file object, not the fault
        words = libjpeg_words(why)  # the decoder's words, its code unquoted (scrub hid it)
        if words is not None:
            raise FailedImage(f"cannot decode {ts.name} pixel data: {words}") from exc
        reason = f"cannot decode {ts.name} pixel data: {short(ValueError(why), 200)}"
        raise FailedImage(redact(reason, ds)) from exc
    return arr


def decode_fast(ds: Dataset, info: CodestreamInfo | None, steps: list[str]) -> np.ndarray | None:
    """JPEG-LS with CharLS and lossless JPEG with libjpeg-turbo (both via imagecodecs), or None.

    Measured here on 2128 x 2000 12-bit frames: CharLS 0.32 s against pylibjpeg-libjpeg's 1.27 s
    (pydicom's default), libjpeg-turbo 0.09 s against 0.62 s. Only what both decode to the same
    values qualifies: unsigned, one component; anything else, or a failure, goes to pydicom.
    """
    ts = transfer_syntax(ds)
    if info is None or info.kind != "jpeg" or info.components != 1:
        return None
    if int(ds.PixelRepresentation) != 0 or int(ds.SamplesPerPixel) != 1:
        return None
    if ts == JPEGBaseline8Bit and info.precision == 8:
        # libjpeg-turbo, strict: a corrupt stream fails with its words (see ``jpeg_check``).
        return decode_strict(first_frame(ds))
    decoder = _FAST.get(ts) if ts is not None else None
    if decoder is None:
        return None
    try:
        import imagecodecs
    except ImportError:
        return None
    try:
        arr = getattr(imagecodecs, decoder)(first_frame(ds))
    except Exception as exc:  # pydicom's decoders get their chance, and give the reason
        steps.append(f"{decoder} failed ({short(exc, 80)}); pydicom's decoder instead")
        return None
    return arr if arr.ndim == 2 else None


_FAST = {JPEGLSLossless: "jpegls_decode", JPEGLSNearLossless: "jpegls_decode",
         JPEGLosslessSV1: "jpeg8_decode", JPEGLossless: "jpeg8_decode"}
_FAST_NAMES = {JPEGLSLossless: "CharLS", JPEGLSNearLossless: "CharLS",
               JPEGLosslessSV1: "libjpeg-turbo", JPEGLossless: "libjpeg-turbo",
               JPEGBaseline8Bit: "libjpeg-turbo, strict"}


def shrink(arr: np.ndarray, ds: Dataset, opts: DecodeOptions, steps: list[str]) -> np.ndarray:
    """A full-resolution grey frame reduced by a power of two, by block means of stored values.

    What a JPEG 2000 resolution level gives, for codecs without one: the network needs 224 px,
    and every later pixel step then costs 4-16x less. Skipped where averaging stored values
    would change their meaning (padding, LUT sequences) and for colour.
    """
    if not opts.reduced or arr.ndim != 2 or "PixelPaddingValue" in ds:
        return arr
    if "ModalityLUTSequence" in ds or "VOILUTSequence" in ds:
        return arr
    rows, cols = arr.shape
    k = 1
    while min(rows, cols) // (2 * k) >= opts.min_side:
        k *= 2
    if k == 1:
        return arr
    out = block_mean(arr, k)
    steps.append(f"block mean 1/{k} of the stored values: {rows} x {cols} -> "
                 f"{out.shape[0]} x {out.shape[1]}")
    return out


def block_mean(arr: np.ndarray, k: int) -> np.ndarray:
    """Means of ``k`` x ``k`` blocks of an integer frame, rounded half to even, in its dtype.

    The few edge rows and columns beyond a whole block are dropped. Exact integer sums of
    strided slices: 4-5x faster here than a float mean over a 4-D reshape (2128 x 2000 12-bit
    frame, k = 2 / 4 / 8: 6.5 / 2.7 / 1.7 ms against 25.6 / 13.9 / 7.9), the same values (tested).
    """
    rows, cols = arr.shape[0] // k * k, arr.shape[1] // k * k
    info = np.iinfo(arr.dtype)
    # int32 is faster where k * k values of the dtype cannot overflow it (65535 x 64 for 16
    # bits at 1/8); otherwise int64, exact for any k * k up to 2**31 of 32-bit values.
    fits = k * k * max(abs(int(info.min)), int(info.max)) < 2**31
    wide = np.int32 if fits else np.int64
    sums = arr[:rows:k, :cols].astype(wide)
    for i in range(1, k):
        sums += arr[i:rows:k, :cols]
    cells = sums[:, 0::k].copy()
    for j in range(1, k):
        cells += sums[:, j::k]
    n = k * k
    q, rem = np.divmod(cells, n)  # floor division: 0 <= rem < n, negatives included
    q += (2 * rem > n) | ((2 * rem == n) & (q % 2 == 1))  # np.rint's half to even
    return q.astype(arr.dtype)


def _lut_item(ds: Dataset, keyword: str) -> Dataset | None:
    """The first item of a LUT sequence, checked; FailedImage naming the sequence if broken."""
    if keyword not in ds:
        return None
    name = tag_name(keyword)
    try:
        seq = ds[keyword].value
        item = seq[0] if seq else None
    except Exception as exc:
        raise FailedImage(f"{name} is malformed ({type(exc).__name__})") from exc
    if item is None:
        return None
    if not isinstance(item, Dataset):
        raise FailedImage(f"{name} is malformed: its item is not a data set")
    problem = pixels.lut_problem(item)
    if problem:
        raise FailedImage(f"{name} is malformed: {problem}")
    return item


def _step(keyword: str, what: str, func: Callable[[], np.ndarray]) -> np.ndarray:
    """Run one pixel step; an error in it becomes a reason naming its tag, not a catch-all."""
    try:
        return func()
    except (FailedImage, MemoryError):
        raise
    except Exception as exc:
        raise FailedImage(f"{tag_name(keyword)}: {what} failed ({type(exc).__name__})") from exc


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
            raise FailedImage(problem)
        values = _step("RescaleSlope", "rescaling", lambda: pixels.apply_modality_lut(arr, ds))
        if ds.get("RescaleSlope") is not None or ds.get("RescaleIntercept") is not None:
            steps.append(f"rescale slope {ds.get('RescaleSlope', 1)} "
                         f"intercept {ds.get('RescaleIntercept', 0)}")
    if not np.isfinite(values).all():
        raise FailedImage("Modality LUT produced non-finite values (check Rescale Slope/Intercept)")
    lo, hi = float(values.min()), float(values.max())
    if lo == hi:  # a corrupt codestream often decodes to its fill value
        raise FailedImage(f"pixel data decodes to a constant image (every pixel is {lo:g}): "
                          "nothing to screen")
    _lut_item(ds, "VOILUTSequence")
    window, note = pixels.choose_voi(ds)
    if note:
        steps.append(note)
    if window is not None:
        if window.kind == "lut":
            out = _step("VOILUTSequence", "applying the VOI LUT",
                        lambda: pixels.apply_voi_lut_sequence(values, ds))
        else:
            out = pixels.window_to_unit(values, window.center, window.width, window.function)
        empty = window_problem(out, mask)
        if empty is None:
            steps.append(window.description)
        else:  # the window shows no anatomy: the stored range, stretched, shows what there is
            steps.append(f"{window.description} ignored: {empty}")
            window = None
    if window is None:
        lo, hi = pixels.robust_range(values, opts.percentiles, mask)
        out = pixels.apply_percentile_window(values, lo, hi)
        p_lo, p_hi = opts.percentiles
        steps.append(f"robust window: percentiles {p_lo:g}-{p_hi:g} = {lo:g}..{hi:g}")
    if pi == "MONOCHROME1":
        out = pixels.apply_inversion(out, ds)
        steps.append("MONOCHROME1 inverted")
    out = pixels.apply_padding(out, mask)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def window_problem(out: np.ndarray, mask: np.ndarray | None) -> str | None:
    """Why a VOI window's or LUT's output shows nothing (all but a few pixels at one bound, or a
    near-uniform grey), or None when it is usable."""
    clipped = content.clipped_to_one_bound(out, mask)
    if clipped is not None:
        bound, share = clipped
        return f"it clips {share:.1%} of the pixels to {bound}"
    body = out[~mask] if mask is not None and not mask.all() else out
    if content.content_problem(body) is not None:
        levels, spread = content.levels_and_spread(body)
        return f"it leaves the image nearly uniform ({levels} grey levels, spread {spread:.3f})"
    return None


def decode_grey(ds: Dataset, opts: DecodeOptions, steps: list[str]) -> np.ndarray:
    """Decode ``ds``'s first (only) frame to grey in [0, 1]."""
    return to_grey(decode_stored(ds, opts, steps), ds, opts, steps)
