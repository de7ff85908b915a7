"""Twin copies at screening time: an image whose primary copy cannot be decoded is screened from a
twin (another file received with the same SOP Instance UID) before it is declared failed, and the
copy used becomes the image's primary file."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from pneumoscreen.db import FileRole, Image, ImageFile, ImageStatus
from pneumoscreen.db.queries import demote_primary_file
from pneumoscreen.worker.ingest.files import file_sha256

log = logging.getLogger(__name__)

Copy = tuple[str, str]  # (path, sha256)


class Outcome(Protocol):
    """What preparing one file gives (``screen.Prepared``): a tensor, or a status and reason."""

    status: ImageStatus | None
    reason: str | None


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


def first_readable(primary: Outcome, spares: Sequence[Copy],
                   prepare: Callable[[str], Outcome]) -> tuple[Outcome, Copy | None]:
    """``primary`` if it did not fail, else the outcome of the first twin that does not fail
    (screened or rejected) with that twin; else ``primary`` with a reason naming the twins tried.

    A twin whose content changed since it was received (its sha256 differs) is not used.
    """
    if primary.status != ImageStatus.failed or not spares:
        return primary, None
    for path, sha in spares:
        try:
            if file_sha256(Path(path)) != sha:
                continue
        except OSError:
            continue
        outcome = prepare(path)
        if outcome.status != ImageStatus.failed:
            return outcome, (path, sha)
    n = len(spares)
    primary.reason = f"{primary.reason} (and its {n} twin cop{'y' if n == 1 else 'ies'})"
    return primary, None


def promote(image: Image, copy: Copy, *, why: str | None, session: Session) -> None:
    """Make ``copy`` the image's primary file; the copy it replaces stays as a twin with ``why``."""
    path, sha = copy
    log.info("study %s: screened from a twin copy, its own could not be decoded", image.id)
    demote_primary_file(image.id, f"could not be decoded: {why}", session=session)
    session.execute(update(ImageFile)
                    .where(ImageFile.image_id == image.id, ImageFile.sha256 == sha)
                    .values(role=FileRole.primary, reason=None)
                    .execution_options(synchronize_session=False))
    image.source_path, image.sha256 = path, sha
