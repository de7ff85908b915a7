"""Thin Celery tasks: they take ids, call the real logic, and retry only transient errors."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from celery.signals import worker_process_init
from sqlalchemy.exc import InterfaceError, OperationalError

from pneumoscreen.db import reset_engines
from pneumoscreen.worker.batch import screen_batch
from pneumoscreen.worker.celery_app import app
from pneumoscreen.worker.settings import get_settings

# A database that is restarting or a dropped connection: worth another try, with backoff.
TRANSIENT = (OperationalError, InterfaceError, ConnectionError, TimeoutError)


@app.task(
    name="pneumoscreen.screen_batch",
    bind=True,
    acks_late=True,
    autoretry_for=TRANSIENT,
    retry_backoff=2,
    retry_backoff_max=120,
    retry_jitter=True,
    max_retries=8,
)
def screen_batch_task(self: Any, study_ids: list[int], batch_id: int | None = None,
                      rescreen: bool = False) -> dict[str, int]:
    """Screen one batch of studies; safe to run again on the same ids."""
    outcome = screen_batch(study_ids, get_settings(), batch_id=batch_id, rescreen=rescreen)
    return asdict(outcome)


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    # Connections opened before the fork must not be shared between processes.
    reset_engines()
