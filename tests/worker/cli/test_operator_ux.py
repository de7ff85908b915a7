"""What a newcomer meets in the first hour: settings named right, an empty folder explained,
help without stray markup, tables that do not break words, resume saying what it did."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from live import SAMPLES, run_screen
from typer.testing import CliRunner

from pneumoscreen.worker.cli import app


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCREEN_")}
    env.update(SCREEN_DATA_DIR=str(tmp_path / "data"), SCREEN_CONFIG=str(tmp_path / "none.toml"))
    env.update(extra)
    return env


def test_config_names_the_variables_that_work() -> None:
    result = CliRunner().invoke(app, ["config"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "SCREEN_CONFIG " in result.output and "SCREEN_CONFIG_FILE" not in result.output
    # "mode" is derived from the broker URL, not a setting of its own
    assert not re.search(r"SCREEN_MODE\b", result.output)
    assert "(from SCREEN_BROKER_URL)" in result.output


@pytest.mark.parametrize("content", [{}, {"notes.txt": "hello", "sub/readme.md": "x"}])
def test_submit_a_folder_without_images_fails_and_says_why(tmp_path: Path,
                                                          content: dict[str, str]) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name, text in content.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    result = CliRunner().invoke(app, ["submit", str(folder)])
    assert result.exit_code == 1
    said = " ".join(result.output.split())
    assert "no DICOM, PNG or JPEG file found" in said
    assert ("2 other files" if content else "it is empty") in said


def _commands(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    import typer.main

    click_group = group if hasattr(group, "commands") else typer.main.get_command(group)
    found = [prefix]
    for name, sub in click_group.commands.items():
        if hasattr(sub, "commands"):
            found += _commands(sub, (*prefix, name))
        else:
            found.append((*prefix, name))
    return found


def test_every_help_reads_cleanly() -> None:
    """No bracket eaten as markup (" ." at the end), no <bool> on flags, no <list[Path]>."""
    commands = _commands(app)
    assert ("submit",) in commands and ("bench", "decode") in commands
    for command in commands:
        result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "250"})
        assert result.exit_code == 0, (command, result.output)
        out = result.output
        assert not re.search(r"\s\.\s*│", out), (command, out)
        assert "<bool>" not in out and "<list[" not in out, (command, out)
    submit = CliRunner().invoke(app, ["submit", "--help"], env={"COLUMNS": "250"}).output
    assert "[default: SCREEN_TASK_SIZE]" in submit


def test_reports_table_keeps_words_whole_at_80_columns(tmp_path: Path) -> None:
    from pneumoscreen.db import EvaluationReport, ModelVersion, session_scope

    url = f"sqlite:///{tmp_path / 'r.sqlite3'}"
    with session_scope(url) as session:
        mv = ModelVersion(name="pneumoscreen-cnn", version="2.0.0+20261201-120000",
                          file_sha256="f" * 64, input_spec={}, threshold=0.5,
                          target_recall=0.95, trained=True, sidecar={})
        session.add(mv)
        session.flush()
        session.add(EvaluationReport(
            model_version_id=mv.id, dataset="/work/shared/data/chest_xray/val", n=16,
            metrics={"auc": 1.0, "threshold": 0.5, "recall": 1.0, "specificity": 1.0},
            report_path="/srv/reports/20261202-004500/report.html"))
    env = _env(tmp_path, SCREEN_DATABASE_URL=url, COLUMNS="80")
    for command, words in ((["reports"], ["created", "dataset", "model", "spec.", "1.0000"]),
                           (["status"], ["processing", "rejected", "outside", "scope"])):
        out = run_screen(env, *command, timeout=120)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert all(len(line) <= 80 for line in lines), out.stdout
        assert lines[-1].rstrip().endswith("┘"), out.stdout  # the right edge is not cropped
        cells = [c.strip() for line in lines for c in line.split("┃") + line.split("│")]
        for word in words:
            assert word in cells or any(c.startswith(word + " ") for c in cells), (word,
                                                                                  out.stdout)


@pytest.mark.slow
def test_resume_without_a_broker_says_it_screened(tmp_path: Path) -> None:
    """Studies left queued are screened in-process by `screen resume` with no broker."""
    from pneumoscreen.db import Image, ImageStatus, session_scope

    url = f"sqlite:///{tmp_path / 'q.sqlite3'}"
    with session_scope(url) as session:
        session.add(Image(sha256="0" * 64, source_path=str(SAMPLES / "chest_export.png"),
                          format="png", status=ImageStatus.queued))
    out = run_screen(_env(tmp_path, SCREEN_DATABASE_URL=url, SCREEN_MODEL_PATH="bundled:cnn-s"),
                     "resume", timeout=300)  # the small model: any model makes the point
    assert out.returncode == 0, out.stderr
    assert "Screened 1 study" in out.stdout and "Re-enqueued" not in out.stdout
    assert "task" not in out.stdout
