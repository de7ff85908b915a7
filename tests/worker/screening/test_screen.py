"""One task's screening: claim, decode, one model call per chunk, record; bad files fail alone."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import pytest
import sqlalchemy as sa
from live import make_pngs

from pneumoscreen.db import Image, ImageStatus, ModelVersion, Prediction, session_scope
from pneumoscreen.model import load_model
from pneumoscreen.worker.intake import submit as submit_mod
from pneumoscreen.worker.intake.submit import submit_folder
from pneumoscreen.worker.screening.screen import screen_images
from pneumoscreen.worker.settings import get_settings


def _states(url: str) -> dict[str, tuple[str, str | None]]:
    with session_scope(url) as s:
        return {Path(st.source_path).name: (st.status.value, st.reason)
                for st in s.scalars(sa.select(Image))}


class TestScreenTask:
    @pytest.fixture(autouse=True)
    def _no_enqueue(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Register without screening, as if a broker had taken the tasks."""
        monkeypatch.setattr(submit_mod, "enqueue", lambda result, **kw: None)

    def _register(self, folder: Path, settings) -> list[int]:  # type: ignore[no-untyped-def]
        return submit_folder(folder, settings=settings).queued_ids

    def test_one_model_call_per_chunk_and_bad_files_fail_alone(
        self, tmp_path: Path, count_predict_calls: Callable[[Any], list[int]]
    ) -> None:
        settings = get_settings()
        folder = tmp_path / "in"
        folder.mkdir()
        rng = np.random.default_rng(0)
        for i in range(4):
            grey = rng.integers(0, 255, (64, 80), np.uint8)
            PIL.Image.fromarray(grey).save(folder / f"ok{i}.png")
        good = (folder / "ok0.png").read_bytes()
        (folder / "truncated.png").write_bytes(good[:60])
        (folder / "empty.jpg").write_bytes(b"\xff\xd8\xff")
        ids = self._register(folder, settings)  # a file may already fail on its header
        assert 4 <= len(ids) <= 6

        model = load_model()
        calls = count_predict_calls(model)
        outcome = screen_images(ids, settings, model=model)
        assert calls == [4]
        assert (outcome.screened, outcome.failed) == (4, len(ids) - 4)
        states = _states(settings.effective_database_url)
        assert states["truncated.png"][0] == "failed" and states["truncated.png"][1]
        assert states["empty.jpg"][0] == "failed"
        assert all(states[f"ok{i}.png"][0] == "done" for i in range(4))

    def test_running_a_task_twice_screens_nothing_twice(self, tmp_path: Path) -> None:
        settings = get_settings()
        folder = tmp_path / "in"
        folder.mkdir()
        for i in range(3):
            PIL.Image.fromarray(np.full((32, 32), 40 * i, np.uint8)).save(folder / f"{i}.png")
        ids = self._register(folder, settings)
        first = screen_images(ids, settings)
        second = screen_images(ids, settings)  # a redelivered task
        assert first.screened == 3 and second.screened == 0 and second.already_done == 3
        with session_scope(settings.effective_database_url) as s:
            assert s.scalar(sa.select(sa.func.count()).select_from(Prediction)) == 3
            mv = s.scalars(sa.select(ModelVersion)).one()
            assert mv.file_sha256 == load_model().spec.sha256

    def test_flag_follows_the_threshold(self, tmp_path: Path) -> None:
        settings = get_settings()
        folder = tmp_path / "in"
        folder.mkdir()
        PIL.Image.fromarray(np.full((32, 32), 99, np.uint8)).save(folder / "a.png")
        ids = self._register(folder, settings)
        screen_images(ids, settings)
        with session_scope(settings.effective_database_url) as s:
            pred = s.scalars(sa.select(Prediction)).one()
            assert pred.flagged == (pred.probability >= pred.threshold)
            assert pred.threshold == load_model().spec.threshold
            assert s.get(Image, pred.image_id).status is ImageStatus.done


class TestChunks:
    def test_one_model_call_per_chunk_and_every_study_recorded(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
            count_predict_calls: Callable[[Any], list[int]]) -> None:
        import sqlalchemy as sa

        from pneumoscreen.db import Image, ImageStatus, Prediction, session_scope
        from pneumoscreen.worker.intake import submit as submit_mod
        from pneumoscreen.worker.screening.screen import get_model, screen_images
        from pneumoscreen.worker.settings import get_settings

        make_pngs(tmp_path / "in", 5, size=64)
        settings = get_settings().model_copy(update={"chunk_size": 2,
                                                     "decode_threads": 2})
        monkeypatch.setattr(submit_mod, "enqueue", lambda result, **kw: None)  # register only
        ids = submit_mod.submit_folder(tmp_path / "in", settings=settings).queued_ids
        model = get_model(settings)
        calls = count_predict_calls(model)
        outcome = screen_images(ids, settings, model=model)
        assert calls == [2, 2, 1]
        assert outcome.screened == 5 and not outcome.busy
        with session_scope(settings.effective_database_url) as session:
            assert session.scalar(sa.select(sa.func.count()).select_from(Prediction)) == 5
            statuses = set(session.scalars(sa.select(Image.status)))
            reasons = set(session.scalars(sa.select(Image.reason)))
            tokens = set(session.scalars(sa.select(Image.claim_token)))
        assert statuses == {ImageStatus.done} and reasons == {None} and tokens == {None}

    def test_a_failed_task_gives_its_studies_back(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        import sqlalchemy as sa

        from pneumoscreen.db import Image, ImageStatus, session_scope
        from pneumoscreen.worker.intake import submit as submit_mod
        from pneumoscreen.worker.screening.screen import get_model, screen_images
        from pneumoscreen.worker.settings import get_settings

        make_pngs(tmp_path / "in", 3, size=64)
        settings = get_settings()
        monkeypatch.setattr(submit_mod, "enqueue", lambda result, **kw: None)
        ids = submit_mod.submit_folder(tmp_path / "in", settings=settings).queued_ids
        model = get_model(settings)
        original = model.predict  # the one model call of a chunk

        def broken(batch: np.ndarray) -> np.ndarray:
            raise RuntimeError("device lost")

        model.predict = broken  # type: ignore[method-assign]
        try:
            with pytest.raises(RuntimeError, match="device lost"):
                screen_images(ids, settings, model=model)
        finally:
            model.predict = original  # type: ignore[method-assign]
        with session_scope(settings.effective_database_url) as session:
            assert set(session.scalars(sa.select(Image.status))) == {ImageStatus.queued}
        assert screen_images(ids, settings, model=model).screened == 3
