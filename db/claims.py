"""The claim: which task may screen which image, as one conditional UPDATE with a lease.

An image is taken only if it is queued, or processing under this same claim token (the task id: a
retry or a redelivery of this task), or processing under a lease older than
``visibility_timeout`` (its worker died). Two live workers therefore never screen the same
image; an image another live claim holds comes back as ``busy``.

Each claim also names its process (``claimed_by``: host, pid and the process's start time, so a
reused pid is not mistaken for it). The lease is for processes on other machines; on this one,
a claim whose process is gone is freed at once (:func:`free_orphans`, before every resume and
sweep), and a process interrupted by Ctrl-C puts back what it held (:func:`release_own`).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import and_, exists, or_, select, update
from sqlalchemy.orm import Session

from pneumoscreen.db.models import Image, ImageStatus, Prediction, utcnow
from pneumoscreen.db.session import session_scope

log = logging.getLogger(__name__)


_claimer: tuple[int, str] | None = None


def _start_ticks(pid: int) -> str | None:
    """A process's start time (clock ticks since boot, from /proc), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def this_claimer() -> str:
    """``host:pid:start`` of this process (recomputed after a fork)."""
    global _claimer
    pid = os.getpid()
    if _claimer is None or _claimer[0] != pid:
        _claimer = (pid, f"{socket.gethostname()[:80]}:{pid}:{_start_ticks(pid) or '?'}")
    return _claimer[1]


def claimer_gone(claimed_by: str, *, host: str | None = None) -> bool:
    """True when ``claimed_by`` names a process on this host that no longer runs (its pid is
    free, or now belongs to a process started at another time). Other hosts: never known."""
    parts = claimed_by.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != (host or socket.gethostname()[:80]):
        return False
    try:
        pid = int(parts[1])
    except ValueError:
        return False
    started = _start_ticks(pid)
    return started is None or (parts[2] != "?" and started != parts[2])


def free_orphans(*, session: Session) -> int:
    """Queue again the images held by processes of this host that are gone (killed, crashed,
    interrupted before they could release); how many."""
    host = socket.gethostname()[:80]
    holders = session.scalars(select(Image.claimed_by).distinct().where(
        Image.status == ImageStatus.processing, Image.claimed_by.like(f"{host}:%"))).all()
    gone = [h for h in holders if h and claimer_gone(h, host=host)]
    if not gone:
        return 0
    result = session.execute(
        update(Image).where(Image.status == ImageStatus.processing, Image.claimed_by.in_(gone))
        .values(status=ImageStatus.queued, claim_token=None, claimed_at=None, claimed_by=None,
                updated_at=utcnow())
        .execution_options(synchronize_session=False))
    return int(result.rowcount or 0)


def release_own(url: str) -> tuple[int, int]:
    """Queue again every image this process holds (it was interrupted): (how many it held, how
    many images now wait queued in all)."""
    from sqlalchemy import func

    with session_scope(url) as session:
        result = session.execute(
            update(Image).where(Image.status == ImageStatus.processing,
                                Image.claimed_by == this_claimer())
            .values(status=ImageStatus.queued, claim_token=None, claimed_at=None,
                    claimed_by=None, updated_at=utcnow())
            .execution_options(synchronize_session=False))
        waiting = session.scalar(select(func.count()).select_from(Image)
                                 .where(Image.status == ImageStatus.queued))
        return int(result.rowcount or 0), int(waiting or 0)


@dataclass
class Claim:
    todo: list[tuple[int, str]]
    already_done: int
    busy: list[int]


def claim(image_ids: Sequence[int], mv_id: int, *, session: Session, token: str,
          lease_s: float, rescreen: bool = False, now: dt.datetime | None = None) -> Claim:
    """Atomically mark the images still to be screened by ``mv_id`` as processing under ``token``.

    One conditional UPDATE: on PostgreSQL a concurrent claim waits for the row lock and then
    re-checks the condition against the committed row, so only one of two claims wins; SQLite
    serialises writers. ``lease_s``: a processing image untouched that long is taken again.
    """
    ids = list(image_ids)
    now = now or utcnow()
    stale = now - dt.timedelta(seconds=lease_s)
    takeable = or_(
        Image.status == ImageStatus.queued,
        and_(Image.status == ImageStatus.processing,
             or_(Image.claim_token == token, Image.claimed_at.is_(None),
                 Image.claimed_at < stale)),
    )
    predicted = exists().where(Prediction.image_id == Image.id,
                               Prediction.model_version_id == mv_id)
    # Predicted but not marked done (the worker died between the two): just finish it.
    session.execute(update(Image).where(Image.id.in_(ids), takeable, predicted)
                    .values(status=ImageStatus.done, reason=None, finished_at=now,
                            updated_at=now, claim_token=None, claimed_at=None,
                            claimed_by=None)
                    .execution_options(synchronize_session=False))
    # A re-screen reads finished images again (done, or rejected/failed when asked for).
    wanted = or_(takeable, Image.status.in_(ImageStatus.final())) if rescreen else takeable
    rows = session.execute(
        update(Image).where(Image.id.in_(ids), wanted, ~predicted)
        .values(status=ImageStatus.processing, claim_token=token, claimed_at=now,
                claimed_by=this_claimer(), attempts=Image.attempts + 1, updated_at=now)
        .returning(Image.id, Image.source_path)
        .execution_options(synchronize_session=False)).all()
    todo = sorted((int(i), str(p)) for i, p in rows)
    busy = sorted(session.scalars(select(Image.id).where(
        Image.id.in_(ids), Image.status == ImageStatus.processing,
        or_(Image.claim_token.is_(None), Image.claim_token != token))).all())
    return Claim(todo=todo, already_done=len(ids) - len(todo) - len(busy), busy=busy)


def release(token: str, *, url: str) -> None:
    """Put back the images still held under ``token`` (the task failed): queued again."""
    try:
        with session_scope(url) as session:
            session.execute(update(Image)
                            .where(Image.status == ImageStatus.processing,
                                   Image.claim_token == token)
                            .values(status=ImageStatus.queued, claim_token=None,
                                    claimed_at=None, claimed_by=None, updated_at=utcnow())
                            .execution_options(synchronize_session=False))
    except Exception:  # the database itself may be what failed; the lease covers that case
        log.warning("could not release claim %s; its studies wait for the lease", token,
                    exc_info=True)


