"""Spool retention: a received file is deleted a set time after its study is final and its result
delivered; never before, never while an export waits; the default keeps everything."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from results import screened_study

from pneumoscreen.db import ReceivedInstance, session_scope
from pneumoscreen.db.models import utcnow
from pneumoscreen.worker.export.destinations import parse_destination
from pneumoscreen.worker.export.outbox import deliver_due, plan_exports
from pneumoscreen.worker.receive.retention import sweep_spool
from pneumoscreen.worker.receive.spool import Spool
from pneumoscreen.worker.settings import Settings


def _received(url: str, spool: Spool, made_path: Path, image_id: int) -> Path:
    file = spool.write(made_path.read_bytes())
    with session_scope(url) as session:
        session.add(ReceivedInstance(sha256=file.sha256, spool_path=str(file.path),
                                     received_at=utcnow(), registered_at=utcnow(),
                                     enqueued_at=utcnow(), image_id=image_id))
    return file.path


def test_spool_files_go_a_set_time_after_delivery(db_url: str, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    out = f"file://{tmp_path / 'out'}"
    keep = Settings(database_url=db_url, data_dir=tmp_path / "data", export_to=[out])
    settings = keep.model_copy(update={"spool_retention_days": 1.0})
    delivered = screened_study(tmp_path / "a", db_url, heatmap=False)
    waiting = screened_study(tmp_path / "b", db_url, heatmap=False)
    gone = _received(db_url, spool, delivered.paths[0], delivered.image_ids[0])
    kept = _received(db_url, spool, waiting.paths[0], waiting.image_ids[0])
    plan_exports([delivered.study_uid], [parse_destination(out)], settings)
    assert [o.status for o in deliver_due(settings)] == ["sent"]
    plan_exports([waiting.study_uid], [parse_destination("dicom://X@127.0.0.1:1")], settings)
    later = utcnow() + dt.timedelta(days=2)
    assert sweep_spool(spool, keep, now=later) == 0  # the default keeps every file
    assert sweep_spool(spool, settings, now=utcnow()) == 0  # delivered, but not a day ago
    assert sweep_spool(spool, settings, now=later) == 1
    assert not gone.exists() and kept.exists()  # its export still waits
