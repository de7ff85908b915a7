"""List settings take a plain or comma-separated value; an unusable setting is one line with the
fix, and `screen config` itself never dies of one (issue 21, item 6). Through the entry point."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from live import run_screen


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCREEN_")}
    env.update(SCREEN_DATA_DIR=str(tmp_path / "data"), SCREEN_CONFIG=str(tmp_path / "none.toml"),
               TF_CPP_MIN_LOG_LEVEL="2")
    env.update(extra)
    return env


def test_plain_and_comma_separated_lists(tmp_path: Path) -> None:
    env = _env(tmp_path, SCREEN_CALLING_AE_TITLES="ORTHANC",
               SCREEN_INBOX_DIRS=f"{tmp_path}/x, {tmp_path}/y",
               SCREEN_ACCEPT_MODALITIES='["CR"]', SCREEN_WINDOW_PERCENTILES="1,99")
    out = run_screen(env, "config", "--format", "json", timeout=120)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["calling_ae_titles"] == ["ORTHANC"]
    assert data["inbox_dirs"] == [f"{tmp_path}/x", f"{tmp_path}/y"]
    assert data["accept_modalities"] == ["CR"]
    assert data["window_percentiles"] == [1.0, 99.0]


@pytest.mark.parametrize(("extra", "line"), [
    ({"SCREEN_DATABASE_URL": "mysql://u@h/db"},
     "error: invalid setting SCREEN_DATABASE_URL: 'mysql' databases are not "
     "supported; use sqlite:////path/file.sqlite3 or postgresql+psycopg://user@host/db"),
    ({"SCREEN_CALLING_AE_TITLES": "[ORTHANC"},
     "error: invalid setting SCREEN_CALLING_AE_TITLES: not a JSON list"),
    ({"SCREEN_CALLING_AE_TITLES": "A,THIS-TITLE-IS-TOO-LONG"},
     "error: invalid setting SCREEN_CALLING_AE_TITLES: AE title "),
])
@pytest.mark.parametrize("command", [["config"], ["status"]])
def test_unusable_setting_is_one_line(tmp_path: Path, extra: dict[str, str], line: str,
                                      command: list[str]) -> None:
    out = run_screen(_env(tmp_path, **extra), *command, timeout=120)
    assert out.returncode == 1, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(line), out.stderr
    assert "unexpected" not in out.stderr


def test_key_source_shown_in_config(tmp_path: Path) -> None:
    key = tmp_path / "patient.key"
    key.write_text("x")
    out = run_screen(_env(tmp_path, SCREEN_PATIENT_KEY_FILE=str(key)), "config", "--format",
                     "json", timeout=120)
    assert json.loads(out.stdout)["patient_key"] == f"*** (the key file {key})"
    out = run_screen(_env(tmp_path), "config", "--format", "json", timeout=120)
    assert json.loads(out.stdout)["patient_key"].startswith("*** (generated, in ")
