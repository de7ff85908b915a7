"""Distillation (``screen train --distill-from``): the student learns from the teacher's
probabilities mixed with the labels, for both heads, through the real CLI path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from labelled_folders import labelled_tree
from typer.testing import CliRunner

SIZE = 32



def _app() -> typer.Typer:
    from pneumoscreen.worker.cli import model_cmds

    app = typer.Typer()
    model_cmds.register(app, typer.Typer())
    return app


def test_train_distils_the_bundled_ensemble(tmp_path: Path) -> None:
    """A 32-px student of the 224-px ``bundled:v2``: the teacher sees its own input size, its
    targets are saved, mixed with the labels at the given share, and kept in the sidecar's
    configuration so --resume distils the same way."""
    from pneumoscreen.model.dataset import load_arrays, split_from_manifest, subtype_labels
    from pneumoscreen.model.progress import Silent
    from pneumoscreen.model.train import TrainConfig, teacher_targets

    data = labelled_tree(tmp_path / "data")
    out = tmp_path / "run"
    result = CliRunner().invoke(_app(), [
        "train", str(data), "--arch", "cnn-xs", "--input-size", str(SIZE), "--epochs", "1",
        "--batch-size", "4", "--augment", "antishortcut", "--distill-from", "bundled:v2",
        "--distill-weight", "0.25", "--no-register", "--out", str(out)])
    assert result.exit_code == 0, result.output
    sidecar = json.loads((out / "model.json").read_text())
    config = sidecar["training"]["config"]
    assert config["distill_from"] == "bundled:v2" and config["distill_weight"] == 0.25
    assert config["augment"] == "antishortcut"

    teacher = np.load(out / "teacher.npz")
    cfg = TrainConfig.from_json(config)
    manifest = json.loads((out / "split_manifest.json").read_text())
    part = load_arrays(split_from_manifest(manifest, data / "train").train, SIZE)
    assert teacher["pneumonia"].shape == (len(part.y),) == teacher["viral"].shape
    assert ((teacher["pneumonia"] >= 0) & (teacher["pneumonia"] <= 1)).all()
    # The 224-px teacher on these made-up films is not the label: the mix is visible.
    soft = teacher_targets(cfg, part, Silent())
    np.testing.assert_allclose(soft["pneumonia"],
                               0.75 * part.y + 0.25 * teacher["pneumonia"], atol=1e-6)
    viral = np.maximum(subtype_labels(part.samples), 0)
    np.testing.assert_allclose(soft["viral"], 0.75 * viral + 0.25 * teacher["viral"],
                               atol=1e-6)
    assert not np.allclose(soft["pneumonia"], part.y)


def test_a_teacher_without_a_subtype_head_fails_in_one_line(tmp_path: Path) -> None:
    """``cnn-s`` has no viral output: distilling it fails clearly, before any training."""
    data = labelled_tree(tmp_path / "data")
    result = CliRunner().invoke(_app(), [
        "train", str(data), "--arch", "cnn-xs", "--input-size", str(SIZE), "--epochs", "1",
        "--distill-from", "bundled:cnn-s", "--no-register", "--out", str(tmp_path / "run")])
    assert result.exit_code != 0
    assert "no viral output" in result.output
    assert not (tmp_path / "run" / "model.keras").exists()


def test_distill_weight_must_be_a_share(tmp_path: Path) -> None:
    from pneumoscreen.model.progress import Silent
    from pneumoscreen.model.train import TrainConfig, teacher_targets

    cfg = TrainConfig(data_dir=tmp_path, out_dir=tmp_path, distill_from="bundled:v2",
                      distill_weight=1.5)
    with pytest.raises(ValueError, match="distill-weight"):
        teacher_targets(cfg, None, Silent())  # type: ignore[arg-type]
