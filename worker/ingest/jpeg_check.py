"""Corrupt JPEG data fails with the decoder's words, not as a pixel soup screened as a chest.

Pillow's libjpeg-turbo decodes a JPEG whose entropy-coded data is damaged (a bad Huffman code,
a premature end of a data segment, extraneous bytes) without a word: libjpeg's warnings are
discarded and the damaged part becomes grey blocks the model would score. simplejpeg calls the
same libjpeg-turbo with its warnings made errors (``strict``): baseline DICOM frames are decoded
by it (with DCT scaling: the same values as Pillow's ``draft``, 4 ms for a 1024 x 1024 film),
and PNG/JPEG files are checked by it before Pillow decodes them (0.35 ms for a 224 x 224 image;
none of the 5,232 Kermany JPEGs is refused). A flipped bit that still forms valid codes is
undetectable by any decoder and is not caught.
"""

from __future__ import annotations

import re

import numpy as np

from pneumoscreen.worker.ingest.errors import FailedImage

# pylibjpeg-libjpeg: "libjpeg error code '-1038' returned from Decode(): A misplaced marker…"
_LIBJPEG = re.compile(r"libjpeg error code '?(-?\d+)'? returned from (\w+)\(\):?[ \t]*([^\n]*)")
# pydicom joins each plugin's message: "pylibjpeg: … pillow: cannot identify image file <_io…>"
_NEXT_PLUGIN = re.compile(r"\s+(pillow|gdcm|pylibjpeg|pyjpegls|imagecodecs):.*$", re.S)


def libjpeg_words(message: str) -> str | None:
    """libjpeg's own words and code from one of its errors ("libjpeg: A misplaced marker segment
    was found… (error code -1038)"), or None if ``message`` is not one. Its text is the
    decoder's, never a value from the file, so it is kept whole."""
    found = _LIBJPEG.search(message)
    if not found:
        return None
    words = _NEXT_PLUGIN.sub("", found.group(3))
    words = " ".join(words.strip(" '\"").split())[:200] or "decoding failed"
    return f"libjpeg: {words} (error code {found.group(1)})"


def ends_with_eoi(data: bytes) -> bool:
    """True if the stream ends with the JPEG end-of-image marker (trailing padding allowed)."""
    return data.rstrip(b"\x00").endswith(b"\xff\xd9")


def _turbo_words(exc: BaseException) -> str:
    words = " ".join(str(exc).split())[:200] or type(exc).__name__
    return re.sub(r"^Corrupt JPEG data:\s*", "", words)


def decode_strict(data: bytes, min_rows: int = 0, min_cols: int = 0,
                  what: str = "JPEG") -> np.ndarray | None:
    """``data`` decoded to grey by libjpeg-turbo, its warnings as a FailedImage, scaled down by
    DCT scaling to the smallest size of at least ``min_rows`` x ``min_cols``; None without
    simplejpeg (the caller decodes as before)."""
    try:
        import simplejpeg
    except ImportError:
        return None
    if not ends_with_eoi(data):
        raise FailedImage(f"corrupt {what} data: premature end (the stream stops before its "
                          "end-of-image marker)")
    try:
        arr = simplejpeg.decode_jpeg(data, colorspace="GRAY", min_height=min_rows,
                                     min_width=min_cols, strict=True)
    except (ValueError, RuntimeError) as exc:
        raise FailedImage(f"corrupt {what} data: {_turbo_words(exc)} (libjpeg-turbo)") from exc
    return arr[..., 0]


def verify_jpeg(data: bytes, what: str = "JPEG") -> None:
    """FailedImage naming the fault if ``data`` (a JPEG stream) is cut short or corrupt."""
    decode_strict(data, what=what)
