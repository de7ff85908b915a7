"""The Celery application and its configuration (tasks live in ``pneumoscreen.worker.queue.tasks``,
the worker's start-up in ``.startup``; publishing in ``.publish``).

No broker configured means eager mode: tasks run in the calling process, which is how the
embedded defaults and the unit tests work.

Running at scale: one ``screen worker`` per machine with ``--concurrency`` = the number of GPUs
and ``SCREEN_GPU_PER_PROCESS=1`` (pool process i sees GPU i only), or ``--concurrency 1`` on a
CPU-only machine (TensorFlow already uses every core). ``visibility_timeout`` must exceed the
longest task: Redis hands an unacknowledged task to another worker after that long, at kombu's
next sweep for such tasks, which :func:`transport_options` scales to the timeout (before, a sweep
every 100 s brought a killed task back 1.6-2.2x an 8-60 s timeout after the kill).
"""

from __future__ import annotations

import math
from typing import Any

from celery import Celery
from celery.schedules import crontab

from pneumoscreen.worker.settings import Settings, cron_fields, get_settings

#: Bounds of the period between kombu's sweeps for unacknowledged tasks to hand over, seconds.
SWEEP_MIN_S, SWEEP_MAX_S = 2.0, 100.0

app = Celery("pneumoscreen", include=["pneumoscreen.worker.queue.tasks",
                                     "pneumoscreen.worker.queue.startup"])


def transport_options(visibility_timeout: int) -> dict[str, Any]:
    """Redis transport options: the visibility timeout, and kombu's sweep for tasks whose
    worker died scaled to it (a quarter of it, 2-100 s).

    kombu sweeps every ``unacked_restore_interval`` x ``unacked_restore_throttle`` seconds
    (10 x 10 by default): with a visibility timeout of minutes, a killed worker's task would
    wait up to 100 s more than the timeout promises; with the default hour it changes nothing.
    """
    period = min(SWEEP_MAX_S, max(SWEEP_MIN_S, visibility_timeout / 4))
    throttle = math.ceil(period / 10)  # kombu's own interval, 10 s, as the longest step
    return {"visibility_timeout": visibility_timeout,
            "unacked_restore_interval": period / throttle,
            "unacked_restore_throttle": throttle}


def configure(settings: Settings | None = None) -> Celery:
    """(Re)apply ``settings`` to the app: broker, serialisation, delivery guarantees, eagerness."""
    settings = settings or get_settings()
    eager = settings.eager
    broker_url = settings.broker_url or "memory://localhost/"
    if app.conf.broker_url != broker_url:
        # Pools made for the previous broker would keep publishing there.
        app.close()
        app.amqp._producer_pool = None
    signing = None if eager else settings.signing
    serializer = "auth" if signing else "json"
    app.conf.update(
        broker_url=broker_url,
        result_backend=settings.result_backend,
        task_always_eager=eager,
        task_eager_propagates=eager,
        # Message signing (optional): task messages signed with this process's key, and only
        # messages signed by a certificate in the store accepted.
        task_serializer=serializer,
        event_serializer=serializer,
        result_serializer="json",
        accept_content=[serializer],
        result_accept_content=["json"],
        # At-least-once: a task is acknowledged after it ran, and requeued if its worker dies.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # A pool process loads and warms the model before it reports up (tens of seconds on a
        # CPU): Celery's 4 s default would kill it as hung.
        worker_proc_alive_timeout=900,
        task_time_limit=settings.task_time_limit,
        task_soft_time_limit=max(settings.task_time_limit - 30, 10),
        # Redis redelivers an unacknowledged task after this many seconds: longer than any task.
        broker_transport_options=transport_options(settings.visibility_timeout),
        result_expires=24 * 3600,
        task_ignore_result=settings.result_backend is None,
        broker_connection_retry_on_startup=True,
        # Fail a submit fast when the broker is down: the images stay queued for `screen resume`.
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5,
                                   "interval_max": 1},
        broker_connection_timeout=4,
        worker_hijack_root_logger=False,
        timezone=settings.nightly_timezone,
        beat_schedule=beat_schedule(settings),
        # Beat's own state file in the data folder, not in whatever directory it started in.
        beat_schedule_filename=str(settings.data_dir / "celerybeat-schedule"),
    )
    if signing:
        key, cert, store = signing
        app.conf.update(security_key=str(key), security_certificate=str(cert),
                        security_cert_store=str(store), security_digest="sha256")
        app.setup_security(allowed_serializers=["json"])  # "auth" is registered by it
    return app


def cron(expression: str) -> crontab:
    """A Celery crontab from a 5-field cron expression (minute hour day month weekday)."""
    minute, hour, day_of_month, month, day_of_week = cron_fields(expression)
    return crontab(minute=minute, hour=hour, day_of_month=day_of_month, month_of_year=month,
                   day_of_week=day_of_week)


def beat_schedule(settings: Settings) -> dict[str, Any]:
    """The nightly run, when inbox folders are configured; the recovery sweep every
    ``sweep_seconds`` (unless 0); the export outbox every ``export_outbox_seconds`` when results
    are sent back."""
    schedule: dict[str, Any] = {}
    if settings.inbox_dirs:
        schedule["nightly-inboxes"] = {"task": "pneumoscreen.nightly",
                                       "schedule": cron(settings.nightly_cron)}
    if settings.sweep_seconds:
        # A sweep that finds its moment passed (beat was down) is pointless to run late.
        schedule["recovery-sweep"] = {"task": "pneumoscreen.sweep",
                                      "schedule": float(settings.sweep_seconds),
                                      "options": {"expires": float(settings.sweep_seconds)}}
    if settings.export_to:
        # The outbox's clock: exports due again after a transient failure (PACS down).
        schedule["export-outbox"] = {"task": "pneumoscreen.export_outbox",
                                     "schedule": float(settings.export_outbox_seconds),
                                     "options": {"expires": float(settings.export_outbox_seconds)}}
    return schedule


configure()

