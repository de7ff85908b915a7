"""The source images' headers, read again at export time: the patient and study modules are
copied from them into the results and never stored by pneumoscreen."""

from __future__ import annotations

from pathlib import Path

from pydicom import Dataset

from pneumoscreen.worker.ingest.dicom_header import MAX_HEADER_BYTES, read_dataset
from pneumoscreen.worker.ingest.errors import FailedImage

# Type 2 attributes the result objects copy: present (perhaps empty) in every copy we make.
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
          "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber")


class SourceError(RuntimeError):
    """A source file that is gone or no longer the image that was screened."""


def read_source(path: str | Path, *, study_uid: str, sop_uid: str | None,
                max_file_bytes: int) -> Dataset:
    """The header of a screened image (no pixels), checked to be the one that was screened;
    within the intake's bounds (its header limit, and its file-size limit ``max_file_bytes``)."""
    p = Path(path)
    if not p.exists():
        raise SourceError(f"a source file of study {study_uid} is missing")
    try:
        # The ingester's own bounded reader: a regular file only, a bounded header, no pixels.
        ds = read_dataset(p, pixels=False, max_bytes=MAX_HEADER_BYTES,
                          max_file_bytes=max_file_bytes, max_header_bytes=MAX_HEADER_BYTES)
    except FailedImage as exc:
        raise SourceError(f"a source file of study {study_uid} cannot be read: {exc}") from None
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
