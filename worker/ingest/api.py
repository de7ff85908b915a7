"""The ingestion facade: ``sniff_format``, ``probe`` and ``load_grey``, wiring the stages.

sniff (format) → header (read, validate) → policy (screen or reject) → decode → pixel steps.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from pneumoscreen.worker.ingest import raster
from pneumoscreen.worker.ingest.dicom_decode import DecodeOptions, decode_grey
from pneumoscreen.worker.ingest.dicom_header import check_image_pixel, read_dataset, short
from pneumoscreen.worker.ingest.errors import FailedStudy, IngestError, must_propagate
from pneumoscreen.worker.ingest.metadata import COLUMNS, extract, text
from pneumoscreen.worker.ingest.policy import AcceptancePolicy
from pneumoscreen.worker.ingest.results import Decoded, Probe
from pneumoscreen.worker.ingest.sniff import sniff_format
from pneumoscreen.worker.settings import Settings, get_settings

log = logging.getLogger(__name__)


def decode_options(settings: Settings, *, reduced: bool | None = None) -> DecodeOptions:
    """Decoder options from settings; ``reduced`` overrides ``settings.reduced_resolution``."""
    return DecodeOptions(
        max_pixels=settings.max_pixels,
        reduced=settings.reduced_resolution if reduced is None else reduced,
        min_side=settings.reduced_min_side,
        percentiles=tuple(settings.window_percentiles),  # type: ignore[arg-type]
    )


def _max_bytes(settings: Settings) -> int:
    # A deflated data set may hold up to max_pixels 32-bit samples plus a 1 MiB header.
    return settings.max_pixels * 4 + (1 << 20)


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


def check_header(ds: Dataset, settings: Settings) -> Probe:
    """Metadata, then the policy and the Image Pixel checks; errors carry the metadata."""
    metadata = extract(ds, settings.effective_patient_key())
    uid = sop_instance_uid(ds)
    policy = AcceptancePolicy.from_settings(settings)
    try:
        policy.check_object(ds)  # a report or presentation state has no pixel module to check
        check_image_pixel(ds, settings.max_pixels)
        policy.check_study(ds)
    except IngestError as exc:
        exc.metadata, exc.sop_instance_uid = metadata, uid
        raise
    return Probe("dicom", uid, metadata)


def _empty_metadata() -> dict:
    return {**dict.fromkeys(COLUMNS), "transfer_syntax": None, "patient_key": None, "meta": {}}


def probe(path: Path, settings: Settings | None = None) -> Probe:
    """Header only (no pixel decoding): the format, SOP Instance UID and metadata of a screenable
    file; raises RejectedStudy or FailedStudy."""
    settings = settings or get_settings()
    path = Path(path)
    try:
        fmt = _sniff(path)
        if fmt != "dicom":
            with raster.open_checked(path, fmt, settings.max_pixels) as im:
                meta = {"mode": im.mode, "size": f"{im.size[0]}x{im.size[1]}"}
            return Probe(fmt, None, {**_empty_metadata(), "meta": meta})
        ds = read_dataset(path, pixels=False, max_bytes=_max_bytes(settings))
        return check_header(ds, settings)
    except IngestError:
        raise
    except BaseException as exc:  # the safety net: nothing escapes but a study outcome or a signal
        if must_propagate(exc):
            raise
        log.debug("probe failed unexpectedly", exc_info=True)
        raise FailedStudy(f"unexpected {type(exc).__name__} reading header: {short(exc)}") from exc


def load_grey(
    path: Path, settings: Settings | None = None, *, reduced: bool | None = None
) -> Decoded:
    """Decode a file to a 2-D float32 grey image in [0, 1] (MONOCHROME2 sense).

    Re-applies the acceptance policy, so a batch is safe on its own. Raises RejectedStudy or
    FailedStudy; never anything else. ``reduced`` overrides ``settings.reduced_resolution``.
    """
    settings = settings or get_settings()
    path = Path(path)
    try:
        decoded = _load(path, settings, reduced)
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


def _load(path: Path, settings: Settings, reduced: bool | None) -> Decoded:
    fmt = _sniff(path)
    if fmt != "dicom":
        grey, steps, meta = raster.load_raster(path, fmt, settings.max_pixels)
        return Decoded(grey, fmt, {**_empty_metadata(), "meta": meta}, steps)
    notes: list[str] = []
    ds = read_dataset(path, pixels=True, notes=notes, max_bytes=_max_bytes(settings))
    found = check_header(ds, settings)
    steps = list(notes)
    try:
        grey = decode_grey(ds, decode_options(settings, reduced=reduced), steps)
    except IngestError as exc:
        exc.metadata, exc.sop_instance_uid = found.metadata, found.sop_instance_uid
        raise
    return Decoded(grey, "dicom", found.metadata, steps)
