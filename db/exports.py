"""The ``exports`` rows listed: one per version of a study's result and destination (the outbox
itself is :mod:`pneumoscreen.db.outbox`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pneumoscreen.db.models import Export, ExportStatus
from pneumoscreen.db.queries import _iso

EXPORT_FIELDS = ("id", "study_uid", "destination", "status", "attempts", "next_attempt_at",
                 "last_error", "sr_sop_instance_uid", "instance_number", "predecessor_sr_uid",
                 "sc_sop_instance_uids", "model", "created_at", "updated_at", "sent_at")


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
        e.id, e.study_instance_uid, e.destination, e.status.value, e.attempts,
        _iso(e.next_attempt_at), e.last_error, e.sr_sop_instance_uid, e.instance_number,
        e.predecessor_sr_uid, e.sc_sop_instance_uids or [], e.model_version.label,
        _iso(e.created_at), _iso(e.updated_at), _iso(e.sent_at)), strict=True))
        for e in session.scalars(query)]
