"""One task's work: claim its images, decode the next chunk while the model runs on this one,
record each chunk's verdicts.

Safe to run twice on the same ids (a redelivered task):

* the claim (:mod:`.claim`) takes an image only if no other live task holds it;
* an image that already has a prediction from this model version is not screened again, and the
  database refuses a second prediction for the same (image, model version) anyway;
* each chunk's predictions and statuses are written in one transaction, so a worker killed
  mid-task leaves finished chunks done and the rest processing, to be taken again.

Words: a *batch* is one submit, nightly or rescreen (a ``batches`` row); a *task* is the list of
image ids one Celery task screens (``task_size``); a *chunk* is the images of one model call
(``chunk_size``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy.orm import Session

from pneumoscreen.db import (
    Heatmap,
    Image,
    ImageStatus,
    Prediction,
    session_scope,
)
from pneumoscreen.db.claims import claim, release
from pneumoscreen.db.image_files import spare_copies
from pneumoscreen.db.images import images_by_id, predicted
from pneumoscreen.db.models import utcnow
from pneumoscreen.db.queries import model_version_for
from pneumoscreen.db.upsert import insert_ignore
from pneumoscreen.model.bundle import LoadedModel, Scores
from pneumoscreen.worker import interrupt
from pneumoscreen.worker.ingest import IngestConfig
from pneumoscreen.worker.keys import checked_key
from pneumoscreen.worker.screening import scope, twins
from pneumoscreen.worker.screening.decode_child import decode_file
from pneumoscreen.worker.screening.decode_pool import DecodePool, shared_pool
from pneumoscreen.worker.screening.model_choice import (
    configured_model,
    registered_model,
    rescreen_version,
)
from pneumoscreen.worker.screening.prefetch import prefetched
from pneumoscreen.worker.settings import Settings

log = logging.getLogger(__name__)

SCREENABLE = (ImageStatus.queued, ImageStatus.processing)


@dataclass
class Prepared:
    """An image after ingestion: either a network input or the reason it has none."""

    image_id: int
    tensor: np.ndarray | None = None
    status: ImageStatus | None = None
    reason: str | None = None
    metadata: dict = field(default_factory=dict)
    # Screened from this twin copy (path, sha256): the primary one failed for ``primary_reason``.
    copy: twins.Copy | None = None
    primary_reason: str | None = None


@dataclass
class TaskOutcome:
    screened: int = 0
    flagged: int = 0
    rejected: int = 0
    failed: int = 0
    already_done: int = 0  # already final, or already predicted by this model (a redelivery)
    busy: list[int] = field(default_factory=list)  # held by another live claim: try later


def get_model(settings: Settings) -> LoadedModel:
    """The configured model, loaded once per process."""
    return configured_model(settings)


def prepare(image_id: int, path: str, model: LoadedModel, config: IngestConfig,
            spares: Sequence[twins.Copy] = (), *, pool: DecodePool | None = None) -> Prepared:
    """Decode and normalise one file (in one of ``pool``'s processes, if given), falling back on
    its twin copies when it fails; every error becomes a reason, never an exception."""
    size = model.spec.input_size

    def one(file: str) -> Prepared:
        found = (pool.run(file, config, size) if pool is not None
                 else decode_file(file, config, size))
        if found.tensor is None:
            return Prepared(image_id, status=ImageStatus(found.status or "failed"),
                            reason=found.reason)
        return Prepared(image_id, tensor=found.tensor, metadata=found.metadata)

    primary = one(path)
    outcome, copy = twins.first_readable(primary, spares, one)
    if copy is not None:
        outcome.copy, outcome.primary_reason = copy, primary.reason
    return outcome


def screen_images(
    image_ids: Sequence[int],
    settings: Settings,
    *,
    batch_id: int | None = None,
    rescreen: bool = False,
    model: LoadedModel | None = None,
    model_version_id: int | None = None,
    claim_token: str | None = None,
) -> TaskOutcome:
    """Screen ``image_ids`` and record every outcome, chunk by chunk.

    The model is ``model``, else registered version ``model_version_id``, else the version a
    rescreen batch names, else the configured one (never a path from a message).
    ``claim_token`` identifies this attempt's claim (the Celery task id, stable across retries
    and redeliveries); without one the claim is private to this call.
    """
    url = settings.effective_database_url
    if model is None:
        with session_scope(url) as session:
            version = model_version_id or rescreen_version(batch_id, session=session)
            model = (registered_model(version, settings, session=session) if version is not None
                     else configured_model(settings))
    checked_key(settings)  # a worker holding another key than the database's writes nothing
    token = claim_token or f"local-{uuid.uuid4().hex}"
    with session_scope(url) as session:
        mv = model_version_for(model.spec, session=session)
        mv_id, threshold = mv.id, float(model.spec.threshold)
        claimed = claim(image_ids, mv_id, session=session, token=token,
                        lease_s=settings.visibility_timeout, rescreen=rescreen)
    outcome = TaskOutcome(already_done=claimed.already_done, busy=claimed.busy)
    if not claimed.todo:
        return outcome
    with session_scope(url) as session:
        spares = spare_copies([i for i, _ in claimed.todo], session=session)

    try:
        config = settings.ingest_config(input_size=model.spec.input_size)
        # One thread drives each decoding process; without processes, threads decode.
        pool = (shared_pool(settings.decode_processes, settings.decode_timeout)
                if settings.decode_processes else None)
        chunks = prefetched(claimed.todo, lambda t: prepare(t[0], t[1], model, config,
                                                         spares.get(t[0], ()), pool=pool),
                            chunk_size=settings.chunk_size,
                            threads=pool.processes if pool else settings.decode_threads)
        for prepared in chunks:
            ready = [p for p in prepared if p.tensor is not None]
            inputs = np.stack([p.tensor for p in ready]) if ready else None
            scores = (model.predict(inputs) if inputs is not None
                      else Scores(np.zeros(0, np.float32)))
            verdicts = [scope.verdict(
                patient_age=p.metadata.get("patient_age"),
                atypicality=None if scores.atypicality is None else float(scores.atypicality[i]),
                atypicality_threshold=model.atypicality_threshold,
                age_range=settings.scope_age_years,
                contrast=scope.mediastinum_contrast(p.tensor)) for i, p in enumerate(ready)]
            # Out of scope means no verdict: no flag, so no heatmap of a "finding" either.
            flags = np.array([scores.pneumonia[i] >= threshold and v.in_scope
                              for i, v in enumerate(verdicts)], dtype=bool)
            maps = explain(model, inputs, flags, settings.heatmaps)
            with session_scope(url) as session:
                record(prepared, ready, scores, mv_id=mv_id, threshold=threshold,
                       batch_id=batch_id, session=session, outcome=outcome, rescreen=rescreen,
                       verdicts=verdicts, maps=maps)
            interrupt.check()  # a Ctrl-C whose exception was lost stops here, between chunks
    except BaseException:
        # A retry of this task reclaims under the same token anyway; a private claim must not
        # leave its images waiting a whole lease.
        if claim_token is None:
            release(token, url=url)
        raise
    log.info("task of batch %s: %d screened, %d flagged, %d rejected, %d failed, "
             "%d already done, %d busy", batch_id, outcome.screened, outcome.flagged,
             outcome.rejected, outcome.failed, outcome.already_done, len(outcome.busy))
    return outcome


def _store_maps(maps: dict[int, np.ndarray], *, mv_id: int, session: Session) -> None:
    from pneumoscreen.model.gradcam import to_bytes

    ids = predicted(list(maps), model_version_id=mv_id, session=session)
    rows = [{"prediction_id": ids[sid], "height": int(m.shape[0]), "width": int(m.shape[1]),
             "data": to_bytes(m)} for sid, m in maps.items() if sid in ids]
    if rows:
        session.execute(insert_ignore(session, Heatmap, ["prediction_id"]), rows)


def explain(model: LoadedModel, inputs: np.ndarray | None, flagged: np.ndarray,
            which: str) -> dict[int, np.ndarray]:
    """Grad-CAM maps of a chunk's flagged (or all, or no) images, in one model call; keyed by
    the image's index in the chunk."""
    if inputs is None or which == "none":
        return {}
    index = np.flatnonzero(flagged) if which == "flagged" else np.arange(len(inputs))
    if not len(index):
        return {}
    return dict(zip(index.tolist(), model.heatmaps(inputs[index]), strict=True))


def record(prepared: list[Prepared], ready: list[Prepared], scores: Scores, *,
           mv_id: int, threshold: float, batch_id: int | None, session: Session,
           outcome: TaskOutcome, rescreen: bool = False,
           verdicts: list[scope.Verdict] | None = None,
           maps: dict[int, np.ndarray] | None = None) -> None:
    """Write predictions (a second one for the same image and model is ignored), their scope
    verdicts and heatmaps, and the images' statuses."""
    now = utcnow()
    n = len(ready)
    viral = scores.viral if scores.viral is not None else [None] * n
    atyp = scores.atypicality if scores.atypicality is not None else [None] * n
    verdicts = verdicts or [scope.Verdict(True)] * n
    rows = [
        {"image_id": p.image_id, "model_version_id": mv_id, "batch_id": batch_id,
         "probability": float(prob), "p_viral": None if pv is None else float(pv),
         "atypicality": None if a is None else float(a), "in_scope": v.in_scope,
         "scope_reason": v.reason, "threshold": threshold,
         # A study outside the intended use is never a pneumonia flag (it needs a human read);
         # its probability stays here, for audit.
         "flagged": bool(prob >= threshold) and v.in_scope,
         "created_at": now}
        for p, prob, pv, a, v in zip(ready, scores.pneumonia, viral, atyp, verdicts,
                                     strict=True)
    ]
    if rows:
        session.execute(insert_ignore(session, Prediction, ["study_id", "model_version_id"]), rows)
    if maps:
        _store_maps({ready[i].image_id: m for i, m in maps.items()}, mv_id=mv_id,
                    session=session)
    ids = [p.image_id for p in prepared]
    images = images_by_id(ids, session=session)
    # A re-screen that cannot read the file again must not undo the image's earlier verdict.
    screened_before = set(predicted(ids, session=session)) if rescreen else set()
    columns = set(Image.__table__.columns.keys())
    for p in prepared:
        image = images[p.image_id]
        for key, value in p.metadata.items():
            if key in columns and value is not None:
                setattr(image, key, value)
        image.finished_at = now
        image.claim_token = image.claimed_at = image.claimed_by = None
        if p.copy is not None:
            twins.promote(image, p.copy, why=p.primary_reason, session=session)
        if rescreen:
            image.rescreen_batch_id = None  # the re-screen has reached it
        if p.tensor is not None:
            image.status, image.reason = ImageStatus.done, None
            outcome.screened += 1
        elif p.image_id in screened_before:
            image.status, image.reason = ImageStatus.done, f"re-screen failed: {p.reason}"
            outcome.failed += 1
        else:
            image.status, image.reason = p.status or ImageStatus.failed, p.reason
            if image.status == ImageStatus.rejected:
                outcome.rejected += 1
            else:
                outcome.failed += 1
    outcome.flagged += sum(r["flagged"] for r in rows)
