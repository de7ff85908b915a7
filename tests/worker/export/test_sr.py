"""The SR (TID 1500) and heatmap SC of a screened study, written to a folder and read back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from results import MODEL_SHA, read_sr, screened_study

from pneumoscreen.db import Export, ExportStatus, session_scope
from pneumoscreen.worker.export.destinations import parse_destination
from pneumoscreen.worker.export.heatmap_sc import LABEL
from pneumoscreen.worker.export.run import export_study
from pneumoscreen.worker.settings import Settings


def _settings(url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=url, data_dir=tmp_path / "data")


def _written(folder: Path) -> dict[str, pydicom.Dataset]:
    return {ds.Modality: ds for ds in (pydicom.dcmread(p) for p in folder.rglob("*.dcm"))}


def test_sr_content_read_back(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    made = screened_study(tmp_path / "in", url, views=("PA", "LL"), probability=0.91,
                          p_viral=0.7)
    out = tmp_path / "out"
    outcome = export_study(made.study_uid, parse_destination(f"file://{out}"),
                           _settings(url, tmp_path))
    assert outcome.status == "sent", outcome.error
    source = pydicom.dcmread(made.paths[0])
    sr = _written(out)["SR"]
    assert sr.SOPInstanceUID == outcome.sr_sop_instance_uid
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert sr.StudyInstanceUID == made.study_uid
    assert sr.SeriesInstanceUID != source.SeriesInstanceUID  # a new series
    # Patient and study modules come from the file (the database holds a keyed accession).
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                    "AccessionNumber", "StudyDate", "StudyTime", "StudyID",
                    "ReferringPhysicianName"):
        assert sr.get(keyword) == source.get(keyword), keyword
    assert sr.AccessionNumber == "ACC123"
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    (group,) = read_sr(sr)["groups"]  # the lateral image was rejected: not in the report
    assert group["Probability of pneumonia"] == pytest.approx(0.91)
    assert group["Flag threshold"] == pytest.approx(0.6591)
    assert group["Triage flag"] == "Flagged: read first"
    assert group["Suggested subtype (not a diagnosis)"] == "Viral pneumonia"
    assert group["Probability viral rather than bacterial"] == pytest.approx(0.7)
    assert group["Within the validated scope"] == "Yes"
    assert group["finding"] == ("233604007", "SCT")
    assert group["sources"] == [made.sop_uids[0]]
    assert group["algorithm"] == {"Algorithm Name": "pneumoscreen-test",
                                  "Algorithm Version": "9.9.9"}
    assert f"model sha256 {MODEL_SHA}" in group["parameters"]
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert [i.ReferencedSOPInstanceUID for i in evidence.ReferencedSOPSequence] == [
        made.sop_uids[0]]


def test_outside_scope_is_the_scope_verdict_not_a_finding(tmp_path: Path) -> None:
    """Out of scope means no verdict: even with a probability above the threshold and a stored
    heatmap, the SR states the scope verdict and reason; no finding, probability, flag, subtype
    or heatmap reaches the PACS."""
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    made = screened_study(tmp_path / "in", url, probability=0.99, p_viral=0.8, in_scope=False,
                          scope_reason="atypical image for this model (score 4.43, threshold "
                                       "1.76); age unknown: judged by the image alone")
    out = tmp_path / "out"
    outcome = export_study(made.study_uid, parse_destination(f"file://{out}"),
                           _settings(url, tmp_path))
    assert outcome.status == "sent" and outcome.sc_sop_instance_uids == []
    sr = _written(out)["SR"]
    (group,) = read_sr(sr)["groups"]
    assert group["Within the validated scope"] == "No"
    assert group["Triage flag"] == "No verdict: outside the validated scope, needs a human read"
    assert group["texts"] == ["outside the validated scope: atypical image for this model (score "
                              "4.43, threshold 1.76); age unknown: judged by the image alone"]
    for absent in ("Probability of pneumonia", "Flag threshold", "Suggested subtype (not a "
                   "diagnosis)", "Probability viral rather than bacterial"):
        assert absent not in group
    assert group.get("finding") is None and group["sources"] == [made.sop_uids[0]]
    assert "Flagged: read first" not in str(sr) and "Pneumonia" not in str(sr)


def test_not_flagged_never_reads_as_no_pneumonia(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    made = screened_study(tmp_path / "in", url, probability=0.2, p_viral=0.1, heatmap=False)
    out = tmp_path / "out"
    export_study(made.study_uid, parse_destination(f"file://{out}"), _settings(url, tmp_path))
    (group,) = read_sr(_written(out)["SR"])["groups"]
    assert group["Triage flag"] == "Not flagged: reading priority unchanged"
    assert "Suggested subtype (not a diagnosis)" not in group  # a subtype of what?


def test_heatmap_secondary_capture(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    made = screened_study(tmp_path / "in", url)
    out = tmp_path / "out"
    outcome = export_study(made.study_uid, parse_destination(f"file://{out}"),
                           _settings(url, tmp_path))
    sc = _written(out)["OT"]
    source = pydicom.dcmread(made.paths[0])
    assert [sc.SOPInstanceUID] == outcome.sc_sop_instance_uids
    assert sc.StudyInstanceUID == made.study_uid and sc.PatientID == source.PatientID
    assert LABEL in sc.SeriesDescription and sc.ImageComments.startswith(LABEL)
    assert sc.BurnedInAnnotation == "YES"
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == made.sop_uids[0]
    pixels = sc.pixel_array
    assert pixels.shape == (512, 512, 3)
    band = pixels[-18:].astype(int)  # the burned-in label: white text on a black band
    assert (band.sum(axis=2) == 0).mean() > 0.5 and (band.min(axis=2) > 200).any()
    assert np.ptp(pixels[:400]) > 50  # and an image with a coloured map above it


def test_a_resend_is_the_same_instances(db_url: str, tmp_path: Path) -> None:
    made = screened_study(tmp_path / "in", db_url)
    out = tmp_path / "out"
    dest = parse_destination(f"file://{out}")
    first = export_study(made.study_uid, dest, _settings(db_url, tmp_path))
    files = sorted(out.rglob("*.dcm"))
    second = export_study(made.study_uid, dest, _settings(db_url, tmp_path))
    assert first.sr_sop_instance_uid == second.sr_sop_instance_uid
    assert first.sc_sop_instance_uids == second.sc_sop_instance_uids
    assert sorted(out.rglob("*.dcm")) == files and len(files) == 2
    assert not list(out.rglob("*.part"))
    with session_scope(db_url) as session:
        (row,) = session.query(Export).all()
        assert (row.status, row.attempts, row.destination) == (ExportStatus.sent, 2,
                                                               f"file://{out}")
        assert row.sr_sop_instance_uid == first.sr_sop_instance_uid


def test_another_model_is_another_report(tmp_path: Path) -> None:
    """Re-screened with another model version: a new SR and its own export row."""
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    a = screened_study(tmp_path / "a", url)
    dest = parse_destination(f"file://{tmp_path / 'out'}")
    uid_a = export_study(a.study_uid, dest, _settings(url, tmp_path)).sr_sop_instance_uid
    screened_study(tmp_path / "b", url, study_uid=a.study_uid, model_sha="cd" * 32)
    uid_b = export_study(a.study_uid, dest, _settings(url, tmp_path)).sr_sop_instance_uid
    assert uid_a != uid_b
    with session_scope(url) as session:
        assert session.query(Export).count() == 2


def test_a_missing_source_fails_without_naming_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    made = screened_study(tmp_path / "in", url)
    made.paths[0].unlink()
    outcome = export_study(made.study_uid, parse_destination(f"file://{tmp_path / 'out'}"),
                           _settings(url, tmp_path), retry_later=True)
    assert outcome.status == "failed"  # permanent: a retry would not bring the file back
    assert "missing" in outcome.error and str(tmp_path) not in outcome.error
    assert not (tmp_path / "out").exists()


def test_invalid_source_values_are_copied_empty(tmp_path: Path) -> None:
    """Anonymisers leave hashes in dates and over-long accessions: the SR still goes, with those
    Type 2 attributes empty, and no value is quoted in an error."""
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    made = screened_study(tmp_path / "in", url, PatientBirthDate="d14a028c2a3a2bc9476102bb",
                          PatientSex="X", AccessionNumber="a" * 56, StudyTime="noon")
    out = tmp_path / "out"
    outcome = export_study(made.study_uid, parse_destination(f"file://{out}"),
                           _settings(url, tmp_path))
    assert outcome.status == "sent", outcome.error
    for ds in _written(out).values():
        assert (ds.PatientBirthDate, ds.PatientSex, ds.AccessionNumber, ds.StudyTime) == (
            "", "", "", "")
        assert ds.PatientID == "PAT-4711-SECRET" and ds.StudyDate == "20240131"


def test_no_header_value_reaches_logs_or_warnings(tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """highdicom warns about a one-component name by quoting it: not here."""
    import logging
    import warnings

    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    made = screened_study(tmp_path / "in", url, PatientName="00436515-870c-4b36")
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outcome = export_study(made.study_uid, parse_destination(f"file://{tmp_path / 'out'}"),
                               _settings(url, tmp_path))
    assert outcome.status == "sent"
    assert "00436515" not in caplog.text
    assert not [w for w in caught if "00436515" in str(w.message)]
