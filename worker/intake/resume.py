"""Resuming: images left queued (the broker was down at submit) or processing under an expired
lease (their worker died and no redelivery came) are enqueued again."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from pneumoscreen.db import Image, ImageStatus
from pneumoscreen.db.models import utcnow
from pneumoscreen.model.progress import Progress
from pneumoscreen.worker.intake.enqueue import Enqueued, enqueue
from pneumoscreen.worker.screening.claim import free_orphans
from pneumoscreen.worker.settings import Settings


@dataclass
class ResumeResult:
    n_queued: int = 0
    n_stale: int = 0
    n_tasks: int = 0


def left_over(*, session: Session, lease_s: float, now: dt.datetime | None = None
              ) -> tuple[dict[tuple[int | None, bool], list[int]], int]:
    """Images to send again, by (batch, is a re-screen); and how many were stuck processing.

    Queued images, processing ones whose lease has expired, and images a re-screen has not
    reached yet (``rescreen_batch_id``; they go back to that re-screen batch, so its model reads
    them and a failed re-read cannot undo their earlier verdict).
    """
    # Images held by a process of this host that is gone: free now, not after the lease.
    freed = free_orphans(session=session)
    stale = (now or utcnow()) - dt.timedelta(seconds=lease_s)
    expired = (Image.status == ImageStatus.processing) & or_(Image.claimed_at.is_(None),
                                                              Image.claimed_at < stale)
    rows = session.execute(
        select(Image.id, Image.batch_id, Image.rescreen_batch_id, Image.status)
        .where(or_(Image.status == ImageStatus.queued, expired,
                   Image.rescreen_batch_id.is_not(None) & (Image.status != ImageStatus.processing)))
        .order_by(Image.id)).all()
    groups: dict[tuple[int | None, bool], list[int]] = defaultdict(list)
    for image_id, batch_id, rescreen_batch_id, _status in rows:
        key = (rescreen_batch_id, True) if rescreen_batch_id is not None else (batch_id, False)
        groups[key].append(image_id)
    n_stale = sum(1 for *_, status in rows if status == ImageStatus.processing)
    return dict(groups), n_stale + freed


def resume(*, settings: Settings, task_size: int | None = None,
           progress: Progress | None = None) -> ResumeResult:
    """Enqueue the left-over images again, one task per ``task_size`` of them.

    An image queued twice (its first task still sits in the broker) is harmless: the claim lets
    one task screen it and the other skip it.
    """
    with settings.session() as session:
        groups, n_stale = left_over(session=session, lease_s=settings.visibility_timeout)
    out = ResumeResult(n_stale=n_stale)
    for (batch_id, rescreen), ids in groups.items():
        result = Enqueued(batch_id=batch_id, queued_ids=ids)
        enqueue(result, settings=settings, task_size=task_size, progress=progress,
                rescreen=rescreen)
        out.n_tasks += result.n_tasks
        out.n_queued += len(ids)
    return out
