"""Studies: images grouped by Study Instance UID (a DICOM study: one or more image rows).

A study is *complete* when every image of it is final and at least one was screened (has a
prediction): then its result can be sent back, and it is read as one row.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Integer, String, case, cast, func, literal, select
from sqlalchemy.orm import Session

from pneumoscreen.db.models import (
    Export,
    Heatmap,
    Image,
    ImageStatus,
    ModelVersion,
    Prediction,
)
from pneumoscreen.db.queries import FLAGGED_IN_SCOPE, _iso, _latest_prediction_ids


def _latest(session: Session) -> Any:
    return select(_latest_prediction_ids(session).c.id)


def complete_study_uids(uids: Sequence[str], *, session: Session) -> list[str]:
    """Those of ``uids`` whose images are all final with at least one screened."""
    if not uids:
        return []
    final = [s.value for s in ImageStatus.final()]
    not_final = dict(session.execute(
        select(Image.study_instance_uid, func.count())
        .where(Image.study_instance_uid.in_(list(uids)), Image.status.not_in(final))
        .group_by(Image.study_instance_uid)).all())
    screened = set(session.scalars(
        select(Image.study_instance_uid).distinct()
        .join(Prediction, Prediction.image_id == Image.id)
        .where(Image.study_instance_uid.in_(list(uids)), Image.status == ImageStatus.done)))
    return sorted(u for u in set(uids) if u in screened and not not_final.get(u))


def study_uids_of(image_ids: Sequence[int], *, session: Session) -> list[str]:
    """The Study Instance UIDs of some image rows (files without one have none)."""
    if not image_ids:
        return []
    return sorted(set(session.scalars(
        select(Image.study_instance_uid).where(Image.id.in_(list(image_ids)),
                                               Image.study_instance_uid.is_not(None)))))


def screened_study_uids(*, session: Session, since: dt.datetime | None = None,
                        study_uid: str | None = None) -> list[str]:
    """Complete studies with a prediction made since ``since`` (or the one ``study_uid``)."""
    query = (select(Image.study_instance_uid).distinct()
             .join(Prediction, Prediction.image_id == Image.id)
             .where(Image.study_instance_uid.is_not(None)))
    if since is not None:
        query = query.where(Prediction.created_at >= since)
    if study_uid is not None:
        query = query.where(Image.study_instance_uid == study_uid)
    return complete_study_uids(list(session.scalars(query)), session=session)


def screened_images(study_uid: str, *, session: Session) -> list[dict[str, Any]]:
    """The screened images of a study with their newest prediction, all from the model version
    of the study's newest prediction (a re-screen half-way through sends the newer model's
    images only); each with its stored heatmap, if any."""
    rows = session.execute(
        select(Image, Prediction, ModelVersion, Heatmap)
        .join(Prediction, Prediction.image_id == Image.id)
        .join(ModelVersion, Prediction.model_version_id == ModelVersion.id)
        .outerjoin(Heatmap, Heatmap.prediction_id == Prediction.id)
        .where(Image.study_instance_uid == study_uid, Image.status == ImageStatus.done,
               Prediction.id.in_(_latest(session)))
        .order_by(Prediction.id.desc())).all()
    if not rows:
        return []
    mv_id = rows[0][2].id
    out = []
    for image, pred, mv, hm in sorted(rows, key=lambda r: r[0].id):
        if mv.id != mv_id:
            continue
        out.append({
            "study_id": image.id, "path": image.source_path,
            "sop_instance_uid": image.sop_instance_uid,
            "probability": pred.probability, "p_viral": pred.p_viral,
            "threshold": pred.threshold, "flagged": pred.flagged, "in_scope": pred.in_scope,
            "scope_reason": pred.scope_reason, "atypicality": pred.atypicality,
            "screened_at": pred.created_at,
            "model_version_id": mv.id, "model_name": mv.name, "model_version": mv.version,
            "model_sha256": mv.file_sha256, "input_size": (mv.input_spec or {}).get("height"),
            "heatmap": None if hm is None else (hm.height, hm.width, hm.data)})
    return out


BY_STUDY_FIELDS = ("study_uid", "probability", "threshold", "flagged", "in_scope",
                   "n_screened", "n_rejected", "n_failed", "accession", "patient", "modality",
                   "model", "screened_at", "export_status", "exports")


def by_study(*, session: Session, since: dt.datetime | None = None, limit: int | None = 100,
             outside_scope: bool = False) -> list[dict[str, Any]]:
    """The reading list by study: one row per Study Instance UID (a file without one is its
    own study), flagged studies by highest probability; with ``outside_scope`` also the
    studies with an image outside the validated scope, after them."""
    key = func.coalesce(Image.study_instance_uid, literal("file:") + cast(Image.id, String))
    # Only a flag inside the validated scope counts (see ``queries.FLAGGED_IN_SCOPE``).
    flag = func.max(case((FLAGGED_IN_SCOPE, 1), else_=0))
    inside = func.min(func.coalesce(cast(Prediction.in_scope, Integer), 1))
    query = (
        select(key, func.max(Prediction.probability), func.max(Prediction.threshold), flag,
               inside, func.max(Image.accession_number),
               func.max(Image.patient_key), func.max(Image.modality), func.max(ModelVersion.name),
               func.max(ModelVersion.version), func.max(Prediction.created_at))
        .join(Prediction, Prediction.image_id == Image.id)
        .join(ModelVersion, Prediction.model_version_id == ModelVersion.id)
        .where(Prediction.id.in_(_latest(session)), Image.status == ImageStatus.done)
        .group_by(key))
    if since is not None:
        query = query.having(func.max(Prediction.created_at) >= since)
    wanted = flag == 1
    order = [func.max(Prediction.probability).desc(), key]
    if outside_scope:
        wanted = wanted | (inside == 0)
        order.insert(0, 1 - inside)  # flagged in-scope studies first
    query = query.having(wanted).order_by(*order)
    if limit:
        query = query.limit(limit)
    groups = session.execute(query).all()
    uids = [g[0] for g in groups]
    counts: dict[tuple[str, str], int] = {}
    for k, status, n in session.execute(
            select(key, Image.status, func.count()).where(key.in_(uids))
            .group_by(key, Image.status)).all():
        counts[(k, ImageStatus(status).value)] = n
    exports: dict[str, list[dict[str, Any]]] = {}
    for e in session.scalars(select(Export).where(Export.study_instance_uid.in_(uids))
                             .order_by(Export.id)):
        exports.setdefault(e.study_instance_uid, []).append(
            {"destination": e.destination, "status": e.status.value, "attempts": e.attempts})
    rows = []
    for (k, prob, thr, flagged, inside, acc, patient, modality, mname, mversion, at) in groups:
        ex = exports.get(k, [])
        rows.append(dict(zip(BY_STUDY_FIELDS, (
            k, round(prob, 4), round(thr, 4), bool(flagged), bool(inside),
            counts.get((k, "done"), 0), counts.get((k, "rejected"), 0),
            counts.get((k, "failed"), 0), acc, patient[:12] if patient else None, modality,
            f"{mname}:{mversion}", _iso(at),
            export_summary(ex), ex), strict=True)))
    return rows


def export_summary(exports: list[dict[str, Any]]) -> str | None:
    """One word for a study's exports: failed if any failed, pending if any is still on its
    way, sent when all are; None when nothing was exported."""
    statuses = {e["status"] for e in exports}
    for word in ("failed", "pending", "sent"):
        if word in statuses:
            return word
    return None

