"""The batch: claim studies, decode the next chunk while the model runs on this one, record.

This is the real work behind the Celery task; it takes study ids and is safe to run twice on the
same ids (a redelivered task):

* the claim is one conditional ``UPDATE … RETURNING``: a study is taken only if it is queued, or
  processing under this same claim token (the task id: a retry or a redelivery of this task), or
  processing under a lease older than ``visibility_timeout`` (its worker died). Two live workers
  therefore never screen the same study; a study another live claim holds comes back as ``busy``;
* a study that already has a prediction from this model version is not screened again, and the
  database refuses a second prediction for the same (study, model version) anyway;
* each chunk's predictions and statuses are written in one transaction, so a worker killed
  mid-batch leaves finished chunks done and the rest processing, to be taken again.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import and_, exists, or_, select, update
from sqlalchemy.orm import Session

from pneumoscreen.db import Batch, ModelVersion, Prediction, Study, StudyStatus, session_scope
from pneumoscreen.db.models import utcnow
from pneumoscreen.db.repository import model_version_for
from pneumoscreen.db.upsert import insert_ignore
from pneumoscreen.model.bundle import LoadedModel, ModelFileError, load_model
from pneumoscreen.model.runtime import RuntimeConfig
from pneumoscreen.worker.ingest import IngestError, load_grey
from pneumoscreen.worker.pipeline import prefetched
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
    busy: list[int] = field(default_factory=list)  # held by another live claim: try later


@dataclass
class Claim:
    todo: list[tuple[int, str]]
    skipped: int
    busy: list[int]


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def runtime_config(settings: Settings) -> RuntimeConfig:
    """TensorFlow settings; 0 threads means: leave a core's worth for the decoding pool."""
    cores = available_cores()
    # Decoding threads mostly wait on PIL/numpy with the GIL released; TensorFlow's own pool
    # would otherwise take every core and the two would thrash. Inter-op: a sequential CNN gains
    # nothing from more than two.
    intra = settings.tf_intra_threads or max(1, cores - min(settings.decode_threads, cores) // 2)
    inter = settings.tf_inter_threads or min(2, cores)
    return RuntimeConfig(device=settings.device, mixed_precision=settings.mixed_precision,
                         memory_growth=settings.memory_growth, intra_threads=intra,
                         inter_threads=inter)


def get_model(settings: Settings, path: str | Path | None = None) -> LoadedModel:
    """The model at ``path`` (default: the configured one), loaded once per process."""
    return load_model(path or settings.model_path, runtime=runtime_config(settings))


def model_path_for_batch(batch_id: int | None, *, session: Session) -> str | None:
    """The model file a rescreen batch asked for (stored in its model version's sidecar)."""
    if batch_id is None:
        return None
    batch = session.get(Batch, batch_id)
    if batch is None or batch.kind != "rescreen" or batch.model_version_id is None:
        return None
    mv = session.get(ModelVersion, batch.model_version_id)
    path = (mv.sidecar or {}).get("path") if mv is not None else None
    if not path:
        raise ModelFileError(f"rescreen batch {batch_id} names model version "
                             f"{batch.model_version_id} but no model file path")
    return str(path)


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


def claim(study_ids: Sequence[int], mv_id: int, *, session: Session, token: str,
          lease_s: float, rescreen: bool = False, now: dt.datetime | None = None) -> Claim:
    """Atomically mark the studies still to be screened by ``mv_id`` as processing under ``token``.

    One conditional UPDATE: on PostgreSQL a concurrent claim waits for the row lock and then
    re-checks the condition against the committed row, so only one of two claims wins; SQLite
    serialises writers. ``lease_s``: a processing study untouched that long is taken again.
    """
    ids = list(study_ids)
    now = now or utcnow()
    stale = now - dt.timedelta(seconds=lease_s)
    takeable = or_(
        Study.status == StudyStatus.queued,
        and_(Study.status == StudyStatus.processing,
             or_(Study.claim_token == token, Study.claimed_at.is_(None),
                 Study.claimed_at < stale)),
    )
    predicted = exists().where(Prediction.study_id == Study.id,
                               Prediction.model_version_id == mv_id)
    # Predicted but not marked done (the worker died between the two): just finish it.
    session.execute(update(Study).where(Study.id.in_(ids), takeable, predicted)
                    .values(status=StudyStatus.done, reason=None, finished_at=now,
                            updated_at=now, claim_token=None, claimed_at=None)
                    .execution_options(synchronize_session=False))
    wanted = or_(takeable, Study.status == StudyStatus.done) if rescreen else takeable
    rows = session.execute(
        update(Study).where(Study.id.in_(ids), wanted, ~predicted)
        .values(status=StudyStatus.processing, claim_token=token, claimed_at=now,
                attempts=Study.attempts + 1, updated_at=now)
        .returning(Study.id, Study.source_path)
        .execution_options(synchronize_session=False)).all()
    todo = sorted((int(i), str(p)) for i, p in rows)
    busy = sorted(session.scalars(select(Study.id).where(
        Study.id.in_(ids), Study.status == StudyStatus.processing,
        or_(Study.claim_token.is_(None), Study.claim_token != token))).all())
    return Claim(todo=todo, skipped=len(ids) - len(todo) - len(busy), busy=busy)


def release(token: str, *, url: str) -> None:
    """Put back the studies still held under ``token`` (the task failed): queued again."""
    try:
        with session_scope(url) as session:
            session.execute(update(Study)
                            .where(Study.status == StudyStatus.processing,
                                   Study.claim_token == token)
                            .values(status=StudyStatus.queued, claim_token=None,
                                    claimed_at=None, updated_at=utcnow())
                            .execution_options(synchronize_session=False))
    except Exception:  # the database itself may be what failed; the lease covers that case
        log.warning("could not release claim %s; its studies wait for the lease", token,
                    exc_info=True)


def screen_batch(
    study_ids: Sequence[int],
    settings: Settings,
    *,
    batch_id: int | None = None,
    rescreen: bool = False,
    model: LoadedModel | None = None,
    model_path: str | None = None,
    claim_token: str | None = None,
) -> BatchOutcome:
    """Screen ``study_ids`` and record every outcome, chunk by chunk.

    The model is ``model``, else ``model_path``, else the one a rescreen batch names, else the
    configured one. ``claim_token`` identifies this attempt's claim (the Celery task id, stable
    across retries and redeliveries); without one the claim is private to this call.
    """
    url = settings.effective_database_url
    if model is None:
        if model_path is None:
            with session_scope(url) as session:
                model_path = model_path_for_batch(batch_id, session=session)
        model = get_model(settings, model_path)
    token = claim_token or f"local-{uuid.uuid4().hex}"
    with session_scope(url) as session:
        mv = model_version_for(model.spec, session=session)
        mv_id, threshold = mv.id, float(model.spec.threshold)
        claimed = claim(study_ids, mv_id, session=session, token=token,
                        lease_s=settings.visibility_timeout, rescreen=rescreen)
    outcome = BatchOutcome(skipped=claimed.skipped, busy=claimed.busy)
    if not claimed.todo:
        return outcome

    try:
        chunks = prefetched(claimed.todo, lambda t: prepare(t[0], t[1], model, settings),
                            chunk_size=settings.model_batch_size,
                            threads=settings.decode_threads)
        for prepared in chunks:
            ready = [p for p in prepared if p.tensor is not None]
            probabilities = (model.predict_batch(np.stack([p.tensor for p in ready]))
                             if ready else np.zeros(0, np.float32))
            with session_scope(url) as session:
                record(prepared, ready, probabilities, mv_id=mv_id, threshold=threshold,
                       batch_id=batch_id, session=session, outcome=outcome, rescreen=rescreen)
    except BaseException:
        # A retry of this task reclaims under the same token anyway; a private claim must not
        # leave its studies waiting a whole lease.
        if claim_token is None:
            release(token, url=url)
        raise
    log.info("batch %s: %d screened, %d flagged, %d rejected, %d failed, %d skipped, %d busy",
             batch_id, outcome.screened, outcome.flagged, outcome.rejected, outcome.failed,
             outcome.skipped, len(outcome.busy))
    return outcome


def record(prepared: list[Prepared], ready: list[Prepared], probabilities: np.ndarray, *,
           mv_id: int, threshold: float, batch_id: int | None, session: Session,
           outcome: BatchOutcome, rescreen: bool = False) -> None:
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
    ids = [p.study_id for p in prepared]
    studies = {s.id: s for s in session.scalars(select(Study).where(Study.id.in_(ids)))}
    # A re-screen that cannot read the file again must not undo the study's earlier verdict.
    screened_before = set(session.scalars(
        select(Prediction.study_id).where(Prediction.study_id.in_(ids)))) if rescreen else set()
    columns = set(Study.__table__.columns.keys())
    for p in prepared:
        study = studies[p.study_id]
        for key, value in p.metadata.items():
            if key in columns and value is not None:
                setattr(study, key, value)
        study.finished_at = now
        study.claim_token = study.claimed_at = None
        if p.tensor is not None:
            study.status, study.reason = StudyStatus.done, None
            outcome.screened += 1
        elif p.study_id in screened_before:
            study.status, study.reason = StudyStatus.done, f"re-screen failed: {p.reason}"
            outcome.failed += 1
        else:
            study.status, study.reason = p.status or StudyStatus.failed, p.reason
            if study.status == StudyStatus.rejected:
                outcome.rejected += 1
            else:
                outcome.failed += 1
    outcome.flagged += sum(r["flagged"] for r in rows)
