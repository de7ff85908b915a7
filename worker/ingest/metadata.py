"""DICOM header → ``Study`` column values, with the patient pseudonymised by a keyed hash."""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID

# Study column → (DICOM keyword, column width). Widths mirror db/models.py.
COLUMNS: dict[str, tuple[str, int]] = {
    "study_instance_uid": ("StudyInstanceUID", 64),
    "series_instance_uid": ("SeriesInstanceUID", 64),
    "accession_number": ("AccessionNumber", 64),
    "study_date": ("StudyDate", 8),
    "modality": ("Modality", 16),
    "body_part": ("BodyPartExamined", 64),
    "view_position": ("ViewPosition", 16),
    "patient_age": ("PatientAge", 8),
    "patient_sex": ("PatientSex", 8),
    "manufacturer": ("Manufacturer", 128),
    "photometric_interpretation": ("PhotometricInterpretation", 32),
}
# Extra, non-identifying facts kept in ``meta`` (JSON) for inspection and audits.
META_KEYWORDS = (
    "SOPClassUID", "Rows", "Columns", "BitsAllocated", "BitsStored", "PixelRepresentation",
    "SamplesPerPixel", "NumberOfFrames", "PresentationIntentType", "PresentationLUTShape",
    "ImageType", "ManufacturerModelName", "ImageLaterality",
)


def text(ds: Dataset, keyword: str, width: int = 64) -> str | None:
    """A header value as a short, stripped string (multi-values joined by ``\\``), or None."""
    try:
        value = ds.get(keyword)
    except Exception:  # an undecodable value (bad VR, bad charset) is simply absent for us
        return None
    if value is None:
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = "\\".join(str(v) for v in value)
    out = str(value).strip().replace("\x00", "")
    return out[:width] or None


def patient_key(ds: Dataset, key: bytes) -> str | None:
    """HMAC-SHA256 (hex) of Patient ID, or of Patient's Name when there is no ID; None if neither.

    A keyed hash, not a plain one: patient ids are short and guessable, so an unkeyed hash could be
    reversed by enumerating them.
    """
    ident = text(ds, "PatientID", 256)
    label = "id"
    if not ident:
        ident, label = text(ds, "PatientName", 256), "name"
    if not ident:
        return None
    return hmac.new(key, f"{label}:{ident}".encode(), hashlib.sha256).hexdigest()


_IDENTITY_KEYWORDS = (
    "PatientID", "PatientName", "OtherPatientIDs", "OtherPatientNames", "PatientBirthName",
    "PatientMotherBirthName",
)


def redact(message: str, ds: Dataset | None) -> str:
    """``message`` with the patient's ids and name parts replaced: pydicom's warnings and errors
    may quote element values, and reasons and pixel steps are stored, shown and logged."""
    if ds is None:
        return message
    for kw in _IDENTITY_KEYWORDS:
        value = text(ds, kw, 1024)
        if not value:
            continue
        parts = {value, *re.split(r"[\\^=]", value)}
        for part in sorted((p.strip() for p in parts), key=len, reverse=True):
            if len(part) >= 3:
                message = message.replace(part, "<redacted>")
    return message


def transfer_syntax(ds: Dataset) -> UID | None:
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    return UID(str(uid)) if uid else None


def extract(ds: Dataset, key: bytes | None) -> dict[str, Any]:
    """The ``Study`` column values of ``ds`` (short strings or None) plus a ``meta`` dict."""
    out: dict[str, Any] = {col: text(ds, kw, width) for col, (kw, width) in COLUMNS.items()}
    if out["study_date"] and not re.fullmatch(r"\d{8}", out["study_date"]):
        out["study_date"] = None
    for col in ("modality", "body_part", "view_position"):
        if out[col]:
            out[col] = out[col].upper()
    ts = transfer_syntax(ds)
    out["transfer_syntax"] = str(ts) if ts else None
    out["patient_key"] = patient_key(ds, key) if key is not None else None
    meta: dict[str, Any] = {}
    for kw in META_KEYWORDS:
        value = text(ds, kw, 128)
        if value is not None:
            meta[kw] = value
    if ts:
        meta["TransferSyntax"] = ts.name
    sop_class = text(ds, "SOPClassUID")
    if sop_class:
        meta["SOPClass"] = UID(sop_class).name
    out["meta"] = meta
    return out
