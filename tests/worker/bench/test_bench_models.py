"""``screen bench models``: the model call of several models in one run, in turns."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from pneumoscreen.worker.cli import app


def test_each_model_is_timed_on_its_own_input_size(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from pneumoscreen.model.bundle import LoadedModel

    sizes: list[int] = []
    real = LoadedModel.pneumonia_probabilities

    def counting(self: LoadedModel, batch):  # type: ignore[no-untyped-def]
        sizes.append(batch.shape[1])
        return real(self, batch)

    monkeypatch.setattr(LoadedModel, "pneumonia_probabilities", counting)
    res = CliRunner().invoke(app, ["bench", "models", "bundled:cnn-s", "bundled:cnn-s",
                                   "--studies", "8", "--chunk", "4", "--rounds", "2",
                                   "--format", "json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)["models"]
    assert [r["model"] for r in rows] == ["bundled:cnn-s", "bundled:cnn-s"]
    assert all(r["model_only_per_s"] > 0 and r["input_size"] == 96 for r in rows)
    # one warm-up call each, then 2 rounds x 1 call x 2 models
    assert sizes == [96] * (2 + 2 * 1 * 2)


def test_an_unknown_model_is_one_clear_line() -> None:
    res = CliRunner().invoke(app, ["bench", "models", "bundled:nope"])
    assert res.exit_code == 1 and "no bundled model 'nope'" in " ".join(res.output.split())
