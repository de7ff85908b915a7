"""The audit trail: one append-only row per operator action (no update or delete path here, and
database triggers refuse them)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pneumoscreen.db.models import AuditEvent, utcnow


def record_event(session: Session, *, action: str, os_user: str, host: str,
                 params: dict[str, Any] | None = None) -> AuditEvent:
    """Append one event (in the caller's transaction: it lands with what it records)."""
    event = AuditEvent(created_at=utcnow(), os_user=os_user[:64], host=host[:255],
                       action=action[:64], params=params or {})
    session.add(event)
    session.flush()
    return event


def audit_events(*, session: Session, since: dt.datetime | None = None,
                 action: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
    """Events oldest first, optionally since a time and of one action (or an action prefix
    ending in ``.``)."""
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if since is not None:
        query = query.where(AuditEvent.created_at >= since)
    if action:
        query = query.where(AuditEvent.action.startswith(action) if action.endswith(".")
                            else AuditEvent.action == action)
    rows = list(session.scalars(query))[::-1]
    return [{"id": e.id, "time": e.created_at.isoformat(), "os_user": e.os_user,
             "host": e.host, "action": e.action, "params": e.params or {}} for e in rows]
