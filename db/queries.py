"""Every query of the project: the reading list, counts, images, model versions, reports.

Callers own the session (``with session_scope(url) as session``) and pass it in.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, case, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, defer

from pneumoscreen.db.models import (
    Batch,
    EvaluationReport,
    Image,
    ImageStatus,
    ModelVersion,
    Prediction,
    Read,
)


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="seconds")


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


DEFAULT_MODEL_KEY = "default_model_sha256"  # in Session.info: set by the settings' session


def _latest_prediction_ids(session: Session | None = None) -> Any:
    """Per image, the prediction the lists show: the newest by the default model (the file
    whose sha256 ``session.info[DEFAULT_MODEL_KEY]`` names), else, for an image that model has
    not read, its newest of any model. A re-screen with another model keeps the older
    predictions and does not change what the lists show."""
    sha = session.info.get(DEFAULT_MODEL_KEY) if session is not None else None
    newest = func.max(Prediction.id)
    if sha:
        default_id = (select(ModelVersion.id).where(ModelVersion.file_sha256 == sha)
                      .scalar_subquery())
        newest = func.coalesce(
            func.max(case((Prediction.model_version_id == default_id, Prediction.id))), newest)
    return select(newest.label("id")).group_by(Prediction.image_id).subquery()


# A flag counts only inside the validated scope: a study outside it has no verdict (rows written
# before that rule may hold both).
FLAGGED_IN_SCOPE = and_(Prediction.flagged.is_(True), Prediction.in_scope.isnot(False))

FLAGGED_FIELDS = ("prediction_id", "study_id", "path", "patient", "accession", "modality", "view",
                  "probability", "p_viral", "threshold", "flagged", "in_scope", "scope_reason",
                  "atypicality", "model", "trained", "screened_at", "sop_instance_uid")


class UnknownModel(ValueError):
    """A model name matching no model version (the message lists the names that do)."""


def model_version_named(text: str, *, session: Session, sha256: str | None = None
                        ) -> ModelVersion:
    """The model version ``text`` names, in any way the tool prints one: its id (`screen
    models`), its label (`pneumoscreen-cnn:2.0.0`, as the tables print it), its bare version, or
    (``sha256``, read from a file's sidecar by the caller) a model file or ``bundled:NAME``.
    UnknownModel otherwise, or when a bare version is ambiguous."""
    rows = session.scalars(select(ModelVersion).order_by(ModelVersion.id)).all()
    wanted = text.strip()
    found = [mv for mv in rows if sha256 and mv.file_sha256 == sha256]
    found = found or [mv for mv in rows if wanted == str(mv.id)]
    found = found or [mv for mv in rows if wanted in (mv.label, f"{mv.name}:{mv.version}")]
    found = found or [mv for mv in rows if wanted == mv.version]
    if len(found) == 1:
        return found[0]
    choices = ", ".join(f"{mv.id} ({mv.label})" for mv in rows) or "none screened yet"
    if found:
        raise UnknownModel(f"--model {text!r} names {len(found)} model versions; give one of "
                           f"their ids or labels: {choices}")
    raise UnknownModel(f"--model {text!r} is no model version that screened here; choose an "
                       f"id or label: {choices} (or a model file, or bundled:NAME)")


def _shown(session: Session, model_version: int | None) -> Any:
    """The predictions a list shows: the default model's (see _latest_prediction_ids), or
    ``model_version``'s newest of each image it read."""
    if model_version is None:
        return select(_latest_prediction_ids(session).c.id)
    return (select(func.max(Prediction.id)).where(Prediction.model_version_id == model_version)
            .group_by(Prediction.image_id))


def _sections(outside_scope: bool) -> dict[str, Any]:
    """The reading list's sections and what each holds: flagged images (in scope, when the
    images outside the validated scope get a section of their own), and those."""
    if not outside_scope:
        return {"flagged": FLAGGED_IN_SCOPE}
    return {"flagged": FLAGGED_IN_SCOPE, "outside": Prediction.in_scope.is_(False)}


def flagged(*, session: Session, since: dt.datetime | None = None, limit: int | None = 100,
            model_version: int | None = None, outside_scope: bool = False,
            read_status: str = "all") -> list[dict[str, Any]]:
    """Flagged images, highest probability first, one row per image (the prediction the lists
    show: the default model's, or ``model_version``'s).

    ``outside_scope``: then every image outside the model's validated scope too, flagged or
    not (it needs a human read either way), after the flagged ones. ``limit`` applies to each
    section on its own: a cut in the flags never drops the images that need a human read
    (:func:`flagged_totals` says how many each section holds). ``read_status``: ``all``, or
    only images with (``read``) or without (``unread``) a reader's read; filtered in the
    query, before ``limit``, so a filtered list is never silently short.
    """
    if read_status not in ("all", "read", "unread"):
        raise ValueError("read_status: all, read or unread")
    shown = _shown(session, model_version)
    rows = []
    for condition in _sections(outside_scope).values():
        query = (
            select(Prediction, Image, ModelVersion)
            .join(Image, Prediction.image_id == Image.id)
            .join(ModelVersion, Prediction.model_version_id == ModelVersion.id)
            .where(condition, Prediction.id.in_(shown))
            .order_by(Prediction.probability.desc(), Prediction.id)
            # Large JSON the list never shows: parsed per row, the model's sidecar alone
            # tripled the time of a 500-row list (screen bench web).
            .options(defer(ModelVersion.sidecar), defer(ModelVersion.input_spec),
                     defer(Image.meta))
        )
        if since is not None:
            query = query.where(Prediction.created_at >= since)
        if read_status != "all":
            has_read = select(Read.id).where(Read.image_id == Image.id).exists()
            query = query.where(has_read if read_status == "read" else ~has_read)
        if limit:
            query = query.limit(limit)
        rows += session.execute(query).all()
    return [dict(zip(FLAGGED_FIELDS, (
        pred.id, image.id, image.source_path,
        image.patient_key[:12] if image.patient_key else None,
        image.accession_number[:12] if image.accession_number else None,  # a keyed hash
        image.modality, image.view_position, round(pred.probability, 4), _round(pred.p_viral),
        round(pred.threshold, 4), pred.flagged, pred.in_scope, pred.scope_reason,
        _round(pred.atypicality), mv.label, mv.trained, _iso(pred.created_at),
        image.sop_instance_uid), strict=True))
        for pred, image, mv in rows]


def flagged_totals(*, session: Session, since: dt.datetime | None = None,
                   model_version: int | None = None,
                   outside_scope: bool = False) -> dict[str, int]:
    """How many rows each section of :func:`flagged` holds without a limit."""
    shown = _shown(session, model_version)
    totals = {}
    for name, condition in _sections(outside_scope).items():
        query = (select(func.count()).select_from(Prediction)
                 .where(condition, Prediction.id.in_(shown)))
        if since is not None:
            query = query.where(Prediction.created_at >= since)
        totals[name] = int(session.scalar(query) or 0)
    return totals


def count_by_status(*, session: Session,
                    batch_ids: Sequence[int] | None = None) -> dict[str, int]:
    """Images per status (every status present, zero or not), optionally of some batches."""
    query = select(Image.status, func.count()).group_by(Image.status)
    if batch_ids is not None:
        query = query.where(Image.batch_id.in_(batch_ids))
    counts = {s.value: 0 for s in ImageStatus}
    for status, n in session.execute(query).all():
        counts[ImageStatus(status).value] = n
    return counts


def status_counts(*, session: Session, batch_id: int | None = None) -> dict[str, int]:
    counts = count_by_status(session=session,
                             batch_ids=None if batch_id is None else [batch_id])
    counts["total"] = sum(counts.values())
    shown = select(_latest_prediction_ids(session).c.id)
    for key, condition in (("flagged", FLAGGED_IN_SCOPE),
                           ("outside_scope", Prediction.in_scope.is_(False))):
        query = (select(func.count()).select_from(Prediction).join(Image)
                 .where(condition, Prediction.id.in_(shown)))
        if batch_id is not None:
            query = query.where(Image.batch_id == batch_id)
        counts[key] = session.scalar(query) or 0  # each image's newest verdict
    return counts


def batch_summary(batch_id: int, *, session: Session) -> dict[str, Any] | None:
    batch = session.get(Batch, batch_id)
    if batch is None:
        return None
    return {"batch": batch.id, "kind": batch.kind, "source": batch.source,
            "created_at": _iso(batch.created_at), "files": batch.n_files, "new": batch.n_new,
            "duplicates": batch.n_duplicate, "not_images": batch.n_not_images,
            "tasks": batch.n_tasks, "counts": status_counts(session=session, batch_id=batch_id)}


def images(*, session: Session, batch_id: int | None = None, status: str | None = None,
            limit: int | None = None) -> list[dict[str, Any]]:
    """One row per image with its newest prediction, if any."""
    latest = _latest_prediction_ids(session)
    query = (
        select(Image, Prediction)
        .outerjoin(Prediction, (Prediction.image_id == Image.id)
                   & Prediction.id.in_(select(latest.c.id)))
        .order_by(Image.id)
    )
    if batch_id is not None:
        query = query.where(Image.batch_id == batch_id)
    if status:
        query = query.where(Image.status == ImageStatus(status))
    if limit:
        query = query.limit(limit)
    return [
        {
            "study_id": image.id,
            "path": image.source_path,
            "format": image.format,
            "status": image.status.value,
            "reason": image.reason,
            "probability": None if pred is None else round(pred.probability, 4),
            "p_viral": None if pred is None else _round(pred.p_viral),
            "in_scope": None if pred is None else pred.in_scope,
            "scope_reason": None if pred is None else pred.scope_reason,
            "atypicality": None if pred is None else _round(pred.atypicality),
            "flagged": None if pred is None else pred.flagged,
            "modality": image.modality,
            "batch": image.batch_id,
            "updated_at": _iso(image.updated_at),
            "sop_instance_uid": image.sop_instance_uid,
        }
        for image, pred in session.execute(query).all()
    ]


def evaluation_reports(*, session: Session, limit: int = 20) -> list[dict[str, Any]]:
    """Stored evaluation reports, newest first (``screen reports``)."""
    rows = session.scalars(select(EvaluationReport).order_by(
        EvaluationReport.id.desc()).limit(limit)).all()
    return [{"id": r.id, "created_at": r.created_at, "model": r.model_version.label,
             "dataset": r.dataset, "n": r.n,
             **{k: r.metrics.get(k) for k in ("auc", "threshold", "recall", "specificity",
                                              "precision", "accuracy", "f1")},
             "report_path": r.report_path} for r in rows]


def get_or_create_model_version(
    *,
    session: Session,
    name: str,
    version: str,
    file_sha256: str,
    input_spec: dict[str, Any],
    threshold: float,
    target_recall: float | None,
    trained: bool,
    sidecar: dict[str, Any] | None = None,
) -> ModelVersion:
    """The row for the model file with this sha256, created on first sight."""
    row = session.scalar(select(ModelVersion).where(ModelVersion.file_sha256 == file_sha256))
    if row is not None:
        return row
    row = ModelVersion(name=name, version=version, file_sha256=file_sha256,
                       input_spec=input_spec, threshold=threshold,
                       target_recall=target_recall, trained=trained, sidecar=sidecar)
    try:
        with session.begin_nested():  # two workers may meet a new model at the same moment
            session.add(row)
    except IntegrityError:
        row = session.scalars(
            select(ModelVersion).where(ModelVersion.file_sha256 == file_sha256)
        ).one()
    return row


def model_version_for(spec: Any, *, session: Session) -> ModelVersion:
    """The row for a :class:`pneumoscreen.model.ModelSpec` (sha256 filled in by ``load_model``)."""
    return get_or_create_model_version(
        session=session, name=spec.name, version=spec.version, file_sha256=spec.sha256,
        input_spec=spec.input_spec, threshold=spec.threshold, target_recall=spec.target_recall,
        trained=spec.trained, sidecar=spec.to_json(),
    )


def model_version_rows(*, session: Session) -> list[ModelVersion]:
    """Every registered model version, newest first."""
    return list(session.scalars(select(ModelVersion).order_by(ModelVersion.id.desc())).all())


def model_version_with_sha(sha256: str, *, session: Session) -> ModelVersion | None:
    return session.scalar(select(ModelVersion).where(ModelVersion.file_sha256 == sha256))


def model_versions(*, session: Session) -> list[dict[str, Any]]:
    """Every registered model version, newest first, with what its sidecar says about it."""
    rows = model_version_rows(session=session)
    out = []
    for mv in rows:
        side = mv.sidecar or {}
        arch = side.get("architecture") or {}
        internal = (side.get("metrics") or {}).get("internal-test") or {}
        out.append({
            "id": mv.id, "label": mv.label, "version": mv.version, "sha256": mv.file_sha256,
            "architecture": arch.get("name"), "members": len(arch.get("members") or []) or None,
            "input_size": (mv.input_spec or {}).get("height"), "threshold": mv.threshold,
            "trained": mv.trained, "auc": internal.get("auc"), "recall": internal.get("recall"),
            "specificity": internal.get("specificity"),
            "subtype_auc": (internal.get("subtype") or {}).get("auc"),
            "path": side.get("path"), "created_at": _iso(mv.created_at),
        })
    return out


def heatmap_of(image_id: int, *, session: Session) -> dict[str, Any] | None:
    """The newest prediction of an image with its stored map (None: no prediction)."""
    from pneumoscreen.db.models import Heatmap

    pred = session.scalars(select(Prediction).where(Prediction.image_id == image_id)
                           .order_by(Prediction.id.desc()).limit(1)).first()
    if pred is None:
        return None
    hm = session.get(Heatmap, pred.id)
    image = session.get(Image, image_id)
    return {"prediction_id": pred.id, "path": image.source_path if image else None,
            "probability": pred.probability, "threshold": pred.threshold,
            "flagged": pred.flagged, "model": pred.model_version.label,
            "model_sha256": pred.model_version.file_sha256,
            "map": None if hm is None else (hm.height, hm.width, hm.data)}


# The scope reason the image guard writes (``worker.screening.scope``): an image reason, which
# another copy of the same image may not share, unlike an age.
IMAGE_SCOPE_REASON = "atypical image"


def screened_outside_scope_for_image(image_id: int, *, session: Session) -> str | None:
    """A summary of the image's newest prediction if it was judged outside the validated scope
    for an image reason ("p 0.9912, outside scope: atypical image …"), else None."""
    pred = session.scalars(select(Prediction).where(Prediction.image_id == image_id)
                           .order_by(Prediction.id.desc()).limit(1)).first()
    if pred is None or pred.in_scope is not False or IMAGE_SCOPE_REASON not in (
            pred.scope_reason or ""):
        return None
    return f"p {pred.probability:.4f}, outside scope: {pred.scope_reason}"


def withdraw_predictions(image_id: int, *, session: Session) -> None:
    """Delete an image's predictions (their heatmaps go with them): it is screened again from
    another copy. The caller keeps what they said in the set-aside file's reason."""
    session.execute(delete(Prediction).where(Prediction.image_id == image_id)
                    .execution_options(synchronize_session=False))
