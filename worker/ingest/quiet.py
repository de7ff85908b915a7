"""Keep pydicom's own messages from carrying patient data into logs and terminals.

pydicom logs its warnings (``Invalid value for VR IS: 'MRN-998877'``) on the ``pydicom`` logger
and also raises them as Python warnings, both quoting element values verbatim and naming file
paths. Ingestion records the warnings it expects (and redacts them, ``metadata.redact``); this
module makes sure nothing else gets out:

- the ``pydicom`` logger does not propagate: its records of level INFO and above are passed on,
  scrubbed of quoted values and paths, to ``pneumoscreen.worker.ingest.pydicom`` (debug level);
  its DEBUG records (hex dumps of element bytes) are dropped;
- warnings raised inside pydicom are ignored outside ingestion's own recording blocks (which
  turn them back on for themselves), so none reaches stderr, nor a worker log that captures it.

Applied once, when ``pneumoscreen.worker.ingest`` is imported: every process that can read a
DICOM file has imported it first.
"""

from __future__ import annotations

import logging
import warnings

from pneumoscreen.worker.ingest.metadata import scrub

FORWARD_TO = "pneumoscreen.worker.ingest.pydicom"


class ScrubbedForward(logging.Handler):
    """Re-log a pydicom record, scrubbed, on our own logger at debug level."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.target = logging.getLogger(FORWARD_TO)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = scrub(record.getMessage())
        except Exception:  # a malformed record: say nothing rather than its arguments
            message = "(unprintable pydicom message)"
        self.target.debug("pydicom %s: %s", record.levelname.lower(), message)


def contain_pydicom_output() -> None:
    """Idempotently detach pydicom's logger and silence its stray warnings (see module doc)."""
    logger = logging.getLogger("pydicom")
    logger.propagate = False
    if not any(isinstance(h, ScrubbedForward) for h in logger.handlers):
        logger.addHandler(ScrubbedForward())
    warnings.filterwarnings("ignore", module=r"pydicom(\..*)?$")
