"""Register the studies of a folder once each, as one batch, and enqueue them in tasks.

Registration is one transaction; enqueueing happens after it commits, so a broker that is down
leaves queued studies behind (``screen resume`` sends them) and never a half-written batch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pneumoscreen.db import Batch, Study, StudyStatus
from pneumoscreen.db.models import utcnow
from pneumoscreen.model.bundle import file_sha256
from pneumoscreen.model.progress import Progress, Silent
from pneumoscreen.worker.ingest import IngestConfig, IngestError, check_file, probe
from pneumoscreen.worker.intake.discovery import iter_files
from pneumoscreen.worker.intake.enqueue import Enqueued, enqueue
from pneumoscreen.worker.settings import Settings
from pneumoscreen.worker.status import status_of

log = logging.getLogger(__name__)


@dataclass
class SubmitResult(Enqueued):
    n_files: int = 0
    n_new: int = 0
    n_duplicate: int = 0
    n_not_images: int = 0
    n_rejected: int = 0
    n_failed: int = 0


@dataclass
class Candidate:
    path: Path
    format: str
    sha256: str
    sop_instance_uid: str | None = None
    status: StudyStatus = StudyStatus.queued
    reason: str | None = None
    metadata: dict = field(default_factory=dict)


def examine(path: Path, config: IngestConfig) -> Candidate | None:
    """Hash and probe one file: None if it is not an image at all.

    ``check_file`` looks first (132 bytes): a file that is not regular or exceeds the size
    limit is recorded as failed, keyed by its path, without being hashed or parsed.
    """
    try:
        fmt = check_file(path, config)
    except IngestError as exc:
        return Candidate(path, "unknown", _path_hash(path), status=status_of(exc),
                         reason=str(exc))
    if fmt is None:
        return None
    try:
        sha = file_sha256(path)
    except OSError as exc:
        return Candidate(path, fmt, _path_hash(path), status=StudyStatus.failed,
                         reason=f"cannot read file: {exc.strerror or 'I/O error'}")
    try:
        found = probe(path, config)
    except IngestError as exc:  # kept, with whatever the header told us, never dropped
        return Candidate(path, fmt, sha, exc.sop_instance_uid, status=status_of(exc),
                         reason=str(exc), metadata=exc.metadata)
    return Candidate(path, found.format, sha, found.sop_instance_uid, metadata=found.metadata)


def _path_hash(path: Path) -> str:
    # An unreadable file has no content hash; key it by path so it is still recorded once.
    import hashlib

    return hashlib.sha256(b"unreadable:" + str(path.resolve()).encode()).hexdigest()


def _apply(study: Study, cand: Candidate, batch: Batch, columns: set[str]) -> None:
    study.sha256, study.sop_instance_uid = cand.sha256, cand.sop_instance_uid
    study.source_path, study.format = str(cand.path.resolve()), cand.format
    study.status, study.reason, study.batch_id = cand.status, cand.reason, batch.id
    study.finished_at = utcnow() if cand.status in StudyStatus.final() else None
    for key, value in cand.metadata.items():
        if key in columns:
            setattr(study, key, value)


def register(candidates: Iterable[Candidate], batch: Batch, *, session: Session,
             progress: Progress) -> tuple[list[int], int]:
    """Insert the studies not seen before (by content hash or SOP Instance UID).

    A study that failed (say, a damaged copy) is replaced by a readable file with the same SOP
    Instance UID, so one broken transfer cannot block the good one for ever.
    """
    new_ids: list[int] = []
    duplicates = 0
    columns = set(Study.__table__.columns.keys()) - {"id", "sha256", "sop_instance_uid"}
    for cand in candidates:
        progress.advance("register")
        if session.scalar(select(Study.id).where(Study.sha256 == cand.sha256)) is not None:
            duplicates += 1
            continue
        same_uid = None
        if cand.sop_instance_uid:
            same_uid = session.scalars(select(Study).where(
                Study.sop_instance_uid == cand.sop_instance_uid)).first()
        if same_uid is not None:
            if same_uid.status != StudyStatus.failed or cand.status == StudyStatus.failed:
                duplicates += 1
                continue
            log.info("study %s: a readable copy replaces the failed one", same_uid.id)
            _apply(same_uid, cand, batch, columns)
            same_uid.attempts = 0
            session.flush()
            new_ids.append(same_uid.id)
            continue
        study = Study()
        _apply(study, cand, batch, columns)
        try:
            with session.begin_nested():  # a concurrent submit may have registered it meanwhile
                session.add(study)
        except IntegrityError:
            duplicates += 1
            continue
        new_ids.append(study.id)
    return new_ids, duplicates


def submit_folder(folder: Path, *, settings: Settings, recursive: bool = True,
                  task_size: int | None = None, progress: Progress | None = None,
                  kind: str = "submit") -> SubmitResult:
    """Register every new study under ``folder`` as one batch and enqueue the screenable ones."""
    progress = progress or Silent()
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"{folder} does not exist")
    paths = list(iter_files(folder, recursive=recursive))
    progress.start("scan", len(paths))
    config = settings.ingest_config()
    candidates: list[Candidate] = []
    not_images = 0
    for path in paths:
        cand = examine(path, config)
        progress.advance("scan")
        if cand is None:
            not_images += 1
        else:
            candidates.append(cand)

    progress.start("register", len(candidates))
    with settings.session() as session:
        batch = Batch(kind=kind, source=str(folder.resolve()), n_files=len(paths),
                      n_not_images=not_images)
        session.add(batch)
        session.flush()
        new_ids, duplicates = register(candidates, batch, session=session, progress=progress)
        batch.n_new, batch.n_duplicate = len(new_ids), duplicates
        rows = session.execute(select(Study.id, Study.status).where(Study.id.in_(new_ids))).all()
        result = SubmitResult(batch_id=batch.id, n_files=len(paths), n_new=len(new_ids),
                              n_duplicate=duplicates, n_not_images=not_images)
        for study_id, status in rows:
            if status == StudyStatus.queued:
                result.queued_ids.append(study_id)
            elif status == StudyStatus.rejected:
                result.n_rejected += 1
            elif status == StudyStatus.failed:
                result.n_failed += 1
        result.queued_ids.sort()

    enqueue(result, settings=settings, task_size=task_size, progress=progress)
    return result
