"""Send registered images to the queue: one task per ``task_size`` of them.

With no broker the tasks run here, one after another (Celery's eager mode), on the caller's own
settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pneumoscreen.db.lists import split
from pneumoscreen.db.runs import add_tasks
from pneumoscreen.model.progress import Progress, Silent
from pneumoscreen.worker import interrupt
from pneumoscreen.worker.queue.publish import publish_screens
from pneumoscreen.worker.settings import Settings


@dataclass
class Enqueued:
    """Images of one batch handed to the queue, and the tasks that carry them."""

    batch_id: int | None
    queued_ids: list[int] = field(default_factory=list)
    task_ids: list[str] = field(default_factory=list)
    n_tasks: int = 0


def enqueue(result: Enqueued, *, settings: Settings, task_size: int | None = None,
            progress: Progress | None = None, rescreen: bool = False,
            model_version: int | None = None) -> None:
    """One task per ``task_size`` queued images; with no broker they run here, in order.

    ``model_version``: a registered model version id the tasks screen with (a re-screen).
    BrokerUnavailable (``queue.publish``) when the broker refuses them.
    """
    progress = progress or Silent()
    step = "screen" if settings.eager else "queue"
    # Screening here, a task is a step of the progress bar (and of an interrupted run): no
    # larger than a chunk, unless --task-size says otherwise.
    size = task_size or (min(settings.task_size, settings.chunk_size) if settings.eager
                         else settings.task_size)
    groups = split(result.queued_ids, size)
    progress.start(step, len(result.queued_ids))
    for task_id, size in publish_screens(groups, settings=settings, batch_id=result.batch_id,
                                         rescreen=rescreen, model_version=model_version,
                                         n_waiting=len(result.queued_ids)):
        if settings.eager:
            interrupt.check()  # a Ctrl-C whose exception was lost stops here, between tasks
        result.task_ids.append(task_id)
        result.n_tasks += 1
        progress.advance(step, size)
    if result.batch_id is None:
        return
    with settings.session() as session:
        add_tasks(result.batch_id, result.n_tasks, session=session)
