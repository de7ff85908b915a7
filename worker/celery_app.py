"""The Celery application and its configuration (tasks live in ``pneumoscreen.worker.tasks``).

No broker configured means eager mode: tasks run in the calling process, which is how the
embedded defaults and the unit tests work.
"""

from __future__ import annotations

from celery import Celery

from pneumoscreen.worker.settings import Settings, get_settings

app = Celery("pneumoscreen", include=["pneumoscreen.worker.tasks"])


def configure(settings: Settings | None = None) -> Celery:
    """(Re)apply ``settings`` to the app: broker, serialisation, delivery guarantees, eagerness."""
    settings = settings or get_settings()
    eager = settings.eager
    app.conf.update(
        broker_url=settings.broker_url or "memory://localhost/",
        result_backend=settings.result_backend,
        task_always_eager=eager,
        task_eager_propagates=eager,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        # At-least-once: a task is acknowledged after it ran, and requeued if its worker dies.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=settings.task_time_limit,
        task_soft_time_limit=max(settings.task_time_limit - 30, 10),
        # Redis redelivers an unacknowledged task after this many seconds: longer than any batch.
        broker_transport_options={"visibility_timeout": settings.visibility_timeout},
        result_expires=24 * 3600,
        task_ignore_result=settings.result_backend is None,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        timezone="UTC",
    )
    return app


configure()
