"""`screen worker` and `screen beat` with the broker down: one line and exit 3, at once, not
Celery's hundred retries (issue 21, item 8). Through the real entry point."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from live import TEST_PATIENT_KEY, free_port, run_screen


@pytest.mark.parametrize("command", ["worker", "beat"])
def test_broker_down_is_one_line_and_exit_3(tmp_path: Path, command: str) -> None:
    broker = f"redis://127.0.0.1:{free_port()}/0"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCREEN_")}
    env.update(SCREEN_DATA_DIR=str(tmp_path / "data"), SCREEN_CONFIG=str(tmp_path / "x.toml"),
               SCREEN_BROKER_URL=broker, SCREEN_PATIENT_KEY=TEST_PATIENT_KEY,
               SCREEN_DATABASE_URL=f"sqlite:///{tmp_path / 'x.sqlite3'}")
    started = time.monotonic()
    out = run_screen(env, command, timeout=120)
    took = time.monotonic() - started
    assert out.returncode == 3, (out.returncode, out.stderr[-2000:])
    lines = out.stderr.strip().splitlines()
    assert lines == [f"error: cannot reach the broker at {broker}: Error 111 connecting to "
                     f"127.0.0.1:{broker.split(':')[2].split('/')[0]}. Connection refused; "
                     "start it or fix SCREEN_BROKER_URL"], out.stderr
    print(f"{command}: exit 3 after {took:.1f} s")  # a figure for the report, not an assertion
