"""Ingestion: recognise a file, read its header, decide whether to screen it, decode its pixels.

Every outcome is one of: a decoded grey image in [0, 1] (MONOCHROME2 sense) ready for
``pneumoscreen.model.preprocess``, a :class:`RejectedStudy` (a valid file we must not screen) or a
:class:`FailedStudy` (a file we could not read). Reasons are short, human and carry no patient data.
"""

from pneumoscreen.worker.ingest.errors import FailedStudy, IngestError, RejectedStudy
from pneumoscreen.worker.ingest.reader import Decoded, Probe, load_grey, probe, sniff_format

__all__ = [
    "Decoded",
    "FailedStudy",
    "IngestError",
    "Probe",
    "RejectedStudy",
    "load_grey",
    "probe",
    "sniff_format",
]
