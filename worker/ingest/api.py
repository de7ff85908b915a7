"""The ingestion facade: ``sniff_format``, ``probe`` and ``load_grey``, wiring the stages.

sniff (format) → header (read, validate) → policy (screen or reject) → decode → pixel steps.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from pneumoscreen.worker.ingest import raster
from pneumoscreen.worker.ingest.dicom_decode import DecodeOptions, decode_grey
from pneumoscreen.worker.ingest.dicom_header import check_image_pixel, read_dataset, short
from pneumoscreen.worker.ingest.errors import FailedStudy, IngestError, must_propagate
from pneumoscreen.worker.ingest.metadata import COLUMNS, extract, text
from pneumoscreen.worker.ingest.outcome import Decoded, Probe
from pneumoscreen.worker.ingest.policy import AcceptancePolicy
from pneumoscreen.worker.ingest.sniff import sniff_format

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

    @property
    def max_pixels(self) -> int:
        return self.decode.max_pixels

    @property
    def max_bytes(self) -> int:
        """A deflated data set may hold up to max_pixels 32-bit samples plus a 1 MiB header."""
        return self.decode.max_pixels * 4 + (1 << 20)

    def with_reduced(self, reduced: bool | None) -> IngestConfig:
        if reduced is None or reduced == self.decode.reduced:
            return self
        return replace(self, decode=replace(self.decode, reduced=reduced))


def _sniff(path: Path) -> str:
    try:
        fmt = sniff_format(path)
    except OSError as exc:
        raise FailedStudy(f"cannot read file: {exc.strerror or short(exc)}") from exc
    if fmt is None:
        raise FailedStudy("not a DICOM, PNG or JPEG file")
    return fmt


def sop_instance_uid(ds: Dataset) -> str | None:
    uid = text(ds, "SOPInstanceUID")
    if not uid and getattr(ds, "file_meta", None):
        uid = text(ds.file_meta, "MediaStorageSOPInstanceUID")
    return uid


def check_header(ds: Dataset, config: IngestConfig) -> Probe:
    """Metadata, then the policy and the Image Pixel checks; errors carry the metadata."""
    metadata = extract(ds, config.patient_key)
    uid = sop_instance_uid(ds)
    policy = config.policy
    try:
        policy.check_object(ds)  # a report or presentation state has no pixel module to check
        check_image_pixel(ds, config.max_pixels)
        policy.check_study(ds)
    except IngestError as exc:
        exc.metadata, exc.sop_instance_uid = metadata, uid
        raise
    return Probe("dicom", uid, metadata)


def _empty_metadata() -> dict:
    return {**dict.fromkeys(COLUMNS), "transfer_syntax": None, "patient_key": None, "meta": {}}


def probe(path: Path, config: IngestConfig | None = None) -> Probe:
    """Header only (no pixel decoding): the format, SOP Instance UID and metadata of a screenable
    file; raises RejectedStudy or FailedStudy."""
    config = config or IngestConfig()
    path = Path(path)
    try:
        fmt = _sniff(path)
        if fmt != "dicom":
            with raster.open_checked(path, fmt, config.max_pixels) as im:
                meta = {"mode": im.mode, "size": f"{im.size[0]}x{im.size[1]}"}
            return Probe(fmt, None, {**_empty_metadata(), "meta": meta})
        ds = read_dataset(path, pixels=False, max_bytes=config.max_bytes)
        return check_header(ds, config)
    except IngestError:
        raise
    except BaseException as exc:  # the safety net: nothing escapes but a study outcome or a signal
        if must_propagate(exc):
            raise
        log.debug("probe failed unexpectedly", exc_info=True)
        raise FailedStudy(f"unexpected {type(exc).__name__} reading header: {short(exc)}") from exc


def load_grey(
    path: Path, config: IngestConfig | None = None, *, reduced: bool | None = None
) -> Decoded:
    """Decode a file to a 2-D float32 grey image in [0, 1] (MONOCHROME2 sense).

    Re-applies the acceptance policy, so a task is safe on its own. Raises RejectedStudy or
    FailedStudy; never anything else. ``reduced`` overrides ``config.decode.reduced``.
    """
    config = (config or IngestConfig()).with_reduced(reduced)
    path = Path(path)
    try:
        decoded = _load(path, config)
    except IngestError:
        raise
    except MemoryError as exc:
        raise FailedStudy("out of memory while decoding") from exc
    except BaseException as exc:  # codec panics included (see errors.must_propagate)
        if must_propagate(exc):
            raise
        log.debug("load_grey failed unexpectedly", exc_info=True)
        raise FailedStudy(f"unexpected {type(exc).__name__} while decoding: {short(exc)}") from exc
    grey = decoded.grey
    if grey.ndim != 2 or grey.size == 0 or not np.isfinite(grey).all():
        raise FailedStudy(f"decoding produced an unusable array of shape {grey.shape}")
    if float(grey.min()) < 0.0 or float(grey.max()) > 1.0:
        raise FailedStudy("decoding produced values outside [0, 1]")
    return decoded


def _load(path: Path, config: IngestConfig) -> Decoded:
    fmt = _sniff(path)
    if fmt != "dicom":
        grey, steps, meta = raster.load_raster(path, fmt, config.max_pixels)
        return Decoded(grey, fmt, {**_empty_metadata(), "meta": meta}, steps)
    notes: list[str] = []
    ds = read_dataset(path, pixels=True, notes=notes, max_bytes=config.max_bytes)
    found = check_header(ds, config)
    steps = list(notes)
    try:
        grey = decode_grey(ds, config.decode, steps)
    except IngestError as exc:
        exc.metadata, exc.sop_instance_uid = found.metadata, found.sop_instance_uid
        raise
    return Decoded(grey, "dicom", found.metadata, steps)
