"""Shared fixtures: isolated settings per test, SQLite and PostgreSQL URLs, the ../shared folder."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SCREEN_SHARED_DIR", REPO.parent / "shared"))
PG_ADMIN_URL = os.environ.get(
    "SCREEN_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


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


def _pg_available() -> bool:
    try:
        import sqlalchemy as sa

        with sa.create_engine(PG_ADMIN_URL).connect() as conn:
            conn.execute(sa.text("select 1"))
        return True
    except Exception:
        return False


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test, dropped afterwards."""
    import sqlalchemy as sa

    if not _pg_available():
        pytest.skip(f"PostgreSQL is not reachable at {PG_ADMIN_URL}")
    name = f"pneumoscreen_t_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        from pneumoscreen.db import reset_engines

        reset_engines()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Run a test on SQLite and again on the local PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.sqlite3'}"
    return request.getfixturevalue("pg_url")
