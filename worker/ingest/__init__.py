"""Ingestion: recognise a file, read its header, decide whether to screen it, decode its pixels.

Every outcome is one of: a decoded grey image in [0, 1] (MONOCHROME2 sense) ready for
``pneumoscreen.model.preprocess``, a :class:`RejectedImage` (a valid file we must not screen) or a
:class:`FailedImage` (a file we could not read). Reasons are short, human and carry no patient data.

Modules, one job each: ``files`` (open regular files only, within the size limit), ``sniff``
(format by content), ``vr`` (what a value may be, stored or quoted), ``dicom_header`` (bounded
read + Image Pixel checks),
``metadata`` (tags → Image columns, keyed patient hash), ``policy`` (acceptance rules as
data), ``codestream`` (JPEG/J2K main headers), ``dicom_decode`` (pixel data → stored values),
``pixels`` (the standard's pixel steps), ``raster`` (PNG/JPEG), ``inspection`` (``screen inspect``),
``outcome`` (what it hands back), ``quiet`` (pydicom's logs and warnings kept in), ``api``
(this facade, and :class:`IngestConfig`).

It imports nothing else of the project: the caller passes an :class:`IngestConfig`.
"""

from pneumoscreen.worker.ingest.api import IngestConfig, check_file, load_grey, probe
from pneumoscreen.worker.ingest.dicom_decode import DecodeOptions
from pneumoscreen.worker.ingest.errors import FailedImage, IngestError, RejectedImage
from pneumoscreen.worker.ingest.outcome import Decoded, Probe
from pneumoscreen.worker.ingest.policy import AcceptancePolicy
from pneumoscreen.worker.ingest.quiet import contain_pydicom_output
from pneumoscreen.worker.ingest.sniff import sniff_format

contain_pydicom_output()  # pydicom quotes tag values in its logs and warnings: see ``quiet``

__all__ = [
    "AcceptancePolicy",
    "DecodeOptions",
    "Decoded",
    "FailedImage",
    "IngestConfig",
    "IngestError",
    "Probe",
    "RejectedImage",
    "check_file",
    "load_grey",
    "probe",
    "sniff_format",
]
