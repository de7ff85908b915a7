"""DICOM header → ``Image`` column values, with the patient pseudonymised by a keyed hash."""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID

from pneumoscreen.worker.ingest import vr

# Image column → DICOM keyword. A value is stored only if it is valid for its VR, which bounds
# its length by the standard's maximum (the schema is at least that wide, which a test checks);
# anything else is stored as NULL, never cut to fit.
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
# Columns that hold a keyed hash of the value, never the value (see ``keyed_hash``).
HASHED_COLUMNS = frozenset({"accession_number"})


def max_length(keyword: str) -> int:
    """The longest value the standard allows for ``keyword``'s VR."""
    return vr.max_length(vr.vr_of(keyword))


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
    return keyed_hash(key, label, ident)


def keyed_hash(key: bytes, label: str, value: str) -> str:
    """HMAC-SHA256 (hex, 64 characters) of ``label:value``: the pseudonym of an identifier."""
    return hmac.new(key, f"{label}:{value}".encode(), hashlib.sha256).hexdigest()


def valid_text(ds: Dataset, keyword: str, *, multi: bool = False) -> str | None:
    """``keyword``'s value if it is valid for its VR (so within its maximum length), else None.

    ``multi``: a backslash-joined multi-value is allowed (each value checked); a column holds one.
    """
    value = text(ds, keyword, 1024)
    kind = vr.vr_of(keyword)
    if value is None:
        return None
    ok = vr.is_valid_multi(value, kind) if multi else vr.is_valid(value, kind)
    return value if ok else None


def valid_uid(value: str | None) -> str | None:
    """A UID that fits a UI column (dotted digits, at most 64 characters), or None."""
    return value if value is not None and vr.is_valid(value, "UI") else None


def accession_key(ds: Dataset, key: bytes) -> str | None:
    """The Accession Number's keyed hash: it identifies a patient's visit as surely as an id."""
    value = text(ds, "AccessionNumber", 256)
    return keyed_hash(key, "accession", value) if value else None


_IDENTITY_KEYWORDS = (
    "PatientID", "PatientName", "OtherPatientIDs", "OtherPatientNames", "PatientBirthName",
    "PatientMotherBirthName",
)


# A quoted literal (pydicom quotes element values with repr) and a file path.
_QUOTED = re.compile(r"(?<!\w)b?'[^'\n]*'|(?<!\w)b?\"[^\"\n]*\"")
_IN_FILE = re.compile(r"\b(in|from) file \S+")
_PATH = re.compile(r"(?<![\w.:/])/[^\s'\"]+")


def scrub(message: str) -> str:
    """``message`` with every quoted value and file path replaced.

    For texts about a file that we did not write (pydicom's and the codecs' messages): they
    quote element values verbatim (``Invalid value for VR IS: 'MRN-998877'``) and name the
    file's path, and neither may reach a log, a listing or a stored reason.
    """
    message = _QUOTED.sub("<value>", message)
    message = _IN_FILE.sub(r"\1 the file", message)
    return _PATH.sub("<path>", message)


def redact(message: str, ds: Dataset | None) -> str:
    """``message`` with quoted values, paths and the patient's ids and name parts replaced:
    pydicom's warnings and errors may quote element values, and reasons and pixel steps are
    stored, shown and logged."""
    message = scrub(message)
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
    """The ``Image`` column values of ``ds`` (valid for their VR, or None) plus a ``meta`` dict.

    Identifiers are stored only as keyed hashes (patient, accession number), and not at all
    without a key.
    """
    out: dict[str, Any] = {col: valid_text(ds, kw) for col, kw in COLUMNS.items()
                           if col not in HASHED_COLUMNS}
    if not out["patient_age"]:
        out["patient_age"] = age_from_dates(text(ds, "PatientBirthDate", 8), out["study_date"])
    ts = transfer_syntax(ds)
    out["transfer_syntax"] = valid_uid(str(ts) if ts else None)
    out["patient_key"] = patient_key(ds, key) if key is not None else None
    out["accession_number"] = accession_key(ds, key) if key is not None else None
    meta: dict[str, Any] = {}
    for kw in META_KEYWORDS:
        value = valid_text(ds, kw, multi=True)
        if value is not None:
            meta[kw] = value
    if out["transfer_syntax"]:
        meta["TransferSyntax"] = UID(out["transfer_syntax"]).name
    sop_class = valid_text(ds, "SOPClassUID")
    if sop_class:
        meta["SOPClass"] = UID(sop_class).name
    out["meta"] = meta
    return out
