"""The export outbox: every export is a row; whoever claims a due row delivers it.

``plan_exports`` makes the rows (after screening, or by hand); ``deliver`` claims one row,
builds the study's objects, sends them and records the outcome: sent, or after a transient
failure due again after an exponential backoff (``export_retry_delay`` doubled, at most
``export_retry_max_delay``) until ``export_give_up_after`` has passed since it was first due,
then failed with the last error. ``deliver_due`` runs every due row once; ``OutboxLoop`` does it
every ``export_outbox_seconds`` in a thread (``screen listen``, an embedded screening run), the
beat entry ``pneumoscreen.export_outbox`` in broker mode. The claim is a lease in SQL, so two
deliverers never send the same SR at once, and rows are picked up after any restart.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

from pneumoscreen.db import ExportStatus, session_scope
from pneumoscreen.db.models import Export, utcnow
from pneumoscreen.db.outbox import (
    Version,
    claim,
    due,
    hold,
    plan,
    record,
    supersede,
    version_for,
)
from pneumoscreen.db.studies import screened_images
from pneumoscreen.worker.export.destinations import Destination, configured_destination
from pneumoscreen.worker.export.objects import build_objects
from pneumoscreen.worker.export.result import StudyResult
from pneumoscreen.worker.export.send import ExportError, PermanentExportError, send
from pneumoscreen.worker.export.sources import SourceError
from pneumoscreen.worker.export.sr import sr_uids
from pneumoscreen.worker.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class ExportOutcome:
    study_uid: str
    destination: str
    # sent | pending (a transient failure, due again later) | failed | nothing (no screened
    # image) | busy (another deliverer holds it, or it is not due) | superseded
    status: str
    attempts: int = 0
    error: str | None = None
    sr_sop_instance_uid: str | None = None
    sc_sop_instance_uids: list[str] = field(default_factory=list)
    export_id: int | None = None
    next_attempt_at: dt.datetime | None = None


def lease_seconds(settings: Settings) -> float:
    """How long a claim holds: longer than any delivery (connect, association, each object)."""
    return max(300.0, 12 * settings.export_timeout)


def backoff(attempts: int, settings: Settings) -> float:
    """Seconds before the next try after ``attempts`` failed ones (1 → the first delay)."""
    return min(settings.export_retry_delay * 2 ** max(attempts - 1, 0),
               settings.export_retry_max_delay)


def current_version(study_uid: str, *, session: object) -> tuple[StudyResult, Version] | None:
    """The study's result as it stands and which SR version it is; None if nothing screened."""
    rows = screened_images(study_uid, session=session)  # type: ignore[arg-type]
    if not rows:
        return None
    result = StudyResult.from_rows(study_uid, rows)
    series_uid, sop_uid = sr_uids(result)
    return result, version_for(study_uid, sop_uid, series_uid, session=session)  # type: ignore[arg-type]


def held_because(study_uid: str, *, session: object) -> str | None:
    """Why the study's result must not be sent now: a conflict a person has to resolve."""
    from pneumoscreen.worker.export.conflicts import conflicts

    found = conflicts(session=session, study_uid=study_uid)  # type: ignore[arg-type]
    if not found:
        return None
    return ("held for a human read: " + "; ".join(c.describe() for c in found)
            + " (see `screen conflicts`)")


def plan_exports(study_uids: Sequence[str], destinations: Sequence[Destination],
                 settings: Settings, *, resend: bool = False) -> list[int]:
    """The outbox rows of these studies' current results for these destinations (made when
    new, due again when ``resend``); their ids. A study with nothing screened has none."""
    ids: list[int] = []
    with session_scope(settings.effective_database_url) as session:
        for uid in study_uids:
            current = current_version(uid, session=session)
            if current is None:
                continue
            result, version = current
            held = held_because(uid, session=session)
            for dest in destinations:
                row = plan(uid, dest.label, result.model.version_id, version, session=session,
                           resend=resend, held=held)
                session.flush()
                ids.append(row.id)
    return ids


def deliver_to(study_uid: str, label: str, settings: Settings) -> list[ExportOutcome] | None:
    """What the export task does: the study's current result planned for the configured
    destination ``label`` and delivered (no outcome when nothing is screened); None when no
    configured destination has that label (a message cannot name a destination)."""
    dest = configured_destination(label, settings)
    if dest is None:
        return None
    return [deliver(i, settings, destination=dest)
            for i in plan_exports([study_uid], [dest], settings)]


def deliver(export_id: int, settings: Settings, *, destination: Destination | None = None,
            force: bool = False) -> ExportOutcome:
    """Claim one row and deliver it; never raises an :class:`ExportError`.

    ``destination``: where to send (a ``screen export --to`` one); else the configured
    destination the row names. ``force``: even before its next attempt time (by hand).
    """
    url = settings.effective_database_url
    with session_scope(url) as session:
        token = claim(export_id, session=session, lease_seconds=lease_seconds(settings),
                      force=force)
        row = session.get(Export, export_id)
        if row is None:
            return ExportOutcome("", "", "nothing", error="no such export")
        study_uid, label, attempts = row.study_instance_uid, row.destination, row.attempts
        if token is None:
            return ExportOutcome(study_uid, label, "busy", attempts, row.last_error,
                                 row.sr_sop_instance_uid, export_id=export_id,
                                 next_attempt_at=row.next_attempt_at)
        first_due = row.created_at
        planned_uid = row.sr_sop_instance_uid
        instance_number = row.instance_number or 1
        predecessor = ((row.predecessor_series_uid or "", row.predecessor_sr_uid)
                       if row.predecessor_sr_uid else None)
        current = current_version(study_uid, session=session)
        held = held_because(study_uid, session=session)
        if held is not None:
            hold(export_id, token, held, session=session)
    if held is not None:
        log.warning("export of study %s to %s held: %s", study_uid, label, held)
        return ExportOutcome(study_uid, label, "held", attempts, held, export_id=export_id)
    if destination is None:
        destination = configured_destination(label, settings)
    if destination is None:
        return _finish(export_id, token, study_uid, label, attempts, settings, first_due,
                       PermanentExportError(f"{label} is not a configured destination "
                                            "(SCREEN_EXPORT_TO); send it with "
                                            "`screen export --to`"))
    if current is None:
        return _finish(export_id, token, study_uid, label, attempts, settings, first_due,
                       PermanentExportError("no screened image in this study"))
    result, version = current
    if version.sr_uid != planned_uid:  # a late image or a re-screen since it was planned
        with session_scope(url) as session:
            supersede(export_id, token, session=session)
        new_ids = plan_exports([study_uid], [destination], settings)
        log.info("export %d of study %s superseded by a newer result (export %s)", export_id,
                 study_uid, new_ids)
        return ExportOutcome(study_uid, label, "superseded", attempts, export_id=export_id)
    try:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # they quote header values
                objects = build_objects(result, settings, instance_number=instance_number,
                                        predecessor=predecessor)
        except SourceError as exc:
            raise PermanentExportError(str(exc)) from None
        except Exception as exc:  # a header highdicom refuses: its message may quote a value
            raise PermanentExportError(f"cannot build the DICOM result of study {study_uid} "
                                       f"({type(exc).__name__})") from None
        sc_uids = [str(o.SOPInstanceUID) for o in objects[1:]]
        try:
            send(objects, destination, ae_title=settings.export_ae_title,
                 timeout=settings.export_timeout, settings=settings)
        except ExportError:
            raise
        except Exception as exc:  # e.g. no presentation context accepted for the SC: final
            raise PermanentExportError(f"{destination.label}: {type(exc).__name__} while "
                                       "sending") from None
    except ExportError as exc:
        return _finish(export_id, token, study_uid, label, attempts, settings, first_due, exc)
    with session_scope(url) as session:
        record(export_id, token, ExportStatus.sent, session=session, sc_uids=sc_uids)
    log.info("exported study %s to %s (SR %s, instance %d%s, %d heatmap SC)", study_uid, label,
             planned_uid, instance_number,
             f", supersedes {predecessor[1]}" if predecessor else "", len(sc_uids))
    return ExportOutcome(study_uid, label, "sent", attempts + 1, None, planned_uid, sc_uids,
                         export_id=export_id)


def _finish(export_id: int, token: str, study_uid: str, label: str, attempts: int,
            settings: Settings, first_due: dt.datetime, exc: ExportError) -> ExportOutcome:
    """Record a failed attempt: due again after the backoff, or failed (permanent, or past
    ``export_give_up_after``)."""
    now = utcnow()
    attempts += 1
    status, next_at, error = ExportStatus.failed, None, str(exc)
    if exc.transient:
        waited = (now - first_due).total_seconds()
        if waited < settings.export_give_up_after:
            status = ExportStatus.pending
            next_at = now + dt.timedelta(seconds=backoff(attempts, settings))
        else:
            error = (f"given up after {attempts} attempts over {waited / 3600:.1f} h; last "
                     f"error: {exc}")
    log.warning("export of study %s to %s, attempt %d: %s%s", study_uid, label, attempts, exc,
                f"; next try at {next_at:%Y-%m-%d %H:%M:%S} UTC" if next_at else "")
    with session_scope(settings.effective_database_url) as session:
        record(export_id, token, status, session=session, error=error, next_attempt_at=next_at,
               now=now)
    return ExportOutcome(study_uid, label, status.value, attempts, error, export_id=export_id,
                         next_attempt_at=next_at)


def deliver_due(settings: Settings, *, limit: int = 50) -> list[ExportOutcome]:
    """Deliver every row due now (at most ``limit``), one after the other."""
    with session_scope(settings.effective_database_url) as session:
        ids = due(session=session, limit=limit)
    return [deliver(i, settings) for i in ids]


class OutboxLoop:
    """A daemon thread running :func:`deliver_due` every ``export_outbox_seconds`` (first at
    once: rows left due by an earlier run go out at start) until stopped."""

    def __init__(self, settings: Settings, stop: threading.Event | None = None) -> None:
        self.settings = settings
        self.stop_event = stop or threading.Event()
        self._wake = threading.Event()
        self.thread = threading.Thread(target=self._run, name="export-outbox", daemon=True)
        self.rounds = 0

    def start(self) -> OutboxLoop:
        self.thread.start()
        return self

    def wake(self) -> None:
        """Look for due rows now (something was just planned)."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self.stop_event.set()
        self._wake.set()
        self.thread.join(timeout)

    def _run(self) -> None:
        while not self.stop_event.is_set():
            try:
                deliver_due(self.settings)
            except Exception as exc:  # the database down: try again next round
                log.warning("export outbox: %s; trying again in %.0f s", type(exc).__name__,
                            self.settings.export_outbox_seconds)
            self.rounds += 1
            self._wake.wait(self.settings.export_outbox_seconds)
            self._wake.clear()


_running: list[OutboxLoop] = []
_running_lock = threading.Lock()


def ensure_outbox(settings: Settings) -> None:
    """An outbox loop in this process from now on, unless one runs already (no broker: a
    screening run's exports are retried while the process lives; the next process with a loop,
    ``screen listen`` or a worker, takes over what is left)."""
    with _running_lock:
        if not _running:
            _running.append(OutboxLoop(settings).start())


def start_outbox(settings: Settings, stop: threading.Event) -> OutboxLoop:
    """The process's outbox loop until ``stop`` (``screen listen``)."""
    loop = OutboxLoop(settings, stop).start()
    with _running_lock:
        _running.append(loop)
    return loop
