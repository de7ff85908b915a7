"""Send registered studies to the queue: one task per ``task_size`` of them.

With no broker the tasks run here, one after another (Celery's eager mode), on the caller's own
settings.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from pneumoscreen.db import Batch
from pneumoscreen.model.progress import Progress, Silent
from pneumoscreen.worker.screening.prefetch import split
from pneumoscreen.worker.settings import Settings, mask_url


class BrokerUnavailable(RuntimeError):
    """The broker refused the tasks; the studies stay queued in the database."""


@dataclass
class Enqueued:
    """Studies of one batch handed to the queue, and the tasks that carry them."""

    batch_id: int | None
    queued_ids: list[int] = field(default_factory=list)
    task_ids: list[str] = field(default_factory=list)
    n_tasks: int = 0


def enqueue(result: Enqueued, *, settings: Settings, task_size: int | None = None,
            progress: Progress | None = None, rescreen: bool = False,
            model_version: int | None = None) -> None:
    """One task per ``task_size`` queued studies; with no broker they run here, in order.

    ``model_version``: a registered model version id the tasks screen with (a re-screen).
    """
    from pneumoscreen.worker.queue.app import configure
    from pneumoscreen.worker.queue.tasks import eager_settings, screen_task

    progress = progress or Silent()
    configure(settings)
    groups = split(result.queued_ids, task_size or settings.task_size)
    progress.start("screen" if settings.eager else "queue", len(result.queued_ids))
    outbox = contextlib.nullcontext()
    if settings.eager and settings.export_to:  # no worker: this process delivers the exports
        from pneumoscreen.worker.export.outbox import outbox_running

        outbox = outbox_running(settings)
    with eager_settings(settings if settings.eager else None), outbox:
        for group in groups:
            try:
                async_result = screen_task.apply_async(
                    args=[group], kwargs={"batch_id": result.batch_id, "rescreen": rescreen,
                                          "model_version": model_version})
            except Exception as exc:
                if settings.eager:
                    raise
                raise BrokerUnavailable(
                    f"cannot reach the broker at {mask_url(settings.broker_url)}: "
                    f"{str(exc).rstrip('.')}. {len(result.queued_ids)} studies stay queued; "
                    "check SCREEN_BROKER_URL, then run `screen resume` once the broker is "
                    "back.") from exc
            result.task_ids.append(async_result.id)
            result.n_tasks += 1
            progress.advance("screen" if settings.eager else "queue", len(group))
    if result.batch_id is None:
        return
    with settings.session() as session:
        batch = session.get(Batch, result.batch_id)
        if batch is not None:
            batch.n_tasks = (batch.n_tasks or 0) + result.n_tasks
