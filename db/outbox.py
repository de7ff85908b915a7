"""The export outbox in SQL: rows to deliver, claimed under a lease, rescheduled with backoff.

A row is *due* when it is ``pending`` with ``next_attempt_at`` passed and no live lease. A
deliverer claims it with one conditional ``UPDATE`` (the lease token and its expiry): of two
processes that see the same due row, exactly one claims it, on SQLite and PostgreSQL alike, so
the same SR is never sent twice at once; a deliverer that died leaves a lease that runs out.

Versions: a study's result is one SR per set of images screened. Planning an SR that is not yet
in the table makes a new row with the next Instance Number whose predecessor is the study's
latest version sent anywhere; the earlier versions' rows that were never sent are
``superseded``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pneumoscreen.db.models import Export, ExportStatus, utcnow

MAX_ERROR = 500


@dataclass(frozen=True)
class Version:
    """One version of a study's SR, the same for every destination."""

    sr_uid: str
    series_uid: str
    instance_number: int
    predecessor_sr_uid: str | None = None
    predecessor_series_uid: str | None = None


def version_for(study_uid: str, sr_uid: str, series_uid: str, *, session: Session) -> Version:
    """The version this SR is (already known), or the next one after the study's latest."""
    known = session.scalar(select(Export).where(
        Export.study_instance_uid == study_uid, Export.sr_sop_instance_uid == sr_uid,
        Export.instance_number.is_not(None)).limit(1))
    if known is not None:
        return Version(sr_uid, known.sr_series_instance_uid or series_uid,
                       int(known.instance_number or 1), known.predecessor_sr_uid,
                       known.predecessor_series_uid)
    others = (Export.study_instance_uid == study_uid, Export.sr_sop_instance_uid.is_not(None),
              Export.sr_sop_instance_uid != sr_uid)
    highest = session.scalar(select(func.max(Export.instance_number)).where(*others))
    # The predecessor is the latest version a PACS may hold: one that was sent somewhere.
    sent = session.scalar(select(Export).where(*others, Export.status == ExportStatus.sent)
                          .order_by(Export.instance_number.desc(), Export.id.desc()).limit(1))
    return Version(sr_uid, series_uid, int(highest or 0) + 1,
                   sent.sr_sop_instance_uid if sent else None,
                   (sent.sr_series_instance_uid or series_uid) if sent else None)


def plan(study_uid: str, destination: str, model_version_id: int, version: Version, *,
         session: Session, now: dt.datetime | None = None, resend: bool = False,
         held: str | None = None) -> Export:
    """The outbox row of this SR version for this destination, due now if it is new (or
    ``resend``: a sent or failed row is due again); the destination's unsent rows of other
    versions of the study are superseded. ``held``: why it must not be sent (a conflict): the
    row waits, ``held``, until planned again without it."""
    now = now or utcnow()
    row = _find(study_uid, destination, version.sr_uid, session=session)
    if row is None:
        row = Export(study_instance_uid=study_uid, destination=destination,
                     model_version_id=model_version_id, status=ExportStatus.pending, attempts=0,
                     sr_sop_instance_uid=version.sr_uid,
                     sr_series_instance_uid=version.series_uid,
                     instance_number=version.instance_number,
                     predecessor_sr_uid=version.predecessor_sr_uid,
                     predecessor_series_uid=version.predecessor_series_uid,
                     next_attempt_at=now)
        try:
            with session.begin_nested():  # two processes may plan the same export at once
                session.add(row)
        except IntegrityError:
            row = _find(study_uid, destination, version.sr_uid, session=session)
            assert row is not None
    elif resend or row.status in (ExportStatus.superseded, ExportStatus.held):
        row.status = ExportStatus.pending
        row.next_attempt_at = now
        row.updated_at = now
    elif row.status is ExportStatus.pending and row.next_attempt_at is None:
        row.next_attempt_at = now
    if held is not None and row.status is ExportStatus.pending and (
            row.lease_until is None or row.lease_until < now):
        row.status, row.next_attempt_at = ExportStatus.held, None
        row.last_error = held[:MAX_ERROR]
        row.updated_at = now
    session.execute(update(Export).where(
        Export.study_instance_uid == study_uid, Export.destination == destination,
        Export.id != row.id, Export.status == ExportStatus.pending,
        or_(Export.lease_until.is_(None), Export.lease_until < now))
        .values(status=ExportStatus.superseded, next_attempt_at=None, updated_at=now,
                last_error="a newer result of this study replaced it before it was sent"))
    return row


def _find(study_uid: str, destination: str, sr_uid: str, *, session: Session) -> Export | None:
    return session.scalar(select(Export).where(
        Export.study_instance_uid == study_uid, Export.destination == destination,
        Export.sr_sop_instance_uid == sr_uid))


def due(*, session: Session, now: dt.datetime | None = None, limit: int = 50) -> list[int]:
    """Ids of the rows to deliver now, the longest waiting first."""
    now = now or utcnow()
    return list(session.scalars(select(Export.id).where(_due(now))
                                .order_by(Export.next_attempt_at, Export.id).limit(limit)))


def _due(now: dt.datetime) -> object:
    return and_(Export.status == ExportStatus.pending, Export.next_attempt_at.is_not(None),
                Export.next_attempt_at <= now,
                or_(Export.lease_until.is_(None), Export.lease_until < now))


def claim(export_id: int, *, session: Session, lease_seconds: float,
          now: dt.datetime | None = None, force: bool = False) -> str | None:
    """Take the row for ``lease_seconds``: the lease token, or None when it is not due (sent,
    failed, not yet time) or another deliverer holds it. ``force``: due whatever its next
    attempt time (a delivery by hand), still never while another holds it."""
    now = now or utcnow()
    token = str(uuid.uuid4())
    free = or_(Export.lease_until.is_(None), Export.lease_until < now)
    where = (and_(Export.status == ExportStatus.pending, free) if force else _due(now))
    result = session.execute(
        update(Export).where(Export.id == export_id, where)
        .values(lease_token=token, lease_until=now + dt.timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False))
    return token if result.rowcount == 1 else None  # type: ignore[attr-defined]


def record(export_id: int, token: str, status: ExportStatus, *, session: Session,
           error: str | None = None, next_attempt_at: dt.datetime | None = None,
           sc_uids: list[str] | None = None, now: dt.datetime | None = None) -> bool:
    """How an attempt ended, written only by the lease holder (False when it lost the lease)."""
    now = now or utcnow()
    row = session.get(Export, export_id, populate_existing=True)
    if row is None or row.lease_token != token:
        return False
    row.attempts += 1
    row.status = status
    row.last_error = None if error is None else error[:MAX_ERROR]
    row.next_attempt_at = next_attempt_at if status is ExportStatus.pending else None
    row.lease_token = row.lease_until = None
    if status is ExportStatus.sent:
        row.sent_at = now
        row.sc_sop_instance_uids = sc_uids or []
    row.updated_at = now
    return True


def supersede(export_id: int, token: str, *, session: Session) -> None:
    """A claimed row whose study has a newer result: never sent, released."""
    row = session.get(Export, export_id, populate_existing=True)
    if row is not None and row.lease_token == token:
        row.status = ExportStatus.superseded
        row.next_attempt_at = row.lease_token = row.lease_until = None
        row.last_error = "a newer result of this study replaced it before it was sent"
        row.updated_at = utcnow()


def hold(export_id: int, token: str, reason: str, *, session: Session) -> None:
    """A claimed row whose study is in conflict: not sent, held until a person resolves it."""
    row = session.get(Export, export_id, populate_existing=True)
    if row is not None and row.lease_token == token:
        row.status = ExportStatus.held
        row.next_attempt_at = row.lease_token = row.lease_until = None
        row.last_error = reason[:MAX_ERROR]
        row.updated_at = utcnow()
