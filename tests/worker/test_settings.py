"""Settings come from the environment, then the config file, then the embedded defaults."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pneumoscreen.worker.cli import app
from pneumoscreen.worker.settings import Settings, get_settings


def test_embedded_defaults(isolated_settings: Path) -> None:
    s = Settings()
    assert s.eager and s.broker_url is None
    assert s.effective_database_url == f"sqlite:///{isolated_settings / 'pneumoscreen.sqlite3'}"
    assert s.model_path is None and (s.task_size, s.chunk_size) == (128, 32)


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = Path(os.environ["SCREEN_CONFIG"])
    cfg.write_text('task_size = 8\nbroker_url = "redis://127.0.0.1:6379/3"\n')
    assert Settings().task_size == 8
    assert not Settings().eager
    monkeypatch.setenv("SCREEN_TASK_SIZE", "16")
    assert Settings().task_size == 16


def test_blank_broker_means_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCREEN_BROKER_URL", " ")
    assert Settings().eager


def test_bad_value_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCREEN_TASK_SIZE", "zero")
    with pytest.raises(ValueError, match="task_size"):
        Settings()


def test_patient_key_generated_once_and_private(isolated_settings: Path) -> None:
    s = Settings()
    key = s.effective_patient_key()
    assert len(key) == 64 and s.effective_patient_key() == key
    assert (isolated_settings / "patient.key").stat().st_mode & 0o077 == 0


def test_screen_config_masks_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCREEN_DATABASE_URL", "postgresql+psycopg://screen:s3cret@db:5432/screen")
    monkeypatch.setenv("SCREEN_BROKER_URL", "redis://:hunter2@redis:6379/0")
    monkeypatch.setenv("SCREEN_PATIENT_KEY", "topsecretkey")
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["config", "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert "s3cret" not in result.stdout and "hunter2" not in result.stdout
    assert "topsecretkey" not in result.stdout
    assert data["database_url"] == "postgresql+psycopg://screen:***@db:5432/screen"
    assert data["mode"] == "queue"


def test_ingestion_defaults_have_one_source() -> None:
    """Settings' decoder and policy defaults are ingestion's own (min_side was 512 vs 256)."""
    from pneumoscreen.worker.ingest import AcceptancePolicy, DecodeOptions

    config = Settings().ingest_config()
    assert config.decode == DecodeOptions()
    assert config.policy == AcceptancePolicy()


def test_defaults_restate_ingestions_own() -> None:
    """The settings restate ingestion's defaults (so reading them does not import pydicom)."""
    from pneumoscreen.worker.ingest import AcceptancePolicy, DecodeOptions

    s, policy, decode = Settings(), AcceptancePolicy(), DecodeOptions()
    assert AcceptancePolicy.of(
        modalities=s.accept_modalities, body_parts=s.accept_body_parts,
        reject_views=s.reject_view_positions, reject_intents=s.reject_presentation_intents,
        non_image_modalities=s.non_image_modalities) == policy
    # reduced_min_side 0 is "the model's input size", else ingestion's min_side
    assert s.reduced_min_side == 0 and s.ingest_config().decode == decode
    assert (s.max_pixels, s.reduced_resolution, s.decode_budget_mb << 20,
            tuple(s.window_percentiles)) == (decode.max_pixels, decode.reduced,
                                             decode.budget_bytes, decode.percentiles)


def test_the_listeners_default_sop_classes_are_pydicoms_cr_and_dx() -> None:
    from pneumoscreen.worker.receive.scp import CR_DX_STORAGE

    assert tuple(Settings().listen_sop_classes) == CR_DX_STORAGE
