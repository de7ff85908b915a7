"""The export outbox: due rows delivered with backoff until sent or given up, never twice at once;
a later result of a study supersedes the earlier SR (issue 20, findings 1 and 2). SQLite and
PostgreSQL; a real dcmtk storescp as the PACS."""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path

import pydicom
from live import free_port
from results import screened_study
from storescp import StoreSCP, storescp_or_skip

from pneumoscreen.db import Export, ExportStatus, session_scope
from pneumoscreen.db.outbox import claim
from pneumoscreen.worker.export.destinations import parse_destination
from pneumoscreen.worker.export.outbox import deliver, deliver_due, plan_exports
from pneumoscreen.worker.settings import Settings


def _settings(url: str, tmp_path: Path, dest: str, **kw: object) -> Settings:
    values: dict[str, object] = {"export_timeout": 2, "export_retry_delay": 0.5, **kw}
    return Settings(database_url=url, data_dir=tmp_path / "data", export_to=[dest],
                    **values)  # type: ignore[arg-type]


def _row(url: str, export_id: int) -> Export:
    with session_scope(url) as session:
        row = session.get(Export, export_id)
        assert row is not None
        session.expunge(row)
        return row


def test_a_pacs_down_then_up_is_delivered_by_the_outbox_with_backoff(
        db_url: str, tmp_path: Path) -> None:
    storescp_or_skip()
    pacs = StoreSCP(free_port(), tmp_path / "pacs")
    settings = _settings(db_url, tmp_path, pacs.destination)
    made = screened_study(tmp_path / "in", db_url, heatmap=False)
    (export_id,) = plan_exports([made.study_uid], [parse_destination(pacs.destination)],
                                settings)
    first = deliver_due(settings)
    assert [o.status for o in first] == ["pending"] and "no association" in first[0].error
    row = _row(db_url, export_id)
    assert row.attempts == 1 and row.lease_token is None
    assert 0.3 < (row.next_attempt_at - row.updated_at).total_seconds() <= 0.6
    assert deliver_due(settings) == []  # not due yet
    time.sleep(0.6)
    assert [o.status for o in deliver_due(settings)] == ["pending"]
    row = _row(db_url, export_id)
    assert 0.8 < (row.next_attempt_at - row.updated_at).total_seconds() <= 1.1  # doubled
    pacs.start()
    try:
        time.sleep(1.1)
        (sent,) = deliver_due(settings)
    finally:
        pacs.stop()
    assert sent.status == "sent" and sent.attempts == 3
    row = _row(db_url, export_id)
    assert (row.status, row.next_attempt_at, row.last_error) == (ExportStatus.sent, None, None)
    (sr,) = [ds for ds in pacs.received() if ds.Modality == "SR"]
    assert sr.SOPInstanceUID == row.sr_sop_instance_uid


def test_an_export_is_given_up_after_the_setting_with_its_last_error(
        db_url: str, tmp_path: Path) -> None:
    dest = f"dicom://DOWN@127.0.0.1:{free_port()}"
    # 4 s: the first attempt must come before the deadline even on a loaded machine.
    settings = _settings(db_url, tmp_path, dest, export_give_up_after=4.0,
                         export_retry_delay=0.1)
    made = screened_study(tmp_path / "in", db_url, heatmap=False)
    (export_id,) = plan_exports([made.study_uid], [parse_destination(dest)], settings)
    assert deliver_due(settings)[0].status == "pending"
    time.sleep(4.1)
    (last,) = deliver_due(settings)
    assert last.status == "failed" and last.error.startswith("given up after 2 attempts")
    assert "no association" in last.error
    row = _row(db_url, export_id)
    assert row.status is ExportStatus.failed and row.next_attempt_at is None


def test_one_row_is_claimed_by_one_deliverer_only(db_url: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    settings = _settings(db_url, tmp_path, f"file://{out}")
    made = screened_study(tmp_path / "in", db_url, heatmap=False)
    (export_id,) = plan_exports([made.study_uid], [parse_destination(f"file://{out}")],
                                settings)
    with session_scope(db_url) as session:
        token = claim(export_id, session=session, lease_seconds=60)
    with session_scope(db_url) as session:
        assert token and claim(export_id, session=session, lease_seconds=60) is None
        later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=61)
        assert claim(export_id, session=session, lease_seconds=60, now=later)  # lease ran out


def test_concurrent_deliverers_send_the_same_sr_once(db_url: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    settings = _settings(db_url, tmp_path, f"file://{out}")
    made = screened_study(tmp_path / "in", db_url, heatmap=False)
    (export_id,) = plan_exports([made.study_uid], [parse_destination(f"file://{out}")],
                                settings)
    outcomes: list[str] = []
    gate = threading.Barrier(6)

    def race() -> None:
        gate.wait()
        outcomes.append(deliver(export_id, settings).status)

    threads = [threading.Thread(target=race) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(outcomes) == ["busy"] * 5 + ["sent"]
    assert _row(db_url, export_id).attempts == 1


def test_a_late_image_makes_a_second_sr_that_names_the_first(db_url: str,
                                                             tmp_path: Path) -> None:
    out = tmp_path / "out"
    dest = parse_destination(f"file://{out}")
    settings = _settings(db_url, tmp_path, dest.label)
    made = screened_study(tmp_path / "in", db_url, heatmap=False)
    (first_id,) = plan_exports([made.study_uid], [dest], settings)
    assert deliver(first_id, settings).status == "sent"
    screened_study(tmp_path / "late", db_url, heatmap=False, study_uid=made.study_uid)
    (second_id,) = plan_exports([made.study_uid], [dest], settings)
    assert second_id != first_id
    assert deliver(second_id, settings).status == "sent"
    first, second = _row(db_url, first_id), _row(db_url, second_id)
    assert (first.instance_number, second.instance_number) == (1, 2)
    assert second.predecessor_sr_uid == first.sr_sop_instance_uid
    srs = {ds.SOPInstanceUID: ds for ds in (pydicom.dcmread(p) for p in out.rglob("*.dcm"))}
    old, new = srs[first.sr_sop_instance_uid], srs[second.sr_sop_instance_uid]
    assert new.SeriesInstanceUID == old.SeriesInstanceUID and new.InstanceNumber == 2
    (ref,) = new.PredecessorDocumentsSequence
    assert ref.StudyInstanceUID == made.study_uid
    (series,) = ref.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == old.SeriesInstanceUID
    assert series.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == old.SOPInstanceUID
    assert len(new.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence) == 2
    # A resend of the first version is byte for byte the same instance, still instance 1.
    again = plan_exports([made.study_uid], [dest], settings, resend=True)
    assert again == [second_id]


def test_an_unsent_result_is_superseded_by_a_later_one(db_url: str, tmp_path: Path) -> None:
    dest_text = f"dicom://DOWN@127.0.0.1:{free_port()}"
    dest = parse_destination(dest_text)
    settings = _settings(db_url, tmp_path, dest_text)
    made = screened_study(tmp_path / "in", db_url, heatmap=False)
    (first_id,) = plan_exports([made.study_uid], [dest], settings)
    assert deliver(first_id, settings).status == "pending"
    screened_study(tmp_path / "late", db_url, heatmap=False, study_uid=made.study_uid)
    (second_id,) = plan_exports([made.study_uid], [dest], settings)
    first, second = _row(db_url, first_id), _row(db_url, second_id)
    assert first.status is ExportStatus.superseded and first.next_attempt_at is None
    # It was never sent anywhere: the new SR names no predecessor, but takes the next number.
    assert second.predecessor_sr_uid is None and second.instance_number == 2


def test_a_row_planned_before_a_late_image_is_superseded_at_delivery(
        db_url: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    dest = parse_destination(f"file://{out}")
    settings = _settings(db_url, tmp_path, dest.label)
    made = screened_study(tmp_path / "in", db_url, heatmap=False)
    (first_id,) = plan_exports([made.study_uid], [dest], settings)
    screened_study(tmp_path / "late", db_url, heatmap=False, study_uid=made.study_uid)
    assert deliver(first_id, settings).status == "superseded"
    (sent,) = deliver_due(settings)
    assert sent.status == "sent" and sent.export_id != first_id
