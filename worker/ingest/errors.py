"""Outcomes of ingestion that are not a screenable image."""

from __future__ import annotations

from typing import Any


class IngestError(Exception):
    """Base: ``status`` is the image status it leads to, ``str(exc)`` the stored reason.

    ``metadata`` and ``sop_instance_uid`` carry what the header told us before the decision (when
    it was readable), so a rejected or failed image is still listed with its UIDs and modality.
    """

    status = "failed"

    def __init__(
        self,
        reason: str,
        *,
        metadata: dict[str, Any] | None = None,
        sop_instance_uid: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.metadata: dict[str, Any] = metadata or {}
        self.sop_instance_uid = sop_instance_uid


class RejectedImage(IngestError):
    """A readable file that is not a chest radiograph we may screen (modality, body part, view…)."""

    status = "rejected"


class FailedImage(IngestError):
    """A file that could not be read or decoded."""

    status = "failed"


def must_propagate(exc: BaseException) -> bool:
    """Interpreter signals that no ingestion error handler may swallow.

    Everything else is caught, including BaseException subclasses that are not signals: the Rust
    codecs (pylibjpeg-rle) raise ``pyo3_runtime.PanicException`` on some corrupt streams.
    """
    return isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit))
