"""A worker killed with SIGKILL in the middle of a batch: once a worker runs again, every study is
done exactly once, and what was finished before the kill is not screened again."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from live import (
    REDIS_URL,
    WorkerProcess,
    make_pngs,
    redis_or_skip,
    run_screen,
    screen_env,
    wait_until,
)

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]

N_STUDIES = 36


def _states(engine: sa.Engine) -> dict[int, tuple[str, int]]:
    with engine.connect() as conn:
        return {i: (s, a) for i, s, a in conn.execute(
            sa.text("SELECT id, status, attempts FROM studies"))}


def _predictions(engine: sa.Engine) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    with engine.connect() as conn:
        for pid, sid in conn.execute(sa.text("SELECT id, study_id FROM predictions")):
            out.setdefault(sid, []).append(pid)
    return out


def test_sigkill_mid_batch_then_restart(tmp_path: Path, pg_url: str) -> None:
    redis_or_skip(REDIS_URL)
    make_pngs(tmp_path / "in", N_STUDIES, size=384)
    # Small batches and chunks so that the kill lands inside a batch; a short visibility timeout
    # so that Redis hands the killed worker's task over within the test.
    env = screen_env(data_dir=tmp_path / "data", database_url=pg_url, broker_url=REDIS_URL,
                     SCREEN_TASK_SIZE="6", SCREEN_CHUNK_SIZE="2",
                     SCREEN_VISIBILITY_TIMEOUT="8", SCREEN_TF_INTRA_THREADS="1",
                     SCREEN_DECODE_THREADS="1")
    engine = sa.create_engine(pg_url)
    first = WorkerProcess(env, tmp_path / "w1.log", "w1", "--concurrency", "1")
    second: WorkerProcess | None = None
    try:
        first.wait_ready()
        submitted = run_screen(env, "submit", str(tmp_path / "in"))
        assert submitted.returncode == 0, submitted.stderr
        assert f"{N_STUDIES} new studies" in submitted.stdout

        def mid_batch() -> bool:
            counts = [s for s, _ in _states(engine).values()]
            # More than one chunk still to go: the kill cannot miss the batch in flight.
            return counts.count("done") >= 1 and counts.count("processing") >= 3

        deadline = time.monotonic() + 180
        while not mid_batch():
            assert time.monotonic() < deadline, f"never caught mid-batch\n{first.log()}"
            assert first.proc.poll() is None, first.log()
            time.sleep(0.02)
        first.kill()

        at_kill = _states(engine)
        done_before = {i for i, (s, _) in at_kill.items() if s == "done"}
        held = {i for i, (s, _) in at_kill.items() if s == "processing"}
        assert done_before and held and len(done_before) < N_STUDIES
        before = _predictions(engine)
        assert set(before) == done_before  # chunks are written whole: prediction ⇔ done

        second = WorkerProcess(env, tmp_path / "w2.log", "w2", "--concurrency", "1")
        second.wait_ready()

        def all_final() -> bool:
            return all(s in ("done", "failed", "rejected") for s, _ in _states(engine).values())

        wait_until(all_final, 180, "every study final after the restart", on_timeout=second.log)
    finally:
        first.kill()
        if second is not None:
            second.stop()
    final = _states(engine)
    after = _predictions(engine)
    engine.dispose()
    assert {s for s, _ in final.values()} == {"done"}
    assert sorted(after) == sorted(final)  # every study has a prediction …
    assert all(len(p) == 1 for p in after.values())  # … exactly one
    # Finished before the kill: untouched. Held by the killed batch: taken again exactly once
    # (by the redelivered task, under its own claim).
    assert all(final[i][1] == 1 and after[i] == before[i] for i in done_before)
    assert all(final[i][1] == 2 for i in held)
    assert "Traceback" not in second.log()
