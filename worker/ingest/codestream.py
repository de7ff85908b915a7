"""Main-header facts of JPEG and JPEG 2000 codestreams, read without decoding them.

They let us refuse a decompression bomb whose codestream claims far more pixels than the DICOM
header, and choose a JPEG 2000 resolution level the codestream actually has.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# JPEG start-of-frame markers (ITU T.81 B.1.1.3) plus JPEG-LS SOF55 (T.87).
_SOF_MARKERS = frozenset({*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC),
                          *range(0xCD, 0xD0), 0xF7})


@dataclass(frozen=True)
class CodestreamInfo:
    """Dimensions and, for JPEG 2000, sample format and decomposition levels."""

    kind: str  # "j2k" or "jpeg"
    rows: int
    columns: int
    components: int
    precision: int
    signed: bool = False
    levels: int | None = None  # wavelet decomposition levels (JPEG 2000 COD)


def j2k_info(data: bytes) -> CodestreamInfo | None:
    """Parse SIZ and COD of a raw JPEG 2000 codestream (ISO 15444-1 A.5.1, A.6.1)."""
    if data[:4] != b"\xff\x4f\xff\x51" or len(data) < 44:
        return None
    (lsiz, _rsiz, xsiz, ysiz, xo, yo) = struct.unpack(">HHIIII", data[4:24])
    csiz = struct.unpack(">H", data[40:42])[0]
    if csiz < 1 or len(data) < 42 + 3 * csiz:
        return None
    ssiz = data[42]
    info = {"rows": ysiz - yo, "columns": xsiz - xo, "components": csiz,
            "precision": (ssiz & 0x7F) + 1, "signed": bool(ssiz & 0x80)}
    pos = 4 + lsiz
    levels = None
    while pos + 4 <= len(data):
        marker, length = struct.unpack(">HH", data[pos:pos + 4])
        if marker == 0xFF52 and pos + 10 <= len(data):  # COD: Scod, SGcod(4), then levels
            levels = data[pos + 9]
        if marker in (0xFF90, 0xFF93) or marker >> 8 != 0xFF:  # SOT/SOD: main header ends
            break
        pos += 2 + length
    return CodestreamInfo("j2k", levels=levels, **info)


def jpeg_info(data: bytes) -> CodestreamInfo | None:
    """Find the SOF segment of a JPEG / JPEG-LS stream (ITU T.81 B.2.2)."""
    if data[:2] != b"\xff\xd8":
        return None
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if marker in _SOF_MARKERS and pos + 10 <= len(data):
            precision, rows, cols, comps = struct.unpack(">BHHB", data[pos + 4:pos + 10])
            return CodestreamInfo("jpeg", rows, cols, comps, precision)
        if marker == 0xDA:  # start of scan before any SOF: malformed
            return None
        pos += 2 + length
    return None


def codestream_info(data: bytes) -> CodestreamInfo | None:
    """JPEG 2000 or JPEG main-header facts, or None for other or unparseable streams."""
    return j2k_info(data) or jpeg_info(data)
