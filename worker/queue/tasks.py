"""Thin Celery tasks: they take ids, call the real logic, and retry only transient errors.

The worker's start-up (warm-up, GPU pinning, the sweep at start) is in :mod:`.startup`.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any, NoReturn

from celery.exceptions import Reject
from sqlalchemy.exc import InterfaceError, OperationalError

from pneumoscreen.model.bundle import ModelFileError
from pneumoscreen.worker.export.enqueue import enqueue_exports
from pneumoscreen.worker.intake.nightly import run_nightly
from pneumoscreen.worker.intake.sweep import sweep
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
from pneumoscreen.worker.settings import Settings

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
    """Deliver one study's current result to one configured destination (named by its label)
    through the outbox: a transient failure leaves the row due again after a backoff, and the
    outbox (beat's ``pneumoscreen.export_outbox``) delivers it then."""
    from pneumoscreen.worker.export.outbox import deliver_to

    settings = task_settings()
    outcomes = deliver_to(study_uid, destination, settings)
    if outcomes is None:  # not (or no longer) configured: a message cannot name a destination
        log.error("export of study %s: %s is not a configured destination", study_uid,
                  destination)
        return {"study_uid": study_uid, "destination": destination, "status": "refused"}
    _outbox_again(outcomes, settings, eager=self.request.is_eager)
    return asdict(outcomes[0]) if outcomes else {"study_uid": study_uid,
                                                 "destination": destination,
                                                 "status": "nothing"}


@app.task(name="pneumoscreen.export_outbox", ignore_result=True)
def export_outbox_task() -> dict[str, int]:
    """The beat entry (and one run at worker start): deliver every export that is due."""
    from pneumoscreen.worker.export.outbox import deliver_due

    settings = task_settings()
    outcomes = deliver_due(settings)
    _outbox_again(outcomes, settings, eager=settings.eager)
    return {status: sum(o.status == status for o in outcomes)
            for status in ("sent", "pending", "failed", "busy", "superseded")}


def _outbox_again(outcomes: list[Any], settings: Settings, *, eager: bool) -> None:
    """After a transient failure, run the outbox again when the next try is due, so a worker
    without beat retries too (beat's entry is the clock for everything else). Eager mode has
    no broker to hold the delay: this process runs an outbox loop as long as it lives (and
    ``screen listen`` runs one from its start)."""
    import datetime as dt

    times = [o.next_attempt_at for o in outcomes
             if o.status == "pending" and o.next_attempt_at is not None]
    if not times:
        return
    if eager:
        from pneumoscreen.worker.export.outbox import ensure_outbox

        ensure_outbox(settings)
        return
    wait = (min(times) - dt.datetime.now(dt.timezone.utc)).total_seconds()
    wait = max(0.0, min(wait, settings.export_retry_max_delay)) + 0.5
    try:
        export_outbox_task.apply_async(countdown=wait)
    except Exception as exc:  # the broker down: beat's entry or the next start retries
        log.warning("the export outbox could not be scheduled: %s", type(exc).__name__)


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
