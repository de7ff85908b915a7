"""`screen rescreen`: another model version adds its predictions; the earlier ones stay."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from bundled_default import DEFAULT_LABEL
from live import bundled_model_copy, make_pngs
from typer.testing import CliRunner

from pneumoscreen.db import Image, ImageStatus, ModelVersion, Prediction, session_scope
from pneumoscreen.worker.cli import app
from pneumoscreen.worker.settings import get_settings


def allow_models_in(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCREEN_MODEL_DIRS", json.dumps([str(folder)]))
    get_settings.cache_clear()


def other_model(folder: Path, version: str = "0.0.2-test") -> Path:
    return bundled_model_copy(folder, version)


def _predictions() -> list[tuple[int, int, str]]:
    with session_scope(get_settings().effective_database_url) as session:
        return [tuple(r) for r in session.execute(
            sa.select(Prediction.id, Prediction.image_id, ModelVersion.version)
            .join(ModelVersion).order_by(Prediction.id))]


def test_rescreen_adds_a_version_and_keeps_the_first(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    allow_models_in(tmp_path, monkeypatch)
    runner = CliRunner()
    make_pngs(tmp_path / "in", 4, size=64)
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    assert runner.invoke(app, ["submit", str(tmp_path / "in")]).exit_code == 0
    before = _predictions()
    assert len(before) == 4

    model = other_model(tmp_path)
    out = runner.invoke(app, ["rescreen", "--model", str(model)])
    assert out.exit_code == 0, out.output
    assert "Screened 4 images" in out.stdout  # done ones only: the broken file stays failed
    # The lists keep the default model's predictions, and the command says so (issue 21).
    assert (f"The lists keep showing the default model's predictions ({DEFAULT_LABEL}); "
            "this model's: `screen flagged --model ") in " ".join(out.stdout.split())
    after = _predictions()
    assert after[:4] == before  # untouched
    assert sorted(s for _, s, v in after if v == "0.0.2-test") == sorted(s for _, s, _ in before)
    with session_scope(get_settings().effective_database_url) as session:
        statuses = sorted(s.value for s in session.scalars(sa.select(Image.status)))
        mv = session.scalars(sa.select(ModelVersion)
                             .where(ModelVersion.version == "0.0.2-test")).one()
        assert mv.sidecar["path"] == str(model.resolve())
    assert statuses == [ImageStatus.done.value] * 4 + [ImageStatus.failed.value]

    # By version now that it is known; nothing left to do for it.
    again = runner.invoke(app, ["rescreen", "--model", "0.0.2-test"])
    assert again.exit_code == 0 and "Screened 0 images" in again.stdout
    assert _predictions() == after
    newest = runner.invoke(app, ["flagged", "--format", "json", "--model", "0.0.2-test"])
    assert newest.exit_code == 0


def test_unknown_model_is_a_clear_error(tmp_path: Path) -> None:
    out = CliRunner().invoke(app, ["rescreen", "--model", "9.9.9"])
    assert out.exit_code == 1
    assert "neither a model file nor a known model version" in " ".join(out.output.split())
