"""A task names a registered model version by id; its file is verified before every load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from live import bundled_model_copy

from pneumoscreen.db import session_scope
from pneumoscreen.model.bundle import ModelFileError
from pneumoscreen.worker.intake.rescreen import register_model
from pneumoscreen.worker.screening.model_choice import registered_model
from pneumoscreen.worker.settings import Settings


@pytest.fixture
def models(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    return folder


def _register(path: Path, settings: Settings) -> int:
    with session_scope(settings.effective_database_url) as session:
        return register_model(path, session=session, settings=settings).id


def _load(version: int, settings: Settings) -> object:
    with session_scope(settings.effective_database_url) as session:
        return registered_model(version, settings, session=session)


def test_a_registered_version_loads(models: Path) -> None:
    settings = Settings(model_dirs=[models])
    version = _register(bundled_model_copy(models, "9.0.1"), settings)
    assert _load(version, settings).spec.version == "9.0.1"


def test_an_unknown_id_is_refused(models: Path) -> None:
    with pytest.raises(ModelFileError, match="model version 4242 is not registered"):
        _load(4242, Settings(model_dirs=[models]))


def test_registration_outside_the_model_folders_is_refused(tmp_path: Path) -> None:
    model = bundled_model_copy(tmp_path, "9.0.2")
    with pytest.raises(ModelFileError, match="outside the model folders"):
        _register(model, Settings(model_dirs=[tmp_path / "models"]))


def test_a_worker_without_the_folder_refuses_the_version(models: Path) -> None:
    version = _register(bundled_model_copy(models, "9.0.3"), Settings(model_dirs=[models]))
    with pytest.raises(ModelFileError, match="outside the model folders"):
        _load(version, Settings(model_dirs=[]))


def test_a_file_changed_since_registration_is_refused(models: Path) -> None:
    settings = Settings(model_dirs=[models])
    model = bundled_model_copy(models, "9.0.4")
    version = _register(model, settings)
    bundled_model_copy(models, "9.0.4-other")  # another file, sidecar restamped: sha256 differs
    with pytest.raises(ModelFileError, match="not the one recorded at registration"):
        _load(version, settings)


def test_a_sidecar_threshold_changed_since_registration_is_refused(models: Path) -> None:
    settings = Settings(model_dirs=[models])
    model = bundled_model_copy(models, "9.0.5")
    version = _register(model, settings)
    side = model.with_suffix(".json")
    data = json.loads(side.read_text())
    data["threshold"] = 0.999
    side.write_text(json.dumps(data))
    with pytest.raises(ModelFileError, match="threshold is not the one recorded"):
        _load(version, settings)
