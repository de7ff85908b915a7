"""Results sent to a real Orthanc: C-STORE and STOW-RS, found back in the source's study."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from orthanc import Orthanc
from results import read_sr, screened_study

from pneumoscreen.worker.export.destinations import parse_destination
from pneumoscreen.worker.export.run import export_study
from pneumoscreen.worker.settings import Settings


def _settings(url: str, tmp_path: Path, **kw: object) -> Settings:
    return Settings(database_url=url, data_dir=tmp_path / "data", **kw)


def _in_orthanc(orthanc: Orthanc, study_uid: str) -> dict[str, pydicom.Dataset]:
    """The instances of the study, by modality, read from Orthanc's own files."""
    import io

    found = {}
    for oid in orthanc.find_by_study_uid(study_uid):
        ds = pydicom.dcmread(io.BytesIO(orthanc.instance_file(oid)))
        found[ds.Modality] = ds
    return found


@pytest.mark.parametrize("kind", ["dicom", "dicomweb"])
def test_sent_to_orthanc_and_found_in_the_same_study(kind: str, orthanc: Orthanc,
                                                     tmp_path: Path) -> None:
    if kind == "dicomweb" and not orthanc.has_dicomweb:
        pytest.skip("Orthanc's DicomWeb plugin is not installed")
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    made = screened_study(tmp_path / "in", url, probability=0.8)
    orthanc.upload(made.paths[0])  # the PACS holds the study already
    dest = parse_destination(f"dicom://{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}"
                             if kind == "dicom" else orthanc.dicomweb)
    settings = _settings(url, tmp_path, export_timeout=10)
    outcome = export_study(made.study_uid, dest, settings)
    assert outcome.status == "sent", outcome.error
    again = export_study(made.study_uid, dest, settings)
    assert again.status == "sent" and again.attempts == 2
    assert len(orthanc.studies()) == 1  # the same study, not a new one
    found = _in_orthanc(orthanc, made.study_uid)
    assert sorted(found) == ["CR", "OT", "SR"]  # source, heatmap, report: resent, not doubled
    assert len(orthanc.instances()) == 3
    sr = found["SR"]
    assert sr.SOPInstanceUID == outcome.sr_sop_instance_uid
    (group,) = read_sr(sr)["groups"]
    assert group["Probability of pneumonia"] == pytest.approx(0.8)
    assert group["Flag threshold"] == pytest.approx(0.6591)
    assert group["Triage flag"] == "Flagged: read first"
    assert group["sources"] == made.sop_uids


def test_refused_by_the_pacs_is_permanent(orthanc: Orthanc, tmp_path: Path) -> None:
    """A STOW-RS to a path that is no DICOMweb service: HTTP 404, failed, no retry."""
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    made = screened_study(tmp_path / "in", url, heatmap=False)
    outcome = export_study(made.study_uid, parse_destination(orthanc.rest + "/no-such-root"),
                           _settings(url, tmp_path), retry_later=True)
    assert outcome.status == "failed" and "HTTP 404" in outcome.error


@pytest.mark.parametrize("kind", ["dicom", "dicomweb"])
def test_pacs_down_is_transient(kind: str, orthanc: Orthanc, tmp_path: Path) -> None:
    """Orthanc stopped: the attempt stays pending (to be retried); back up: it is sent."""
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    made = screened_study(tmp_path / "in", url, heatmap=False)
    dest = parse_destination(f"dicom://{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}"
                             if kind == "dicom" else orthanc.dicomweb)
    settings = _settings(url, tmp_path, export_timeout=5)
    orthanc.stop()
    down = export_study(made.study_uid, dest, settings, retry_later=True)
    assert down.status == "pending"
    assert ("no association" if kind == "dicom" else "connection refused") in down.error
    orthanc.start()
    up = export_study(made.study_uid, dest, settings, retry_later=True)
    assert (up.status, up.attempts) == ("sent", 2)
    assert "SR" in _in_orthanc(orthanc, made.study_uid)
