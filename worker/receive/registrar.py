"""Register what the listener spooled, a study once it is stable, exactly as ``screen submit`` does.

The spool is the record of what arrived; ``received_instances`` the record of what was registered
(one row per spool file, by its hash). At every start, and whenever the database comes back, the
spool files without a row are registered, so nothing received is lost and nothing twice: the
intake's dedupe (content hash, SOP Instance UID) makes a second registration a no-op. A study is
registered once no new instance of it arrived for ``stable_seconds``. Studies the broker refused
stay queued with ``enqueued_at`` empty and are sent again on the next round.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from pneumoscreen.db import ImageStatus, ReceivedInstance
from pneumoscreen.db.images import image_of_file
from pneumoscreen.db.models import utcnow
from pneumoscreen.db.received import mark_enqueued, not_enqueued, registered_spool_files
from pneumoscreen.model.progress import Silent
from pneumoscreen.worker.ingest.vr import is_uid
from pneumoscreen.worker.intake.enqueue import Enqueued, enqueue
from pneumoscreen.worker.intake.submit import (
    SubmitResult,
    examine,
    register_batch,
)
from pneumoscreen.worker.keys import checked_key
from pneumoscreen.worker.queue.publish import BrokerUnavailable
from pneumoscreen.worker.receive.spool import Spool, SpoolFile
from pneumoscreen.worker.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Arrival:
    """One spooled instance waiting for its study to become stable."""

    file: SpoolFile
    received: float  # wall-clock seconds: when it arrived (its file's mtime after a restart)
    study_uid: str = ""  # "" when absent or not a valid UID: such instances group together
    sop_uid: str | None = None
    calling_aet: str | None = None


def read_arrival(file: SpoolFile, received: float) -> Arrival:
    """The few header values the registrar needs, each validated before it is kept."""
    import pydicom

    arrival = Arrival(file, received)
    try:
        ds = pydicom.dcmread(file.path, stop_before_pixels=True,
                             specific_tags=["StudyInstanceUID", "SOPInstanceUID"])
        study, sop = str(ds.get("StudyInstanceUID", "")), str(ds.get("SOPInstanceUID", ""))
        aet = str(ds.file_meta.get("SourceApplicationEntityTitle", "")).strip()
    except Exception:  # an unreadable header: registration records it as failed
        return arrival
    arrival.study_uid = study if is_uid(study) else ""
    arrival.sop_uid = sop if is_uid(sop) else None
    arrival.calling_aet = aet if 0 < len(aet) <= 16 and aet.isprintable() else None
    return arrival


def register_arrivals(arrivals: list[Arrival], *, settings: Settings) -> Enqueued:
    """Register these spool files as one ``receive`` batch with the intake's own registration
    (one transaction, with their ``received_instances`` rows); the new screenable images are
    returned for enqueueing. Files already registered are skipped."""
    with settings.session() as session:
        known = registered_spool_files([a.file.sha256 for a in arrivals], session=session)
    fresh = [a for a in arrivals if a.file.sha256 not in known]
    if not fresh:
        return Enqueued(batch_id=None)
    senders = sorted({a.calling_aet for a in fresh if a.calling_aet})
    checked_key(settings)  # one pseudonym key per database
    config = settings.ingest_config()
    examined = [(a, examine(a.file.path, config)) for a in fresh]  # outside the transaction
    candidates = [c for _, c in examined if c is not None]

    def received(session: Session, result: SubmitResult) -> None:
        queued, now = set(result.queued_ids), utcnow()
        for arrival, cand in examined:
            image_id = None if cand is None else image_of_file(cand.sha256, session=session)
            session.add(ReceivedInstance(
                sha256=arrival.file.sha256, sop_instance_uid=arrival.sop_uid,
                study_instance_uid=arrival.study_uid or None,
                spool_path=str(arrival.file.path.resolve()), calling_aet=arrival.calling_aet,
                received_at=_utc(arrival.received), registered_at=now, image_id=image_id,
                enqueued_at=None if image_id in queued else now))

    result = register_batch(
        [candidates] if candidates else [],
        {"files": len(fresh), "not_images": len(examined) - len(candidates)},
        settings=settings, kind="receive",
        source="DICOM from " + (", ".join(senders) or "unknown"), progress=Silent(),
        one_transaction=True, also=received)
    log.info("batch %s: %d received instances registered, %d new images, %d to screen, "
             "%d already known, %d twins", result.batch_id, len(fresh), result.n_new,
             len(result.queued_ids), result.n_duplicate, result.n_twins)
    return result


def _what(exc: Exception) -> str:
    """The error's kind, and for a failed connection or statement its first line: the driver's
    message (host, port, "table … already exists"), never the statement's parameters."""
    from sqlalchemy.exc import DBAPIError

    if isinstance(exc, DBAPIError):
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
    return type(exc).__name__


def _utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc)


def _mark_enqueued(image_ids: Iterable[int], *, settings: Settings) -> None:
    with settings.session() as session:
        mark_enqueued(image_ids, session=session)


class Registrar:
    """The listener's background loop: spool → stable studies → registered → enqueued."""

    def __init__(self, settings: Settings, spool: Spool, *, stable_seconds: float,
                 retry_seconds: float = 5.0,
                 dispatch: Callable[[Enqueued], None] | None = None) -> None:
        self.settings = settings
        # How registered studies reach screening: enqueued here (a broker takes them at once),
        # or handed to a screening thread (no broker: registration must not wait for it).
        self.dispatch = dispatch or self._enqueue_now
        self.spool = spool
        self.stable_seconds = stable_seconds
        self.retry_seconds = retry_seconds
        self._inbox: queue.SimpleQueue[tuple[SpoolFile, float]] = queue.SimpleQueue()
        self.pending: dict[str, Arrival] = {}
        self._reconciled = False
        self._retry_at = 0.0
        self._enqueue_at = 0.0
        self._sweep_at = 0.0

    def notify(self, file: SpoolFile, received: float | None = None) -> None:
        """Called by the C-STORE handler once a file is in the spool (any thread)."""
        self._inbox.put((file, time.time() if received is None else received))

    def run(self, stop: threading.Event, interval: float = 0.5) -> None:
        while not stop.is_set():
            self.tick()
            stop.wait(interval)

    def tick(self, now: float | None = None) -> None:
        """One round; never raises (a database or broker that is down is retried later)."""
        now = time.time() if now is None else now
        self._drain()
        if now < self._retry_at:
            return
        try:
            if not self._reconciled:
                self.reconcile()
            self._register_stable(now)
            if now >= self._enqueue_at:
                self._enqueue_at = now + self.retry_seconds
                self.enqueue_left_over()
            if now >= self._sweep_at:
                from pneumoscreen.worker.receive.retention import sweep_spool

                self._sweep_at = now + 3600.0  # retention is counted in days: hourly is enough
                # Transfers cut short leave partial files; none is older than a connection may be.
                self.spool.remove_stale_temp_files(older_than_s=2 * 3600.0)
                sweep_spool(self.spool, self.settings)
        except (SQLAlchemyError, BrokerUnavailable, OSError) as exc:
            self._retry_at = now + self.retry_seconds
            log.warning("%s unavailable (%s); %d received instances wait in the spool, retrying "
                        "in %.0f s", "broker" if isinstance(exc, BrokerUnavailable) else
                        "database", _what(exc), len(self.pending), self.retry_seconds)
        except Exception:
            self._retry_at = now + self.retry_seconds
            log.exception("registering received instances failed; retrying")

    def _drain(self) -> None:
        while True:
            try:
                file, received = self._inbox.get_nowait()
            except queue.Empty:
                return
            if file.sha256 not in self.pending:
                self.pending[file.sha256] = read_arrival(file, received)

    def reconcile(self) -> int:
        """Take every spool file not registered yet into the pending set (at start, and after a
        database outage); returns how many."""
        files = list(self.spool.files())
        with self.settings.session() as session:
            known = registered_spool_files([f.sha256 for f in files], session=session)
        added = 0
        for file in files:
            if file.sha256 not in known and file.sha256 not in self.pending:
                self.pending[file.sha256] = read_arrival(file, file.mtime)
                added += 1
        self._reconciled = True
        log.info("spool: %d files, %d waiting to be registered", len(files), len(self.pending))
        return added

    def stable(self, now: float) -> list[Arrival]:
        """The pending instances of studies with no new instance for ``stable_seconds``."""
        by_study: dict[str, list[Arrival]] = defaultdict(list)
        for arrival in self.pending.values():
            by_study[arrival.study_uid].append(arrival)
        return [a for group in by_study.values()
                if now - max(x.received for x in group) >= self.stable_seconds for a in group]

    def _register_stable(self, now: float) -> None:
        ready = self.stable(now)
        if not ready:
            return
        result = register_arrivals(ready, settings=self.settings)
        for arrival in ready:
            self.pending.pop(arrival.file.sha256, None)
        if result.queued_ids:
            self.dispatch(result)

    def _enqueue_now(self, result: Enqueued) -> None:
        enqueue(result, settings=self.settings)
        _mark_enqueued(result.queued_ids, settings=self.settings)

    def enqueue_left_over(self) -> int:
        """Send again the received images registered but never enqueued (broker down, or the
        listener stopped in between); those no longer queued are just marked."""
        with self.settings.session() as session:
            rows = not_enqueued(session=session)
        groups: dict[int | None, set[int]] = defaultdict(set)
        settled: set[int] = set()
        for image_id, batch_id, status in rows:
            (groups[batch_id] if status == ImageStatus.queued else settled).add(image_id)
        if settled:
            _mark_enqueued(settled, settings=self.settings)
        sent = 0
        for batch_id, ids in groups.items():
            self.dispatch(Enqueued(batch_id=batch_id, queued_ids=sorted(ids)))
            sent += len(ids)
        if sent:
            log.info("%d received images enqueued again", sent)
        return sent


class ScreeningThread:
    """No broker: the studies the registrar hands over are screened here, in one thread, one
    batch after the other, while the registrar goes on registering (a long stretch of screening
    never delays the next stable study's registration). Studies already handed over are not
    taken twice; they are marked enqueued once screened."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._queue: queue.SimpleQueue[Enqueued | None] = queue.SimpleQueue()
        self._taken: set[int] = set()
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="screening", daemon=True)

    def start(self) -> ScreeningThread:
        self.thread.start()
        return self

    def dispatch(self, result: Enqueued) -> None:
        with self._lock:
            fresh = [i for i in result.queued_ids if i not in self._taken]
            self._taken.update(fresh)
        if fresh:
            self._queue.put(Enqueued(batch_id=result.batch_id, queued_ids=fresh))

    def stop(self, timeout: float = 5.0) -> None:
        """Ask it to end after the batch it is screening (what is left stays queued and is
        screened at the next start)."""
        self._queue.put(None)
        self.thread.join(timeout)

    def _run(self) -> None:
        while True:
            result = self._queue.get()
            if result is None:
                return
            try:
                enqueue(result, settings=self.settings)
                _mark_enqueued(result.queued_ids, settings=self.settings)
            except Exception:  # the next enqueue_left_over round hands them over again
                log.exception("screening %d received images failed; retrying later",
                              len(result.queued_ids))
            finally:
                with self._lock:
                    self._taken.difference_update(result.queued_ids)
