"""Resuming: images left queued (the broker was down at submit) or processing under an expired
lease (their worker died and no redelivery came) are enqueued again."""

from __future__ import annotations

from dataclasses import dataclass

from pneumoscreen.db.images import left_over
from pneumoscreen.model.progress import Progress
from pneumoscreen.worker.intake.enqueue import Enqueued, enqueue
from pneumoscreen.worker.settings import Settings


@dataclass
class ResumeResult:
    n_queued: int = 0
    n_stale: int = 0
    n_tasks: int = 0


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
