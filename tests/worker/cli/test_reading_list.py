"""What the reading list shows, and how it says so (issue 21, items 2, 4, 5): the default
model's prediction of each image, the model named in every row; `--model` takes every name the
tool prints for a model and lists the choices for any other; `--limit` cuts each section on its
own and says what it left out. Through the real entry point, on a database seeded as two models
would leave it (no TensorFlow needed)."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest
from bundled_default import CNN_S_LABEL, CNN_S_VERSION, DEFAULT_LABEL, DEFAULT_VERSION
from live import run_screen

from pneumoscreen import db
from pneumoscreen.model.names import BUNDLED, DEFAULT_BUNDLED, bundled_dir

DEFAULT_FILE = Path(BUNDLED[DEFAULT_BUNDLED]).stem


def _sidecar(name: str) -> dict:
    return json.loads((bundled_dir() / f"{name}.json").read_text())


@pytest.fixture
def seeded(tmp_path: Path) -> dict[str, str]:
    """The default model and cnn-s both read four images. cnn-s flags 1, 2 and 3; the default
    flags 2 and 4 and finds 3 outside its scope."""
    url = f"sqlite:///{tmp_path / 'x.sqlite3'}"
    now = dt.datetime.now(dt.timezone.utc)
    verdicts = {DEFAULT_FILE: [(0.2, False, True), (0.9, True, True), (0.5, False, False),
                               (0.8, True, True)],
                "pneumoscreen-cnn": [(0.99, True, True), (0.95, True, True), (0.99, True, True),
                                     (0.1, False, True)]}
    with db.session_scope(url) as session:
        images = [db.Image(sha256=f"{i:064d}", source_path=f"/in/film{i}.png", format="png",
                           status=db.ImageStatus.done, finished_at=now) for i in range(1, 5)]
        session.add_all(images)
        for name, rows in verdicts.items():
            side = _sidecar(name)
            mv = db.ModelVersion(name=side["name"], version=side["version"],
                                 file_sha256=side["sha256"], input_spec={}, threshold=0.5,
                                 target_recall=0.95, trained=True, sidecar={})
            session.add(mv)
            session.flush()
            for image, (p, flagged, in_scope) in zip(images, rows, strict=True):
                session.add(db.Prediction(image_id=image.id, model_version_id=mv.id,
                                          probability=p, threshold=0.5, flagged=flagged,
                                          in_scope=in_scope, created_at=now,
                                          scope_reason=None if in_scope else "atypical image"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCREEN_")}
    env.update(SCREEN_DATA_DIR=str(tmp_path / "data"), SCREEN_DATABASE_URL=url,
               SCREEN_CONFIG=str(tmp_path / "x.toml"), COLUMNS="200")
    return env


def _flagged(env: dict[str, str], *args: str) -> list[dict]:
    out = run_screen(env, "flagged", "--format", "json", *args, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_the_default_models_predictions_show(seeded: dict[str, str]) -> None:
    rows = _flagged(seeded, "--outside-scope")
    assert [(r["study_id"], r["model"]) for r in rows] == [
        (2, DEFAULT_LABEL), (4, DEFAULT_LABEL), (3, DEFAULT_LABEL)]  # 3: outside, last
    table = run_screen(seeded, "flagged", timeout=120).stdout
    # the model in every row
    assert table.count(DEFAULT_VERSION) == 3 and CNN_S_VERSION not in table
    status = json.loads(run_screen(seeded, "status", "--format", "json", timeout=120).stdout)
    assert status["counts"]["flagged"] == 2 and status["counts"]["outside_scope"] == 1


@pytest.mark.parametrize("name", [CNN_S_LABEL, CNN_S_VERSION, "2", "bundled:cnn-s"])
def test_every_printed_name_of_a_model_works(seeded: dict[str, str], name: str) -> None:
    rows = _flagged(seeded, "--model", name)
    assert [r["study_id"] for r in rows] == [1, 3, 2]
    assert {r["model"] for r in rows} == {CNN_S_LABEL}


@pytest.mark.parametrize("name", ["nonsense", "bundled:v9", "3.0.0"])
def test_any_other_name_lists_the_choices(seeded: dict[str, str], name: str) -> None:
    out = run_screen(seeded, "flagged", "--model", name, timeout=120)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [
        f"error: --model {name!r} is no model version that screened here; choose an id or "
        f"label: 1 ({DEFAULT_LABEL}), 2 ({CNN_S_LABEL}) (or a model file, or "
        "bundled:NAME)"]


def test_a_cut_list_says_what_it_left_out(seeded: dict[str, str]) -> None:
    out = run_screen(seeded, "flagged", "--limit", "1", timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Needs a human read" in out.stdout and "film3.png" in out.stdout  # never dropped
    assert "film2.png" in out.stdout and "film4.png" not in out.stdout
    assert out.stdout.strip().splitlines()[-1] == (
        "--limit 1: 1 more flagged images not shown (raise --limit to see them)")
    as_json = run_screen(seeded, "flagged", "--limit", "1", "--format", "json", timeout=120)
    assert len(json.loads(as_json.stdout)) == 1  # stdout stays the document
    assert "1 more flagged images not shown" in as_json.stderr
