"""PNG and JPEG inputs -> grey in [0, 1], with no contrast stretching.

Rules (training uses this same loader, so changing them changes the model's input):
8-bit modes map by value/255 (colour and palette images through PIL's ITU-R 601 luma
``convert("L")``, which leaves grey-as-RGB exactly unchanged); 16-bit grey maps by value/65535
(PNG encoders scale samples to the full 16-bit range, whatever their significant bits); alpha is
ignored.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pneumoscreen.worker.ingest.dicom_header import short
from pneumoscreen.worker.ingest.errors import FailedImage
from pneumoscreen.worker.ingest.files import open_regular

_FORMATS = {"png": ("PNG",), "jpeg": ("JPEG", "MPO")}
_SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I"}


@contextmanager
def open_checked(path: Path, fmt: str, max_pixels: int,
                 max_file_bytes: int | None = None) -> Iterator[Image.Image]:
    """Open lazily (header only) and apply the pixel limit before anything is decoded.

    A regular file of at most ``max_file_bytes`` only (``files.open_regular``).
    """
    try:
        fh = open_regular(path, max_file_bytes)
    except OSError as exc:
        raise FailedImage(f"cannot read file: {exc.strerror or short(exc)}") from exc
    with fh:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                im = Image.open(fh)
        except (UnidentifiedImageError, Image.DecompressionBombError,
                Image.DecompressionBombWarning, SyntaxError, ValueError, OSError) as exc:
            raise FailedImage(f"cannot read {fmt.upper()}: {short(exc)}") from exc
        with im:
            if im.format not in _FORMATS.get(fmt, ()):
                raise FailedImage(f"file is {im.format}, not {fmt.upper()}")
            width, height = im.size
            if width < 1 or height < 1 or width * height > max_pixels:
                raise FailedImage(
                    f"{fmt.upper()} size {width} x {height} is outside 1..{max_pixels} pixels "
                    "(max_pixels)"
                )
            yield im


def to_grey(im: Image.Image) -> tuple[np.ndarray, list[str]]:
    """The decoded image as grey float32 in [0, 1] and the steps taken."""
    mode = im.mode
    if mode in _SIXTEEN_BIT:
        arr = np.asarray(im, dtype=np.float64)
        if mode == "I" and (arr.min() < 0 or arr.max() > 65535):
            raise FailedImage(f"32-bit integer image with values {arr.min():g}..{arr.max():g}")
        return (arr / 65535.0).astype(np.float32), [f"{mode} grey: value/65535"]
    if mode == "F":
        raise FailedImage("floating-point images are not supported (save as 8- or 16-bit)")
    steps = []
    if mode != "L":
        steps.append(f"{mode} -> L (ITU-R 601 luma)")
        im = im.convert("L")
    steps.append("8-bit grey: value/255, no stretching")
    return np.asarray(im, dtype=np.float32) / 255.0, steps


def load_raster(path: Path, fmt: str, max_pixels: int,
                max_file_bytes: int | None = None) -> tuple[np.ndarray, list[str], dict]:
    """Decode a PNG/JPEG file to grey; every decoder error becomes a FailedImage."""
    try:
        with open_checked(path, fmt, max_pixels, max_file_bytes) as im:
            meta = {"mode": im.mode, "size": f"{im.size[0]}x{im.size[1]}"}
            if getattr(im, "n_frames", 1) > 1:
                meta["frames"] = str(im.n_frames)  # APNG/MPO: the first frame is the image
            im.load()
            grey, steps = to_grey(im)
    except FailedImage:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise FailedImage(f"cannot decode {fmt.upper()}: {short(exc)}") from exc
    return grey, steps, meta
