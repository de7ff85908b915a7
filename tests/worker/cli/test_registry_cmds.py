"""``screen models``: registered versions side by side, the default marked; registering one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pneumoscreen.model.bundle import bundled_model_path, model_file, read_spec
from pneumoscreen.model.names import DEFAULT_BUNDLED
from pneumoscreen.worker.cli import app
from pneumoscreen.worker.settings import get_settings

runner = CliRunner()


def test_list_marks_the_default_and_shows_the_sidecars_figures() -> None:
    for name in ("cnn-s", DEFAULT_BUNDLED):
        res = runner.invoke(app, ["models", "register", str(bundled_model_path(name))])
        assert res.exit_code == 0, res.output
        assert "registered" in res.stdout
    out = json.loads(runner.invoke(app, ["models", "--format", "json"]).stdout)
    rows = {r["version"]: r for r in out["models"]}
    default, cnn = read_spec(bundled_model_path()), read_spec(bundled_model_path("cnn-s"))
    assert rows[default.version]["default"] and not rows[cnn.version]["default"]
    assert rows[default.version]["architecture"] == default.extra["architecture"]["name"]
    assert rows[default.version]["auc"] == default.extra["metrics"]["internal-test"]["auc"]
    assert rows[cnn.version]["input_size"] == cnn.input_size
    table = runner.invoke(app, ["models"]).stdout
    assert "Model versions" in table and "yes" in table


def test_bundled_names_select_a_bundled_model(monkeypatch: pytest.MonkeyPatch) -> None:
    assert model_file("bundled:cnn-s") == bundled_model_path("cnn-s")
    assert model_file(None) == bundled_model_path()
    monkeypatch.setenv("SCREEN_MODEL_PATH", "bundled:cnn-s")
    get_settings.cache_clear()
    out = json.loads(runner.invoke(app, ["models", "--format", "json"]).stdout)
    assert out["default"]["path"] == str(bundled_model_path("cnn-s"))


def test_an_unknown_bundled_name_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCREEN_MODEL_PATH", "bundled:nope")
    get_settings.cache_clear()
    res = runner.invoke(app, ["models"])
    assert res.exit_code == 1 and "no bundled model 'nope'" in " ".join(res.output.split())


def test_register_refuses_a_swapped_file(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    monkeypatch.setenv("SCREEN_MODEL_DIRS", f'["{tmp_path}"]')
    get_settings.cache_clear()
    src = bundled_model_path("cnn-s")
    shutil.copy(src, tmp_path / "m.keras")
    shutil.copy(src.with_suffix(".json"), tmp_path / "m.json")
    with open(tmp_path / "m.keras", "ab") as fh:
        fh.write(b"tampered")
    res = runner.invoke(app, ["models", "register", str(tmp_path / "m.keras")])
    assert res.exit_code == 1 and "its sidecar says" in " ".join(res.output.split())
