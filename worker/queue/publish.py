"""Task publishing, in one place: what the intake, the listener and the export hand to the queue.

Publishers name a task by its registered name and never import the task module: the tasks call
into the intake and the export (a nightly run submits, a screening task queues exports), so an
import back from there would close a cycle. Celery's ``include`` loads the task module into the
app; with no broker (eager mode) the task runs here, in the caller, on the caller's settings.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from pneumoscreen.worker.queue.app import app, configure
from pneumoscreen.worker.settings import Settings, get_settings, mask_url

# The registered task names (a broker message carries them: they never change).
SCREEN_TASK = "pneumoscreen.screen_task"
EXPORT_TASK = "pneumoscreen.export_study"
NIGHTLY_TASK = "pneumoscreen.nightly"
SWEEP_TASK = "pneumoscreen.sweep"


class BrokerUnavailable(RuntimeError):
    """The broker refused the tasks; the images stay queued in the database."""


# Eager mode runs a task inside the caller's own call: the caller's settings (its database!)
# must reach it. A message from a broker carries ids only and reads the process settings.
_eager: ContextVar[Settings | None] = ContextVar("pneumoscreen_eager_settings", default=None)


@contextmanager
def eager_settings(settings: Settings | None) -> Iterator[None]:
    """Tasks run eagerly inside this block use ``settings`` instead of the process's."""
    token = _eager.set(settings)
    try:
        yield
    finally:
        _eager.reset(token)


def task_settings() -> Settings:
    """The settings a task runs with: its eager caller's, else the process's."""
    return _eager.get() or get_settings()


def registered(name: str) -> Any:
    """The task registered under ``name`` (the app's ``include`` loads the task module)."""
    if name not in app.tasks:
        app.loader.import_default_modules()
    return app.tasks[name]


def publish_screens(groups: Iterable[list[int]], *, settings: Settings, batch_id: int | None,
                    rescreen: bool = False, model_version: int | None = None,
                    n_waiting: int = 0) -> Iterator[tuple[str, int]]:
    """Queue one screening task per group of image ids (with no broker: screen them here, in
    order); yields each task's id and size as it goes.

    ``model_version``: a registered model version id the tasks screen with (a re-screen).
    BrokerUnavailable when the broker refuses a task: the ``n_waiting`` images stay queued in
    the database.
    """
    configure(settings)
    task = registered(SCREEN_TASK)
    with eager_settings(settings if settings.eager else None):
        for group in groups:
            try:
                result = task.apply_async(
                    args=[group], kwargs={"batch_id": batch_id, "rescreen": rescreen,
                                          "model_version": model_version})
            except Exception as exc:
                if settings.eager:
                    raise
                raise BrokerUnavailable(
                    f"cannot reach the broker at {mask_url(settings.broker_url)}: "
                    f"{str(exc).rstrip('.')}. {n_waiting} studies stay queued; "
                    "check SCREEN_BROKER_URL, then run `screen resume` once the broker is "
                    "back.") from exc
            yield result.id, len(group)


def publish_export(study_uid: str, destination: str) -> None:
    """Queue the export of one study's result to one configured destination (named by its
    label). Called from a screening task (or ``screen export``): the app is configured, and in
    eager mode the caller's settings are already in force."""
    registered(EXPORT_TASK).delay(study_uid, destination)
