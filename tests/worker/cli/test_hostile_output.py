"""Untrusted values (file names, tag values, reasons, labels from the database) print as plain
text in every command: markup prints literally, never renders or crashes; no raw C0/C1 control
character reaches the terminal. Through the real entry point."""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path

import pytest
from live import run_screen

from pneumoscreen.db import (
    Batch,
    EvaluationReport,
    Image,
    ImageStatus,
    ModelVersion,
    Prediction,
    Run,
    session_scope,
)

LINK = "[link=https://evil.example]x[/link]"
BLINK = "[blink]HIP[/blink]"
CLOSE = "[/bold]"  # an unmatched closing tag: MarkupError if read as markup
TITLE = "\x1b]0;t\x07"  # sets the terminal's title
CLEAR = "\x1b[2J"  # clears the screen
C1 = "\x9b31m"  # CSI as one C1 character
EVIL = f"{LINK}{BLINK}{CLOSE}{TITLE}{CLEAR}{C1}"
# Any C0 control but tab/newline/carriage return, DEL and the C1 range.
RAW_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _seed(url: str, folder: Path) -> int:
    """One of everything the listings show, each carrying markup and escape sequences."""
    now = dt.datetime.now(dt.timezone.utc)
    with session_scope(url) as session:
        mv = ModelVersion(name=f"m{EVIL}", version=f"1{BLINK}", file_sha256="f" * 64,
                          input_spec={}, threshold=0.5, target_recall=0.95, trained=True,
                          sidecar={"architecture": {"name": f"cnn{LINK}"}})
        batch = Batch(source=str(folder / EVIL))
        session.add_all([mv, batch])
        session.flush()
        statuses = [ImageStatus.done, ImageStatus.done, ImageStatus.rejected, ImageStatus.failed]
        studies = []
        for i, status in enumerate(statuses):
            study = Image(sha256=f"{i:064d}", source_path=str(folder / f"{i}{EVIL}.dcm"),
                          format="dicom", status=status, batch_id=batch.id,
                          reason=None if status is ImageStatus.done else f"BodyPart {BLINK}{TITLE}",
                          modality=f"C{CLEAR}", body_part=BLINK, view_position=f"P{TITLE}",
                          patient_key="a" * 64, accession_number=f"acc{LINK}",
                          study_instance_uid=f"1.2.{i}", finished_at=now)
            session.add(study)
            studies.append(study)
        session.flush()
        session.add(Prediction(image_id=studies[0].id, model_version_id=mv.id,
                               batch_id=batch.id, probability=0.9, threshold=0.5, flagged=True,
                               in_scope=True, created_at=now))
        session.add(Prediction(image_id=studies[1].id, model_version_id=mv.id,
                               batch_id=batch.id, probability=0.4, threshold=0.5, flagged=False,
                               in_scope=False, scope_reason=f"atypical {EVIL}", created_at=now))
        session.add(EvaluationReport(model_version_id=mv.id, dataset=f"/data/{EVIL}", n=16,
                                     metrics={"auc": 1.0, "threshold": 0.5, "recall": 1.0,
                                              "specificity": 1.0},
                                     report_path=f"/reports/{EVIL}/report.html"))
        session.add(Run(inboxes={"inboxes": [str(folder / EVIL)]}, batch_id=batch.id,
                        started_at=now, status="error", error=f"broker {EVIL}"))
        return studies[0].id


@pytest.fixture
def hostile_env(tmp_path: Path) -> dict[str, str]:
    url = f"sqlite:///{tmp_path / 'hostile.sqlite3'}"
    _seed(url, tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCREEN_")}
    env.update(SCREEN_DATA_DIR=str(tmp_path / "data"), SCREEN_DATABASE_URL=url,
               SCREEN_CONFIG=str(tmp_path / "none.toml"), COLUMNS="200",
               FORCE_COLOR="1", TERM="xterm-256color")  # styles on, as on a terminal
    return env


def _assert_clean(out: str) -> None:
    # Styles are rendered as SGR sequences (ESC [ … m) under FORCE_COLOR; nothing else may be.
    bare = re.sub(r"\x1b\[[0-9;]*m", "", out)
    assert not RAW_CONTROL.search(bare), repr(bare[:2000])
    assert "]8;" not in out, "a hyperlink escape was rendered"
    assert "\x1b[5m" not in out, "blink was rendered"


@pytest.mark.parametrize("command", [
    ["status"], ["studies"], ["flagged"], ["flagged", "--by", "study"],
    ["flagged", "--format", "csv"], ["runs"], ["reports"], ["models"], ["exports"],
    ["status", "1"], ["studies", "--format", "json"],
])
def test_every_listing_prints_hostile_values_as_text(hostile_env: dict[str, str],
                                                     command: list[str]) -> None:
    out = run_screen(hostile_env, *command, timeout=120)
    assert out.returncode == 0, out.stderr
    _assert_clean(out.stdout)
    _assert_clean(out.stderr)
    if command in (["studies"], ["flagged"]):
        flat = re.sub(r"\x1b\[[0-9;]*m", "", out.stdout)
        assert "[blink]HIP[/blink]" in re.sub(r"\s*│\s*", "", flat) or "[blink]" in flat


def test_errors_quote_hostile_paths_as_text(hostile_env: dict[str, str], tmp_path: Path) -> None:
    # The study's file is gone: the error names its path.
    out = run_screen(hostile_env, "heatmap", "1", timeout=300)
    assert out.returncode != 0
    _assert_clean(out.stdout + out.stderr)
    missing = tmp_path / f"gone{EVIL}"
    out = run_screen(hostile_env, "submit", str(missing), timeout=120)
    assert out.returncode == 1 and "[blink]HIP[/blink]" in out.stderr
    _assert_clean(out.stderr)


def test_inspect_a_hostile_file_name(hostile_env: dict[str, str], tmp_path: Path) -> None:
    hostile = tmp_path / f"notes[blink]HIP{TITLE}.txt"  # a file name holds no "/"
    hostile.write_text("not an image")
    out = run_screen(hostile_env, "inspect", str(hostile), timeout=120)
    assert out.returncode == 1  # "failed" is an exit status too
    assert "failed" in out.stdout and "[blink]HIP" in out.stdout
    _assert_clean(out.stdout + out.stderr)
