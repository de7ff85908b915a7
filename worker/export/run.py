"""One export: a study's result objects built from the database and its source files, sent to
one destination, and the attempt recorded in ``exports``."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

from pydicom import Dataset

from pneumoscreen.db import ExportStatus, session_scope
from pneumoscreen.db.exports import finish_attempt, start_attempt
from pneumoscreen.db.studies import screened_images
from pneumoscreen.worker.export.destinations import Destination
from pneumoscreen.worker.export.heatmap_sc import build_heatmap_sc, overlay_pixels
from pneumoscreen.worker.export.result import StudyResult
from pneumoscreen.worker.export.send import ExportError, PermanentExportError, send
from pneumoscreen.worker.export.sources import SourceError, read_source
from pneumoscreen.worker.export.sr import build_sr
from pneumoscreen.worker.ingest.api import default_max_file_bytes
from pneumoscreen.worker.logs import quiet_libraries
from pneumoscreen.worker.settings import Settings

log = logging.getLogger(__name__)
# An export may run in any process (a worker, `screen export`): highdicom's warnings quote header
# values, so the libraries are quietened wherever this module is loaded.
quiet_libraries()


@dataclass
class ExportOutcome:
    study_uid: str
    destination: str
    status: str  # sent | pending (a transient failure, retried later) | failed | nothing
    attempts: int = 0
    error: str | None = None
    sr_sop_instance_uid: str | None = None
    sc_sop_instance_uids: list[str] = field(default_factory=list)


def build_objects(result: StudyResult, settings: Settings) -> list[Dataset]:
    """The SR, then one Secondary Capture per stored heatmap (a map whose image cannot be
    drawn again is left out, the SR is still sent)."""
    limit = settings.max_file_bytes or default_max_file_bytes(settings.max_pixels)
    sources = {i.image_id: read_source(i.path, study_uid=result.study_uid,
                                       sop_uid=i.sop_instance_uid, max_file_bytes=limit)
               for i in result.images}
    objects: list[Dataset] = [build_sr(result, sources)]
    size = result.model.input_size
    mapped = [i for i in result.images if i.heatmap is not None]
    if size and mapped:
        config = settings.ingest_config(input_size=int(size))
        for n, image in enumerate(mapped, 1):
            try:
                pixels = overlay_pixels(image, int(size), config)
            except Exception as exc:  # the SR matters more than the picture
                log.warning("study %s: heatmap of image %s not exported (%s)",
                            result.study_uid, image.image_id, type(exc).__name__)
                continue
            objects.append(build_heatmap_sc(result, image, sources[image.image_id], pixels, n))
    return objects


def export_study(study_uid: str, destination: Destination, settings: Settings, *,
                 retry_later: bool = False) -> ExportOutcome:
    """Build and send one study's result to one destination and record the attempt.

    A transient failure leaves the row ``pending`` when ``retry_later`` (the caller retries),
    else ``failed``; a permanent one is ``failed``. Never raises an :class:`ExportError`.
    """
    url = settings.effective_database_url
    with session_scope(url) as session:
        rows = screened_images(study_uid, session=session)
        if not rows:
            return ExportOutcome(study_uid, destination.label, "nothing",
                                 error="no screened image in this study")
        result = StudyResult.from_rows(study_uid, rows)
        row = start_attempt(study_uid, destination.label, result.model.version_id,
                            session=session)
        session.flush()
        export_id, attempts = row.id, row.attempts
    sr_uid: str | None = None
    sc_uids: list[str] = []
    try:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # they quote header values
                objects = build_objects(result, settings)
        except SourceError as exc:
            raise PermanentExportError(str(exc)) from None
        except Exception as exc:  # a header highdicom refuses: its message may quote a value
            raise PermanentExportError(f"cannot build the DICOM result of study {study_uid} "
                                       f"({type(exc).__name__})") from None
        sr_uid = str(objects[0].SOPInstanceUID)
        sc_uids = [str(o.SOPInstanceUID) for o in objects[1:]]
        try:
            send(objects, destination, ae_title=settings.export_ae_title,
                 timeout=settings.export_timeout)
        except ExportError:
            raise
        except Exception as exc:  # e.g. no presentation context accepted for the SC: final
            raise PermanentExportError(f"{destination.label}: {type(exc).__name__} while "
                                       "sending") from None
    except ExportError as exc:
        status = (ExportStatus.pending if exc.transient and retry_later
                  else ExportStatus.failed)
        log.warning("export of study %s to %s, attempt %d: %s", study_uid, destination.label,
                    attempts, exc)
        with session_scope(url) as session:
            finish_attempt(export_id, status, session=session, error=str(exc))
        return ExportOutcome(study_uid, destination.label, status.value, attempts, str(exc))
    with session_scope(url) as session:
        finish_attempt(export_id, ExportStatus.sent, session=session, sr_uid=sr_uid,
                       sc_uids=sc_uids)
    log.info("exported study %s to %s (SR %s, %d heatmap SC)", study_uid, destination.label,
             sr_uid, len(sc_uids))
    return ExportOutcome(study_uid, destination.label, "sent", attempts, None, sr_uid, sc_uids)
