"""A Redis restart that lost every queued task recovers with no command typed: the worker's
start-up sweep and beat's periodic sweep send the stranded studies again (real Redis, real
worker and beat, a 3-second sweep interval)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from live import (
    REDIS_URL,
    WorkerProcess,
    free_port,
    make_pngs,
    redis_or_skip,
    run_screen,
    screen_cmd,
    screen_env,
    wait_until,
)

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def test_stranded_studies_are_screened_with_no_command(tmp_path: Path) -> None:
    import redis

    redis_or_skip(REDIS_URL)
    env = screen_env(data_dir=tmp_path / "data", broker_url=REDIS_URL,
                     database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}",
                     SCREEN_SWEEP_SECONDS="3", SCREEN_MODEL_PATH="bundled:cnn-s")

    def counts() -> dict[str, int]:
        return json.loads(run_screen(env, "status", "--format", "json").stdout)["counts"]

    make_pngs(tmp_path / "first", 4, size=64, seed=1)
    make_pngs(tmp_path / "second", 3, size=64, seed=2)
    assert run_screen(env, "submit", str(tmp_path / "first")).returncode == 0
    assert counts()["queued"] == 4
    redis.Redis.from_url(REDIS_URL).flushdb()  # Redis restarted without persistence

    worker = WorkerProcess(env, tmp_path / "worker.log")
    beat_log = open(tmp_path / "beat.log", "w")  # noqa: SIM115 - closed below
    beat = subprocess.Popen(screen_cmd("beat", "--loglevel", "INFO"), env=env, stdout=beat_log,
                            stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path)
    try:
        worker.wait_ready()
        # 1. The start-up sweep: the four lost with the flush.
        wait_until(lambda: counts()["done"] == 4, 180, "the start-up sweep's studies",
                   on_timeout=worker.log)
        # 2. Beat's sweep: three more registered while no broker took their tasks.
        down = {**env, "SCREEN_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}
        assert run_screen(down, "submit", str(tmp_path / "second")).returncode == 3
        wait_until(lambda: counts()["done"] == 7, 120, "beat's sweep",
                   on_timeout=lambda: worker.log() + (tmp_path / "beat.log").read_text())
    finally:
        worker.stop()
        if beat.poll() is None:
            os.killpg(beat.pid, signal.SIGTERM)
            beat.wait(30)
        beat_log.close()
    final = counts()
    assert (final["queued"], final["processing"], final["done"]) == (0, 0, 7)
    assert "Traceback" not in worker.log()
