"""A real `screen worker` on the local Redis and PostgreSQL screens the samples end to end."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from live import (
    REDIS_URL,
    SAMPLES,
    WorkerProcess,
    redis_or_skip,
    run_screen,
    screen_env,
    wait_until,
)

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]


def test_submit_returns_at_once_and_the_worker_finishes(tmp_path: Path, pg_url: str) -> None:
    redis_or_skip(REDIS_URL)
    samples = tmp_path / "samples"
    shutil.copytree(SAMPLES, samples, ignore=shutil.ignore_patterns("*.py"))
    # The small model: the queue and the worker are tested, not the model (the default model
    # runs in real workers in the round-trip, listener, SIGKILL and warm-up tests).
    env = screen_env(data_dir=tmp_path / "data", database_url=pg_url, broker_url=REDIS_URL,
                     SCREEN_MODEL_PATH="bundled:cnn-s")

    started = time.monotonic()
    submitted = run_screen(env, "submit", str(samples), "--task-size", "2")
    assert submitted.returncode == 0, submitted.stderr
    assert "Queued" in submitted.stdout and "3 tasks" in submitted.stdout
    status = json.loads(run_screen(env, "status", "--format", "json").stdout)
    assert status["counts"]["queued"] == 6  # nothing screened yet (the broken file fails later)
    assert time.monotonic() - started < 120  # returned without waiting for any screening

    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        worker.wait_ready()

        def final() -> bool:
            counts = json.loads(run_screen(env, "status", "--format", "json").stdout)["counts"]
            return counts["done"] == 5 and counts["queued"] == counts["processing"] == 0

        wait_until(final, 180, "every study in a final state", on_timeout=worker.log)
    finally:
        worker.stop()
    rows = json.loads(run_screen(env, "studies", "--format", "json").stdout)
    assert sorted(r["status"] for r in rows) == ["done"] * 5 + ["failed", "rejected"]
    assert all(r["probability"] is not None for r in rows if r["status"] == "done")
    assert "Traceback" not in worker.log()
