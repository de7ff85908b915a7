"""Sending registered studies to the worker again: re-screening with another model, resuming.

* ``rescreen``: finished studies go through another model version; its predictions are added
  beside the earlier ones (one per study and model version). The batch records the model
  version, whose sidecar carries the file's path, so every worker loads that very file.
* ``resume``: studies left queued (the broker was down at submit) or processing under an expired
  lease (their worker died and no redelivery came) are enqueued again.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import exists, or_, select
from sqlalchemy.orm import Session

from pneumoscreen.db import Batch, ModelVersion, Prediction, Study, StudyStatus, session_scope
from pneumoscreen.db.models import utcnow
from pneumoscreen.db.repository import model_version_for
from pneumoscreen.model.bundle import ModelFileError, verified_spec
from pneumoscreen.worker.settings import Settings
from pneumoscreen.worker.submit import Reporter, SubmitResult, _Silent, enqueue


def resolve_model(ref: str, *, session: Session) -> Path:
    """A model file from a path, or from a version (or name:version) seen before."""
    path = Path(ref).expanduser()
    if path.is_file():
        return path.resolve()
    rows = session.scalars(select(ModelVersion).order_by(ModelVersion.id.desc())).all()
    for mv in rows:
        if ref in (mv.version, f"{mv.name}:{mv.version}"):
            stored = (mv.sidecar or {}).get("path")
            if stored and Path(stored).is_file():
                return Path(stored)
            raise ModelFileError(
                f"model version {ref!r} is known but its file is not recorded or gone "
                f"({stored or 'no path'}); pass the .keras path instead")
    known = ", ".join(sorted({mv.version for mv in rows})) or "none yet"
    raise ModelFileError(f"{ref!r} is neither a model file nor a known model version "
                         f"(known: {known})")


def register_model(path: Path, *, session: Session) -> ModelVersion:
    """The model version row for ``path``, with the path stored in its sidecar JSON."""
    spec = verified_spec(path)
    spec.extra["path"] = str(path)
    mv = model_version_for(spec, session=session)
    if (mv.sidecar or {}).get("path") != str(path):
        mv.sidecar = {**(mv.sidecar or {}), "path": str(path)}  # a new dict: JSON is not mutable
    return mv


def rescreen(model_ref: str, *, settings: Settings, status: str = "done",
             batch_size: int | None = None, reporter: Reporter | None = None) -> SubmitResult:
    """Enqueue every ``status`` study not yet screened by the model ``model_ref``."""
    wanted = StudyStatus(status)
    with session_scope(settings.effective_database_url) as session:
        path = resolve_model(model_ref, session=session)
        mv = register_model(path, session=session)
        batch = Batch(kind="rescreen", source=str(path), model_version_id=mv.id)
        session.add(batch)
        session.flush()
        already = exists().where(Prediction.study_id == Study.id,
                                 Prediction.model_version_id == mv.id)
        ids = sorted(session.scalars(select(Study.id).where(Study.status == wanted, ~already)))
        batch.n_files = batch.n_new = len(ids)
        result = SubmitResult(batch_id=batch.id, n_files=len(ids), n_new=len(ids),
                              queued_ids=ids)
    enqueue(result, settings=settings, batch_size=batch_size, reporter=reporter or _Silent(),
            rescreen=True)
    return result


@dataclass
class ResumeResult:
    n_queued: int = 0
    n_stale: int = 0
    n_tasks: int = 0


def left_over(*, session: Session, lease_s: float,
              now: dt.datetime | None = None) -> tuple[dict[int | None, list[int]], int]:
    """Queued studies and processing ones whose lease has expired, by batch; and how many of
    them were processing."""
    stale = (now or utcnow()) - dt.timedelta(seconds=lease_s)
    rows = session.execute(
        select(Study.id, Study.batch_id, Study.status)
        .where(or_(Study.status == StudyStatus.queued,
                   (Study.status == StudyStatus.processing)
                   & or_(Study.claimed_at.is_(None), Study.claimed_at < stale)))
        .order_by(Study.id)).all()
    groups: dict[int | None, list[int]] = defaultdict(list)
    for study_id, batch_id, _status in rows:
        groups[batch_id].append(study_id)
    n_stale = sum(1 for *_, status in rows if status == StudyStatus.processing)
    return dict(groups), n_stale


def resume(*, settings: Settings, batch_size: int | None = None,
           reporter: Reporter | None = None) -> ResumeResult:
    """Enqueue the left-over studies again, one task per ``batch_size`` of them.

    A study queued twice (its first task still sits in the broker) is harmless: the claim lets
    one task screen it and the other skip it.
    """
    with session_scope(settings.effective_database_url) as session:
        groups, n_stale = left_over(session=session, lease_s=settings.visibility_timeout)
    out = ResumeResult(n_stale=n_stale)
    for batch_id, ids in groups.items():
        result = SubmitResult(batch_id=batch_id, queued_ids=ids)  # type: ignore[arg-type]
        enqueue(result, settings=settings, batch_size=batch_size, reporter=reporter or _Silent())
        out.n_tasks += result.n_tasks
        out.n_queued += len(ids)
    return out
