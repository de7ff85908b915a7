"""``screen inspect`` and ``screen bench decode`` (worker/cli/ingest_cmds.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ingest_factories import PATIENT_ID, chest_like, make_ds, write
from PIL import Image
from pydicom.uid import JPEG2000Lossless
from typer.testing import CliRunner

from pneumoscreen.worker.cli import app

runner = CliRunner()


@pytest.fixture
def chest(tmp_path: Path) -> Path:
    base = chest_like(300, 280, maximum=4095)
    ds = make_ds(base, bits_stored=12, photometric="MONOCHROME1", WindowCenter=2048,
                 WindowWidth=4096)
    ds.compress(JPEG2000Lossless, base)
    return write(ds, tmp_path / "chest.dcm")


class TestInspect:
    def test_json_shows_tags_decision_steps(self, chest: Path, tmp_path: Path) -> None:
        out = tmp_path / "net.png"
        res = runner.invoke(app, ["inspect", str(chest), "--png", str(out), "--format", "json"])
        assert res.exit_code == 0, res.output
        data = json.loads(res.stdout)
        assert data["decision"] == "done" and data["reason"] is None
        assert data["tags"]["PhotometricInterpretation"] == "MONOCHROME1"
        assert data["tags"]["TransferSyntaxUID"].startswith("1.2.840.10008.1.2.4.90")
        assert "MONOCHROME1 inverted" in data["steps"]
        assert "PatientID" not in data["tags"] and PATIENT_ID not in res.stdout
        with Image.open(out) as im:
            assert im.mode == "L" and im.size[0] == im.size[1]
            assert np.asarray(im).std() > 10

    def test_png_is_the_configured_models_input_size(self, chest: Path, tmp_path: Path) -> None:
        from pneumoscreen.model.bundle import bundled_model_path, read_spec

        out = tmp_path / "net.png"
        assert runner.invoke(app, ["inspect", str(chest), "--png", str(out)]).exit_code == 0
        size = read_spec(bundled_model_path()).input_size
        with Image.open(out) as im:
            assert im.size == (size, size)

    def test_png_with_an_unreadable_model_is_an_error_not_a_guess(
            self, chest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """No silent fall-back to a default input size when the model's sidecar is missing."""
        from pneumoscreen.worker.settings import get_settings

        monkeypatch.setenv("SCREEN_MODEL_PATH", str(tmp_path / "missing.keras"))
        get_settings.cache_clear()
        out = tmp_path / "net.png"
        res = runner.invoke(app, ["inspect", str(chest), "--png", str(out)])
        assert res.exit_code == 1 and not out.exists()
        assert "cannot read the model's input size" in " ".join(res.output.split())

    def test_rejected_file_shows_the_reason(self, tmp_path: Path) -> None:
        path = write(make_ds(chest_like(), modality="CT"), tmp_path / "ct.dcm")
        res = runner.invoke(app, ["inspect", str(path)])
        assert res.exit_code == 0, res.output
        assert "rejected: Modality CT is not screened (accepted: CR, DX)" in res.stdout
        assert "Tags used" in res.stdout

    def test_png_of_a_rejected_file_is_an_error(self, tmp_path: Path) -> None:
        path = write(make_ds(chest_like(), modality="CT"), tmp_path / "ct.dcm")
        res = runner.invoke(app, ["inspect", str(path), "--png", str(tmp_path / "x.png")])
        assert res.exit_code == 1 and not (tmp_path / "x.png").exists()


class TestBenchDecode:
    def test_json_full_versus_reduced(
        self, chest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from pneumoscreen.worker.settings import get_settings

        monkeypatch.setenv("SCREEN_REDUCED_MIN_SIDE", "140")
        get_settings.cache_clear()
        (tmp_path / "notes.txt").write_text("not an image")
        res = runner.invoke(app, ["bench", "decode", str(tmp_path), "--repeat", "1",
                                  "--format", "json"])
        assert res.exit_code == 0, res.output
        data = json.loads(res.stdout)
        row = next(r for r in data["files"] if r["file"] == "chest.dcm")
        assert row["full_shape"] == [300, 280] and row["reduced_shape"] == [150, 140]
        assert row["full_ms"] > 0 and row["reduced_ms"] > 0
        assert row["speedup"] == pytest.approx(row["full_ms"] / row["reduced_ms"], rel=0.05)
        failed = next(r for r in data["files"] if r["file"] == "notes.txt")
        assert failed["error"] == "failed: not a DICOM, PNG or JPEG file"
        assert data["summary"]["timed"] == 1

    def test_missing_folder(self, tmp_path: Path) -> None:
        res = runner.invoke(app, ["bench", "decode", str(tmp_path / "nope")])
        assert res.exit_code != 0
