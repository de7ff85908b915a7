"""Read-only commands never create a database, nor its folder: a mistyped SQLite path is one
line and exit 1, not an empty database saying "0 studies" (issue 21, item 3)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from live import run_screen


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCREEN_")}
    env.update(SCREEN_DATA_DIR=str(tmp_path / "data"), SCREEN_CONFIG=str(tmp_path / "none.toml"))
    env.update(extra)
    return env


@pytest.mark.parametrize("command", [["status"], ["images"], ["studies"], ["flagged"], ["runs"],
                                     ["reports"], ["audit"], ["audit", "verify"], ["exports"],
                                     ["heatmap", "1"]])
def test_a_mistyped_path_creates_nothing(tmp_path: Path, command: list[str]) -> None:
    missing = tmp_path / "nonexistent" / "dir" / "x.db"
    out = run_screen(_env(tmp_path, SCREEN_DATABASE_URL=f"sqlite:///{missing}"), *command,
                     timeout=120)
    assert out.returncode == 1, out.stderr
    assert out.stderr.strip().splitlines() == [
        f"error: no database at {missing}: this command only reads and never creates one; "
        "check SCREEN_DATABASE_URL (or SCREEN_DATA_DIR), or `screen submit` first"]
    assert not (tmp_path / "nonexistent").exists()
    assert not (tmp_path / "data").exists()


def test_the_default_database_is_not_created_by_a_read(tmp_path: Path) -> None:
    out = run_screen(_env(tmp_path), "status", timeout=120)
    assert out.returncode == 1 and "no database at " in out.stderr
    assert not (tmp_path / "data").exists()
    # A writing command creates it; then the read works.
    out = run_screen(_env(tmp_path), "resume", timeout=120)
    assert out.returncode == 0, out.stderr
    out = run_screen(_env(tmp_path), "status", timeout=120)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("command", ["status", "images", "flagged", "runs", "reports"])
def test_read_only_commands_import_nothing_heavy(tmp_path: Path, command: str) -> None:
    """Issue 21, item 14: a read-only command loads neither pydicom, NumPy, Pillow nor
    TensorFlow (the settings' own validation once pulled in the ingester: 1.2 s)."""
    import subprocess
    import sys

    env = _env(tmp_path)
    assert run_screen(env, "resume", timeout=120).returncode == 0  # a database
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c",
         "import sys; from pneumoscreen.worker.cli import main; sys.argv = ['screen', "
         f"{command!r}]; main()"], env=env, capture_output=True, text=True, timeout=120,
        check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    imported = {line.split("|")[-1].strip().split(".")[0]
                for line in out.stderr.splitlines() if line.startswith("import time:")}
    assert "sqlalchemy" in imported  # the measure works
    assert not imported & {"pydicom", "numpy", "PIL", "tensorflow", "keras", "celery"}
