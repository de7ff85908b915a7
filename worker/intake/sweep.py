"""The recovery sweep: images left queued or processing past their lease with no live task are
enqueued again, with no operator command (beat every ``SCREEN_SWEEP_SECONDS``, and once when a
worker starts).

"No live task" is read from the broker itself: on Redis, every task message waiting in a queue
list or delivered but not yet acknowledged (kombu's ``unacked`` hash) names its image ids. A Redis
restart that lost its data (no AOF) loses both, so exactly the stranded images are sent again.
On a broker that cannot be read this way, an image counts as stranded once it has waited a whole
visibility timeout. Sending an image twice is harmless anyway: the claim lets one task screen it.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pneumoscreen.db.images import changed_since, left_over
from pneumoscreen.db.models import utcnow
from pneumoscreen.worker.intake.enqueue import Enqueued, enqueue
from pneumoscreen.worker.queue.publish import SCREEN_TASK
from pneumoscreen.worker.settings import Settings

log = logging.getLogger(__name__)

# Kombu's Redis transport keeps delivered, unacknowledged messages in this hash.
UNACKED_KEY = "unacked"


@dataclass
class SweepResult:
    n_requeued: int = 0
    n_tasks: int = 0
    n_live: int = 0  # images a live task already carries


class UnreadableMessage(ValueError):
    """A message on the queue whose image ids cannot be read (signed, or malformed)."""


def _ids_in(raw: bytes | str) -> Iterable[int]:
    """The image ids of one kombu message on Redis (a screen task's first argument); [] for
    another task's message. UnreadableMessage when it cannot be told: a signed body, say."""
    try:
        envelope = json.loads(raw)
        if isinstance(envelope, list):  # the unacked hash stores [message, exchange, routing key]
            envelope = envelope[0]
        if (envelope.get("headers") or {}).get("task") != SCREEN_TASK:
            return []
        body = envelope["body"]
        if (envelope.get("properties") or {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return [int(i) for i in args[0]]
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        # Not counting it would call its images stranded and send them again at every sweep.
        raise UnreadableMessage from None


def live_image_ids(settings: Settings, queues: Iterable[str] = ("celery",)) -> set[int] | None:
    """Image ids that some task waiting or running on the broker carries; None when the broker
    is not Redis (or cannot be read)."""
    url = settings.broker_url or ""
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return None
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=4, socket_timeout=10)
        ids: set[int] = set()
        for queue in queues:
            for key in client.scan_iter(match=f"{queue}*", count=100):
                if client.type(key) == b"list":
                    for raw in client.lrange(key, 0, -1):
                        ids.update(_ids_in(raw))
        for raw in client.hvals(UNACKED_KEY):
            ids.update(_ids_in(raw))
        client.close()
        return ids
    except redis.RedisError as exc:
        log.warning("sweep: cannot read the broker's queues (%s)", type(exc).__name__)
        return None
    except UnreadableMessage:
        log.info("sweep: a queued message cannot be read (signed?); using the lease alone")
        return None


def sweep(*, settings: Settings, now: dt.datetime | None = None,
          grace_s: float | None = None) -> SweepResult:
    """Enqueue again the left-over images (see ``resume.left_over``) no live task carries.

    ``grace_s``: an image changed more recently than this is left alone (its submit may be
    publishing it right now); default: the sweep interval.
    """
    now = now or utcnow()
    grace = dt.timedelta(seconds=settings.sweep_seconds if grace_s is None else grace_s)
    live = live_image_ids(settings)
    with settings.session() as session:
        groups, _ = left_over(session=session, lease_s=settings.visibility_timeout, now=now)
        ids = [i for group in groups.values() for i in group]
        # Without a view of the broker, only what waited a whole visibility timeout.
        quiet_for = grace if live is not None else max(
            grace, dt.timedelta(seconds=settings.visibility_timeout))
        recent = changed_since(ids, now - quiet_for, session=session)
    out = SweepResult()
    for (batch_id, rescreen), group in groups.items():
        todo = [i for i in group if i not in recent and (live is None or i not in live)]
        out.n_live += sum(1 for i in group if live is not None and i in live)
        if not todo:
            continue
        result = Enqueued(batch_id=batch_id, queued_ids=todo)
        enqueue(result, settings=settings, rescreen=rescreen)
        out.n_requeued += len(todo)
        out.n_tasks += result.n_tasks
    if out.n_requeued:
        log.info("sweep: re-enqueued %d %s with no live task in %d %s", out.n_requeued,
                 "study" if out.n_requeued == 1 else "studies", out.n_tasks,
                 "task" if out.n_tasks == 1 else "tasks")
    return out


def sweep_safely(settings: Settings, **kwargs: Any) -> SweepResult | None:
    """``sweep`` for signal handlers: a failure is logged, never raised into the worker."""
    try:
        return sweep(settings=settings, **kwargs)
    except Exception:
        log.warning("sweep failed; the next one will try again", exc_info=True)
        return None
