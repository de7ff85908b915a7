"""Two real workers on one queue, a dropped database connection, a live re-screen and the beat's
nightly task: against the local Redis and PostgreSQL, with one pair of workers for the module."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from live import (
    REDIS_URL,
    WorkerProcess,
    bundled_model_copy,
    fresh_pg_database,
    make_pngs,
    redis_or_skip,
    run_screen,
    screen_env,
    wait_until,
)

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture(scope="module")
def module_pg() -> Iterator[str]:
    """One fresh PostgreSQL database shared by this module's tests (and its workers)."""
    with fresh_pg_database() as url:
        yield url


@pytest.fixture(scope="module")
def live_env(module_pg: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    redis_or_skip(REDIS_URL)
    root = tmp_path_factory.mktemp("live")
    (root / "inbox").mkdir()
    return screen_env(data_dir=root / "data", database_url=module_pg, broker_url=REDIS_URL,
                      SCREEN_INBOX_DIRS=json.dumps([str(root / "inbox")]),
                      SCREEN_MODEL_DIRS=json.dumps([str(root / "models")]),
                      SCREEN_CHUNK_SIZE="2", SCREEN_TF_INTRA_THREADS="1",
                      SCREEN_DECODE_THREADS="1")


@pytest.fixture(scope="module")
def workers(live_env: dict[str, str],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[WorkerProcess]]:
    """Two `screen worker` processes consuming the same queue."""
    logs = tmp_path_factory.mktemp("logs")
    pair = [WorkerProcess(live_env, logs / f"{name}.log", name, "--concurrency", "1")
            for name in ("wa", "wb")]
    try:
        for worker in pair:
            worker.wait_ready()
        yield pair
    finally:
        for worker in pair:
            worker.stop()


def _engine(env: dict[str, str]) -> sa.Engine:
    return sa.create_engine(env["SCREEN_DATABASE_URL"])


def _all_final(engine: sa.Engine) -> bool:
    with engine.connect() as conn:
        return not conn.scalar(sa.text(
            "SELECT count(*) FROM studies WHERE status IN ('queued', 'processing')"))


def _logs(pair: list[WorkerProcess]) -> str:
    return "\n".join(w.log() for w in pair)


def test_two_workers_with_duplicate_tasks_screen_each_study_once(
        live_env: dict[str, str], tmp_path: Path, workers: list[WorkerProcess]) -> None:
    make_pngs(tmp_path / "in", 30, seed=1)
    engine = _engine(live_env)
    # The predictions table held: a worker's claim waits inside its transaction, so every study
    # is still queued when resume queues them again in tasks cut differently. (Screening random
    # images, now outside the scope and so without heatmaps, is too quick to race otherwise.)
    blocker = engine.connect()
    try:
        blocker.execute(sa.text("LOCK TABLE predictions IN ACCESS EXCLUSIVE MODE"))
        submitted = run_screen(live_env, "submit", str(tmp_path / "in"), "--task-size", "5")
        assert submitted.returncode == 0, submitted.stderr
        resumed = run_screen(live_env, "resume", "--task-size", "3")
        assert resumed.returncode == 0, resumed.stderr
    finally:
        blocker.rollback()  # both workers now meet the same ids in different tasks at once
        blocker.close()
    requeued = re.search(r"Re-enqueued (\d+) studies", resumed.stdout)
    assert requeued and int(requeued.group(1)) >= 10, resumed.stdout

    wait_until(lambda: _all_final(engine), 240, "30 studies final", lambda: _logs(workers))
    with engine.connect() as conn:
        attempts = conn.execute(sa.text("SELECT status, attempts FROM studies")).all()
        per_study = conn.execute(sa.text(
            "SELECT count(*) FROM predictions GROUP BY study_id")).scalars().all()
    engine.dispose()
    assert len(attempts) == 30 and {s for s, _ in attempts} == {"done"}
    assert [a for _, a in attempts] == [1] * 30  # claimed once: never screened twice
    assert per_study == [1] * 30
    # Both workers screened (else the test would prove nothing about two workers).
    screened = re.compile(r"batch \d+: [1-9]\d* screened")
    assert all(screened.search(w.log()) for w in workers), _logs(workers)


def test_dropped_database_connection_is_retried(live_env: dict[str, str], tmp_path: Path,
                                                workers: list[WorkerProcess]) -> None:
    engine = _engine(live_env)
    db = live_env["SCREEN_DATABASE_URL"].rsplit("/", 1)[1]
    offset = [len(w.log()) for w in workers]
    make_pngs(tmp_path / "in", 6, seed=2)
    blocker = engine.connect()
    try:
        # Hold the predictions table: the worker's claim waits inside its transaction …
        blocker.execute(sa.text("LOCK TABLE predictions IN ACCESS EXCLUSIVE MODE"))
        submitted = run_screen(live_env, "submit", str(tmp_path / "in"), "--task-size", "6")
        assert submitted.returncode == 0, submitted.stderr
        waiting = sa.text("SELECT pid FROM pg_stat_activity WHERE datname = :db "
                          "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()")

        def blocked() -> bool:
            with engine.connect() as conn:
                return bool(conn.execute(waiting, {"db": db}).all())

        wait_until(blocked, 120, "a worker blocked on the lock", lambda: _logs(workers))
        # … and loses its connection there, as in a database restart.
        with engine.connect() as conn:
            killed = conn.execute(sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :db "
                "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"), {"db": db}).all()
        assert killed
    finally:
        blocker.rollback()
        blocker.close()
    wait_until(lambda: _all_final(engine), 180, "the batch retried and finished",
               lambda: _logs(workers))
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT s.status, count(p.id) FROM studies s LEFT JOIN predictions p "
            "ON p.study_id = s.id WHERE s.source_path LIKE :dir GROUP BY s.id, s.status"),
            {"dir": f"{tmp_path}%"}).all()
    engine.dispose()
    assert rows == [("done", 1)] * 6
    fresh = "\n".join(w.log()[o:] for w, o in zip(workers, offset, strict=True))
    assert "Retry in" in fresh and "OperationalError" in fresh, fresh


def test_rescreen_through_the_workers_keeps_earlier_predictions(
        live_env: dict[str, str], tmp_path: Path, workers: list[WorkerProcess]) -> None:
    engine = _engine(live_env)
    with engine.connect() as conn:
        before = dict(conn.execute(sa.text("SELECT id, study_id FROM predictions")).all())
        n_done = conn.scalar(sa.text("SELECT count(*) FROM studies WHERE status = 'done'"))
    assert n_done and len(before) == n_done
    models = Path(json.loads(live_env["SCREEN_MODEL_DIRS"])[0])
    models.mkdir(exist_ok=True)
    model = bundled_model_copy(models, "0.0.2-rescreen-test", "pneumoscreen-cnn-v2.keras")
    out = run_screen(live_env, "rescreen", "--model", str(model), "--task-size", "8")
    assert out.returncode == 0, out.stderr
    assert f"Queued {n_done} images" in out.stdout

    def rescreened() -> bool:
        with engine.connect() as conn:
            return conn.scalar(sa.text("SELECT count(*) FROM predictions")) == 2 * n_done

    wait_until(rescreened, 180, "a second prediction per study", lambda: _logs(workers))
    wait_until(lambda: _all_final(engine), 60, "statuses back to final")
    with engine.connect() as conn:
        after = conn.execute(sa.text(
            "SELECT p.id, p.study_id, m.version FROM predictions p "
            "JOIN model_versions m ON m.id = p.model_version_id")).all()
    engine.dispose()
    assert {pid: sid for pid, sid, _ in after if pid in before} == before  # earlier ones kept
    new = [sid for pid, sid, version in after if pid not in before]
    assert sorted(new) == sorted(before.values())
    assert {v for pid, _, v in after if pid not in before} == {"0.0.2-rescreen-test"}
    # Running it again adds nothing: every study has this version's verdict already.
    again = run_screen(live_env, "rescreen", "--model", "0.0.2-rescreen-test")
    assert again.returncode == 0 and "Queued 0 images" in again.stdout, again.stderr


def test_beat_nightly_task_submits_only_new_inbox_files(
        live_env: dict[str, str], workers: list[WorkerProcess]) -> None:
    from celery import Celery

    from pneumoscreen.db import session_scope
    from pneumoscreen.worker.intake.nightly import list_runs

    inbox = Path(json.loads(live_env["SCREEN_INBOX_DIRS"])[0])
    url = live_env["SCREEN_DATABASE_URL"]
    sender = Celery(broker=REDIS_URL)

    def run_and_wait(expected_runs: int) -> list[dict]:
        sender.send_task("pneumoscreen.nightly")

        def finished() -> bool:
            with session_scope(url) as session:
                runs = list_runs(session=session)
            return len(runs) == expected_runs and runs[0].status == "finished"

        wait_until(finished, 180, f"nightly run {expected_runs} finished",
                   lambda: _logs(workers))
        with session_scope(url) as session:
            return [r.as_dict() for r in list_runs(session=session)]

    make_pngs(inbox, 3, seed=3, prefix="night1")
    first = run_and_wait(1)
    make_pngs(inbox, 2, seed=4, prefix="night2")
    runs = run_and_wait(2)
    sender.close()
    assert first[0]["n_new"] == 3
    newest, oldest = runs
    assert (oldest["n_new"], oldest["n_done"]) == (3, 3)
    assert (newest["n_new"], newest["n_done"], newest["n_pending"]) == (2, 2, 0)
    assert newest["duration_s"] is not None and newest["duration_s"] >= 0
    listed = run_screen(live_env, "runs", "--format", "json")
    assert [r["n_new"] for r in json.loads(listed.stdout)] == [2, 3]
