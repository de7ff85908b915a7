"""Conflicts: two different images received under one SOP Instance UID.

The arrival order decides nothing: both copies are kept, the study is *held* (its result is not
exported as the verdict of either image) until a person looks at both and keeps one with
``screen conflicts resolve``. Two copies are different images when both are complete and their
pixel data differ; a copy cut short in transfer, or one that cannot be read, is a damaged
retransmission (a twin), not a conflict.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from pydicom.uid import UID
from sqlalchemy.orm import Session

from pneumoscreen.db.conflicts import ImageCopies, copies_of
from pneumoscreen.worker.ingest.dicom_header import read_dataset
from pneumoscreen.worker.ingest.errors import FailedImage

MAX_BYTES = 2 << 30


@dataclass(frozen=True)
class Conflict:
    image: ImageCopies
    digests: dict[str, str]  # sha256 of a copy's file -> digest of its pixel data

    @property
    def study_uid(self) -> str | None:
        return self.image.study_uid

    def describe(self) -> str:
        return (f"{len(set(self.digests.values()))} different images under SOP Instance UID "
                f"{self.image.sop_uid}")


def pixel_digest(path: str | Path) -> str | None:
    """The sha256 of a complete copy's pixel data (None: unreadable, or cut short)."""
    try:
        ds = read_dataset(Path(path), pixels=True, max_bytes=MAX_BYTES,
                          max_file_bytes=MAX_BYTES)
        data = ds.get("PixelData")
        if data is None:
            return None
        syntax = UID(str(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2")))
        if not syntax.is_compressed:
            frames = int(ds.get("NumberOfFrames", 1) or 1)
            expected = (int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1))
                        * int(ds.BitsAllocated) // 8 * frames)
            if len(data) < expected:
                return None
    except (FailedImage, OSError, ValueError, AttributeError, TypeError):
        return None
    return hashlib.sha256(data).hexdigest()


def conflicts(*, session: Session, study_uid: str | None = None) -> list[Conflict]:
    """The images (of one study, or all) whose complete copies hold different pixel data."""
    found = []
    for image in copies_of(session=session, study_uid=study_uid):
        live = [c for c in image.copies if c.role != "set_aside"]
        digests = {c.sha256: d for c in live if (d := pixel_digest(c.path)) is not None}
        if len(set(digests.values())) > 1:
            found.append(Conflict(image, digests))
    return found
