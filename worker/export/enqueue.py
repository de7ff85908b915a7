"""After a task screened some images: queue the export of every study they completed, to every
configured destination."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pneumoscreen.db.studies import complete_study_uids, study_uids_of
from pneumoscreen.worker.export.destinations import (
    Destination,
    DestinationError,
    parse_destination,
)
from pneumoscreen.worker.queue.publish import publish_export
from pneumoscreen.worker.settings import Settings

log = logging.getLogger(__name__)


def configured_destinations(settings: Settings) -> list[Destination]:
    """The usable ``SCREEN_EXPORT_TO`` entries; a bad one is logged (one line) and skipped."""
    out: dict[str, Destination] = {}
    for text in settings.export_to:
        try:
            dest = parse_destination(text)
        except DestinationError as exc:
            log.error("%s", exc)
            continue
        out.setdefault(dest.label, dest)
    return list(out.values())


def configured_destination(label: str, settings: Settings) -> Destination | None:
    """The configured destination with this label: a task sends nowhere else, whatever its
    message says."""
    return next((d for d in configured_destinations(settings) if d.label == label), None)


def enqueue_exports(image_ids: Sequence[int], settings: Settings) -> int:
    """Queue one export task per completed study and destination; the number queued."""
    destinations = configured_destinations(settings)
    if not destinations or not image_ids:
        return 0
    with settings.session() as session:
        uids = complete_study_uids(study_uids_of(image_ids, session=session), session=session)
    queued = 0
    for uid in uids:
        for dest in destinations:
            try:  # one study's trouble (eager mode runs it here) must not stop the others
                publish_export(uid, dest.label)
                queued += 1
            except Exception as exc:
                log.error("export of study %s to %s not queued: %s", uid, dest.label,
                          type(exc).__name__)
    return queued
