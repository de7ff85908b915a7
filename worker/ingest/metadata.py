"""DICOM header → ``Study`` column values, with the patient pseudonymised by a keyed hash."""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.uid import UID

# Study column → DICOM keyword. A value is kept to its VR's maximum length (the standard's, not
# the database's: the schema is at least that wide, which a test checks).
COLUMNS: dict[str, str] = {
    "study_instance_uid": "StudyInstanceUID",
    "series_instance_uid": "SeriesInstanceUID",
    "accession_number": "AccessionNumber",
    "study_date": "StudyDate",
    "modality": "Modality",
    "body_part": "BodyPartExamined",
    "view_position": "ViewPosition",
    "patient_age": "PatientAge",
    "patient_sex": "PatientSex",
    "manufacturer": "Manufacturer",
    "photometric_interpretation": "PhotometricInterpretation",
}
# PS3.5 table 6.2-1: maximum value length, in characters, of the VRs read into columns.
VR_MAX_LENGTH = {"AE": 16, "AS": 4, "CS": 16, "DA": 8, "DS": 16, "IS": 12, "LO": 64, "SH": 16,
                 "TM": 14, "UI": 64}


def max_length(keyword: str) -> int:
    """The longest value the standard allows for ``keyword``'s VR."""
    return VR_MAX_LENGTH[dictionary_VR(keyword)]
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


def age_from_dates(birth: str | None, study: str | None) -> str | None:
    """The age at the study as an Age String (``054Y``; months under 2 years), from the birth
    and study dates. The birth date itself is never kept."""
    import datetime as dt

    try:
        born = dt.datetime.strptime(birth or "", "%Y%m%d").date()
        on = dt.datetime.strptime(study or "", "%Y%m%d").date()
    except ValueError:
        return None
    months = (on.year - born.year) * 12 + on.month - born.month - (on.day < born.day)
    if months < 0 or months > 999 * 12:
        return None
    return f"{months:03d}M" if months < 24 else f"{months // 12:03d}Y"


def transfer_syntax(ds: Dataset) -> UID | None:
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    return UID(str(uid)) if uid else None


def extract(ds: Dataset, key: bytes | None) -> dict[str, Any]:
    """The ``Study`` column values of ``ds`` (short strings or None) plus a ``meta`` dict."""
    out: dict[str, Any] = {col: text(ds, kw, max_length(kw)) for col, kw in COLUMNS.items()}
    if out["study_date"] and not re.fullmatch(r"\d{8}", out["study_date"]):
        out["study_date"] = None
    if out["patient_age"] and not re.fullmatch(r"\d{3}[DWMY]", out["patient_age"].upper()):
        out["patient_age"] = None  # not an Age String: no age rather than a wrong one
    if not out["patient_age"]:
        out["patient_age"] = age_from_dates(text(ds, "PatientBirthDate", 8), out["study_date"])
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
