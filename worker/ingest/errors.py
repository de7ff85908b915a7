"""Outcomes of ingestion that are not a screenable image."""

from __future__ import annotations


class IngestError(Exception):
    """Base: ``status`` is the study status it leads to, ``str(exc)`` the stored reason."""

    status = "failed"


class RejectedStudy(IngestError):
    """A readable file that is not a chest radiograph we may screen (modality, body part, view…)."""

    status = "rejected"


class FailedStudy(IngestError):
    """A file that could not be read or decoded."""

    status = "failed"
