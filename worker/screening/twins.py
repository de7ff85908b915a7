"""Twin copies at screening time: an image whose primary copy cannot be decoded is screened from a
twin (another file received with the same SOP Instance UID) before it is declared failed, and the
copy used becomes the image's primary file."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from sqlalchemy.orm import Session

from pneumoscreen.db import Image, ImageStatus
from pneumoscreen.db.image_files import Copy, demote_primary_file, promote_copy
from pneumoscreen.worker.ingest.files import file_sha256

log = logging.getLogger(__name__)


class Outcome(Protocol):
    """What preparing one file gives (``screen.Prepared``): a tensor, or a status and reason."""

    status: ImageStatus | None
    reason: str | None


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
    promote_copy(image.id, sha, session=session)
    image.source_path, image.sha256 = path, sha
