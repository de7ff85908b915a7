"""The source images' headers, read again at export time: the patient and study modules are
copied from them into the results and never stored by pneumoscreen."""

from __future__ import annotations

from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError

# Type 2 attributes the result objects copy: present (perhaps empty) in every copy we make.
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
          "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber")
MAX_HEADER_BYTES = 64 * 1024 * 1024


class SourceError(RuntimeError):
    """A source file that is gone or no longer the image that was screened."""


def read_source(path: str | Path, *, study_uid: str, sop_uid: str | None) -> Dataset:
    """The header of a screened image (no pixels), checked to be the one that was screened."""
    p = Path(path)
    try:
        if p.stat().st_size > MAX_HEADER_BYTES * 16:
            raise SourceError(f"source file of study {study_uid} is implausibly large")
        ds = dcmread(p, stop_before_pixels=True, force=True)
    except FileNotFoundError:
        raise SourceError(f"a source file of study {study_uid} is missing") from None
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise SourceError(f"a source file of study {study_uid} cannot be read: "
                          f"{type(exc).__name__}") from None
    if ds.get("StudyInstanceUID") != study_uid or (sop_uid and ds.get("SOPInstanceUID") != sop_uid):
        raise SourceError(f"a source file of study {study_uid} was replaced by another image")
    for keyword in _TYPE2:
        if keyword not in ds or not _valid(ds, keyword):
            # Missing or invalid for its VR (anonymisers write hashes into dates): copied empty,
            # as a Type 2 attribute may be, rather than refusing the whole result.
            setattr(ds, keyword, "")
    return ds


def _valid(ds: Dataset, keyword: str) -> bool:
    from pydicom import config
    from pydicom.valuerep import DA, TM, validate_value

    element = ds[keyword]
    value = element.value
    if value in (None, ""):
        return True
    try:
        validate_value(element.VR, value, config.RAISE)
        if keyword == "PatientSex":
            return str(value) in ("M", "F", "O")
        if element.VR == "DA":
            DA(str(value))
        elif element.VR == "TM":
            TM(str(value))
    except (ValueError, TypeError):
        return False
    return True
