"""The files received for each image (table ``study_files``): its primary copy and its twins."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from pneumoscreen.db.models import FileRole, ImageFile

Copy = tuple[str, str]  # (path, sha256)


def demote_primary_file(image_id: int, reason: str, *, session: Session) -> None:
    """The image's primary file becomes a twin, with the reason it was set aside."""
    session.execute(update(ImageFile)
                    .where(ImageFile.image_id == image_id, ImageFile.role == FileRole.primary)
                    .values(role=FileRole.twin, reason=reason)
                    .execution_options(synchronize_session=False))


def promote_copy(image_id: int, sha256: str, *, session: Session) -> None:
    """The image's copy with this content becomes its primary file (the former primary first
    demoted with :func:`demote_primary_file`)."""
    session.execute(update(ImageFile)
                    .where(ImageFile.image_id == image_id, ImageFile.sha256 == sha256)
                    .values(role=FileRole.primary, reason=None)
                    .execution_options(synchronize_session=False))


def spare_copies(image_ids: Sequence[int], *, session: Session) -> dict[int, list[Copy]]:
    """The twin copies of each image, in the order they arrived."""
    spares: dict[int, list[Copy]] = defaultdict(list)
    if not image_ids:
        return {}
    for image_id, path, sha in session.execute(
            select(ImageFile.image_id, ImageFile.path, ImageFile.sha256)
            .where(ImageFile.image_id.in_(list(image_ids)), ImageFile.role == FileRole.twin)
            .order_by(ImageFile.id)).all():
        spares[image_id].append((path, sha))
    return dict(spares)
