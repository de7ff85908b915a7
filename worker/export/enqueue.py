"""After a task screened some images: queue the export of every study they completed, to every
configured destination."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pneumoscreen.db.studies import complete_study_uids, study_uids_of
from pneumoscreen.worker.export.destinations import configured_destination, configured_destinations
from pneumoscreen.worker.export.outbox import plan_exports
from pneumoscreen.worker.queue.publish import publish_export
from pneumoscreen.worker.settings import Settings

log = logging.getLogger(__name__)
__all__ = ["configured_destination", "configured_destinations", "enqueue_exports"]


def enqueue_exports(image_ids: Sequence[int], settings: Settings) -> int:
    """Put the result of every study these images completed into the outbox, for every
    configured destination, and have each row delivered now (a task per study and destination;
    in eager mode, here): the outbox retries what fails. The number of rows made due."""
    destinations = configured_destinations(settings)
    if not destinations or not image_ids:
        return 0
    with settings.session() as session:
        uids = complete_study_uids(study_uids_of(image_ids, session=session), session=session)
    plan_exports(uids, destinations, settings)  # in the outbox before any message is sent
    queued = 0
    for uid in uids:
        for dest in destinations:
            try:  # one study's trouble (eager mode runs it here) must not stop the others
                publish_export(uid, dest.label)
                queued += 1
            except Exception as exc:  # the outbox delivers it on its next round
                log.error("export of study %s to %s not queued: %s", uid, dest.label,
                          type(exc).__name__)
    return queued
