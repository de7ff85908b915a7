"""Ingestion outcomes in the database's words: the one conversion from an IngestError."""

from __future__ import annotations

from pneumoscreen.db.models import StudyStatus
from pneumoscreen.worker.ingest import IngestError


def status_of(exc: IngestError) -> StudyStatus:
    """The study status an ingestion outcome leads to (``rejected`` or ``failed``)."""
    return StudyStatus(exc.status)
