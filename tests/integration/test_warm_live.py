"""A real `screen worker` says "ready" only once its pool process has the model loaded and warm,
and its start-up log carries no migration or font-cache chatter."""

from __future__ import annotations

from pathlib import Path

import pytest
from live import REDIS_URL, WorkerProcess, redis_or_skip, screen_env

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def test_the_model_is_warm_before_ready(tmp_path: Path) -> None:
    redis_or_skip(REDIS_URL)
    env = screen_env(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'w.db'}",
                     broker_url=REDIS_URL, SCREEN_TF_INTRA_THREADS="1",
                     MPLCONFIGDIR=str(tmp_path / "fresh-matplotlib"))
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        worker.wait_ready()
    finally:
        worker.stop()
    log = worker.log()
    warm = log.find("warm in pool process 0")
    assert warm != -1, log
    assert warm < log.find(" ready."), log
    for chatter in ("Running upgrade", "Context impl", "Will assume", "font cache"):
        assert chatter not in log, log
    assert "Traceback" not in log and "could not be warmed" not in log
