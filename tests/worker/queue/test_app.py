"""The Celery app's configuration and the worker's start-up contract."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pneumoscreen.worker.queue.app import configure
from pneumoscreen.worker.settings import Settings


def test_queue_mode_guarantees() -> None:
    app = configure(Settings(broker_url="redis://127.0.0.1:6379/0", visibility_timeout=7200))
    conf = app.conf
    assert conf.task_serializer == "json" and conf.accept_content == ["json"]
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_transport_options["visibility_timeout"] == 7200
    assert not conf.task_always_eager


@pytest.mark.parametrize(("timeout", "period"), [(8, 2), (60, 15), (600, 100), (3600, 100)])
def test_the_sweep_for_dead_workers_tasks_scales_with_the_visibility_timeout(
        timeout: int, period: float) -> None:
    """kombu hands a dead worker's task over at its next sweep (every interval x throttle s):
    a quarter of the timeout, 2-100 s, so a short timeout is not followed by 100 s more."""
    options = configure(Settings(broker_url="redis://127.0.0.1:6379/0",
                                 visibility_timeout=timeout)).conf.broker_transport_options
    assert options["visibility_timeout"] == timeout
    swept = options["unacked_restore_interval"] * options["unacked_restore_throttle"]
    assert swept == pytest.approx(period, rel=0.1)


def test_no_broker_means_eager() -> None:
    conf = configure(Settings()).conf
    assert conf.task_always_eager and conf.task_eager_propagates


def test_importing_the_tasks_does_not_start_tensorflow() -> None:
    """TensorFlow must start in each worker process after the fork, never in the parent."""
    code = ("import sys, pneumoscreen.worker.queue.tasks, pneumoscreen.worker.cli;"
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_worker_without_broker_explains(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from pneumoscreen.worker.cli import app

    result = CliRunner().invoke(app, ["worker"])
    assert result.exit_code == 1 and "SCREEN_BROKER_URL" in result.output
