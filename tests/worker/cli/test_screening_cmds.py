"""`screen flagged --watch`: what is flagged since the last refresh is highlighted, once."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from pneumoscreen.db import Batch, Prediction, Study, session_scope
from pneumoscreen.db.queries import get_or_create_model_version
from pneumoscreen.worker.cli import app, screening_cmds
from pneumoscreen.worker.settings import get_settings


def _flag(n: int, start: int) -> None:
    with session_scope(get_settings().effective_database_url) as session:
        mv = get_or_create_model_version(session=session, name="m", version="1", file_sha256="s",
                                         input_spec={}, threshold=0.5, target_recall=None,
                                         trained=True)
        batch = Batch()
        session.add(batch)
        session.flush()
        for i in range(start, start + n):
            study = Study(sha256=f"{i:064d}", source_path=f"/in/{i}.png", format="png",
                          batch_id=batch.id)
            session.add(study)
            session.flush()
            session.add(Prediction(study_id=study.id, model_version_id=mv.id, probability=0.9,
                                   threshold=0.5, flagged=True))


def test_watch_highlights_only_the_new_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    _flag(2, 0)
    seen: list[tuple[set[int], list[int]]] = []
    original = screening_cmds.flagged_table

    def spy(rows: list[dict[str, Any]], *, fresh: set[int] | None = None, **kw: Any) -> Any:
        seen.append((set(fresh or ()), [r["prediction_id"] for r in rows]))
        table = original(rows, fresh=fresh, **kw)
        styles = [row.style for row in table.rows]
        assert [s == "bold yellow" for s in styles] == [
            r["prediction_id"] in (fresh or ()) for r in rows]
        return table

    refreshes = iter([lambda: _flag(1, 10), lambda: None, KeyboardInterrupt])

    def sleep(_: float) -> None:
        step = next(refreshes)
        if step is KeyboardInterrupt:
            raise KeyboardInterrupt
        step()

    monkeypatch.setattr(screening_cmds, "flagged_table", spy)
    monkeypatch.setattr(screening_cmds.time, "sleep", sleep)
    result = CliRunner().invoke(app, ["flagged", "--watch", "--interval", "0"])
    assert result.exit_code == 0, result.output
    (first_fresh, first), (second_fresh, second), (third_fresh, _third) = seen
    assert first_fresh == set() and len(first) == 2  # the first screen: nothing is "new"
    new = set(second) - set(first)
    assert len(new) == 1 and second_fresh == new  # flagged since the last refresh
    assert third_fresh == set()  # highlighted once, then ordinary
