"""Thin Celery tasks: they take ids, call the real logic, and retry only transient errors."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict
from typing import Any, NoReturn

from celery.exceptions import Reject
from celery.signals import worker_process_init
from sqlalchemy.exc import InterfaceError, OperationalError

from pneumoscreen.db import reset_engines
from pneumoscreen.worker.queue.app import app
from pneumoscreen.worker.queue.messages import RefusedMessage, screen_args
from pneumoscreen.worker.screening.screen import screen_task as screen_studies
from pneumoscreen.worker.settings import Settings, get_settings

log = logging.getLogger(__name__)

# A database that is restarting or a dropped connection: worth another try, with backoff.
TRANSIENT = (OperationalError, InterfaceError, ConnectionError, TimeoutError)
# Studies another live worker holds: look again after this long at most (they are usually done).
BUSY_RETRY_S = 30


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
    return _eager.get() or get_settings()


@app.task(
    name="pneumoscreen.screen_task",
    bind=True,
    acks_late=True,
    autoretry_for=TRANSIENT,
    retry_backoff=2,
    retry_backoff_max=120,
    retry_jitter=True,
    max_retries=8,
)
def screen_task(self: Any, study_ids: list[int], batch_id: int | None = None,
                rescreen: bool = False, model_version: int | None = None,
                **unexpected: Any) -> dict[str, Any]:
    """Screen one task's studies; safe to run again on the same ids.

    ``model_version``: a registered model version id to use instead of the configured model (a
    rescreen batch also names its version itself); never a path. A message whose arguments are
    not what pneumoscreen sends, or that names a model that is not registered or whose file
    changed, is refused before anything changes. The task id is the claim token, so a retry or
    a redelivery of this task takes back the studies it held at once, while other tasks wait.
    """
    from pneumoscreen.model.bundle import ModelFileError

    try:
        args = screen_args(study_ids, batch_id, rescreen, model_version, unexpected)
    except RefusedMessage as exc:
        refuse(self, str(exc))
    settings = task_settings()
    try:
        outcome = screen_studies(args.study_ids, settings, batch_id=args.batch_id,
                                 rescreen=args.rescreen, model_version_id=args.model_version,
                                 claim_token=self.request.id)
    except ModelFileError as exc:
        if self.request.is_eager:
            raise
        refuse(self, str(exc))
    if outcome.busy:
        # Held by another live worker (a duplicate task, e.g. from `screen resume`): check later
        # that they got finished; a dead holder's lease expires and this retry takes them.
        countdown = min(BUSY_RETRY_S, settings.visibility_timeout)
        raise self.retry(args=[outcome.busy],
                         kwargs={"batch_id": args.batch_id, "rescreen": args.rescreen,
                                 "model_version": args.model_version},
                         countdown=countdown, max_retries=None)
    return asdict(outcome)


def refuse(task: Any, reason: str) -> NoReturn:
    """Drop a task message without running it (not requeued, not retried)."""
    log.error("refused task %s: %s", task.request.id, reason)
    if task.request.is_eager:
        raise RefusedMessage(reason)
    raise Reject(reason, requeue=False)


@app.task(name="pneumoscreen.nightly", acks_late=True, autoretry_for=TRANSIENT,
          retry_backoff=30, retry_backoff_max=600, max_retries=5)
def nightly_task() -> dict[str, Any]:
    """The beat entry: submit what is new in the configured inbox folders."""
    from pneumoscreen.worker.intake.nightly import run_nightly

    summary = run_nightly(None, settings=task_settings())
    return summary.as_dict()


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    # Connections opened before the fork must not be shared between processes.
    reset_engines()
    settings = get_settings()
    if settings.gpu_per_process:
        from billiard.process import current_process

        pin_gpu(current_process().index, os.environ)


def pin_gpu(index: int, environ: Any) -> str:
    """Let pool process ``index`` see one GPU only (before TensorFlow is imported in it).

    Respects a CUDA_VISIBLE_DEVICES list given to the whole worker: process i takes its i-th
    entry. Returns the GPU chosen; TensorFlow then calls it /GPU:0.
    """
    visible = [d for d in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    if visible and index >= len(visible):
        raise RuntimeError(f"pool process {index} has no GPU: CUDA_VISIBLE_DEVICES lists "
                           f"{len(visible)}; use --concurrency {len(visible)}")
    chosen = visible[index] if visible else str(index)
    environ["CUDA_VISIBLE_DEVICES"] = chosen
    log.info("pool process %d uses GPU %s", index, chosen)
    return chosen
