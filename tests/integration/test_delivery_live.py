"""Every result reaches the PACS (issue 20): `screen listen` with no broker, a real dcmtk storescp
as the PACS, down when the export is first tried and up some seconds later (the test's
SCREEN_TEST_PACS_DOWN_SECONDS, default 6; run once with 40 for the issue's figure): delivered by
the listener's outbox with no command. Then a late instance of the same study: a second SR, same
series, Instance Number 2, naming the first. Both validators run on what the PACS received."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pydicom
import pytest
import sqlalchemy as sa
from listener import ListenerProcess, fresh_instances, store
from live import free_port, screen_env, wait_until
from storescp import StoreSCP, storescp_or_skip

pytestmark = [pytest.mark.shared, pytest.mark.slow]
DOWN_SECONDS = float(os.environ.get("SCREEN_TEST_PACS_DOWN_SECONDS", "6"))


def _exports(url: str) -> list[dict]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.text(
                "SELECT id, status, attempts, last_error, sr_sop_instance_uid, instance_number, "
                "predecessor_sr_uid, next_attempt_at FROM exports ORDER BY id"))]
    except sa.exc.OperationalError:  # no tables yet
        return []
    finally:
        engine.dispose()


def _validate(paths: list[Path]) -> list[str]:
    problems = []
    for path in paths:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if shutil.which("dciodvfy"):
            run = subprocess.run(["dciodvfy", str(path)], capture_output=True, timeout=60)
            problems += [f"{ds.Modality}: {line}" for line in
                         run.stderr.decode("utf-8", "replace").splitlines()
                         if line.startswith("Error")]
        if ds.Modality == "SR" and shutil.which("dsr2xml"):
            run = subprocess.run(["dsr2xml", "-Ee", str(path)], capture_output=True, timeout=60)
            if run.returncode:
                problems.append(f"SR: dsr2xml exit {run.returncode}")
    return problems


def test_no_broker_a_pacs_outage_then_a_late_instance(tmp_path: Path, shared_dir: Path) -> None:
    storescp_or_skip()
    (source,) = sorted((shared_dir / "dicom" / "chest").glob("CR_chest_J2K_lossy*.dcm"))
    first, late = fresh_instances([source], tmp_path / "study", 2, per_study=2)
    pacs = StoreSCP(free_port(), tmp_path / "pacs")
    data, url, port = tmp_path / "data", f"sqlite:///{tmp_path / 'db.sqlite3'}", free_port()
    env = screen_env(data_dir=data, database_url=url, broker_url="",
                     SCREEN_CALLING_AE_TITLES=json.dumps(["SCU"]),
                     SCREEN_STUDY_STABLE_SECONDS="1", SCREEN_MODEL_PATH="bundled:cnn-s",
                     SCREEN_HEATMAPS="all", SCREEN_EXPORT_TO=pacs.destination,
                     SCREEN_EXPORT_TIMEOUT="5", SCREEN_EXPORT_RETRY_DELAY="1",
                     SCREEN_EXPORT_RETRY_MAX_DELAY="4", SCREEN_EXPORT_OUTBOX_SECONDS="1")
    listener = ListenerProcess(env, tmp_path / "listen.log", port)
    try:
        listener.wait_ready()
        assert store(port, [first], calling="SCU") == [0]
        wait_until(lambda: any(r["attempts"] >= 1 and r["status"] == "pending"
                               for r in _exports(url)), 300,
                   "the first export attempt, with the PACS down", on_timeout=listener.log)
        failed_at = time.monotonic()
        (row,) = _exports(url)
        assert "no association" in row["last_error"]
        time.sleep(max(0.0, DOWN_SECONDS - (time.monotonic() - failed_at)))
        pacs.start()
        up_at = time.monotonic()
        wait_until(lambda: _exports(url)[0]["status"] == "sent", 120,
                   "the export delivered once the PACS is back", on_timeout=listener.log)
        took = time.monotonic() - up_at
        (row,) = _exports(url)
        print(f"PACS down {up_at - failed_at:.0f} s after the first failed attempt; delivered "
              f"{took:.1f} s after it came back, attempt {row['attempts']}, no command")
        assert took < 10 and row["attempts"] >= 2

        assert store(port, [late], calling="SCU") == [0]  # the study's second image, late
        wait_until(lambda: [r["status"] for r in _exports(url)] == ["sent", "sent"], 300,
                   "the second SR delivered", on_timeout=listener.log)
    finally:
        listener.stop()
        pacs.stop()
    v1, v2 = _exports(url)
    assert (v1["instance_number"], v2["instance_number"]) == (1, 2)
    assert v2["predecessor_sr_uid"] == v1["sr_sop_instance_uid"]
    files = sorted(p for p in pacs.folder.iterdir() if p.is_file())
    srs = {ds.SOPInstanceUID: ds for ds in map(pydicom.dcmread, files) if ds.Modality == "SR"}
    old, new = srs[v1["sr_sop_instance_uid"]], srs[v2["sr_sop_instance_uid"]]
    assert new.SeriesInstanceUID == old.SeriesInstanceUID and new.InstanceNumber == 2
    ref = new.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0]
    assert ref.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == old.SOPInstanceUID
    assert _validate(files) == []
    assert "Traceback" not in listener.log()
