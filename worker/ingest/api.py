"""The ingestion facade: ``check_file``, ``probe`` and ``load_grey``, wiring the stages.

sniff (format) → header (read, validate) → policy (screen or reject) → decode → pixel steps.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import AllTransferSyntaxes

from pneumoscreen.worker.ingest import raster, vr
from pneumoscreen.worker.ingest.dicom_decode import DecodeOptions, decode_grey
from pneumoscreen.worker.ingest.dicom_header import (
    MAX_HEADER_BYTES,
    check_image_pixel,
    read_dataset,
    short,
    unknown_vr_reason,
)
from pneumoscreen.worker.ingest.errors import FailedImage, IngestError, must_propagate
from pneumoscreen.worker.ingest.files import check_size, file_size, open_regular
from pneumoscreen.worker.ingest.metadata import (
    COLUMNS,
    extract,
    scrub,
    text,
    transfer_syntax,
    valid_uid,
)
from pneumoscreen.worker.ingest.outcome import Decoded, Probe
from pneumoscreen.worker.ingest.policy import AcceptancePolicy
from pneumoscreen.worker.ingest.sniff import format_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestConfig:
    """Everything ingestion is told: what to screen, how to decode, the pseudonym key.

    The caller builds it (the worker from its settings, ``Settings.ingest_config``); the defaults
    are the tool's defaults.
    """

    policy: AcceptancePolicy = field(default_factory=AcceptancePolicy)
    decode: DecodeOptions = field(default_factory=DecodeOptions)
    patient_key: bytes | None = None
    # Larger files are refused from their size alone (None: derived from max_pixels).
    max_file_bytes: int | None = None
    max_header_bytes: int = MAX_HEADER_BYTES

    @property
    def max_pixels(self) -> int:
        return self.decode.max_pixels

    @property
    def file_limit(self) -> int:
        """The file-size limit: as set, else room for max_pixels samples of 2 bytes twice over
        (16-bit data, or colour, plus a copy's worth of slack) and 64 MiB of header."""
        return self.max_file_bytes or default_max_file_bytes(self.decode.max_pixels)

    @property
    def max_bytes(self) -> int:
        """A deflated data set may hold up to max_pixels 32-bit samples plus a 1 MiB header."""
        return self.decode.max_pixels * 4 + (1 << 20)

    def with_reduced(self, reduced: bool | None) -> IngestConfig:
        if reduced is None or reduced == self.decode.reduced:
            return self
        return replace(self, decode=replace(self.decode, reduced=reduced))


def default_max_file_bytes(max_pixels: int) -> int:
    """``SCREEN_MAX_FILE_BYTES``'s default: max_pixels x 2 bytes x 2, plus 64 MiB."""
    return max_pixels * 2 * 2 + (64 << 20)


def check_file(path: Path, config: IngestConfig | None = None) -> str | None:
    """The file's format (``"dicom"``, ``"png"``, ``"jpeg"``) or None if it is no image at all.

    Reads 132 bytes, never more, so it is the cheap first look before hashing or parsing.
    Raises FailedImage for what must not be read: not a regular file (a FIFO, a device), or an
    image larger than the file-size limit; OSError-based failures become FailedImage too.
    """
    config = config or IngestConfig()
    path = Path(path)
    try:
        with open_regular(path) as fh:
            head = fh.read(132)
            size = file_size(fh)
    except OSError as exc:
        raise FailedImage(f"cannot read file: {exc.strerror or short(exc)}") from exc
    fmt = format_of(head, size, path.suffix)
    if fmt is not None:
        check_size(size, config.file_limit)
    return fmt


def _sniff(path: Path, config: IngestConfig) -> str:
    fmt = check_file(path, config)
    if fmt is None:
        raise FailedImage("not a DICOM, PNG or JPEG file")
    return fmt


def sop_instance_uid(ds: Dataset) -> str | None:
    """The SOP Instance UID (or the file meta's copy) if it is a valid UID, else None."""
    uid = text(ds, "SOPInstanceUID", 1024)
    if not uid and getattr(ds, "file_meta", None):
        uid = text(ds.file_meta, "MediaStorageSOPInstanceUID", 1024)
    return valid_uid(uid)


# UIDs stored in the database: each must be a UID, and the transfer syntax one pydicom knows.
_UID_KEYWORDS = ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


def check_identity(ds: Dataset) -> None:
    """FailedImage, naming the tag, for a UID the database would have to hold that is no UID
    (too long, or not dotted digits) and for a Transfer Syntax UID that is no transfer syntax."""
    meta = getattr(ds, "file_meta", None)
    checks = [(ds, kw) for kw in _UID_KEYWORDS] + [(meta, "TransferSyntaxUID")]
    if "SOPInstanceUID" not in ds:  # then the file meta's copy is the one stored
        checks.append((meta, "MediaStorageSOPInstanceUID"))
    for source, keyword in checks:
        value = text(source, keyword, 1024) if source is not None else None
        if value is not None and valid_uid(value) is None:
            raise FailedImage(f"{vr.tag_name(keyword)} is not a valid UID: {vr.INVALID} "
                              f"({len(value)} characters; a UID is at most 64 digits and dots)")
    ts = transfer_syntax(ds)
    if ts is not None and str(ts) not in AllTransferSyntaxes:
        raise FailedImage(f"{vr.tag_name('TransferSyntaxUID')} {ts} is not a transfer syntax "
                          f"({ts.name if ts.name != str(ts) else 'unknown UID'})")


def check_header(ds: Dataset, config: IngestConfig) -> Probe:
    """Metadata, then the identity, policy and Image Pixel checks; errors carry the metadata."""
    metadata = extract(ds, config.patient_key)
    uid = sop_instance_uid(ds)
    policy = config.policy
    try:
        check_identity(ds)
        policy.check_object(ds)  # a report or presentation state has no pixel module to check
        check_image_pixel(ds, config.max_pixels)
        policy.check_study(ds)
    except IngestError as exc:
        exc.metadata, exc.sop_instance_uid = metadata, uid
        raise
    return Probe("dicom", uid, metadata)


def read_limits(config: IngestConfig) -> dict[str, int]:
    """The bounds every DICOM read of ``config`` observes (``read_dataset``'s keywords)."""
    return {"max_bytes": config.max_bytes, "max_file_bytes": config.file_limit,
            "max_header_bytes": config.max_header_bytes}


def _empty_metadata() -> dict:
    return {**dict.fromkeys(COLUMNS), "transfer_syntax": None, "patient_key": None, "meta": {}}


def probe(path: Path, config: IngestConfig | None = None, *, fmt: str | None = None) -> Probe:
    """Header only (no pixel decoding): the format, SOP Instance UID and metadata of a screenable
    file; raises RejectedImage or FailedImage. ``fmt``: what :func:`check_file` already found
    (the readers below still refuse special files and files over the limit)."""
    config = config or IngestConfig()
    path = Path(path)
    try:
        fmt = fmt or _sniff(path, config)
        if fmt != "dicom":
            with raster.open_checked(path, fmt, config.max_pixels, config.file_limit) as im:
                meta = {"mode": im.mode, "size": f"{im.size[0]}x{im.size[1]}"}
            return Probe(fmt, None, {**_empty_metadata(), "meta": meta})
        ds = read_dataset(path, pixels=False, **read_limits(config))
        return check_header(ds, config)
    except IngestError:
        raise
    except BaseException as exc:  # the safety net: nothing escapes but an image outcome or a signal
        if must_propagate(exc):
            raise
        log.debug("probe failed unexpectedly", exc_info=True)
        raise FailedImage(unknown_vr_reason(exc) or (
            f"unexpected {type(exc).__name__} reading header: {scrub(short(exc))}")) from exc


def load_grey(
    path: Path, config: IngestConfig | None = None, *, reduced: bool | None = None
) -> Decoded:
    """Decode a file to a 2-D float32 grey image in [0, 1] (MONOCHROME2 sense).

    Re-applies the acceptance policy, so a task is safe on its own. Raises RejectedImage or
    FailedImage; never anything else. ``reduced`` overrides ``config.decode.reduced``.
    """
    config = (config or IngestConfig()).with_reduced(reduced)
    path = Path(path)
    try:
        decoded = _load(path, config)
    except IngestError:
        raise
    except MemoryError as exc:
        raise FailedImage("out of memory while decoding") from exc
    except BaseException as exc:  # codec panics included (see errors.must_propagate)
        if must_propagate(exc):
            raise
        log.debug("load_grey failed unexpectedly", exc_info=True)
        raise FailedImage(unknown_vr_reason(exc) or (
            f"unexpected {type(exc).__name__} while decoding: {scrub(short(exc))}")) from exc
    grey = decoded.grey
    if grey.ndim != 2 or grey.size == 0 or not np.isfinite(grey).all():
        raise FailedImage(f"decoding produced an unusable array of shape {grey.shape}")
    if float(grey.min()) < 0.0 or float(grey.max()) > 1.0:
        raise FailedImage("decoding produced values outside [0, 1]")
    return decoded


def _load(path: Path, config: IngestConfig) -> Decoded:
    fmt = _sniff(path, config)
    if fmt != "dicom":
        grey, steps, meta = raster.load_raster(path, fmt, config.max_pixels, config.file_limit)
        return Decoded(grey, fmt, {**_empty_metadata(), "meta": meta}, steps)
    notes: list[str] = []
    ds = read_dataset(path, pixels=True, notes=notes, **read_limits(config))
    found = check_header(ds, config)
    steps = list(notes)
    try:
        grey = decode_grey(ds, config.decode, steps)
    except IngestError as exc:
        exc.metadata, exc.sop_instance_uid = found.metadata, found.sop_instance_uid
        raise
    return Decoded(grey, "dicom", found.metadata, steps)
