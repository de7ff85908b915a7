"""Spool retention (``SCREEN_SPOOL_RETENTION_DAYS``): a received file is deleted that many days
after its study is final and its result delivered. The default keeps every file: with retention,
a deleted study can no longer be exported again, re-screened or have its heatmap redrawn."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

from pneumoscreen.db.models import utcnow
from pneumoscreen.db.retention import expired_spool_paths
from pneumoscreen.worker.receive.spool import Spool, SpoolFile
from pneumoscreen.worker.settings import Settings

log = logging.getLogger(__name__)


def sweep_spool(spool: Spool, settings: Settings, *, now: dt.datetime | None = None) -> int:
    """Delete the expired spool files (only files inside the spool); the number deleted."""
    if settings.spool_retention_days is None:
        return 0
    cut_off = (now or utcnow()) - dt.timedelta(days=settings.spool_retention_days)
    root = spool.root.resolve()
    with settings.session() as session:
        paths = expired_spool_paths(session=session, delivered_before=cut_off)
    deleted = freed = 0
    for text in paths:
        path = Path(text)
        if not path.is_file() or root not in path.resolve().parents:
            continue
        freed += spool.remove(SpoolFile(path, path.stem, 0.0))
        deleted += 1
    if deleted:
        log.info("spool retention: %d files deleted (%.1f MB), their images final and "
                 "delivered over %g days ago", deleted, freed / 1e6,
                 settings.spool_retention_days)
    return deleted
