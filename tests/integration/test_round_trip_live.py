"""The round trip: the chest studies are in the PACS (Orthanc); pneumoscreen screens them with a
real worker and stores an SR back into each study, where Orthanc's REST API finds it and the
probability, threshold and flag read back match what pneumoscreen recorded."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pydicom
import pytest
from live import REDIS_URL, WorkerProcess, redis_or_skip, run_screen, screen_env, wait_until
from orthanc import Orthanc

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.shared, pytest.mark.slow]


def _read_sr(ds: pydicom.Dataset) -> list[dict]:
    import highdicom as hd

    groups = hd.sr.Comprehensive3DSR.from_dataset(ds).content.get_image_measurement_groups()
    out = []
    for g in groups:
        values = {m.name.meaning: m.value for m in g.get_measurements()}
        values.update({q.name.meaning: q.value.meaning for q in g.get_qualitative_evaluations()})
        values["sources"] = [s.referenced_sop_instance_uid for s in g.source_images]
        out.append(values)
    return out


def test_round_trip_through_orthanc(tmp_path: Path, pg_url: str, orthanc: Orthanc,
                                    shared_dir: Path) -> None:
    redis_or_skip(REDIS_URL)
    chest = sorted((shared_dir / "dicom" / "chest").glob("*.dcm"))
    for path in chest:
        orthanc.upload(path)
    n_studies, n_before = len(orthanc.studies()), len(orthanc.instances())
    env = screen_env(data_dir=tmp_path / "data", database_url=pg_url, broker_url=REDIS_URL,
                     SCREEN_EXPORT_TO=f"dicom://{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}")
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        worker.wait_ready()
        submitted = run_screen(env, "submit", str(shared_dir / "dicom" / "chest"))
        assert submitted.returncode == 0, submitted.stderr

        def all_sent() -> bool:
            rows = json.loads(run_screen(env, "exports", "--format", "json").stdout)
            return len(rows) == n_studies and all(r["status"] == "sent" for r in rows)

        wait_until(all_sent, 400, "every study's SR sent to Orthanc", on_timeout=worker.log)
    finally:
        worker.stop()
    studies = json.loads(run_screen(env, "studies", "--format", "json").stdout)
    by_sop = {}
    for path in chest:
        header = pydicom.dcmread(path, stop_before_pixels=True)
        by_sop[header.SOPInstanceUID] = (header.StudyInstanceUID,
                                         next(s for s in studies if s["path"] == str(path)))
    assert len(orthanc.studies()) == n_studies  # every SR went into its source's study
    reports = {}
    for study_uid in {uid for uid, _ in by_sop.values()}:
        found = [pydicom.dcmread(io.BytesIO(orthanc.instance_file(oid)))
                 for oid in orthanc.find_by_study_uid(study_uid)]
        srs = [ds for ds in found if ds.Modality == "SR"]
        assert len(srs) == 1, study_uid
        reports[study_uid] = srs[0]
    for sop_uid, (study_uid, row) in by_sop.items():
        (group,) = _read_sr(reports[study_uid])
        assert group["sources"] == [sop_uid]
        assert group["Probability of pneumonia"] == pytest.approx(row["probability"], abs=1e-4)
        assert group["Flag threshold"] == pytest.approx(0.6591, abs=1e-4)
        assert group["Triage flag"] == ("Flagged: read first" if row["flagged"]
                                        else "Not flagged: reading priority unchanged")
    heatmaps = sum(1 for r in studies if r["flagged"])  # SCREEN_HEATMAPS=flagged
    assert len(orthanc.instances()) == n_before + n_studies + heatmaps
