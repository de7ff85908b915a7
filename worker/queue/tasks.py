"""Thin Celery tasks: they take ids, call the real logic, and retry only transient errors."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, NoReturn

from celery.exceptions import Reject
from celery.signals import worker_init, worker_process_init, worker_ready
from sqlalchemy.exc import InterfaceError, OperationalError

from pneumoscreen.db import reset_engines
from pneumoscreen.model.bundle import ModelFileError
from pneumoscreen.worker.export.enqueue import configured_destination, enqueue_exports
from pneumoscreen.worker.export.run import export_study
from pneumoscreen.worker.intake.nightly import run_nightly
from pneumoscreen.worker.intake.sweep import sweep, sweep_safely
from pneumoscreen.worker.queue.app import app
from pneumoscreen.worker.queue.messages import RefusedMessage, screen_args
from pneumoscreen.worker.queue.publish import (
    EXPORT_TASK,
    NIGHTLY_TASK,
    SCREEN_TASK,
    SWEEP_TASK,
    task_settings,
)
from pneumoscreen.worker.screening.screen import screen_images
from pneumoscreen.worker.settings import Settings, get_settings

log = logging.getLogger(__name__)

# A database that is restarting or a dropped connection: worth another try, with backoff.
TRANSIENT = (OperationalError, InterfaceError, ConnectionError, TimeoutError)
# Images another live worker holds: look again after this long at most (they are usually done).
BUSY_RETRY_S = 30


@app.task(
    name=SCREEN_TASK,
    bind=True,
    acks_late=True,
    autoretry_for=TRANSIENT,
    retry_backoff=2,
    retry_backoff_max=120,
    retry_jitter=True,
    max_retries=8,
)
def screen_task(self: Any, image_ids: list[int], batch_id: int | None = None,
                rescreen: bool = False, model_version: int | None = None,
                **unexpected: Any) -> dict[str, Any]:
    """Screen one task's images; safe to run again on the same ids.

    ``model_version``: a registered model version id to use instead of the configured model (a
    rescreen batch also names its version itself); never a path. A message whose arguments are
    not what pneumoscreen sends, or that names a model that is not registered or whose file
    changed, is refused before anything changes. The task id is the claim token, so a retry or
    a redelivery of this task takes back the images it held at once, while other tasks wait.
    """
    try:
        args = screen_args(image_ids, batch_id, rescreen, model_version, unexpected)
    except RefusedMessage as exc:
        refuse(self, str(exc))
    settings = task_settings()
    try:
        outcome = screen_images(args.image_ids, settings, batch_id=args.batch_id,
                                 rescreen=args.rescreen, model_version_id=args.model_version,
                                 claim_token=self.request.id)
    except ModelFileError as exc:
        if self.request.is_eager or args.model_version is None:
            # The worker's own configured model is at fault, not the message: leave the task
            # to be redelivered (to a healthy worker) rather than drop it.
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
    if settings.export_to and (outcome.screened or outcome.rejected or outcome.failed):
        _queue_exports(args.image_ids, settings)
    return asdict(outcome)


def _queue_exports(image_ids: list[int], settings: Settings) -> None:
    """Send back the results of the images this task completed; never fails the screening
    (``screen export`` sends what could not be queued)."""
    try:
        enqueue_exports(image_ids, settings)
    except Exception:
        log.exception("exports of a task's studies could not be queued")


@app.task(name=EXPORT_TASK, bind=True, acks_late=True,
          autoretry_for=(OperationalError, InterfaceError), retry_backoff=2,
          retry_backoff_max=120, max_retries=8)
def export_task(self: Any, study_uid: str, destination: str) -> dict[str, Any]:
    """Send one study's result to one configured destination (named by its label); a transient
    failure (PACS down, timeout, 5xx) is retried with exponential backoff, a bounded number of
    times. In eager mode there is one attempt: ``screen export`` resends."""
    settings = task_settings()
    dest = configured_destination(destination, settings)
    if dest is None:  # not (or no longer) configured: a message cannot name a destination
        log.error("export of study %s: %s is not a configured destination", study_uid,
                  destination)
        return {"study_uid": study_uid, "destination": destination, "status": "refused"}
    retries = self.request.retries or 0
    last = settings.eager or retries >= settings.export_retries
    outcome = export_study(study_uid, dest, settings, retry_later=not last)
    if outcome.status == "pending" and not last:
        countdown = min(settings.export_retry_delay * 2 ** retries, 3600.0)
        raise self.retry(countdown=countdown, max_retries=settings.export_retries)
    return asdict(outcome)


def refuse(task: Any, reason: str) -> NoReturn:
    """Drop a task message without running it (not requeued, not retried)."""
    log.error("refused task %s: %s", task.request.id, reason)
    if task.request.is_eager:
        raise RefusedMessage(reason)
    raise Reject(reason, requeue=False)


@app.task(name=NIGHTLY_TASK, acks_late=True, autoretry_for=TRANSIENT,
          retry_backoff=30, retry_backoff_max=600, max_retries=5)
def nightly_task() -> dict[str, Any]:
    """The beat entry: submit what is new in the configured inbox folders."""
    summary = run_nightly(None, settings=task_settings())
    return summary.as_dict()


@app.task(name=SWEEP_TASK, ignore_result=True)
def sweep_task() -> dict[str, Any]:
    """The beat entry: enqueue again the images no live task carries (after a Redis restart)."""
    return asdict(sweep(settings=task_settings()))


# Each pool process marks itself warm here; the main process waits for all of them before it
# says "ready" and starts taking tasks (set by the main process, inherited through the fork).
WARM_DIR_ENV = "PNEUMOSCREEN_WARM_DIR"
WARM_TIMEOUT_S = 900


@worker_init.connect
def _before_pool(**_: Any) -> None:
    quiet_startup_logs()
    os.environ[WARM_DIR_ENV] = tempfile.mkdtemp(prefix="pneumoscreen-warm-")
    # Migrate once here, before the fork: pool processes opening a fresh SQLite file together
    # would race to create the tables.
    from pneumoscreen.db import get_engine

    try:
        get_engine(get_settings().effective_database_url)
    except Exception as exc:  # the pool processes report it again, with each task
        log.error("the database cannot be opened: %s", exc)


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    # Connections opened before the fork must not be shared between processes.
    reset_engines()
    from billiard.process import current_process

    settings = get_settings()
    index = current_process().index
    if settings.gpu_per_process:
        pin_gpu(index, os.environ)
    try:
        warm(settings, index)
    finally:
        folder = os.environ.get(WARM_DIR_ENV)
        if folder and os.path.isdir(folder):
            Path(folder, str(os.getpid())).touch()


@worker_ready.connect
def _wait_until_warm(sender: Any = None, **_: Any) -> None:
    """Hold "ready" (and the first task) until every pool process has its model warm."""
    folder = os.environ.get(WARM_DIR_ENV)
    wanted = getattr(getattr(sender, "pool", None), "num_processes", None) or 1
    if not folder:
        return
    deadline = time.monotonic() + WARM_TIMEOUT_S
    while len(os.listdir(folder)) < wanted and time.monotonic() < deadline:
        time.sleep(0.2)
    shutil.rmtree(folder, ignore_errors=True)


@worker_ready.connect  # after _wait_until_warm: the pool processes have migrated the database
def _sweep_at_start(**_: Any) -> None:
    # What a broker restart (or a crash) stranded is sent again before the first beat tick.
    sweep_safely(get_settings())


def warm(settings: Settings, index: int = 0) -> None:
    """Open the database (engine, migration check, the key's fingerprint), load the configured
    model and run one dummy chunk (and heatmap) through it, so the first task runs at steady
    speed. What cannot be warmed is logged; its tasks then say why."""
    import numpy as np

    from pneumoscreen.worker.keys import checked_key
    from pneumoscreen.worker.screening.model_choice import configured_model

    started = time.monotonic()
    try:
        checked_key(settings)
        model = configured_model(settings)
        record_default(model, settings)
        size, channels = model.spec.input_size, model.spec.channels
        dummy = np.zeros((settings.chunk_size, size, size, channels), np.float32)
        model.predict(dummy)
        if settings.heatmaps != "none":
            model.heatmaps(dummy[:1])
    except Exception as exc:
        log.error("pool process %d: the model could not be warmed: %s", index, exc)
        return
    log.info("model %s warm in pool process %d (%.1f s)", model.spec.label, index,
             time.monotonic() - started)


def record_default(model: Any, settings: Settings) -> None:
    """Audit a change of the default model, as a worker starting with it sees it."""
    from pneumoscreen.db import session_scope
    from pneumoscreen.db.audit import audit_events
    from pneumoscreen.db.queries import model_version_for
    from pneumoscreen.worker.audit import audit

    with session_scope(settings.effective_database_url) as session:
        mv = model_version_for(model.spec, session=session)
        last = audit_events(session=session, action="model.default", limit=1)
        if not last or last[0]["params"].get("sha256") != mv.file_sha256:
            audit(session, "model.default", model_version=mv.id, label=mv.label,
                  sha256=mv.file_sha256)


def quiet_startup_logs() -> None:
    """No migration chatter or font-cache notices in a worker's start-up log."""
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("matplotlib").setLevel(logging.ERROR)


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
