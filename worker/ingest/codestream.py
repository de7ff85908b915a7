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


_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"


def jp2_codestream(data: bytes) -> bytes | None:
    """The codestream inside a JP2 file's ``jp2c`` box (ISO 15444-1 I.5), or None.

    The standard wants a raw codestream in DICOM, but OpenJPEG decodes a JP2 file too: its own
    header must not escape the checks.
    """
    if not data.startswith(_JP2_SIGNATURE):
        return None
    pos = 0
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        header = 8
        if length == 1 and pos + 16 <= len(data):  # XLBox: a 64-bit length follows
            length, header = struct.unpack(">Q", data[pos + 8:pos + 16])[0], 16
        if kind == b"jp2c":
            return data[pos + header:pos + length] if length else data[pos + header:]
        if length < header:  # 0 ("to the end") before jp2c, or a malformed length
            return None
        pos += length
    return None


def codestream_info(data: bytes) -> CodestreamInfo | None:
    """JPEG 2000 (raw or in a JP2 file) or JPEG main-header facts, or None for other or
    unparseable streams."""
    inner = jp2_codestream(data)
    if inner is not None:
        return j2k_info(inner)
    return j2k_info(data) or jpeg_info(data)
