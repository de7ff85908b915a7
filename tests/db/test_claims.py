"""The claim: atomic, leased, re-entrant for its own token; on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
import sqlalchemy as sa

from pneumoscreen.db import Batch, Image, ImageStatus, Prediction, session_scope
from pneumoscreen.db.models import utcnow
from pneumoscreen.db.queries import get_or_create_model_version
from pneumoscreen.worker.screening.screen import claim

LEASE = 600


def _setup(url: str, n: int) -> tuple[list[int], int]:
    with session_scope(url) as session:
        mv = get_or_create_model_version(session=session, name="m", version="1", file_sha256="a",
                                         input_spec={}, threshold=0.5, target_recall=None,
                                         trained=False)
        batch = Batch(kind="submit")
        session.add(batch)
        session.flush()
        studies = [Image(sha256=f"{i:064d}", source_path=f"/x/{i}.png", format="png",
                         batch_id=batch.id) for i in range(n)]
        session.add_all(studies)
        session.flush()
        return [s.id for s in studies], mv.id


def _claim(url: str, ids: list[int], mv_id: int, token: str, **kw: object) -> object:
    with session_scope(url) as session:
        return claim(ids, mv_id, session=session, token=token, lease_s=LEASE, **kw)


class TestClaim:
    def test_a_study_is_claimed_once(self, db_url: str) -> None:
        ids, mv = _setup(db_url, 4)
        first = _claim(db_url, ids, mv, "t1")
        assert [i for i, _ in first.todo] == ids and first.busy == []
        second = _claim(db_url, ids, mv, "t2")  # a duplicate task on another worker
        assert second.todo == [] and second.busy == ids
        with session_scope(db_url) as session:
            rows = session.execute(sa.select(Image.status, Image.attempts, Image.claim_token,
                                             Image.reason)).all()
        assert rows == [(ImageStatus.processing, 1, "t1", None)] * 4

    def test_the_same_task_takes_its_studies_back(self, db_url: str) -> None:
        ids, mv = _setup(db_url, 2)
        _claim(db_url, ids, mv, "t1")
        again = _claim(db_url, ids, mv, "t1")  # a retry or a redelivery of the same task
        assert [i for i, _ in again.todo] == ids

    def test_an_expired_lease_is_taken_over(self, db_url: str) -> None:
        ids, mv = _setup(db_url, 2)
        _claim(db_url, ids, mv, "dead-worker")
        later = utcnow() + dt.timedelta(seconds=LEASE + 1)
        with session_scope(db_url) as session:
            taken = claim(ids, mv, session=session, token="t2", lease_s=LEASE, now=later)
        assert [i for i, _ in taken.todo] == ids

    def test_predicted_or_final_studies_are_skipped(self, db_url: str) -> None:
        ids, mv = _setup(db_url, 3)
        with session_scope(db_url) as session:
            session.add(Prediction(image_id=ids[0], model_version_id=mv, probability=0.1,
                                   threshold=0.5, flagged=False))
            session.get(Image, ids[1]).status = ImageStatus.rejected
        out = _claim(db_url, ids, mv, "t1")
        assert [i for i, _ in out.todo] == [ids[2]] and out.already_done == 2
        with session_scope(db_url) as session:
            assert session.get(Image, ids[0]).status is ImageStatus.done  # finished, not redone

    def test_rescreen_takes_done_studies(self, db_url: str) -> None:
        ids, mv = _setup(db_url, 2)
        with session_scope(db_url) as session:
            for study in session.scalars(sa.select(Image)):
                study.status = ImageStatus.done
        assert _claim(db_url, ids, mv, "t1").todo == []
        assert len(_claim(db_url, ids, mv, "t2", rescreen=True).todo) == 2


@pytest.mark.postgres
def test_concurrent_claims_never_share_a_study(pg_url: str) -> None:
    """Eight claims of the same ids at the same moment: each study goes to exactly one."""
    ids, mv = _setup(pg_url, 40)
    barrier = threading.Barrier(8)
    won: dict[str, list[int]] = {}

    def contend(token: str) -> None:
        barrier.wait()
        won[token] = [i for i, _ in _claim(pg_url, ids, mv, token).todo]

    threads = [threading.Thread(target=contend, args=(f"t{k}",)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    taken = [i for todo in won.values() for i in todo]
    assert sorted(taken) == ids  # all claimed, none twice
    with session_scope(pg_url) as session:
        assert set(session.scalars(sa.select(Image.attempts))) == {1}
