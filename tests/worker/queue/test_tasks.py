"""The queue's tasks: GPU pinning per pool process, and the settings an eager task runs on."""

from __future__ import annotations

from pathlib import Path

import pytest

from pneumoscreen.worker.queue.tasks import pin_gpu


class TestPinGpu:
    def test_pool_process_i_sees_gpu_i(self) -> None:
        env: dict[str, str] = {}
        assert pin_gpu(1, env) == "1" and env["CUDA_VISIBLE_DEVICES"] == "1"

    def test_respects_the_workers_gpu_list(self) -> None:
        env = {"CUDA_VISIBLE_DEVICES": "2,3"}
        assert pin_gpu(1, env) == "3" and env["CUDA_VISIBLE_DEVICES"] == "3"

    def test_more_processes_than_gpus_is_an_error(self) -> None:
        with pytest.raises(RuntimeError, match="use --concurrency 2"):
            pin_gpu(2, {"CUDA_VISIBLE_DEVICES": "0,1"})


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
