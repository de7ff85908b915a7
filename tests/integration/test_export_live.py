"""A real worker (broker mode, no beat) sends results to a real Orthanc that is down at first and
up SCREEN_TEST_PACS_DOWN_SECONDS later (default 6): the outbox retries with backoff and
delivers once the PACS is back, with no command."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import pydicom
import pytest
from ingest_factories import chest_like, make_ds, write
from live import (
    REDIS_URL,
    WorkerProcess,
    redis_or_skip,
    rows_of,
    run_screen,
    screen_env,
    wait_until,
)
from orthanc import Orthanc
from pydicom.uid import generate_uid

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]
DOWN_SECONDS = float(os.environ.get("SCREEN_TEST_PACS_DOWN_SECONDS", "6"))


def _exports(env: dict[str, str]) -> list[dict]:
    return json.loads(run_screen(env, "exports", "--format", "json").stdout)


def test_pacs_down_at_export_then_back(tmp_path: Path, pg_url: str, orthanc: Orthanc) -> None:
    redis_or_skip(REDIS_URL)
    study_uid = generate_uid()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    pa = make_ds(chest_like(256, 256), StudyInstanceUID=study_uid, ViewPosition="PA")
    write(pa, inbox / "pa.dcm")
    write(make_ds(chest_like(256, 256, seed=1), StudyInstanceUID=study_uid,
                  ViewPosition="LL"), inbox / "lat.dcm")
    orthanc.upload(inbox / "pa.dcm")  # the PACS holds the study
    destination = f"dicom://{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}"
    env = screen_env(data_dir=tmp_path / "data", database_url=pg_url, broker_url=REDIS_URL,
                     SCREEN_EXPORT_TO=destination, SCREEN_EXPORT_RETRY_DELAY="1",
                     SCREEN_EXPORT_RETRY_MAX_DELAY="4", SCREEN_EXPORT_TIMEOUT="5",
                     SCREEN_MODEL_PATH="bundled:cnn-s", SCREEN_HEATMAPS="all")
    orthanc.stop()
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        worker.wait_ready()
        assert run_screen(env, "submit", str(inbox)).returncode == 0

        def failed_once() -> bool:
            rows = rows_of(pg_url, "SELECT status, attempts FROM exports")
            return bool(rows) and rows[0][0] == "pending" and rows[0][1] >= 1

        wait_until(failed_once, 180, "a first export attempt while the PACS is down",
                   on_timeout=worker.log)
        failed_at = time.monotonic()
        (row,) = _exports(env)
        assert "no association" in row["last_error"] and row["next_attempt_at"]
        time.sleep(max(0.0, DOWN_SECONDS - (time.monotonic() - failed_at)))
        orthanc.start()
        up_at = time.monotonic()
        wait_until(lambda: rows_of(pg_url, "SELECT status FROM exports") == [("sent",)], 120,
                   "the export sent once the PACS is back", on_timeout=worker.log)
        print(f"broker mode: PACS down {up_at - failed_at:.0f} s after the first failed "
              f"attempt; delivered {time.monotonic() - up_at:.1f} s after it came back, "
              f"attempt {_exports(env)[0]['attempts']}, no command")
    finally:
        worker.stop()
    (row,) = _exports(env)
    found = {}
    for oid in orthanc.find_by_study_uid(study_uid):
        ds = pydicom.dcmread(io.BytesIO(orthanc.instance_file(oid)))
        found[ds.Modality] = ds
    # A heatmap SC goes only with an image inside the validated scope (a drawn film is not).
    import sqlalchemy as sa

    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        in_scope = conn.scalar(sa.text(
            "SELECT p.in_scope FROM predictions p JOIN studies s ON s.id = p.study_id "
            "WHERE s.view_position = 'PA'"))
    engine.dispose()
    expected = ["CR", "OT", "SR"] if in_scope is not False else ["CR", "SR"]
    assert sorted(found) == expected and len(orthanc.studies()) == 1
    assert found["SR"].SOPInstanceUID == row["sr_sop_instance_uid"]
    refs = found["SR"].CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert [r.ReferencedSOPInstanceUID for r in refs.ReferencedSOPSequence] == [
        pa.SOPInstanceUID]  # the lateral image was rejected, the study screened by its PA
    assert "Traceback" not in worker.log()
