"""One export by hand or from a task: the study's result objects built from the database and
its source files, and the study's outbox row for one destination delivered now (see
:mod:`pneumoscreen.worker.export.outbox`)."""

from __future__ import annotations

import logging

from pneumoscreen.worker.export.destinations import Destination
from pneumoscreen.worker.export.objects import build_objects, declare_character_set
from pneumoscreen.worker.export.outbox import ExportOutcome, deliver, plan_exports
from pneumoscreen.worker.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["ExportOutcome", "build_objects", "declare_character_set", "export_study"]


def export_study(study_uid: str, destination: Destination, settings: Settings, *,
                 retry_later: bool = True) -> ExportOutcome:
    """Plan the study's current result for ``destination`` and deliver it now (even before its
    next attempt time). A transient failure leaves the row due again after the backoff (the
    outbox retries it) unless ``retry_later`` is False, then it is failed."""
    ids = plan_exports([study_uid], [destination], settings, resend=True)
    if not ids:
        return ExportOutcome(study_uid, destination.label, "nothing",
                             error="no screened image in this study")
    outcome = deliver(ids[0], settings, destination=destination, force=True)
    if outcome.status == "pending" and not retry_later:
        from pneumoscreen.db import ExportStatus, session_scope
        from pneumoscreen.db.models import Export

        with session_scope(settings.effective_database_url) as session:
            row = session.get(Export, ids[0])
            if row is not None and row.lease_token is None:
                row.status, row.next_attempt_at = ExportStatus.failed, None
        outcome.status = "failed"
    return outcome
