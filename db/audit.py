"""The audit trail: one append-only row per operator action (no update or delete path here, and
database triggers refuse them), each sealed by a keyed hash chained to the event before it.

The chain makes the trail tamper-evident, not tamper-proof: whoever can write to the database
can still change a row (the triggers can be dropped by the tables' owner), but cannot give the
changed row a valid hash without the chain key, and every later link then fails
(:func:`verify_chain`). What the chain cannot show: the newest events removed from the end, or a
rewrite by someone holding the key (see the README, "The audit trail").
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from pneumoscreen.db.models import AuditEvent, utcnow

AUDIT_LOCK_KEY = 0x5C12AD17  # pg_advisory_xact_lock: one appender at a time per database
GENESIS = "0" * 64  # the "previous hash" of the first chained event


def _stamp(value: dt.datetime) -> str:
    """A time as the chain hashes it: UTC, microseconds (SQLite returns it naive, PostgreSQL
    aware: the same instant either way)."""
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f")


def _plain(params: dict[str, Any] | None) -> dict[str, Any]:
    """Parameters as the JSON column will give them back (tuples as lists, paths as text)."""
    return json.loads(json.dumps(params or {}, default=str))


def event_hash(key: bytes, previous: str, *, id: int, created_at: dt.datetime, os_user: str,
               host: str, action: str, params: dict[str, Any] | None) -> str:
    """HMAC-SHA256 over the previous event's hash and this event's every column."""
    content = json.dumps([previous, id, _stamp(created_at), os_user, host, action,
                          _plain(params)], sort_keys=True, separators=(",", ":"),
                         ensure_ascii=True)
    return hmac.new(key, content.encode(), hashlib.sha256).hexdigest()


def _lock_tail(session: Session) -> None:
    """Hold the right to append until this transaction ends, so two writers never chain onto
    the same event: PostgreSQL's advisory lock; on SQLite, a write that matches no row takes the
    database's write lock (waiting for the busy timeout)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": AUDIT_LOCK_KEY})
    else:
        session.execute(text("UPDATE audit_events SET id = id WHERE 0"))


def record_event(session: Session, *, action: str, os_user: str, host: str,
                 params: dict[str, Any] | None = None, chain_key: bytes) -> AuditEvent:
    """Append one event sealed into the chain (in the caller's transaction: it lands with what
    it records). Ids are the last one plus one, so a removed event shows as a gap."""
    _lock_tail(session)
    last = session.execute(select(AuditEvent.id, AuditEvent.chain_hash)
                           .order_by(AuditEvent.id.desc()).limit(1)).first()
    previous = (last.chain_hash if last is not None else None) or GENESIS
    event = AuditEvent(id=(last.id if last is not None else 0) + 1, created_at=utcnow(),
                       os_user=os_user[:64], host=host[:255], action=action[:64],
                       params=_plain(params))
    event.chain_hash = event_hash(chain_key, previous, id=event.id, created_at=event.created_at,
                                  os_user=event.os_user, host=event.host, action=event.action,
                                  params=event.params)
    session.add(event)
    session.flush()
    return event


@dataclass(frozen=True)
class ChainReport:
    """What :func:`verify_chain` found."""

    n_chained: int  # events checked and sound, up to the first broken one
    n_before: int  # events written before the chain began (no hash)
    head_id: int | None  # the last sound event: note its id and hash elsewhere
    head_hash: str | None
    broken_id: int | None = None  # the first event that breaks the chain
    problem: str | None = None  # what is wrong there

    @property
    def intact(self) -> bool:
        return self.broken_id is None


def _events(session: Session) -> Iterator[AuditEvent]:
    yield from session.scalars(select(AuditEvent).order_by(AuditEvent.id)
                               .execution_options(yield_per=1000))


def verify_chain(session: Session, key: bytes) -> ChainReport:
    """Walk the trail oldest first and recompute every link; stop at the first broken one."""
    n_before = n_chained = 0
    previous: str | None = None  # None until the first chained event
    last_id: int | None = None
    for event in _events(session):
        if previous is None and event.chain_hash is None:
            n_before += 1
            last_id = event.id
            continue
        problem = None
        if event.chain_hash is None:
            problem = "it carries no hash: it was inserted outside pneumoscreen"
        elif previous is not None and last_id is not None and event.id != last_id + 1:
            missing = (f"event {last_id + 1}" if event.id == last_id + 2
                       else f"events {last_id + 1} to {event.id - 1}")
            problem = f"{missing} before it {'is' if event.id == last_id + 2 else 'are'} missing"
        else:
            expected = event_hash(key, previous or GENESIS, id=event.id,
                                  created_at=event.created_at, os_user=event.os_user,
                                  host=event.host, action=event.action, params=event.params)
            if not hmac.compare_digest(expected, event.chain_hash):
                problem = ("its hash does not match: the event was changed or replaced, an "
                           "event before it was removed, or this is not the key it was "
                           "written with")
        if problem is not None:
            return ChainReport(n_chained, n_before, last_id if previous else None, previous,
                               broken_id=event.id, problem=problem)
        previous, last_id = event.chain_hash, event.id
        n_chained += 1
    return ChainReport(n_chained, n_before, last_id if previous else None, previous)


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
