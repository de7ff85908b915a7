"""The queue's tasks: the settings an eager task runs on."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_an_eager_task_screens_in_the_callers_database(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """submit_folder(settings=S) with no broker screens against S's database, not the one the
    process settings (the environment) name."""
    import sqlalchemy as sa
    from live import make_pngs

    from pneumoscreen.db import Image, session_scope
    from pneumoscreen.worker.intake.submit import submit_folder
    from pneumoscreen.worker.settings import Settings, get_settings

    make_pngs(tmp_path / "in", 3, size=48)
    mine = f"sqlite:///{tmp_path / 'mine.sqlite3'}"
    monkeypatch.setenv("SCREEN_DATABASE_URL", f"sqlite:///{tmp_path / 'process.sqlite3'}")
    get_settings.cache_clear()
    result = submit_folder(tmp_path / "in", settings=Settings(database_url=mine))
    assert result.n_new == 3
    with session_scope(mine) as session:
        statuses = [s.value for s in session.scalars(sa.select(Image.status))]
    assert statuses == ["done"] * 3
    with session_scope(get_settings().effective_database_url) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Image)) == 0
