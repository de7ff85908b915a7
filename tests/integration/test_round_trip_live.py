"""The round trip: Orthanc (the modality/PACS) pushes the chest studies to `screen listen`; each
study, once stable, is screened by a real worker; an SR is stored back into each study in
Orthanc, where Orthanc's REST API finds it and the probability, threshold and flag read back
match what pneumoscreen recorded. The adults among them (Patient's Age written '62', '28', '32'
as real archives write it, or from the birth and study dates) are outside the intended use:
their SR states the scope verdict and reason, never a probability or a flag, and they are not
in `screen flagged`'s main list but in its "needs a human read" list."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pydicom
import pytest
import sqlalchemy as sa
from listener import ListenerProcess
from live import (
    REDIS_URL,
    TEST_PATIENT_KEY,
    WorkerProcess,
    free_port,
    redis_or_skip,
    run_screen,
    screen_env,
    wait_until,
)
from orthanc import Orthanc

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.shared, pytest.mark.slow]

# CR, DX (for presentation and processing) and, for the RSNA/SIIM chest films stored as
# Secondary Capture, SC: what this site's listener accepts.
SOP_CLASSES = ["1.2.840.10008.5.1.4.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1",
               "1.2.840.10008.5.1.4.1.1.1.1.1", "1.2.840.10008.5.1.4.1.1.7"]


def _read_sr(ds: pydicom.Dataset) -> list[dict]:
    import highdicom as hd

    groups = hd.sr.Comprehensive3DSR.from_dataset(ds).content.get_image_measurement_groups()
    out = []
    for g in groups:
        values = {m.name.meaning: m.value for m in g.get_measurements()}
        values.update({q.name.meaning: q.value.meaning for q in g.get_qualitative_evaluations()})
        values["sources"] = [s.referenced_sop_instance_uid for s in g.source_images]
        values["texts"] = [item.TextValue for item in g[0].ContentSequence
                           if item.ValueType == "TEXT"
                           and item.ConceptNameCodeSequence[0].CodeMeaning
                           == "Qualitative Evaluations"]
        out.append(values)
    return out


def _screened(db_url: str) -> dict[str, tuple[float, float, bool, bool, str | None]]:
    """SOP Instance UID → (probability, threshold, flagged, in scope, scope reason), as
    pneumoscreen recorded them."""
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT s.sop_instance_uid, p.probability, p.threshold, p.flagged, p.in_scope, "
                "p.scope_reason FROM studies s JOIN predictions p ON p.study_id = s.id")).all()
    finally:
        engine.dispose()
    return {r[0]: (r[1], r[2], bool(r[3]), bool(r[4]), r[5]) for r in rows}


def test_round_trip_through_orthanc(tmp_path: Path, pg_url: str, orthanc: Orthanc,
                                    shared_dir: Path) -> None:
    redis_or_skip(REDIS_URL)
    chest = sorted((shared_dir / "dicom" / "chest").glob("*.dcm"))
    port = free_port()
    env = screen_env(data_dir=tmp_path / "data", database_url=pg_url, broker_url=REDIS_URL,
                     SCREEN_CALLING_AE_TITLES=json.dumps([orthanc.aet]),
                     SCREEN_LISTEN_SOP_CLASSES=json.dumps(SOP_CLASSES),
                     SCREEN_STUDY_STABLE_SECONDS="2", SCREEN_LISTEN_TIMEOUT="20",
                     SCREEN_PATIENT_KEY=TEST_PATIENT_KEY,
                     SCREEN_EXPORT_TO=f"dicom://{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}")
    for path in chest:
        orthanc.upload(path)
    n_studies, n_before = len(orthanc.studies()), len(orthanc.instances())
    orthanc.add_modality("pneumoscreen", "PNEUMOSCREEN", "127.0.0.1", port)
    listener = ListenerProcess(env, tmp_path / "listen.log", port)
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        listener.wait_ready()
        worker.wait_ready()
        started = time.monotonic()
        pushed = orthanc.send_to_modality("pneumoscreen", orthanc.studies())
        assert pushed["InstancesCount"] == len(chest) and pushed["FailedInstancesCount"] == 0

        def all_sent() -> bool:
            rows = json.loads(run_screen(env, "exports", "--format", "json").stdout)
            return len(rows) == n_studies and all(r["status"] == "sent" for r in rows)

        wait_until(all_sent, 400, "every study's SR sent back to Orthanc",
                   on_timeout=lambda: listener.log()[-3000:] + worker.log()[-3000:])
        elapsed = time.monotonic() - started
    finally:
        listener.stop()
        worker.stop()
    screened = _screened(pg_url)
    assert len(screened) == len(chest)
    outside = {uid for uid, row in screened.items() if not row[3]}
    assert outside and all(not screened[uid][2] for uid in outside)  # no flag outside scope
    main_list = json.loads(run_screen(env, "flagged", "--flagged-only", "--format",
                                      "json").stdout)
    human_read = json.loads(run_screen(env, "flagged", "--outside-scope", "--format",
                                       "json").stdout)
    assert all(r["in_scope"] is not False for r in main_list)
    assert len(main_list) == sum(row[2] for row in screened.values())
    assert sum(r["in_scope"] is False for r in human_read) == len(outside)
    assert len(orthanc.studies()) == n_studies  # every SR went into its source's study
    read_back = []
    for path in chest:
        header = pydicom.dcmread(path, stop_before_pixels=True)
        found = [pydicom.dcmread(io.BytesIO(orthanc.instance_file(oid)))
                 for oid in orthanc.find_by_study_uid(header.StudyInstanceUID)]
        (sr,) = [ds for ds in found if ds.Modality == "SR"]
        (group,) = _read_sr(sr)
        probability, threshold, flagged, in_scope, reason = screened[header.SOPInstanceUID]
        assert group["sources"] == [header.SOPInstanceUID]
        if not in_scope:  # the scope verdict and reason instead of a finding
            assert group["Within the validated scope"] == "No"
            assert group["Triage flag"] == ("No verdict: outside the validated scope, needs a "
                                            "human read")
            assert group["texts"] == [f"outside the validated scope: {reason}"]
            assert "Probability of pneumonia" not in group and "Flag threshold" not in group
            read_back.append((None, None, "outside scope"))
            continue
        assert group["Probability of pneumonia"] == pytest.approx(probability, abs=1e-4)
        assert group["Flag threshold"] == pytest.approx(threshold, abs=1e-4)
        assert group["Triage flag"] == ("Flagged: read first" if flagged
                                        else "Not flagged: reading priority unchanged")
        read_back.append((group["Probability of pneumonia"], group["Flag threshold"],
                          group["Triage flag"].split(":")[0]))
    heatmaps = sum(row[2] for row in screened.values())  # SCREEN_HEATMAPS=flagged, in scope
    assert len(orthanc.instances()) == n_before + n_studies + heatmaps
    print(f"\nround trip: Orthanc pushed {pushed['InstancesCount']} instances of {n_studies} "
          f"studies to screen listen; {n_studies} SRs and {heatmaps} heatmap SCs stored back "
          f"{elapsed:.1f} s later; Orthanc now holds {len(orthanc.instances())} instances in "
          f"{len(orthanc.studies())} studies; read back (probability, threshold, flag): "
          + "; ".join(f if p is None else f"{p:.4f}, {t:.4f}, {f}" for p, t, f in read_back))
