"""The audit trail is append-only in the database: UPDATE and DELETE are refused."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from pneumoscreen.db import AuditEvent, session_scope
from pneumoscreen.db.audit import audit_events, record_event

KEY = b"audit-test-key-7d1e0b9c4a2f86e35b10c9d8"


def test_events_are_kept_and_listed(db_url: str) -> None:
    with session_scope(db_url) as session:
        record_event(session, action="submit", os_user="ana", host="h1", params={"batch": 1},
                     chain_key=KEY)
        record_event(session, action="model.register", os_user="ana", host="h1",
                     params={"model_version": 2}, chain_key=KEY)
    with session_scope(db_url) as session:
        every = audit_events(session=session)
        assert [e["action"] for e in every] == ["submit", "model.register"]
        assert every[0]["params"] == {"batch": 1} and every[0]["os_user"] == "ana"
        assert [e["action"] for e in audit_events(session=session, action="model.")] == [
            "model.register"]
        later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
        assert audit_events(session=session, since=later) == []


@pytest.mark.parametrize("statement", [
    "UPDATE audit_events SET action = 'nothing'",
    "DELETE FROM audit_events",
])
def test_update_and_delete_are_refused(db_url: str, statement: str) -> None:
    with session_scope(db_url) as session:
        record_event(session, action="submit", os_user="ana", host="h1", params={},
                     chain_key=KEY)
    with pytest.raises(sa.exc.DatabaseError, match="append-only"), \
            session_scope(db_url) as session:
        session.execute(sa.text(statement))
    with session_scope(db_url) as session:
        assert session.scalars(sa.select(AuditEvent.action)).all() == ["submit"]
