"""Nightly runs: only new inbox files, one summary row per run, the beat schedule from settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from live import make_pngs
from pydantic import ValidationError
from typer.testing import CliRunner

from pneumoscreen.worker.cli import app
from pneumoscreen.worker.queue.app import beat_schedule, configure, cron
from pneumoscreen.worker.settings import Settings, get_settings


@pytest.mark.postgres
def test_nightly_picks_up_only_new_files(tmp_path: Path, pg_url: str,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCREEN_DATABASE_URL", pg_url)
    get_settings.cache_clear()
    inbox, other = tmp_path / "inbox", tmp_path / "other"
    make_pngs(inbox, 3, size=64, seed=10)
    make_pngs(other, 1, size=64, seed=11)
    (inbox / "notes.txt").write_text("not an image")
    runner = CliRunner()

    first = runner.invoke(app, ["nightly", "--inbox", str(inbox), "--inbox", str(other),
                                "--format", "json"])
    assert first.exit_code == 0, first.output
    one = json.loads(first.stdout)
    assert (one["status"], one["n_new"], one["n_done"], one["n_pending"]) == ("finished", 4, 4, 0)
    assert len(one["batch_ids"]) == 2 and one["duration_s"] >= 0

    make_pngs(inbox, 2, size=64, seed=12)  # two files arrive during the day
    second = json.loads(runner.invoke(app, ["nightly", "--inbox", str(inbox), "--format",
                                            "json"]).stdout)
    assert (second["n_new"], second["n_done"]) == (2, 2)
    third = json.loads(runner.invoke(app, ["nightly", "--inbox", str(inbox), "--format",
                                           "json"]).stdout)
    assert (third["n_new"], third["n_done"], third["status"]) == (0, 0, "finished")

    runs = json.loads(runner.invoke(app, ["runs", "--format", "json"]).stdout)
    assert [r["n_new"] for r in runs] == [0, 2, 4]  # newest first
    assert all(r["n_flagged"] <= r["n_done"] for r in runs)
    table = runner.invoke(app, ["runs"])
    assert table.exit_code == 0 and "Nightly runs" in table.stdout


def test_a_missing_inbox_is_recorded_as_an_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["nightly", "--inbox", str(tmp_path / "gone"),
                                      "--format", "json"])
    assert result.exit_code == 3
    runs = json.loads(CliRunner().invoke(app, ["runs", "--format", "json"]).stdout)
    assert runs[0]["status"] == "error" and "does not exist" in runs[0]["error"]


def test_no_inbox_at_all_is_explained() -> None:
    result = CliRunner().invoke(app, ["nightly"])
    assert result.exit_code == 1 and "SCREEN_INBOX_DIRS" in result.output


class TestBeatSchedule:
    def test_cron_expression_becomes_the_schedule(self, tmp_path: Path) -> None:
        settings = Settings(broker_url="redis://127.0.0.1:6379/15", inbox_dirs=[tmp_path],
                            nightly_cron="30 1 * * 1-5", nightly_timezone="Europe/Berlin")
        conf = configure(settings).conf
        entry = conf.beat_schedule["nightly-inboxes"]
        assert entry["task"] == "pneumoscreen.nightly"
        sched = entry["schedule"]
        assert sched.minute == {30} and sched.hour == {1} and sched.day_of_week == {1, 2, 3, 4, 5}
        assert conf.timezone == "Europe/Berlin"
        configure(Settings())

    def test_no_nightly_without_inboxes_but_always_the_sweep(self) -> None:
        assert list(beat_schedule(Settings())) == ["recovery-sweep"]
        entry = beat_schedule(Settings(sweep_seconds=7))["recovery-sweep"]
        assert entry["task"] == "pneumoscreen.sweep" and entry["schedule"] == 7.0
        assert beat_schedule(Settings(sweep_seconds=0)) == {}

    def test_the_task_is_registered(self) -> None:
        from pneumoscreen.worker.queue.tasks import app as celery_app

        assert "pneumoscreen.nightly" in celery_app.tasks

    def test_bad_cron_is_refused_clearly(self) -> None:
        with pytest.raises(ValidationError, match="must have 5 fields"):
            Settings(nightly_cron="0 2 * *")
        with pytest.raises(ValueError, match="must have 5 fields"):
            cron("@daily")


def test_a_run_deleted_while_it_ran_is_a_clear_error(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """No assert in production code: a vanished run row raises a RuntimeError that says so."""
    import sqlalchemy as sa

    from pneumoscreen.db import Run
    from pneumoscreen.worker.intake import nightly, submit

    settings = get_settings()
    real_submit = submit.submit_folder

    def submit_then_delete(*args, **kwargs):  # type: ignore[no-untyped-def]
        result = real_submit(*args, **kwargs)
        with settings.session() as session:
            session.execute(sa.delete(Run))
        return result

    monkeypatch.setattr(submit, "submit_folder", submit_then_delete)
    make_pngs(tmp_path / "inbox", 1, size=32)
    with pytest.raises(RuntimeError, match=r"nightly run \d+ disappeared"):
        nightly.run_nightly([tmp_path / "inbox"], settings=settings)
