"""`--format csv` never hands a spreadsheet a formula: text cells starting with = + - @ tab or
CR get a leading ' (issue 21, item 11). Through the real entry point."""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
from pathlib import Path

import pytest
from live import run_screen

from pneumoscreen.db import session_scope
from pneumoscreen.worker.cli.output import csv_cell

FORMULAS = ['=HYPERLINK("http://evil.example","x")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx"]


@pytest.mark.parametrize("value", FORMULAS)
def test_formula_cells_are_neutralised(value: str) -> None:
    assert csv_cell(value).startswith("'")


def test_other_cells_are_kept() -> None:
    assert csv_cell("/data/in/film.png") == "/data/in/film.png"
    assert csv_cell("CR") == "CR" and csv_cell("") == ""


def test_flagged_csv(tmp_path: Path) -> None:
    from pneumoscreen import db

    url = f"sqlite:///{tmp_path / 'x.sqlite3'}"
    now = dt.datetime.now(dt.timezone.utc)
    with session_scope(url) as session:
        mv = db.ModelVersion(name="m", version="1", file_sha256="f" * 64, input_spec={},
                             threshold=0.5, target_recall=0.95, trained=True, sidecar={})
        session.add(mv)
        session.flush()
        image = db.Image(sha256="0" * 64, source_path="/in/a.png", format="dicom",
                          status=db.ImageStatus.done, modality=FORMULAS[0],
                          view_position="@PA", finished_at=now)
        session.add(image)
        session.flush()
        session.add(db.Prediction(image_id=image.id, model_version_id=mv.id, probability=0.9,
                                  threshold=0.5, flagged=True, in_scope=True, created_at=now))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCREEN_")}
    env.update(SCREEN_DATA_DIR=str(tmp_path / "data"), SCREEN_DATABASE_URL=url,
               SCREEN_CONFIG=str(tmp_path / "none.toml"))
    out = run_screen(env, "flagged", "--format", "csv", timeout=120)
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert rows and rows[0]["modality"] == "'" + FORMULAS[0] and rows[0]["view"] == "'@PA"
    assert rows[0]["probability"].startswith("0.9")
