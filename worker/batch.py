"""The batch: claim studies, decode and normalise them, ONE model call, write the verdicts.

This is the real work behind the Celery task; it takes study ids and is safe to run twice on the
same ids (a redelivered task): a study that already has a prediction from this model version is
not screened again, and the database refuses a second prediction for the same pair anyway.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from pneumoscreen.db import ModelVersion, Prediction, Study, StudyStatus, session_scope
from pneumoscreen.db.models import utcnow
from pneumoscreen.db.repository import model_version_for
from pneumoscreen.db.upsert import insert_ignore
from pneumoscreen.model.bundle import LoadedModel, load_model
from pneumoscreen.model.runtime import RuntimeConfig
from pneumoscreen.worker.ingest import IngestError, load_grey
from pneumoscreen.worker.settings import Settings

log = logging.getLogger(__name__)

SCREENABLE = (StudyStatus.queued, StudyStatus.processing)


@dataclass
class Prepared:
    """A study after ingestion: either a network input or the reason it has none."""

    study_id: int
    tensor: np.ndarray | None = None
    status: StudyStatus | None = None
    reason: str | None = None
    metadata: dict = field(default_factory=dict)


@dataclass
class BatchOutcome:
    screened: int = 0
    flagged: int = 0
    rejected: int = 0
    failed: int = 0
    skipped: int = 0  # already final, or already predicted by this model (a redelivery)


def runtime_config(settings: Settings) -> RuntimeConfig:
    return RuntimeConfig(device=settings.device, mixed_precision=settings.mixed_precision,
                         memory_growth=settings.memory_growth,
                         intra_threads=settings.tf_intra_threads,
                         inter_threads=settings.tf_inter_threads)


def get_model(settings: Settings) -> LoadedModel:
    """The configured model, loaded once per process (after the fork in a Celery worker)."""
    return load_model(settings.model_path, runtime=runtime_config(settings))


def prepare(study_id: int, path: str, model: LoadedModel, settings: Settings) -> Prepared:
    """Decode and normalise one file; every error becomes a reason, never an exception."""
    try:
        decoded = load_grey(Path(path), settings)
        tensor = model.preprocess(decoded.grey)
        return Prepared(study_id, tensor=tensor, metadata=decoded.metadata)
    except IngestError as exc:
        return Prepared(study_id, status=StudyStatus(exc.status), reason=str(exc))
    except Exception as exc:  # a bug or an unforeseen file must not take the batch down
        log.exception("study %s: unexpected error while preparing", study_id)
        return Prepared(study_id, status=StudyStatus.failed,
                        reason=f"unexpected error: {type(exc).__name__}: {exc}")


def claim(study_ids: Sequence[int], mv: ModelVersion, *, session: Session,
          rescreen: bool = False) -> tuple[list[tuple[int, str]], int]:
    """Studies still to be screened by ``mv``, marked processing; and how many were skipped."""
    predicted = set(session.scalars(
        select(Prediction.study_id).where(Prediction.study_id.in_(study_ids),
                                          Prediction.model_version_id == mv.id)))
    wanted = (*SCREENABLE, StudyStatus.done) if rescreen else SCREENABLE
    rows = session.scalars(select(Study).where(Study.id.in_(study_ids))
                           .order_by(Study.id).with_for_update()).all()
    todo: list[tuple[int, str]] = []
    for study in rows:
        if study.id in predicted:
            if study.status in SCREENABLE:  # predicted, but the worker died before the status
                study.status, study.finished_at = StudyStatus.done, utcnow()
            continue
        if study.status not in wanted:
            continue
        study.status = StudyStatus.processing
        study.attempts += 1
        todo.append((study.id, study.source_path))
    return todo, len(study_ids) - len(todo)


def screen_batch(
    study_ids: Sequence[int],
    settings: Settings,
    *,
    batch_id: int | None = None,
    rescreen: bool = False,
    model: LoadedModel | None = None,
    prepare_many: Callable[[list[tuple[int, str]]], list[Prepared]] | None = None,
) -> BatchOutcome:
    """Screen ``study_ids`` with the configured model and record every outcome."""
    model = model or get_model(settings)
    url = settings.effective_database_url
    with session_scope(url) as session:
        mv = model_version_for(model.spec, session=session)
        mv_id, threshold = mv.id, float(model.spec.threshold)
        todo, skipped = claim(study_ids, mv, session=session, rescreen=rescreen)
    outcome = BatchOutcome(skipped=skipped)
    if not todo:
        return outcome

    if prepare_many is None:
        with ThreadPoolExecutor(settings.decode_threads) as pool:
            prepared = list(pool.map(lambda t: prepare(t[0], t[1], model, settings), todo))
    else:
        prepared = prepare_many(todo)

    ready = [p for p in prepared if p.tensor is not None]
    probabilities = (model.predict_batch(np.stack([p.tensor for p in ready]))
                     if ready else np.zeros(0, np.float32))

    with session_scope(url) as session:
        record(prepared, ready, probabilities, mv_id=mv_id, threshold=threshold,
               batch_id=batch_id, session=session, outcome=outcome)
    log.info("batch %s: %d screened, %d flagged, %d rejected, %d failed, %d skipped",
             batch_id, outcome.screened, outcome.flagged, outcome.rejected, outcome.failed,
             outcome.skipped)
    return outcome


def record(prepared: list[Prepared], ready: list[Prepared], probabilities: np.ndarray, *,
           mv_id: int, threshold: float, batch_id: int | None, session: Session,
           outcome: BatchOutcome) -> None:
    """Write predictions (a second one for the same study and model is ignored) and statuses."""
    now = utcnow()
    rows = [
        {"study_id": p.study_id, "model_version_id": mv_id, "batch_id": batch_id,
         "probability": float(prob), "threshold": threshold, "flagged": bool(prob >= threshold),
         "created_at": now}
        for p, prob in zip(ready, probabilities, strict=True)
    ]
    if rows:
        session.execute(insert_ignore(session, Prediction, ["study_id", "model_version_id"]), rows)
    studies = {s.id: s for s in session.scalars(
        select(Study).where(Study.id.in_([p.study_id for p in prepared])))}
    columns = set(Study.__table__.columns.keys())
    for p in prepared:
        study = studies[p.study_id]
        for key, value in p.metadata.items():
            if key in columns and value is not None:
                setattr(study, key, value)
        study.finished_at = now
        if p.tensor is not None:
            study.status, study.reason = StudyStatus.done, None
            outcome.screened += 1
        else:
            study.status, study.reason = p.status or StudyStatus.failed, p.reason
            if study.status == StudyStatus.rejected:
                outcome.rejected += 1
            else:
                outcome.failed += 1
    outcome.flagged += sum(r["flagged"] for r in rows)
