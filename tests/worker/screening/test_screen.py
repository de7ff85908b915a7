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
        make_pngs(folder, 3, size=32)
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
        make_pngs(folder, 1, size=32)
        ids = self._register(folder, settings)
        screen_images(ids, settings)
        with session_scope(settings.effective_database_url) as s:
            pred = s.scalars(sa.select(Prediction)).one()
            assert pred.flagged == (pred.probability >= pred.threshold and pred.in_scope)
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


class TestNoVerdictOutsideScope:
    def test_out_of_scope_above_the_threshold_is_not_flagged(self, db_url: str,
                                                              tmp_path: Path) -> None:
        """``record`` with given scores: an image outside scope keeps its probability (audit)
        but is never a flag; one inside scope with the same score is."""
        from pneumoscreen.model.bundle import Scores
        from pneumoscreen.worker.screening import scope
        from pneumoscreen.worker.screening.screen import Prepared, TaskOutcome, record

        with session_scope(db_url) as s:  # the engine migrates a new database on first use
            studies = [Image(sha256=f"{i:064d}", source_path=f"/x/{i}.png", format="png",
                             status=ImageStatus.processing) for i in range(2)]
            s.add_all(studies)
            s.flush()
            mv = ModelVersion(name="t", version="1", file_sha256="a" * 64, threshold=0.5,
                              input_spec={"size": 224})
            s.add(mv)
            s.flush()
            ids, mv_id = [st.id for st in studies], mv.id
        tensor = np.zeros((224, 224, 1), np.float32)
        prepared = [Prepared(i, tensor=tensor) for i in ids]
        outcome = TaskOutcome()
        verdicts = [scope.Verdict(False, "outside the validated population: age 051Y"),
                    scope.Verdict(True)]
        with session_scope(db_url) as s:
            record(prepared, prepared, Scores(np.array([0.99, 0.99], np.float32)), mv_id=mv_id,
                   threshold=0.5, batch_id=None, session=s, outcome=outcome, verdicts=verdicts)
        with session_scope(db_url) as s:
            preds = {p.image_id: p for p in s.scalars(sa.select(Prediction))}
        assert (preds[ids[0]].flagged, preds[ids[0]].in_scope) == (False, False)
        assert preds[ids[0]].probability == pytest.approx(0.99)
        assert (preds[ids[1]].flagged, preds[ids[1]].in_scope) == (True, True)
        assert outcome.flagged == 1

    def test_a_blank_image_is_never_screened(self, tmp_path: Path) -> None:
        settings = get_settings()
        folder = tmp_path / "in"
        folder.mkdir()
        PIL.Image.fromarray(np.full((224, 224), 128, np.uint8)).save(folder / "grey.png")
        PIL.Image.fromarray(np.full((3, 3), 128, np.uint8)).save(folder / "tiny.png")
        submit_folder(folder, settings=settings)
        states = _states(settings.effective_database_url)
        assert states["grey.png"] == ("failed", "no content: the image is one uniform grey "
                                                "(0.502 on 0-1): nothing to screen")
        assert states["tiny.png"][1] == ("image is 3 x 3 pixels, smaller than a radiograph can "
                                         "be (at least 32 a side): nothing to screen")
        with session_scope(settings.effective_database_url) as s:
            assert s.scalar(sa.select(sa.func.count()).select_from(Prediction)) == 0
