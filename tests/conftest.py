"""Shared fixtures: isolated settings per test, SQLite and PostgreSQL URLs, the ../shared folder."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from live import fresh_pg_database
from orthanc import Orthanc, orthanc_server

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Tests never touch the user's own folders (~/.local/share/pneumoscreen holds a real database and
# patient key): HOME and the XDG folders point into a throw-away folder for the whole session,
# inherited by every `screen` subprocess. Each test still gets its own SCREEN_DATA_DIR.
REAL_HOME = Path.home()
SANDBOX_HOME = Path(tempfile.mkdtemp(prefix="pneumoscreen-test-home-"))
atexit.register(shutil.rmtree, SANDBOX_HOME, ignore_errors=True)
for _var, _sub in (("HOME", "."), ("XDG_DATA_HOME", ".local/share"),
                   ("XDG_CONFIG_HOME", ".config"), ("XDG_CACHE_HOME", ".cache"),
                   ("XDG_STATE_HOME", ".local/state")):
    os.environ[_var] = str(SANDBOX_HOME / _sub)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SCREEN_SHARED_DIR", REPO.parent / "shared"))


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own data dir and SQLite database and no broker, unless it says so."""
    from pneumoscreen.db import reset_engines
    from pneumoscreen.worker.settings import get_settings

    for key in list(os.environ):
        if key.startswith("SCREEN_") and key not in ("SCREEN_SHARED_DIR",):
            monkeypatch.delenv(key)
    data = tmp_path / "data"
    monkeypatch.setenv("SCREEN_DATA_DIR", str(data))
    monkeypatch.setenv("SCREEN_CONFIG", str(tmp_path / "config.toml"))
    get_settings.cache_clear()
    yield data
    get_settings.cache_clear()
    reset_engines()


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"../shared is absent ({SHARED}): it holds the DICOM files and training images")
    return SHARED


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    """A real Orthanc on free ports with its own storage, stopped afterwards (skips if absent)."""
    with orthanc_server(tmp_path / "orthanc") as server:
        yield server


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test, dropped afterwards."""
    with fresh_pg_database() as url:
        yield url


@pytest.fixture
def count_predict_calls(monkeypatch: pytest.MonkeyPatch) -> Callable[[Any], list[int]]:
    """Spy on a loaded model: the list of batch sizes its one model call (``predict``; also
    behind ``pneumonia_probabilities``) receives."""

    def install(model: Any) -> list[int]:
        calls: list[int] = []
        original = model.predict

        def counting(batch: Any) -> Any:
            calls.append(len(batch))
            return original(batch)

        monkeypatch.setattr(model, "predict", counting)
        return calls

    return install


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Run a test on SQLite and again on the local PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.sqlite3'}"
    return request.getfixturevalue("pg_url")
