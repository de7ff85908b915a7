"""Resuming: queued, stranded and not-yet-reached re-screen studies are sent again, correctly."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa
from live import bundled_model_copy, free_port, make_pngs

from pneumoscreen.db import Image, ImageStatus, ModelVersion, Prediction, session_scope
from pneumoscreen.worker.intake.rescreen import rescreen
from pneumoscreen.worker.intake.resume import resume
from pneumoscreen.worker.intake.submit import submit_folder
from pneumoscreen.worker.queue.publish import BrokerUnavailable
from pneumoscreen.worker.settings import Settings, get_settings


def _verdicts(url: str) -> list[tuple[int, str]]:
    with session_scope(url) as session:
        return sorted(session.execute(
            sa.select(Prediction.image_id, ModelVersion.version)
            .join(ModelVersion, Prediction.model_version_id == ModelVersion.id)).all())


@pytest.fixture
def rescreen_stranded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                      ) -> tuple[Settings, list[int]]:
    """Three screened studies and a re-screen whose tasks never reached a broker."""
    monkeypatch.setenv("SCREEN_MODEL_DIRS", f'["{tmp_path}"]')
    get_settings.cache_clear()
    settings = get_settings()
    make_pngs(tmp_path / "in", 3, size=48)
    ids = submit_folder(tmp_path / "in", settings=settings).queued_ids
    down = settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{free_port()}/0"})
    model = bundled_model_copy(tmp_path, "0.0.9-resume")
    with pytest.raises(BrokerUnavailable):
        rescreen(str(model), settings=down)
    return settings, ids


def test_resume_finishes_a_rescreen_the_broker_missed(
        rescreen_stranded: tuple[Settings, list[int]]) -> None:
    settings, _ = rescreen_stranded
    url = settings.effective_database_url
    assert [v for _, v in _verdicts(url)].count("0.0.9-resume") == 0
    out = resume(settings=settings)
    assert out.n_queued == 3
    assert [v for _, v in _verdicts(url)].count("0.0.9-resume") == 3
    with session_scope(url) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Image)
                              .where(Image.rescreen_batch_id.is_not(None))) == 0
    assert resume(settings=settings).n_queued == 0  # nothing left


def test_a_failed_reread_on_resume_keeps_the_earlier_verdict(
        rescreen_stranded: tuple[Settings, list[int]]) -> None:
    """A re-screen task died holding a study whose file is gone since: resume sends it as a
    re-screen, so the unreadable file cannot turn the earlier done verdict into failed."""
    settings, ids = rescreen_stranded
    url = settings.effective_database_url
    long_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=2)
    with session_scope(url) as session:
        study = session.get(Image, ids[0])
        study.status, study.claim_token, study.claimed_at = (ImageStatus.processing, "dead",
                                                             long_ago)
        Path(study.source_path).unlink()
    resume(settings=settings)
    with session_scope(url) as session:
        study = session.get(Image, ids[0])
        assert study.status is ImageStatus.done
        assert study.reason and study.reason.startswith("re-screen failed:")
    verdicts = _verdicts(url)
    assert (ids[0], "0.0.9-resume") not in verdicts
    assert sum(1 for sid, _ in verdicts if sid == ids[0]) == 1  # its first prediction stays
