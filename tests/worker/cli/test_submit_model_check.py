"""A wrong model at `screen submit` is one clear line and registers nothing; a later submit
screens whatever earlier runs left queued."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from live import free_port, run_screen, screen_env
from typer.testing import CliRunner

from pneumoscreen.worker.cli import app
from pneumoscreen.worker.intake.submit import submit_folder
from pneumoscreen.worker.queue.publish import BrokerUnavailable
from pneumoscreen.worker.settings import get_settings

SAMPLES = Path(__file__).resolve().parents[3] / "samples"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    out = tmp_path / "in"
    out.mkdir()
    for name in ("chest_export.png", "cr_chest_jpeg_baseline.dcm"):
        shutil.copy(SAMPLES / name, out / name)
    return out


def _bad_models(tmp_path: Path) -> dict[str, Path]:
    from pneumoscreen.model.bundle import bundled_model_path, sidecar_path

    missing = tmp_path / "nope.keras"
    no_sidecar = tmp_path / "alone.keras"
    shutil.copy(bundled_model_path(), no_sidecar)
    swapped = tmp_path / "swapped.keras"
    swapped.write_bytes(b"PK\x05\x06" + b"\0" * 18)  # an empty zip, not the file the sidecar hashed
    shutil.copy(sidecar_path(bundled_model_path()), sidecar_path(swapped))
    return {"does not exist": missing, "sidecar": no_sidecar, "sha256": swapped}


@pytest.mark.slow
def test_wrong_model_is_one_line_and_registers_nothing(tmp_path: Path, folder: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    db = f"sqlite:///{tmp_path / 'cli.sqlite3'}"
    bad = _bad_models(tmp_path)

    def submit_with(model: Path) -> object:
        # A wide console: the one line must not be wrapped by Rich's 80-column default.
        env = screen_env(data_dir=tmp_path / "data", database_url=db, broker_url="",
                         SCREEN_MODEL_PATH=str(model), COLUMNS="400")
        return run_screen(env, "submit", str(folder))

    with ThreadPoolExecutor(max_workers=len(bad)) as pool:  # side by side: each is refused
        outs = dict(zip(bad, pool.map(submit_with, bad.values()), strict=True))
    for expected, out in outs.items():
        assert out.returncode == 1, out.stderr
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], lines
        assert "Traceback" not in out.stdout + out.stderr
    # Corrected to a good model (the small bundled one: any good model makes the point).
    env = screen_env(data_dir=tmp_path / "data", database_url=db, broker_url="",
                     SCREEN_MODEL_PATH="bundled:cnn-s")
    status = json.loads(run_screen(env, "status", "--format", "json").stdout)
    assert status["counts"]["total"] == 0
    good = run_screen(env, "submit", str(folder))  # the corrected submit screens them all
    assert good.returncode == 0, good.stderr
    assert "2 new studies" in good.stdout
    status = json.loads(run_screen(env, "status", "--format", "json").stdout)
    assert status["counts"]["done"] == 2


def test_a_later_submit_screens_what_is_still_queued(folder: Path) -> None:
    settings = get_settings()
    down = settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{free_port()}/0",
                                       "patient_key": settings.effective_patient_key().decode()})
    with pytest.raises(BrokerUnavailable):
        submit_folder(folder, settings=down)  # registered, never sent
    again = CliRunner().invoke(app, ["submit", str(folder)])
    assert again.exit_code == 0, again.output
    text = " ".join(again.stdout.split())
    assert "0 new studies" in text and "2 already registered" in text
    assert "Also screened 2 studies left waiting by earlier runs." in text
    assert "Nothing new" not in text
    from pneumoscreen.db import session_scope
    from pneumoscreen.db.queries import status_counts

    with session_scope(settings.effective_database_url) as s:
        assert status_counts(session=s)["done"] == 2
