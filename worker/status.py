"""Ingestion outcomes in the database's words: the one conversion from an IngestError."""

from __future__ import annotations

from pneumoscreen.db.models import ImageStatus
from pneumoscreen.worker.ingest import IngestError


def status_of(exc: IngestError) -> ImageStatus:
    """The image status an ingestion outcome leads to (``rejected`` or ``failed``)."""
    return ImageStatus(exc.status)
