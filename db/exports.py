"""The ``exports`` rows: one per (study, destination, model version), updated by each attempt."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pneumoscreen.db.models import Export, ExportStatus, utcnow
from pneumoscreen.db.queries import _iso

MAX_ERROR = 500


def _find(study_uid: str, destination: str, model_version_id: int, *,
          session: Session) -> Export | None:
    return session.scalar(select(Export).where(
        Export.study_instance_uid == study_uid, Export.destination == destination,
        Export.model_version_id == model_version_id))


def start_attempt(study_uid: str, destination: str, model_version_id: int, *,
                  session: Session) -> Export:
    """The row for this export, created on first sight; one more attempt, status pending."""
    row = _find(study_uid, destination, model_version_id, session=session)
    if row is None:
        row = Export(study_instance_uid=study_uid, destination=destination,
                     model_version_id=model_version_id, status=ExportStatus.pending, attempts=0)
        try:
            with session.begin_nested():  # two tasks may export the same study at once
                session.add(row)
        except IntegrityError:
            row = _find(study_uid, destination, model_version_id, session=session)
            assert row is not None
    row.attempts += 1
    row.status = ExportStatus.pending
    row.updated_at = utcnow()
    return row


def finish_attempt(export_id: int, status: ExportStatus, *, session: Session,
                   error: str | None = None, sr_uid: str | None = None,
                   sc_uids: list[str] | None = None) -> None:
    """Record how an attempt ended; the error is kept short (it names destinations only)."""
    row = session.get(Export, export_id)
    if row is None:
        return
    row.status = status
    row.last_error = None if error is None else error[:MAX_ERROR]
    if sr_uid is not None:
        row.sr_sop_instance_uid = sr_uid
        row.sc_sop_instance_uids = sc_uids or []
    if status is ExportStatus.sent:
        row.sent_at = utcnow()
    row.updated_at = utcnow()


EXPORT_FIELDS = ("id", "study_uid", "destination", "status", "attempts", "last_error",
                 "sr_sop_instance_uid", "sc_sop_instance_uids", "model", "created_at",
                 "updated_at", "sent_at")


def exports(*, session: Session, status: str | None = None, study_uid: str | None = None,
            limit: int | None = 200) -> list[dict[str, Any]]:
    """Export rows, most recently updated first."""
    query = select(Export).order_by(Export.updated_at.desc(), Export.id.desc())
    if status:
        query = query.where(Export.status == ExportStatus(status))
    if study_uid:
        query = query.where(Export.study_instance_uid == study_uid)
    if limit:
        query = query.limit(limit)

    return [dict(zip(EXPORT_FIELDS, (
        e.id, e.study_instance_uid, e.destination, e.status.value, e.attempts, e.last_error,
        e.sr_sop_instance_uid, e.sc_sop_instance_uids or [], e.model_version.label,
        _iso(e.created_at), _iso(e.updated_at), _iso(e.sent_at)), strict=True))
        for e in session.scalars(query)]
