"""Ctrl-C during an in-process submit heals (issue 21, item 1): the interrupted process puts
back what it held and says so in one line; a process that died without a word (SIGKILL) is seen
to be gone by the next run on this machine; `screen resume` then finishes the rest, with no wait
for the lease. A real subprocess and real signals."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from live import make_pngs, run_screen, screen_cmd

pytestmark = pytest.mark.slow


def _counts(db: Path) -> dict[str, int]:
    try:
        with sqlite3.connect(db, timeout=30) as conn:
            return dict(conn.execute("SELECT status, count(*) FROM studies GROUP BY status"))
    except sqlite3.OperationalError:  # not created yet
        return {}


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCREEN_")}
    env.update(SCREEN_DATA_DIR=str(tmp_path / "data"), SCREEN_CONFIG=str(tmp_path / "x.toml"),
               SCREEN_HEATMAPS="none", SCREEN_CHUNK_SIZE="4", SCREEN_DECODE_PROCESSES="1",
               PYTHONUNBUFFERED="1")
    return env


def _run_until(env: dict[str, str], args: list[str], db: Path, done: int,
               sig: int) -> tuple[subprocess.CompletedProcess, int]:
    """Start `screen ARGS`, send ``sig`` once ``done`` images are done and others are being
    screened (held by the process); (result, done then)."""
    proc = subprocess.Popen(screen_cmd(*args), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        counts = _counts(db)
        if counts.get("done", 0) >= done and counts.get("processing", 0):
            break
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()
    before = _counts(db).get("done", 0)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=180)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), before


def test_ctrl_c_puts_back_what_it_held_and_resume_finishes(tmp_path: Path) -> None:
    make_pngs(tmp_path / "in", 40, size=64)
    env, db = _env(tmp_path), tmp_path / "data" / "pneumoscreen.sqlite3"
    out, done_before = _run_until(env, ["submit", str(tmp_path / "in")], db, 8, signal.SIGINT)
    assert out.returncode == 130, out.stderr
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.startswith("interrupted")]
    assert len(lines) == 1, out.stderr
    counts = _counts(db)
    assert re.fullmatch(r"interrupted: (\d+) images wait to be screened( \(\d+ put back from "
                        r"this run\))?; `screen resume` \(or the next `screen submit`\) "
                        r"screens them", lines[0]), lines[0]
    assert int(lines[0].split()[1]) == counts["queued"]
    assert counts.get("processing", 0) == 0 and counts["done"] >= done_before, counts
    # The bar counted what was screened (it read 0/300 when it advanced per task of 128).
    bars = re.findall(r"Screening\s+\S*\s+(\d+)/40", out.stderr)
    assert bars and int(bars[-1]) >= done_before, out.stderr

    resumed = run_screen(env, "resume", timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert _counts(db) == {"done": 40}


def test_a_killed_run_is_freed_by_the_next_one(tmp_path: Path) -> None:
    make_pngs(tmp_path / "in", 24, size=64, seed=3)
    env, db = _env(tmp_path), tmp_path / "data" / "pneumoscreen.sqlite3"
    out, _ = _run_until(env, ["submit", str(tmp_path / "in")], db, 4, signal.SIGKILL)
    assert out.returncode == -signal.SIGKILL
    assert _counts(db).get("processing", 0) > 0  # nothing could put them back
    resumed = run_screen(env, "resume", timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "stuck processing" in resumed.stdout and "Nothing to resume" not in resumed.stdout
    assert _counts(db) == {"done": 24}
