"""Submitting: the pipeline end to end in-process (no broker: Celery eager), on SQLite and
PostgreSQL, and through the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from pneumoscreen.db import Batch, Image, ImageStatus, Prediction, session_scope
from pneumoscreen.model import load_model
from pneumoscreen.worker.cli import app
from pneumoscreen.worker.intake.submit import submit_folder
from pneumoscreen.worker.settings import get_settings

SAMPLES = Path(__file__).resolve().parents[3] / "samples"
EXPECTED = {  # what samples/README.md promises
    "cr_chest_mono2_12bit_windowed.dcm": "done",
    "dx_chest_mono1_14bit.dcm": "done",
    "cr_chest_jpeg_baseline.dcm": "done",
    "chest_export.png": "done",
    "chest_export_opacity.jpg": "done",
    "ct_chest_rejected.dcm": "rejected",
    "broken_truncated.dcm": "failed",
}


@pytest.fixture
def samples(tmp_path: Path) -> Path:
    folder = tmp_path / "samples"
    shutil.copytree(SAMPLES, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return folder


@pytest.fixture
def settings(db_url: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SCREEN_DATABASE_URL", db_url)
    get_settings.cache_clear()
    return get_settings()


def _states(url: str) -> dict[str, tuple[str, str | None]]:
    with session_scope(url) as s:
        return {Path(st.source_path).name: (st.status.value, st.reason)
                for st in s.scalars(sa.select(Image))}


class TestSubmit:
    def test_samples_end_in_their_expected_states(self, samples: Path, settings) -> None:
        result = submit_folder(samples, settings=settings)
        assert result.n_not_images == 2  # notes.txt and README.md are not images
        assert result.n_new == len(EXPECTED)
        states = _states(settings.effective_database_url)
        assert {name: st for name, (st, _) in states.items()} == EXPECTED
        assert all(reason for name, (st, reason) in states.items() if st != "done")
        with session_scope(settings.effective_database_url) as s:
            n_pred = s.scalar(sa.select(sa.func.count()).select_from(Prediction))
            batch = s.get(Batch, result.batch_id)
            assert batch.n_new == len(EXPECTED) and batch.n_not_images == 2
        assert n_pred == 5

    def test_second_submit_adds_nothing(self, samples: Path, settings) -> None:
        submit_folder(samples, settings=settings)
        again = submit_folder(samples, settings=settings)
        assert again.n_new == 0 and again.n_duplicate == len(EXPECTED)
        assert again.n_tasks == 0
        with session_scope(settings.effective_database_url) as s:
            assert s.scalar(sa.select(sa.func.count()).select_from(Image)) == len(EXPECTED)

    def test_same_content_under_another_name_is_one_study(self, samples: Path, settings) -> None:
        shutil.copy(samples / "chest_export.png", samples / "copy_of_export.png")
        result = submit_folder(samples, settings=settings)
        assert result.n_new == len(EXPECTED) and result.n_duplicate == 1

    def test_rejected_and_failed_keep_their_header(self, samples: Path, settings) -> None:
        submit_folder(samples, settings=settings)
        with session_scope(settings.effective_database_url) as s:
            ct = s.scalars(sa.select(Image).where(Image.status == ImageStatus.rejected)).one()
            assert ct.modality == "CT" and ct.sop_instance_uid and "Modality CT" in ct.reason

    def test_good_copy_replaces_a_failed_study_with_the_same_uid(self, tmp_path: Path,
                                                                 settings) -> None:
        good = (SAMPLES / "cr_chest_mono2_12bit_windowed.dcm").read_bytes()
        broken_dir, good_dir = tmp_path / "broken", tmp_path / "good"
        broken_dir.mkdir()
        good_dir.mkdir()
        (broken_dir / "x.dcm").write_bytes(good[: len(good) // 2])
        (good_dir / "x.dcm").write_bytes(good)
        url = settings.effective_database_url
        submit_folder(broken_dir, settings=settings)
        assert _states(url)["x.dcm"][0] == "failed"
        replaced = submit_folder(good_dir, settings=settings)
        assert (replaced.n_new, replaced.n_replaced, replaced.queued_ids) == (0, 1, [1])
        with session_scope(url) as s:
            study = s.scalars(sa.select(Image)).one()
            assert study.status is ImageStatus.done and study.source_path.startswith(str(good_dir))
        again = submit_folder(broken_dir, settings=settings)  # the damaged copy adds nothing now
        assert again.n_new == 0 and again.n_duplicate == 1
        assert _states(url)["x.dcm"][0] == "done"

    def test_tasks_split_by_task_size(self, samples: Path, settings) -> None:
        result = submit_folder(samples, settings=settings, task_size=2)
        assert result.n_tasks == 3  # five screenable studies in batches of two

    def test_no_recursive(self, samples: Path, settings) -> None:
        sub = samples / "sub"
        sub.mkdir()
        shutil.move(samples / "chest_export.png", sub / "chest_export.png")
        flat = submit_folder(samples, settings=settings, recursive=False)
        assert flat.n_new == len(EXPECTED) - 1
        deep = submit_folder(samples, settings=settings)
        assert deep.n_new == 1


class TestCli:
    def test_submit_twice_then_read_results(self, samples: Path) -> None:
        runner = CliRunner()
        first = runner.invoke(app, ["submit", str(samples)])
        assert first.exit_code == 0, first.output
        assert "7 new studies" in first.stdout and "Flagged" in first.stdout
        second = runner.invoke(app, ["submit", str(samples)])
        assert "0 new studies" in second.stdout and "Nothing new" in second.stdout

        status = json.loads(runner.invoke(app, ["status", "--format", "json"]).stdout)
        assert status["counts"] == {**status["counts"], "done": 5, "rejected": 1, "failed": 1,
                                    "queued": 0, "processing": 0, "total": 7}
        rows = json.loads(runner.invoke(app, ["studies", "--format", "json"]).stdout)
        assert {Path(r["path"]).name: r["status"] for r in rows} == EXPECTED
        assert all({"path", "status", "reason", "probability", "flagged"} <= r.keys()
                   for r in rows)
        flagged = json.loads(runner.invoke(app, ["flagged", "--format", "json"]).stdout)
        probs = [r["probability"] for r in flagged]
        assert probs == sorted(probs, reverse=True)
        assert len(flagged) == sum(bool(r["flagged"]) for r in rows)

        csv_out = runner.invoke(app, ["flagged", "--format", "csv"]).stdout.splitlines()
        assert csv_out[0].startswith("prediction_id,study_id,path")
        assert len(csv_out) == len(flagged) + 1

    def test_clear_errors(self, tmp_path: Path) -> None:
        runner = CliRunner()
        missing = runner.invoke(app, ["submit", str(tmp_path / "nope")])
        assert missing.exit_code == 1 and "does not exist" in missing.output
        bad = runner.invoke(app, ["studies", "--status", "weird"])
        assert bad.exit_code == 2 and "choose one of" in bad.output  # bad usage
        since = runner.invoke(app, ["flagged", "--since", "yesterday"])
        assert since.exit_code == 2 and "--since" in since.output
        assert runner.invoke(app, ["status", "999"]).exit_code == 1

    def test_untrained_model_is_announced(self, samples: Path) -> None:
        from pneumoscreen.model.bundle import read_spec

        runner = CliRunner()
        out = runner.invoke(app, ["submit", str(samples)]).stdout
        spec = read_spec(load_model().path)
        assert ("UNTRAINED" in out) == (not spec.trained)
