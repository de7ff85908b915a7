"""Format detection by content: DICOM (with or without preamble or file meta), PNG, JPEG.

The file name is only a tie-breaker: content that is clearly PNG/JPEG/DICOM wins whatever the name,
and a file whose content matches nothing but whose name claims ``.dcm``/``.png``/``.jpg`` is still
reported in that format, so that it ends as a *failed* image with a reason (an empty ``.dcm`` file
is a broken image, not "not an image").
"""

from __future__ import annotations

import struct
from pathlib import Path

from pneumoscreen.worker.ingest.files import file_size, open_regular

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
_HEAD = 132

_SUFFIXES = {
    ".dcm": "dicom", ".dicom": "dicom", ".dic": "dicom",
    ".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".jpe": "jpeg",
}
# Every value representation of PS3.5 Table 6.2-1: an explicit-VR element has one at bytes 4-5.
_VRS = frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN "
    b"UR US UT UV".split()
)
# Groups a dataset without preamble plausibly starts with: file meta, then the usual first
# modules (SOP Common 0008, Patient 0010, Acquisition 0018, Relationship 0020, Image Pixel 0028).
_FIRST_GROUPS = frozenset({0x0002, 0x0008, 0x0010, 0x0018, 0x0020, 0x0028})


def looks_like_raw_dataset(head: bytes, size: int) -> bool:
    """True if ``head`` starts like a DICOM data set with no preamble (little or big endian)."""
    if len(head) < 8:
        return False
    for endian in ("<", ">"):
        group, _elem = struct.unpack(endian + "HH", head[:4])
        if group not in _FIRST_GROUPS or group % 2:
            continue
        if head[4:6] in _VRS:  # explicit VR
            return True
        (length,) = struct.unpack(endian + "I", head[4:8])  # implicit VR: a plausible length
        if endian == "<" and (length == 0xFFFFFFFF or length <= size - 8):
            return True
    return False


def plausible_dicom(head: bytes, size: int) -> bool:
    """True if the first bytes start like DICOM: ``DICM`` at 128, or a plausible data set.

    Checked before any forced parse: pydicom's ``force`` reads anything, and 100 MB of zeros
    parse as millions of empty elements.
    """
    return head[128:132] == b"DICM" or looks_like_raw_dataset(head, size)


def sniff_format(path: Path) -> str | None:
    """``"dicom"``, ``"png"``, ``"jpeg"`` or None (not an image: submit skips it).

    Only the first 132 bytes are read. Raises FailedImage for what is not a regular file (a
    FIFO, a device) and OSError if the file cannot be opened at all.
    """
    path = Path(path)
    with open_regular(path) as fh:
        head = fh.read(_HEAD)
        size = file_size(fh)
    return format_of(head, size, path.suffix)


def format_of(head: bytes, size: int, suffix: str) -> str | None:
    """The format the first bytes show, else the one the file name claims, else None."""
    if head.startswith(PNG_MAGIC):
        return "png"
    if head.startswith(JPEG_MAGIC):
        return "jpeg"
    if plausible_dicom(head, size):
        return "dicom"
    return _SUFFIXES.get(suffix.lower())
