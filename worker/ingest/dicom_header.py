"""Read a DICOM file (header only, or with pixels) and check its Image Pixel module.

Every pydicom error becomes a :class:`FailedImage` whose reason says what was wrong; pydicom's
warnings are collected (they explain odd files in ``screen inspect``) instead of being printed.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from pathlib import Path
from typing import BinaryIO

import pydicom
from pydicom.datadict import DicomDictionary
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import (
    JPEG2000,
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from pneumoscreen.worker.ingest import vr
from pneumoscreen.worker.ingest.errors import FailedImage
from pneumoscreen.worker.ingest.files import BoundedReader, file_size, open_regular
from pneumoscreen.worker.ingest.metadata import (
    COLUMNS,
    META_KEYWORDS,
    redact,
    scrub,
    text,
    transfer_syntax,
)
from pneumoscreen.worker.ingest.sniff import plausible_dicom
from pneumoscreen.worker.ingest.vr import quoted, tag_name

PIXEL_DATA = Tag(0x7FE0, 0x0010)
REQUIRED_PIXEL_KEYWORDS = (
    "Rows", "Columns", "BitsAllocated", "BitsStored", "PixelRepresentation", "SamplesPerPixel",
    "PhotometricInterpretation",
)
MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
COLOUR = (
    "RGB", "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT", "PALETTE COLOR",
)
# Every tag ingestion reads; converted while pydicom's warnings are being collected.
USED_KEYWORDS = (
    *REQUIRED_PIXEL_KEYWORDS, *COLUMNS.values(), *META_KEYWORDS, "PatientID",
    "PatientName", "PatientBirthDate", "SeriesDate", "AcquisitionDate", "ContentDate",
    "SOPInstanceUID", "HighBit", "RescaleSlope",
    "RescaleIntercept", "RescaleType",
    "WindowCenter", "WindowWidth", "VOILUTFunction", "PixelPaddingValue", "PixelPaddingRangeLimit",
    "ViewCodeSequence", "VOILUTSequence", "ModalityLUTSequence",
)
# A header read stops after this many bytes: generous for private blocks and overlays before
# the Pixel Data, and a bound on what a hostile file can make the parser read.
MAX_HEADER_BYTES = 16 << 20
# A dataset must name at least one of these to count as DICOM when it has neither preamble nor meta.
_IDENTIFYING = ("SOPClassUID", "SOPInstanceUID", "Modality", "Rows", "StudyInstanceUID")


def short(exc: BaseException, limit: int = 160) -> str:
    """An exception as a one-line reason fragment."""
    msg = " ".join(str(exc).split()) or type(exc).__name__
    return msg if len(msg) <= limit else msg[: limit - 1] + "…"


def check_deflated_size(fh: BinaryIO, limit: int) -> bool:
    """Refuse a Deflated Explicit VR data set that would inflate beyond ``limit`` bytes.

    pydicom inflates such files whole while reading the header, so a deflate bomb must be caught
    before ``dcmread``: stream-inflate and count, keeping nothing. Returns whether the data set
    is deflated; leaves ``fh`` at its start.
    """
    import zlib

    from pydicom.filereader import _read_file_meta_info, read_preamble
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    fh.seek(0)
    try:
        read_preamble(fh, force=True)
        meta = _read_file_meta_info(fh)
    except Exception:  # not Part-10 or odd meta: dcmread will tell what is wrong
        fh.seek(0)
        return False
    if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
        fh.seek(0)
        return False
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    while chunk := fh.read(1 << 20):
        try:
            total += len(inflater.decompress(chunk, limit + 1 - total))
            while inflater.unconsumed_tail and total <= limit:
                total += len(inflater.decompress(inflater.unconsumed_tail, limit + 1 - total))
        except zlib.error as exc:
            raise FailedImage(f"deflated data set is corrupt: {short(exc)}") from exc
        if total > limit:
            raise FailedImage(
                f"deflated data set inflates beyond {limit} bytes (max_pixels guard)"
            )
    fh.seek(0)
    return True


def read_dataset(
    path: Path,
    *,
    pixels: bool,
    max_bytes: int,
    max_file_bytes: int | None = None,
    max_header_bytes: int = MAX_HEADER_BYTES,
    notes: list[str] | None = None,
) -> Dataset:
    """Parse ``path`` as DICOM (``force``: no preamble or no meta is fine) or raise FailedImage.

    Bounded: a regular file only, at most ``max_file_bytes``; its first bytes must look like
    DICOM before pydicom is let loose; a header read (``pixels=False``) stops after
    ``max_header_bytes``; ``max_bytes`` bounds what a deflated data set may inflate to (it is
    required, so no reader can skip that guard).
    """
    path = Path(path)
    try:
        fh = open_regular(path, max_file_bytes)
    except OSError as exc:
        raise FailedImage(f"cannot read file: {exc.strerror or short(exc)}") from exc
    with fh:
        size = file_size(fh)
        if size == 0:
            raise FailedImage("empty file (0 bytes)")
        if not plausible_dicom(fh.read(132), size):
            raise FailedImage(
                "not a DICOM file: no DICM marker at byte 128 and the first bytes do not start "
                "a data set"
            )
        deflated = check_deflated_size(fh, max_bytes)
        bounded = not deflated and size > max_header_bytes
        if bounded and pixels:  # the header must fit the bound before the whole file is parsed
            header, pixel_offset = _bounded_header(fh, max_header_bytes)
            check_pixel_bytes(header, size - pixel_offset)
        source = BoundedReader(fh, max_header_bytes if bounded and not pixels else None)
        ds = _parse(source, pixels=pixels, notes=notes)
        if source.exceeded:
            raise _header_too_large(max_header_bytes)
        if pixels and PIXEL_DATA not in ds and ds.get("Rows") is None:
            _check_truncated_pixel_data(fh)
    has_meta = bool(getattr(ds, "file_meta", None))
    if not has_meta and not any(kw in ds for kw in _IDENTIFYING):
        raise FailedImage(
            "not a DICOM file: no preamble, no file meta and no SOP Class UID, Modality or Rows"
        )
    infer_transfer_syntax(ds, notes)
    return ds


def _bounded_header(fh: BinaryIO, limit: int) -> tuple[Dataset | None, int]:
    """Parse the header alone under ``limit``; FailedImage if it does not end within it.
    Returns the header (None if it did not parse) and where the Pixel Data begins."""
    source = BoundedReader(fh, limit)
    header = None
    # An error here is left to the full parse that follows, which names what is wrong.
    with warnings.catch_warnings(), contextlib.suppress(Exception):
        warnings.simplefilter("ignore")
        header = pydicom.dcmread(source, force=True, stop_before_pixels=True)
    if source.exceeded:
        raise _header_too_large(limit)
    offset = fh.tell()
    fh.seek(0)
    return header, offset


#: Room for item tags, offset tables and padding in encapsulated Pixel Data, bytes.
ENCAPSULATION_SLACK = 1 << 20


def plausible_pixel_bytes(header: Dataset) -> int | None:
    """The most bytes encapsulated Pixel Data of this header can take: RLE's worst case
    (PackBits adds one byte per 128, DICOM PS3.5 G.3; a 64-byte header per frame), for the
    other codecs twice the native size; None for native data or an incomplete header."""
    try:
        ts = UID(str(header.file_meta.TransferSyntaxUID))
        if not ts.is_encapsulated:
            return None
        frames = max(int(header.get("NumberOfFrames") or 1), 1)
        rows, cols = int(header.Rows), int(header.Columns)
        samples = max(int(header.get("SamplesPerPixel") or 1), 1)
        depth = (int(header.BitsAllocated) + 7) // 8
    except (AttributeError, TypeError, ValueError):
        return None
    if ts == RLELossless:
        per_frame = 64 + samples * depth * (rows * cols + -(-rows * cols // 128) + 1)
    else:
        per_frame = 2 * rows * cols * samples * depth
    return frames * per_frame + ENCAPSULATION_SLACK


def check_pixel_bytes(header: Dataset | None, pixel_bytes: int) -> None:
    """Refuse before reading them Pixel Data bytes no codec could need for the header's image
    (e.g. fragments repeated over and over): memory then follows the image, not the file."""
    most = plausible_pixel_bytes(header) if header is not None else None
    if header is None or most is None or pixel_bytes <= most:
        return
    codec = UID(str(header.file_meta.TransferSyntaxUID)).name
    raise FailedImage(f"implausible pixel data: {pixel_bytes} bytes of {codec} data for "
                      f"{int(header.Rows)} x {int(header.Columns)} pixels (at most {most}); "
                      "not read")


def _header_too_large(limit: int) -> FailedImage:
    return FailedImage(
        f"header larger than {limit} bytes before the Pixel Data: not read further "
        "(header bound)"
    )


def _parse(source: BoundedReader, *, pixels: bool,
           notes: list[str] | None) -> Dataset:
    """pydicom's reading, its errors as reasons and its warnings as (redacted) notes."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(source, force=True, stop_before_pixels=not pixels)
            # Element values are parsed lazily; touch the ones we use so that errors surface here.
            for kw in USED_KEYWORDS:
                _touch(ds, kw)
        except OSError as exc:
            raise FailedImage(f"cannot read file: {exc.strerror or short(exc)}") from exc
        except FailedImage:
            raise
        except Exception as exc:
            if source.exceeded and source.limit is not None:
                raise _header_too_large(source.limit) from exc
            raise FailedImage(unreadable_reason(exc)) from exc
    if notes is not None:
        notes.extend(redact(f"pydicom: {short(w.message, 120)}", ds) for w in caught[:5])
    return ds


def _touch(ds: Dataset, keyword: str) -> None:
    """Convert ``keyword``'s value; FailedImage naming the tag if it cannot be (an IS of
    "1e999" overflows, a DS of "abc" is no number)."""
    try:
        ds.get(keyword)
    except Exception as exc:
        if unknown_vr_reason(exc):
            raise
        raise FailedImage(f"{tag_name(keyword)} holds {vr.INVALID} for its VR "
                          f"({vr.vr_of(keyword)}): it cannot be read ({type(exc).__name__})"
                          ) from exc


_UNKNOWN_VR = re.compile(
    r"Unknown Value Representation .* in tag (\([0-9A-Fa-f]{4},[0-9A-Fa-f]{4}\))"
)


def unknown_vr_reason(exc: BaseException) -> str | None:
    """"unknown Value Representation (VR) in tag (gggg,eeee) Name" if that is what ``exc`` says
    (pydicom raises it while reading, or later when a value is first converted)."""
    found = _UNKNOWN_VR.search(str(exc))
    if not found:
        return None
    tag = Tag(found.group(1).strip("()").replace(",", ""))
    name = pydicom.datadict.dictionary_description(tag) if tag in DicomDictionary else ""
    return f"unknown Value Representation (VR) in tag {tag}{' ' + name if name else ''}"


def unreadable_reason(exc: Exception) -> str:
    """The reason for a data set pydicom could not parse, naming the tag where it can."""
    return unknown_vr_reason(exc) or (
        f"unreadable DICOM ({type(exc).__name__}): {scrub(short(exc))}")


def _check_truncated_pixel_data(fh: BinaryIO) -> None:
    """A full read that lost the whole data set: if the header alone reads, the file ends
    inside its (encapsulated) Pixel Data, which pydicom reports only as a warning."""
    fh.seek(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            header = pydicom.dcmread(BoundedReader(fh), force=True, stop_before_pixels=True)
        except Exception:
            return
    if header.get("Rows") is not None:
        raise FailedImage(
            "pixel data truncated: the file ends inside its encapsulated Pixel Data (7FE0,0010)"
        )


def infer_transfer_syntax(ds: Dataset, notes: list[str] | None = None) -> UID | None:
    """Set a missing (0002,0010) Transfer Syntax UID from how pydicom parsed the data set.

    Native data: the encoding pydicom detected (implicit/explicit VR, little/big endian), as
    pydicom itself does. Encapsulated data: the codec named by the first fragment's markers.
    """
    ts = transfer_syntax(ds)
    if ts:
        return ts
    elem = ds.get(PIXEL_DATA) if PIXEL_DATA in ds else None
    uid: UID | None = None
    if elem is not None and elem.is_undefined_length:
        uid = _codec_from_fragments(elem.value)
    elif ds.is_little_endian is False:
        uid = ExplicitVRBigEndian
    elif ds.is_implicit_VR is False:
        uid = ExplicitVRLittleEndian
    else:
        uid = ImplicitVRLittleEndian
    if uid is None:
        return None
    if not getattr(ds, "file_meta", None):
        ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid
    if notes is not None:
        notes.append(f"transfer syntax inferred: {uid.name}")
    return uid


def _codec_from_fragments(value: bytes) -> UID | None:
    try:
        from pydicom.encaps import generate_fragments

        frag = next(f for f in generate_fragments(value) if f)
    except Exception:
        return None
    if frag.startswith(b"\xff\x4f\xff\x51"):
        return JPEG2000  # the lossy UID's decoder reads lossless codestreams too
    if frag.startswith(b"\xff\xd8"):
        from pneumoscreen.worker.ingest.codestream import jpeg_info

        info = jpeg_info(frag)
        sof = {8: JPEGBaseline8Bit, 12: JPEGExtended12Bit}
        if info is None:
            return None
        if b"\xff\xf7" in frag[:4096]:
            return JPEGLSLossless
        if b"\xff\xc3" in frag[:4096]:
            return JPEGLosslessSV1
        return sof.get(info.precision, JPEGExtended12Bit)
    return None


def _int(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    try:
        return int(value) if value is not None and str(value).strip() != "" else None
    except (TypeError, ValueError, OverflowError):  # not a number, or an infinite one
        return None


def check_image_pixel(ds: Dataset, max_pixels: int) -> None:
    """Validate the Image Pixel module (PS3.3 C.7.6.3) from the header; raise FailedImage."""
    missing = [kw for kw in REQUIRED_PIXEL_KEYWORDS if _int_or_text(ds, kw) is None]
    if missing:
        named = ", ".join(f"{kw} {Tag(pydicom.datadict.tag_for_keyword(kw))}" for kw in missing)
        raise FailedImage(f"missing Image Pixel attributes: {named}")
    rows, cols = _int(ds, "Rows"), _int(ds, "Columns")
    alloc, stored = _int(ds, "BitsAllocated"), _int(ds, "BitsStored")
    spp, rep = _int(ds, "SamplesPerPixel"), _int(ds, "PixelRepresentation")
    pi = (text(ds, "PhotometricInterpretation") or "").upper()
    for keyword, value in (("Rows", rows), ("Columns", cols)):
        if value is None:  # present (checked above) but no whole number
            raise FailedImage(f"{tag_name(keyword)} is {vr.INVALID}, not a number of pixels")
    if not rows or not cols or rows < 1 or cols < 1:
        raise FailedImage(f"Rows x Columns {rows} x {cols}: an image needs at least one pixel")
    if rows * cols > max_pixels:
        raise FailedImage(
            f"Rows x Columns {rows} x {cols} = {rows * cols} pixels exceeds the limit of "
            f"{max_pixels} (max_pixels)"
        )
    if alloc not in (1, 8, 16, 32):
        raise FailedImage(f"Bits Allocated {alloc} is not supported (allowed: 1, 8, 16, 32)")
    if stored is None or not 1 <= stored <= alloc:
        raise FailedImage(f"Bits Stored {stored} must lie in 1..Bits Allocated ({alloc})")
    if rep not in (0, 1):
        raise FailedImage(f"Pixel Representation {rep} must be 0 (unsigned) or 1 (signed)")
    if spp not in (1, 3):
        raise FailedImage(f"Samples per Pixel {spp} is not supported (allowed: 1, 3)")
    if pi not in MONOCHROME + COLOUR:
        shown = quoted(text(ds, "PhotometricInterpretation", 1024), "CS")
        raise FailedImage(
            f"Photometric Interpretation {shown} is not supported "
            f"(allowed: {', '.join(MONOCHROME + COLOUR)})"
        )
    if (pi in MONOCHROME or pi == "PALETTE COLOR") != (spp == 1):
        raise FailedImage(f"Photometric Interpretation {pi} does not match Samples per Pixel {spp}")
    if pi == "PALETTE COLOR":
        check_palette(ds)


_PALETTE = ("Red", "Green", "Blue")


def check_palette(ds: Dataset) -> None:
    """A PALETTE COLOR image must carry its three lookup tables (PS3.3 C.7.6.3.1.5-6)."""
    missing = []
    for colour in _PALETTE:
        descriptor = f"{colour}PaletteColorLookupTableDescriptor"
        if descriptor not in ds:
            missing.append(tag_name(descriptor))
        if (f"{colour}PaletteColorLookupTableData" not in ds
                and f"Segmented{colour}PaletteColorLookupTableData" not in ds):
            missing.append(tag_name(f"{colour}PaletteColorLookupTableData"))
    if missing:
        raise FailedImage(
            f"PALETTE COLOR image without its Palette Color Lookup Table: missing "
            f"{', '.join(missing)}"
        )


def _int_or_text(ds: Dataset, keyword: str) -> object | None:
    value = text(ds, keyword)
    return value if value not in (None, "") else None
