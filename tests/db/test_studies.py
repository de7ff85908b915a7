"""Studies grouped by Study Instance UID, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from results import screened_study

from pneumoscreen.db import ImageStatus, session_scope
from pneumoscreen.db.studies import by_study, complete_study_uids, screened_images


def test_complete_means_all_final_and_one_screened(db_url: str, tmp_path: Path) -> None:
    done = screened_study(tmp_path / "a", db_url, views=("PA", "LL"))
    waiting = screened_study(tmp_path / "b", db_url, views=("PA",))
    screened_study(tmp_path / "b2", db_url, views=("AP",), study_uid=waiting.study_uid,
                   status=ImageStatus.queued)  # a second image still to screen
    rejected = screened_study(tmp_path / "c", db_url, views=("LL",))
    with session_scope(db_url) as session:
        uids = [done.study_uid, waiting.study_uid, rejected.study_uid]
        assert complete_study_uids(uids, session=session) == [done.study_uid]
        images = screened_images(done.study_uid, session=session)
    assert [i["sop_instance_uid"] for i in images] == done.sop_uids[:1]


def test_by_study_rows(db_url: str, tmp_path: Path) -> None:
    high = screened_study(tmp_path / "a", db_url, views=("PA", "LL"), probability=0.95)
    screened_study(tmp_path / "a2", db_url, views=("AP",), probability=0.7,
                   study_uid=high.study_uid)
    low = screened_study(tmp_path / "b", db_url, probability=0.8)
    outside = screened_study(tmp_path / "c", db_url, probability=0.1, in_scope=False)
    screened_study(tmp_path / "d", db_url, probability=0.1)
    with session_scope(db_url) as session:
        rows = by_study(session=session)
        everything = by_study(session=session, outside_scope=True)
    assert [(r["study_uid"], r["probability"], r["n_screened"], r["n_rejected"])
            for r in rows] == [(high.study_uid, 0.95, 2, 1), (low.study_uid, 0.8, 1, 0)]
    assert [r["study_uid"] for r in everything] == [high.study_uid, low.study_uid,
                                                   outside.study_uid]
    assert everything[-1]["in_scope"] is False and rows[0]["flagged"] is True
