"""The copies behind a conflict: images of a study that have other files under their SOP Instance
UID (twins) besides the primary one, and setting copies aside once a person has chosen."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from pneumoscreen.db.models import FileRole, Image, ImageFile


@dataclass(frozen=True)
class Copy:
    file_id: int
    path: str
    sha256: str
    role: str
    reason: str | None


@dataclass(frozen=True)
class ImageCopies:
    image_id: int
    study_uid: str | None
    sop_uid: str | None
    status: str
    copies: tuple[Copy, ...]  # the primary first, then twins in the order they arrived


def copies_of(*, session: Session, study_uid: str | None = None,
              sop_uid: str | None = None) -> list[ImageCopies]:
    """Images that have at least one twin (not set aside), with all their copies."""
    with_twins = (select(ImageFile.image_id).where(ImageFile.role == FileRole.twin)
                  .distinct())
    query = select(Image).where(Image.id.in_(with_twins))
    if study_uid is not None:
        query = query.where(Image.study_instance_uid == study_uid)
    if sop_uid is not None:
        query = query.where(Image.sop_instance_uid == sop_uid)
    out = []
    for image in session.scalars(query.order_by(Image.id)):
        files = [Copy(f.id, f.path, f.sha256, f.role.value, f.reason) for f in session.scalars(
            select(ImageFile).where(ImageFile.image_id == image.id).order_by(ImageFile.id))]
        primary = [f for f in files if f.sha256 == image.sha256]
        if not primary:  # an image registered before study_files: its own file is the primary
            primary = [Copy(0, image.source_path, image.sha256, FileRole.primary.value, None)]
        out.append(ImageCopies(image.id, image.study_instance_uid, image.sop_instance_uid,
                               image.status.value, (*primary, *(
                                   f for f in files if f.sha256 != image.sha256))))
    return out


def set_aside(image_id: int, keep_sha256: str, reason: str, *, session: Session) -> int:
    """Every copy of the image but ``keep_sha256`` is set aside with ``reason``; the number."""
    result = session.execute(
        update(ImageFile).where(ImageFile.image_id == image_id,
                                ImageFile.sha256 != keep_sha256,
                                ImageFile.role != FileRole.set_aside)
        .values(role=FileRole.set_aside, reason=reason)
        .execution_options(synchronize_session=False))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
