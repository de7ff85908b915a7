"""Queries of the browser reading list (``screen web``): users, reads, one image's page, and the
figures of the monitoring page and of ``/metrics``.

Callers own the session. Nothing here returns a patient's name or id: the image page shows the
pseudonymised keys the rest of the tool shows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pneumoscreen.db.models import (
    Export,
    Heatmap,
    Image,
    ImageStatus,
    ModelVersion,
    Prediction,
    Read,
    ReadVerdict,
    User,
    UserRole,
    utcnow,
)
from pneumoscreen.db.queries import _iso, _latest_prediction_ids

LABELS = ("pneumonia", "normal", "other")
SUBTYPES = ("viral", "bacterial")
READ_FIELDS = ("read_id", "image_id", "prediction_id", "user", "verdict", "label", "subtype",
               "probability", "flagged", "model", "read_at")


# ---- users -------------------------------------------------------------------------------

def add_user(name: str, role: str, password_hash: str | None, *, session: Session) -> User:
    """A new user (ValueError when the name is taken)."""
    if session.scalar(select(User.id).where(User.name == name)) is not None:
        raise ValueError(f"a user named {name!r} exists already")
    user = User(name=name, role=UserRole(role), password_hash=password_hash, disabled=False,
                created_at=utcnow())
    session.add(user)
    session.flush()
    return user


def user_named(name: str, *, session: Session) -> User | None:
    return session.scalar(select(User).where(User.name == name))


def user_by_id(user_id: int, *, session: Session) -> User | None:
    return session.get(User, user_id)


def users(*, session: Session) -> list[dict[str, Any]]:
    return [{"id": u.id, "name": u.name, "role": u.role.value, "disabled": u.disabled,
             "password": u.password_hash is not None, "created_at": _iso(u.created_at),
             "last_login_at": _iso(u.last_login_at)}
            for u in session.scalars(select(User).order_by(User.id))]


def set_disabled(name: str, disabled: bool, *, session: Session) -> User | None:
    user = user_named(name, session=session)
    if user is not None:
        user.disabled = disabled
    return user


# ---- reads -------------------------------------------------------------------------------

def add_read(image_id: int, user_id: int, verdict: str, *, session: Session,
             label: str | None = None, subtype: str | None = None) -> Read | None:
    """One read of the image's newest prediction (None: no such screened image)."""
    pred = _newest_prediction(image_id, session)
    if pred is None:
        return None
    if label is not None and label not in LABELS:
        raise ValueError(f"label must be one of {', '.join(LABELS)}")
    if subtype is not None and (subtype not in SUBTYPES or label != "pneumonia"):
        raise ValueError("a subtype (viral, bacterial) goes with the label pneumonia only")
    read = Read(image_id=image_id, prediction_id=pred.id, user_id=user_id,
                verdict=ReadVerdict(verdict), label=label, subtype=subtype, created_at=utcnow())
    session.add(read)
    session.flush()
    return read


def _newest_prediction(image_id: int, session: Session) -> Prediction | None:
    """The prediction the lists show for this image (the default model's; see
    ``queries._latest_prediction_ids``), so the page and the list never disagree."""
    shown = select(_latest_prediction_ids(session).c.id)
    return session.scalars(select(Prediction).where(Prediction.image_id == image_id,
                                                    Prediction.id.in_(shown))).first()


def reads(*, session: Session, since: dt.datetime | None = None,
          image_id: int | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Reads oldest first, with the prediction each one judged."""
    query = (select(Read, User, Prediction, ModelVersion)
             .join(User, Read.user_id == User.id)
             .outerjoin(Prediction, Read.prediction_id == Prediction.id)
             .outerjoin(ModelVersion, Prediction.model_version_id == ModelVersion.id)
             .order_by(Read.id))
    if since is not None:
        query = query.where(Read.created_at >= since)
    if image_id is not None:
        query = query.where(Read.image_id == image_id)
    if limit:
        query = query.limit(limit)
    return [dict(zip(READ_FIELDS, (
        r.id, r.image_id, r.prediction_id, u.name, r.verdict.value, r.label, r.subtype,
        None if p is None else round(p.probability, 4), None if p is None else p.flagged,
        None if mv is None else mv.label, _iso(r.created_at)), strict=True))
        for r, u, p, mv in session.execute(query).all()]


def latest_reads(image_ids: Sequence[int], *, session: Session) -> dict[int, dict[str, Any]]:
    """Per image, its newest read (verdict, label, reader), for the reading list's column."""
    if not image_ids:
        return {}
    newest = (select(func.max(Read.id)).where(Read.image_id.in_(list(image_ids)))
              .group_by(Read.image_id))
    return {r.image_id: {"verdict": r.verdict.value, "label": r.label, "user": u.name}
            for r, u in session.execute(select(Read, User).join(User, Read.user_id == User.id)
                                        .where(Read.id.in_(newest))).all()}


def read_image_ids(*, session: Session) -> set[int]:
    return set(session.scalars(select(Read.image_id).distinct()))


def model_version_names(*, session: Session) -> list[str]:
    """The versions of the registered models (the reading list's filter)."""
    return sorted(set(session.scalars(select(ModelVersion.version))))


def newest_prediction_id(*, session: Session) -> int:
    return session.scalar(select(func.max(Prediction.id))) or 0


# ---- one image's page --------------------------------------------------------------------

def image_page(image_id: int, *, session: Session) -> dict[str, Any] | None:
    """What the image page shows: the image, its newest prediction and model, the other images
    of its study, the study's exports, and the reads (None: no such image)."""
    image = session.get(Image, image_id)
    if image is None:
        return None
    pred = _newest_prediction(image_id, session)
    mv = None if pred is None else pred.model_version
    hm = None if pred is None else session.get(Heatmap, pred.id)
    others: list[dict[str, Any]] = []
    exports: list[dict[str, Any]] = []
    uid = image.study_instance_uid
    if uid:
        latest = select(_latest_prediction_ids(session).c.id)
        for other, p in session.execute(
                select(Image, Prediction)
                .outerjoin(Prediction,
                           (Prediction.image_id == Image.id) & Prediction.id.in_(latest))
                .where(Image.study_instance_uid == uid, Image.id != image_id)
                .order_by(Image.id).limit(200)).all():
            others.append({"image_id": other.id, "status": other.status.value,
                           "view": other.view_position, "reason": other.reason,
                           "probability": None if p is None else round(p.probability, 4),
                           "flagged": None if p is None else p.flagged,
                           "in_scope": None if p is None else p.in_scope})
        exports = [{"destination": e.destination, "status": e.status.value,
                    "attempts": e.attempts, "error": e.last_error, "sent_at": _iso(e.sent_at),
                    "model": e.model_version.label}
                   for e in session.scalars(select(Export).where(
                       Export.study_instance_uid == uid).order_by(Export.id))]
    return {
        "image_id": image.id, "path": image.source_path, "format": image.format,
        "status": image.status.value, "reason": image.reason, "modality": image.modality,
        "view": image.view_position, "body_part": image.body_part,
        "patient": image.patient_key[:12] if image.patient_key else None,
        "accession": image.accession_number[:12] if image.accession_number else None,
        "study_uid": uid, "created_at": _iso(image.created_at),
        "finished_at": _iso(image.finished_at),
        "prediction": None if pred is None else {
            "prediction_id": pred.id, "probability": round(pred.probability, 4),
            "threshold": round(pred.threshold, 4), "flagged": pred.flagged,
            "p_viral": None if pred.p_viral is None else round(pred.p_viral, 4),
            "in_scope": pred.in_scope, "scope_reason": pred.scope_reason,
            "atypicality": None if pred.atypicality is None else round(pred.atypicality, 4),
            "screened_at": _iso(pred.created_at)},
        "model": None if mv is None else {"label": mv.label, "sha256": mv.file_sha256,
                                          "trained": mv.trained},
        "heatmap": None if hm is None else (hm.height, hm.width, hm.data),
        "others": others, "exports": exports,
        "reads": reads(session=session, image_id=image_id),
    }


# ---- monitoring --------------------------------------------------------------------------

def daily_rates(*, session: Session, since: dt.datetime,
                model_version_id: int | None = None) -> list[dict[str, Any]]:
    """Per UTC day since ``since``: predictions made, flagged, outside scope (every prediction
    counts once, on the day it was made), of one model version when given: a day's rate is
    compared with that model's validation figures, which another model's flags would skew."""
    query = (select(Prediction.created_at, Prediction.flagged, Prediction.in_scope)
             .where(Prediction.created_at >= since))
    if model_version_id is not None:
        query = query.where(Prediction.model_version_id == model_version_id)
    rows: dict[str, dict[str, Any]] = {}
    for created, flagged, in_scope in session.execute(query):
        if created.tzinfo is not None:  # PostgreSQL answers in the session's time zone
            created = created.astimezone(dt.timezone.utc)
        day = created.date().isoformat()
        row = rows.setdefault(day, {"day": day, "n": 0, "flagged": 0, "outside": 0})
        row["n"] += 1
        row["flagged"] += bool(flagged)
        row["outside"] += in_scope is False
    return [rows[d] for d in sorted(rows)]


def scores(*, session: Session, since: dt.datetime | None = None,
           model_version_id: int | None = None, limit: int = 100_000) -> list[float]:
    """Probabilities of the predictions made since ``since`` (newest first, at most ``limit``)."""
    query = select(Prediction.probability).order_by(Prediction.id.desc()).limit(limit)
    if since is not None:
        query = query.where(Prediction.created_at >= since)
    if model_version_id is not None:
        query = query.where(Prediction.model_version_id == model_version_id)
    return [float(p) for p in session.scalars(query)]


def busiest_model(*, session: Session, since: dt.datetime | None = None) -> ModelVersion | None:
    """The model version that made the most predictions since ``since`` (the one to watch)."""
    query = (select(Prediction.model_version_id, func.count()).group_by(
        Prediction.model_version_id).order_by(func.count().desc()).limit(1))
    if since is not None:
        query = query.where(Prediction.created_at >= since)
    row = session.execute(query).first()
    return None if row is None else session.get(ModelVersion, row[0])


def status_reasons(*, session: Session) -> list[tuple[str, str, int]]:
    """(status, reason, count) of the images that were rejected or failed."""
    return [(ImageStatus(s).value, r or "", n) for s, r, n in session.execute(
        select(Image.status, Image.reason, func.count())
        .where(Image.status.in_([ImageStatus.rejected, ImageStatus.failed]))
        .group_by(Image.status, Image.reason))]


def arrival_to_result(*, session: Session, since: dt.datetime,
                      limit: int = 50_000) -> list[float]:
    """Seconds from registration to a final status, of the images finished since ``since``."""
    out = []
    for created, finished in session.execute(
            select(Image.created_at, Image.finished_at)
            .where(Image.finished_at.is_not(None), Image.finished_at >= since)
            .order_by(Image.finished_at.desc()).limit(limit)):
        out.append(max(0.0, (finished - created).total_seconds()))
    return out


def finished_since(*, session: Session, since: dt.datetime) -> int:
    return session.scalar(select(func.count()).select_from(Image).where(
        Image.finished_at.is_not(None), Image.finished_at >= since)) or 0


def export_counts(*, session: Session) -> dict[str, int]:
    return {getattr(s, "value", s): n for s, n in session.execute(
        select(Export.status, func.count()).group_by(Export.status))}


def read_counts(*, session: Session) -> dict[tuple[str, str], int]:
    return {(v.value if hasattr(v, "value") else v, u.value if hasattr(u, "value") else u): n
            for v, u, n in session.execute(
                select(Read.verdict, User.role, func.count()).join(User, Read.user_id == User.id)
                .group_by(Read.verdict, User.role))}


def agreement_pairs(*, session: Session) -> list[tuple[bool, str, str | None]]:
    """Per read image, (flagged by the prediction the reader saw, the newest read's verdict,
    its label)."""
    newest = select(func.max(Read.id)).group_by(Read.image_id)
    return [(bool(flagged), verdict.value, label) for flagged, verdict, label in session.execute(
        select(Prediction.flagged, Read.verdict, Read.label)
        .join(Prediction, Read.prediction_id == Prediction.id)
        .where(Read.id.in_(newest)))]
