"""Outcomes of ingestion that are not a screenable image."""

from __future__ import annotations

import re
from typing import Any

# What no database column may receive (PostgreSQL refuses NUL; UTF-8 refuses lone surrogates)
# and no terminal should: the C0 and C1 controls but tab, and lone surrogates.
_UNSAFE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\ud800-\udfff]")


def safe_text(value: str) -> str:
    """``value`` with every character a database or a terminal would refuse replaced by U+FFFD:
    a reason or a stored value can then always be written, whatever a file held."""
    return _UNSAFE.sub("\ufffd", value)


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
        reason = safe_text(reason)
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
