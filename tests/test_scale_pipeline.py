"""The prefetching pipeline: order, bounded memory, overlap; and the chunked batch task."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from live import make_pngs

from pneumoscreen.worker.pipeline import prefetched, split


class TestSplit:
    def test_chunks_in_order(self) -> None:
        assert split([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]
        assert split([], 3) == []

    def test_rejects_empty_chunks(self) -> None:
        with pytest.raises(ValueError, match="at least 1"):
            split([1], 0)


class TestPrefetched:
    def test_results_in_order_whatever_the_threads(self) -> None:
        out = list(prefetched(range(10), lambda i: i * i, chunk_size=3, threads=4))
        assert out == [[0, 1, 4], [9, 16, 25], [36, 49, 64], [81]]

    def test_next_chunk_works_while_the_caller_holds_this_one(self) -> None:
        second_chunk_started = threading.Event()

        def work(i: int) -> int:
            if i >= 2:
                second_chunk_started.set()
            return i

        chunks = prefetched(range(4), work, chunk_size=2, threads=1)
        assert next(chunks) == [0, 1]
        # The caller (the model) is busy with chunk 0: chunk 1 decodes meanwhile.
        assert second_chunk_started.wait(10)
        assert next(chunks) == [2, 3]

    def test_never_more_than_two_chunks_in_flight(self) -> None:
        started: list[int] = []
        lock = threading.Lock()
        all_of_chunk_1 = threading.Event()

        def work(i: int) -> int:
            with lock:
                started.append(i)
                if {4, 5, 6, 7} <= set(started):
                    all_of_chunk_1.set()
            return i

        chunks = prefetched(range(40), work, chunk_size=4, threads=4)
        next(chunks)
        assert all_of_chunk_1.wait(10)
        # Chunk 2 must wait until the caller asks for chunk 1: memory stays at two chunks.
        assert sorted(started) == list(range(8))
        next(chunks)
        chunks.close()

    def test_closing_early_cancels_the_rest(self) -> None:
        started: list[int] = []
        chunks = prefetched(range(100), started.append, chunk_size=5, threads=2)
        next(chunks)
        chunks.close()
        assert len(started) <= 10


class TestChunkedBatch:
    def test_one_model_call_per_chunk_and_every_study_recorded(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
            count_predict_calls: Callable[[Any], list[int]]) -> None:
        import sqlalchemy as sa

        from pneumoscreen.db import Prediction, Study, StudyStatus, session_scope
        from pneumoscreen.worker import submit as submit_mod
        from pneumoscreen.worker.batch import get_model, screen_batch
        from pneumoscreen.worker.settings import get_settings

        make_pngs(tmp_path / "in", 5, size=64)
        settings = get_settings().model_copy(update={"model_batch_size": 2,
                                                     "decode_threads": 2})
        monkeypatch.setattr(submit_mod, "enqueue", lambda result, **kw: None)  # register only
        ids = submit_mod.submit_folder(tmp_path / "in", settings=settings).queued_ids
        model = get_model(settings)
        calls = count_predict_calls(model)
        outcome = screen_batch(ids, settings, model=model)
        assert calls == [2, 2, 1]
        assert outcome.screened == 5 and not outcome.busy
        with session_scope(settings.effective_database_url) as session:
            assert session.scalar(sa.select(sa.func.count()).select_from(Prediction)) == 5
            statuses = set(session.scalars(sa.select(Study.status)))
            reasons = set(session.scalars(sa.select(Study.reason)))
            tokens = set(session.scalars(sa.select(Study.claim_token)))
        assert statuses == {StudyStatus.done} and reasons == {None} and tokens == {None}

    def test_a_failed_batch_gives_its_studies_back(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        import sqlalchemy as sa

        from pneumoscreen.db import Study, StudyStatus, session_scope
        from pneumoscreen.worker import submit as submit_mod
        from pneumoscreen.worker.batch import get_model, screen_batch
        from pneumoscreen.worker.settings import get_settings

        make_pngs(tmp_path / "in", 3, size=64)
        settings = get_settings()
        monkeypatch.setattr(submit_mod, "enqueue", lambda result, **kw: None)
        ids = submit_mod.submit_folder(tmp_path / "in", settings=settings).queued_ids
        model = get_model(settings)
        original = model.predict_batch

        def broken(batch: np.ndarray) -> np.ndarray:
            raise RuntimeError("device lost")

        model.predict_batch = broken  # type: ignore[method-assign]
        try:
            with pytest.raises(RuntimeError, match="device lost"):
                screen_batch(ids, settings, model=model)
        finally:
            model.predict_batch = original  # type: ignore[method-assign]
        with session_scope(settings.effective_database_url) as session:
            assert set(session.scalars(sa.select(Study.status))) == {StudyStatus.queued}
        assert screen_batch(ids, settings, model=model).screened == 3
