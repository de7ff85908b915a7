"""Heatmaps and the intended-use guard through the real commands, on the bundled model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from ingest_factories import chest_like, make_ds, write
from live import make_pngs
from PIL import Image
from typer.testing import CliRunner

from pneumoscreen.db import Heatmap, Prediction, session_scope
from pneumoscreen.worker.cli import app
from pneumoscreen.worker.settings import get_settings

runner = CliRunner()


@pytest.fixture
def screened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """An adult DICOM and two PNGs, screened with a heatmap for every prediction."""
    monkeypatch.setenv("SCREEN_HEATMAPS", "all")
    get_settings.cache_clear()
    folder = tmp_path / "in"
    make_pngs(folder, 2, size=96)
    write(make_ds(chest_like(128, 128, maximum=4095), PatientAge="054Y"), folder / "adult.dcm")
    out = runner.invoke(app, ["submit", str(folder)])
    assert out.exit_code == 0, out.output
    rows = json.loads(runner.invoke(app, ["studies", "--format", "json"]).stdout)
    return {Path(r["path"]).name: r for r in rows}


def test_every_prediction_carries_a_scope_verdict(screened: dict) -> None:
    adult = screened["adult.dcm"]
    assert adult["status"] == "done" and adult["in_scope"] is False
    assert adult["scope_reason"].startswith("outside the validated population: age 054Y")
    for name, row in screened.items():
        assert {"in_scope", "scope_reason", "atypicality", "p_viral"} <= row.keys(), name
        assert row["atypicality"] is not None  # the bundled model has the image score


def test_outside_scope_is_on_the_reading_list_and_counted(screened: dict) -> None:
    listed = json.loads(runner.invoke(app, ["flagged", "--format", "json",
                                            "--outside-scope"]).stdout)
    adult = [r for r in listed if r["study_id"] == screened["adult.dcm"]["study_id"]]
    assert adult and adult[0]["in_scope"] is False and "scope_reason" in adult[0]
    table = runner.invoke(app, ["flagged"]).stdout
    assert "outside the validated scope" in " ".join(table.split())
    counts = json.loads(runner.invoke(app, ["status", "--format", "json"]).stdout)["counts"]
    assert counts["outside_scope"] >= 1


def test_heatmaps_are_stored_and_drawn(screened: dict, tmp_path: Path) -> None:
    with session_scope(get_settings().effective_database_url) as session:
        n_pred = session.scalar(sa.select(sa.func.count()).select_from(Prediction))
        maps = session.scalars(sa.select(Heatmap)).all()
        assert n_pred == 3 and len(maps) == 3
        assert all(len(m.data) == m.height * m.width * 2 for m in maps)  # float16
    out = tmp_path / "map.png"
    res = runner.invoke(app, ["heatmap", str(screened["adult.dcm"]["study_id"]), "--out",
                              str(out), "--size", "256"])
    assert res.exit_code == 0, res.output
    assert "map stored" in res.stdout
    with Image.open(out) as im:
        assert im.size == (256, 256) and im.mode == "RGB"


def test_heatmap_of_an_unknown_or_unscreened_image_is_a_clear_error(tmp_path: Path) -> None:
    assert runner.invoke(app, ["resume"]).exit_code == 0  # a database, with no image
    res = runner.invoke(app, ["heatmap", "999"])
    assert res.exit_code == 1 and "no such image: 999" in " ".join(res.output.split())


def test_predict_json_fields_and_heatmap_folder(tmp_path: Path) -> None:
    files = make_pngs(tmp_path / "in", 2, size=96)
    res = runner.invoke(app, ["predict", *map(str, files), "--heatmap", str(tmp_path / "hm"),
                              "--format", "json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    for r in out["results"]:
        assert {"probability", "threshold", "flagged", "p_viral", "in_scope", "scope_reason",
                "atypicality"} <= r.keys()
        assert r["in_scope"] == (r["scope_reason"] is None)
        assert Path(r["heatmap"]).is_file()
    assert len(list((tmp_path / "hm").glob("*.png"))) == 2


def test_no_heatmaps_when_switched_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCREEN_HEATMAPS", "none")
    get_settings.cache_clear()
    make_pngs(tmp_path / "in", 2, size=96, seed=5)
    assert runner.invoke(app, ["submit", str(tmp_path / "in")]).exit_code == 0
    with session_scope(get_settings().effective_database_url) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Heatmap)) == 0
