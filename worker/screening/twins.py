"""Twin copies at screening time: a study whose primary copy cannot be decoded is screened from a
twin (another file received with the same SOP Instance UID) before it is declared failed, and the
copy used becomes the study's primary file."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from pneumoscreen.db import FileRole, Study, StudyFile, StudyStatus
from pneumoscreen.db.queries import demote_primary_file
from pneumoscreen.model.bundle import file_sha256

log = logging.getLogger(__name__)

Copy = tuple[str, str]  # (path, sha256)


class Outcome(Protocol):
    """What preparing one file gives (``screen.Prepared``): a tensor, or a status and reason."""

    status: StudyStatus | None
    reason: str | None


def spare_copies(study_ids: Sequence[int], *, session: Session) -> dict[int, list[Copy]]:
    """The twin copies of each study, in the order they arrived."""
    spares: dict[int, list[Copy]] = defaultdict(list)
    if not study_ids:
        return {}
    for study_id, path, sha in session.execute(
            select(StudyFile.study_id, StudyFile.path, StudyFile.sha256)
            .where(StudyFile.study_id.in_(list(study_ids)), StudyFile.role == FileRole.twin)
            .order_by(StudyFile.id)).all():
        spares[study_id].append((path, sha))
    return dict(spares)


def first_readable(primary: Outcome, spares: Sequence[Copy],
                   prepare: Callable[[str], Outcome]) -> tuple[Outcome, Copy | None]:
    """``primary`` if it did not fail, else the outcome of the first twin that does not fail
    (screened or rejected) with that twin; else ``primary`` with a reason naming the twins tried.

    A twin whose content changed since it was received (its sha256 differs) is not used.
    """
    if primary.status != StudyStatus.failed or not spares:
        return primary, None
    for path, sha in spares:
        try:
            if file_sha256(Path(path)) != sha:
                continue
        except OSError:
            continue
        outcome = prepare(path)
        if outcome.status != StudyStatus.failed:
            return outcome, (path, sha)
    n = len(spares)
    primary.reason = f"{primary.reason} (and its {n} twin cop{'y' if n == 1 else 'ies'})"
    return primary, None


def promote(study: Study, copy: Copy, *, why: str | None, session: Session) -> None:
    """Make ``copy`` the study's primary file; the copy it replaces stays as a twin with ``why``."""
    path, sha = copy
    log.info("study %s: screened from a twin copy, its own could not be decoded", study.id)
    demote_primary_file(study.id, f"could not be decoded: {why}", session=session)
    session.execute(update(StudyFile)
                    .where(StudyFile.study_id == study.id, StudyFile.sha256 == sha)
                    .values(role=FileRole.primary, reason=None)
                    .execution_options(synchronize_session=False))
    study.source_path, study.sha256 = path, sha
