"""Nightly runs: submit what is new in the inbox folders and leave one summary row per run.

Submitting dedupes by content hash (and SOP Instance UID), so a run registers only files it has
not seen before. In-process (no broker) the images are screened during the run and the row is
final at once; with a broker the row stays ``running`` until its images are final, and
:func:`refresh_run` (called by ``screen runs``) fills in the counts and the duration then.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from pneumoscreen.db import Run, session_scope
from pneumoscreen.db.models import utcnow
from pneumoscreen.db.queries import count_by_status
from pneumoscreen.db.runs import last_finished, latest_batch, n_flagged, runs
from pneumoscreen.model.progress import Progress
from pneumoscreen.worker.audit import audit
from pneumoscreen.worker.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    run_id: int
    status: str
    inboxes: list[str]
    batch_ids: list[int] = field(default_factory=list)
    n_new: int = 0
    n_done: int = 0
    n_flagged: int = 0
    n_rejected: int = 0
    n_failed: int = 0
    n_pending: int = 0
    started_at: str | None = None
    duration_s: float | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_nightly(inboxes: Sequence[Path] | None, *, settings: Settings,
                progress: Progress | None = None) -> RunSummary:
    """Submit every inbox folder (default: the configured ones) and record the run."""
    # Here, not at the top: `screen runs` reads this module and must not load pydicom, Celery,
    # NumPy or Pillow.
    from pneumoscreen.model.bundle import ModelFileError
    from pneumoscreen.worker.intake.submit import submit_folder
    from pneumoscreen.worker.queue.publish import BrokerUnavailable

    # Absolute, as recorded: a run's folders must mean the same thing read from anywhere later.
    dirs = [Path(d).absolute() for d in (inboxes if inboxes else settings.inbox_dirs)]
    if not dirs:
        raise ValueError("no inbox folder: pass --inbox DIR or set SCREEN_INBOX_DIRS")
    url = settings.effective_database_url
    with session_scope(url) as session:
        # "submitted" stays false while the folders are read: nobody may close the run then.
        run = Run(kind="nightly", started_at=utcnow(), status="running",
                  inboxes={"dirs": [str(d) for d in dirs], "batch_ids": [], "submitted": False})
        session.add(run)
        session.flush()
        run_id = run.id
        audit(session, "nightly.run", run=run_id, inboxes=[str(d) for d in dirs])
    clock = time.monotonic()
    batch_ids: list[int] = []
    n_new = 0
    errors: list[str] = []
    for inbox in dirs:
        try:
            result = submit_folder(inbox, settings=settings, kind="nightly", progress=progress)
        except BrokerUnavailable as exc:
            # Registered and queued; `screen resume` sends them. The run records the failure.
            errors.append(str(exc))
            batch_id = _latest_batch(inbox, url=url)
            if batch_id is not None:
                batch_ids.append(batch_id)
            continue
        except FileNotFoundError as exc:
            errors.append(f"inbox {inbox}: {exc}")
            continue
        except ModelFileError as exc:  # nothing registered; every inbox would fail the same way
            errors.append(f"model: {exc}")
            break
        batch_ids.append(result.batch_id)
        n_new += result.n_new
        log.info("nightly run %s: %s: %d new %s", run_id, inbox, result.n_new,
                 "study" if result.n_new == 1 else "studies")
    with session_scope(url) as session:
        run = session.get(Run, run_id)
        if run is None:  # deleted meanwhile by hand: nothing left to close
            raise RuntimeError(f"nightly run {run_id} disappeared from the database")
        run.inboxes = {"dirs": [str(d) for d in dirs], "batch_ids": batch_ids,
                       "submitted": True}
        run.batch_id = batch_ids[0] if batch_ids else None
        run.n_new = n_new
        if errors:
            run.error = "\n".join(errors)
        if settings.eager or errors:
            # Everything that could be screened here has been: the run is over.
            run.duration_s = round(time.monotonic() - clock, 3)
        refresh_run(run, session=session, final=settings.eager or bool(errors))
        return summarise(run, session=session)


def _latest_batch(inbox: Path, *, url: str) -> int | None:
    """The batch a submit of ``inbox`` just registered (its enqueueing failed)."""
    with session_scope(url) as session:
        return latest_batch(str(inbox.resolve()), "nightly", session=session)


def batch_ids_of(run: Run) -> list[int]:
    ids = (run.inboxes or {}).get("batch_ids") or ([run.batch_id] if run.batch_id else [])
    return [int(i) for i in ids]


def _counts(batch_ids: list[int], *, session: Session) -> dict[str, int]:
    counts = count_by_status(session=session, batch_ids=batch_ids)
    if not batch_ids:
        return {**counts, "flagged": 0}
    # The run's own verdicts: predictions its batches made (a later rescreen is not this run's).
    counts["flagged"] = n_flagged(batch_ids, session=session)
    return counts


def refresh_run(run: Run, *, session: Session, final: bool = False) -> None:
    """Update a run's counts from its images; close it once none is queued or processing."""
    if not final and (run.status != "running" or not (run.inboxes or {}).get("submitted")):
        return
    ids = batch_ids_of(run)
    counts = _counts(ids, session=session)
    run.n_done, run.n_rejected, run.n_failed = counts["done"], counts["rejected"], counts["failed"]
    run.n_flagged = counts["flagged"]
    pending = counts["queued"] + counts["processing"]
    if pending and not final:
        return
    run.status = "error" if run.error else "finished"
    if run.finished_at is None:
        last = last_finished(ids, session=session) if ids else None
        run.finished_at = last if (last and not final) else utcnow()
    if run.duration_s is None:
        run.duration_s = round((run.finished_at - run.started_at)
                               .total_seconds(), 3)


def summarise(run: Run, *, session: Session) -> RunSummary:
    ids = batch_ids_of(run)
    counts = _counts(ids, session=session)
    started = run.started_at
    return RunSummary(
        run_id=run.id, status=run.status, inboxes=list((run.inboxes or {}).get("dirs", [])),
        batch_ids=ids, n_new=run.n_new, n_done=run.n_done, n_flagged=run.n_flagged,
        n_rejected=run.n_rejected, n_failed=run.n_failed,
        n_pending=counts["queued"] + counts["processing"],
        started_at=started.isoformat(timespec="seconds") if started else None,
        duration_s=run.duration_s, error=run.error)


def list_runs(*, session: Session, limit: int | None = 50) -> list[RunSummary]:
    """Newest first; running ones are brought up to date (and closed when their images are)."""
    rows = runs(session=session, limit=limit)
    for run in rows:
        refresh_run(run, session=session)
    return [summarise(run, session=session) for run in rows]
