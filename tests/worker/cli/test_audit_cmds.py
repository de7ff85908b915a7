"""`screen audit`: operator actions with user and host, no patient data."""

from __future__ import annotations

import getpass
import json
from pathlib import Path

from bundled_default import CNN_S_LABEL, DEFAULT_LABEL
from live import bundled_model_copy, make_pngs
from typer.testing import CliRunner

from pneumoscreen.worker.cli import app
from pneumoscreen.worker.settings import get_settings

runner = CliRunner()


def test_submit_rescreen_resume_and_registration_are_audited(
        tmp_path: Path, monkeypatch: object) -> None:
    models = tmp_path / "models"
    models.mkdir()
    monkeypatch.setenv("SCREEN_MODEL_DIRS", json.dumps([str(models)]))  # type: ignore[attr-defined]
    get_settings.cache_clear()
    make_pngs(tmp_path / "in", 2, size=48)
    assert runner.invoke(app, ["submit", str(tmp_path / "in")]).exit_code == 0
    model = bundled_model_copy(models, "7.7.7")
    assert runner.invoke(app, ["models", "register", str(model)]).exit_code == 0
    assert runner.invoke(app, ["rescreen", "--model", "7.7.7"]).exit_code == 0
    assert runner.invoke(app, ["resume"]).exit_code == 0

    out = runner.invoke(app, ["audit", "--format", "json"])
    assert out.exit_code == 0, out.output
    events = json.loads(out.stdout)
    actions = [e["action"] for e in events]
    assert actions == ["key.first_use", "submit", "model.register", "rescreen", "resume"]
    assert all(e["os_user"] == getpass.getuser() and e["host"] for e in events)
    submit = events[1]["params"]
    assert submit["new"] == 2 and submit["folder"] == str((tmp_path / "in").resolve())
    assert events[2]["params"]["path"] == str(model.resolve())

    only = json.loads(runner.invoke(app, ["audit", "--action", "rescreen", "--format",
                                          "json"]).stdout)
    assert [e["action"] for e in only] == ["rescreen"]
    table = runner.invoke(app, ["audit", "--since", "1h"])
    assert table.exit_code == 0 and "model.register" in table.stdout
    bad = runner.invoke(app, ["audit", "--since", "yesterday-ish"])
    assert bad.exit_code == 2 and "--since" in bad.output


def test_a_worker_starting_with_another_default_model_audits_it() -> None:
    from pneumoscreen.worker.queue.startup import warm
    from pneumoscreen.worker.settings import Settings

    warm(Settings(model_path="bundled:cnn-s"))
    warm(Settings(model_path="bundled:cnn-s"))  # the same default: no new event
    warm(Settings())
    events = json.loads(runner.invoke(app, ["audit", "--action", "model.default", "--format",
                                            "json"]).stdout)
    assert [e["params"]["label"] for e in events] == [CNN_S_LABEL, DEFAULT_LABEL]
