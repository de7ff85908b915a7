"""`screen flagged --watch`: what is flagged since the last refresh is highlighted, once."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from pneumoscreen.db import Batch, Image, Prediction, session_scope
from pneumoscreen.db.queries import get_or_create_model_version
from pneumoscreen.worker.cli import app, screening_cmds
from pneumoscreen.worker.settings import get_settings


def _flag(n: int, start: int, *, in_scope: bool | None = None) -> None:
    with session_scope(get_settings().effective_database_url) as session:
        mv = get_or_create_model_version(session=session, name="m", version="1", file_sha256="s",
                                         input_spec={}, threshold=0.5, target_recall=None,
                                         trained=True)
        batch = Batch()
        session.add(batch)
        session.flush()
        for i in range(start, start + n):
            study = Image(sha256=f"{i:064d}", source_path=f"/in/{i}.png", format="png",
                          batch_id=batch.id)
            session.add(study)
            session.flush()
            session.add(Prediction(image_id=study.id, model_version_id=mv.id, probability=0.9,
                                   threshold=0.5, flagged=True, in_scope=in_scope,
                                   scope_reason=None if in_scope is not False else "age"))


def test_watch_keeps_new_flags_marked_until_acknowledged_or_expired(
        monkeypatch: pytest.MonkeyPatch) -> None:
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

    clock = [0.0]
    # After each refresh: (what happens, seconds that pass, Enter pressed?)
    steps = iter([(lambda: _flag(1, 10), 2, False), (lambda: None, 2, False),
                  (lambda: None, 2, True), (lambda: _flag(1, 20), 2, False),
                  (lambda: None, 700, False), None])

    def wait(_: float) -> bool:
        step = next(steps)
        if step is None:
            raise KeyboardInterrupt
        action, seconds, enter = step
        action()
        clock[0] += seconds
        return enter

    monkeypatch.setattr(screening_cmds, "flagged_table", spy)
    monkeypatch.setattr(screening_cmds, "_wait", wait)
    monkeypatch.setattr(screening_cmds, "_now", lambda: clock[0])
    result = CliRunner().invoke(app, ["flagged", "--watch", "--interval", "0",
                                      "--mark-for", "10m"])
    assert result.exit_code == 0, result.output
    fresh = [f for f, _rows in seen]
    first, second = seen[0][1], seen[1][1]
    assert fresh[0] == set() and len(first) == 2  # the first screen: nothing is "new"
    new = set(second) - set(first)
    assert len(new) == 1 and fresh[1] == new  # flagged since the last refresh
    assert fresh[2] == new  # still marked on the next refresh
    assert fresh[3] == set()  # Enter acknowledged it
    newer = set(seen[4][1]) - set(second)
    assert len(newer) == 1 and fresh[4] == newer
    assert fresh[5] == set()  # 10 minutes later it is ordinary again


def test_watch_header_counts_the_rows_of_the_flagged_table(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The header's count is the flagged table's, not flagged plus the human-read section
    (it once said 19 over 18 rows), and it counts every flag, not only what --limit shows."""
    _flag(3, 0, in_scope=True)
    _flag(1, 10, in_scope=False)  # a human read: its own table, not in the count
    shown: list[tuple[str, int]] = []
    original = screening_cmds.flagged_table

    def spy(rows: list[dict[str, Any]], **kw: Any) -> Any:
        shown.append((kw["title"], len(rows)))
        return original(rows, **kw)

    def stop(_: float) -> bool:
        raise KeyboardInterrupt

    monkeypatch.setattr(screening_cmds, "flagged_table", spy)
    monkeypatch.setattr(screening_cmds, "_wait", stop)
    for extra, rows in (([], 3), (["--limit", "2"], 2)):
        shown.clear()
        result = CliRunner().invoke(app, ["flagged", "--watch", *extra])
        assert result.exit_code == 0, result.output
        [(title, n)] = shown
        assert n == rows and title.startswith("Flagged (3, 0 new) at "), title
        assert "Needs a human read" in result.output


def test_mark_for_must_be_a_duration() -> None:
    result = CliRunner().invoke(app, ["flagged", "--watch", "--mark-for", "soon"])
    assert result.exit_code == 2 and "--mark-for 'soon'" in result.output


def test_screen_studies_still_lists_the_images() -> None:
    """`screen images` took over `screen studies`; the old name keeps working, unlisted."""
    import json

    _flag(2, 0)
    runner = CliRunner()
    images = runner.invoke(app, ["images", "--format", "json"])
    studies = runner.invoke(app, ["studies", "--format", "json"])
    assert images.exit_code == 0 and studies.exit_code == 0, studies.output
    rows = json.loads(images.stdout)
    assert [r["study_id"] for r in rows] and json.loads(studies.stdout) == rows
    listed = runner.invoke(app, ["--help"]).stdout
    assert " images " in listed and " studies " not in listed
