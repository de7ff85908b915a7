"""Statements over batches and nightly runs (tables ``batches``, ``runs``)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pneumoscreen.db.models import Batch, Image, Prediction, Run


def latest_batch(source: str, kind: str, *, session: Session) -> int | None:
    """The newest batch of this kind registered from ``source``."""
    return session.scalar(select(Batch.id).where(Batch.source == source, Batch.kind == kind)
                          .order_by(Batch.id.desc()).limit(1))


def add_tasks(batch_id: int, n_tasks: int, *, session: Session) -> None:
    """Count ``n_tasks`` more tasks queued for a batch (if it still exists)."""
    batch = session.get(Batch, batch_id)
    if batch is not None:
        batch.n_tasks = (batch.n_tasks or 0) + n_tasks


def n_flagged(batch_ids: list[int], *, session: Session) -> int:
    """Images these batches' own predictions flagged (a later re-screen is not theirs)."""
    return session.scalar(
        select(func.count(func.distinct(Prediction.image_id)))
        .where(Prediction.batch_id.in_(batch_ids), Prediction.flagged.is_(True))) or 0


def last_finished(batch_ids: list[int], *, session: Session) -> dt.datetime | None:
    """When the last image of these batches became final."""
    return session.scalar(select(func.max(Image.finished_at)).where(Image.batch_id.in_(batch_ids)))


def runs(*, session: Session, limit: int | None = 50) -> list[Run]:
    """Nightly runs, newest first."""
    query = select(Run).order_by(Run.id.desc())
    if limit:
        query = query.limit(limit)
    return list(session.scalars(query).all())
