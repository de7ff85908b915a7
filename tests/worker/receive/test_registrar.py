"""The listener's registrar on real databases: stable studies, exactly once, outages survived."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from listener import fresh_instances
from live import REDIS_URL, SAMPLES, TEST_PATIENT_KEY, free_port, redis_or_skip

from pneumoscreen.db import Batch, Image, ImageStatus, ReceivedInstance
from pneumoscreen.worker.receive.registrar import Registrar
from pneumoscreen.worker.receive.spool import Spool
from pneumoscreen.worker.settings import Settings

T0 = 1_000_000.0
STABLE = 3.0


def _settings(data: Path, db_url: str, broker: str | None) -> Settings:
    return Settings(data_dir=data, database_url=db_url, broker_url=broker,
                    patient_key=TEST_PATIENT_KEY)


def _spooled(tmp_path: Path, spool: Spool, n: int, per_study: int) -> list:
    files = fresh_instances([SAMPLES / "cr_chest_jpeg_baseline.dcm"], tmp_path / "src", n,
                            per_study=per_study)
    return [spool.write(f.read_bytes()) for f in files]


def _count(settings: Settings, what: object) -> int:
    with settings.session() as session:
        return session.scalar(sa.select(sa.func.count()).select_from(what))


@pytest.mark.redis
def test_a_study_is_registered_once_stable_and_only_once(db_url: str, tmp_path: Path) -> None:
    redis_or_skip(REDIS_URL)
    settings = _settings(tmp_path / "data", db_url, REDIS_URL)
    spool = Spool(settings.data_dir / "spool")
    a1, a2, b1 = _spooled(tmp_path, spool, 3, per_study=2)  # study A: a1, a2; study B: b1
    registrar = Registrar(settings, spool, stable_seconds=STABLE)
    registrar.notify(a1, T0)
    registrar.notify(b1, T0)
    registrar.notify(a2, T0 + 2)  # A has a new instance: not stable until T0 + 2 + STABLE
    registrar.tick(now=T0 + STABLE + 1)
    assert _count(settings, Image) == 1 and set(registrar.pending) == {a1.sha256, a2.sha256}
    registrar.tick(now=T0 + 2 + STABLE)
    assert _count(settings, Image) == 3 and not registrar.pending

    with settings.session() as session:
        studies = session.scalars(sa.select(Image)).all()
        rows = session.scalars(sa.select(ReceivedInstance)).all()
        kinds = session.scalars(sa.select(Batch.kind)).all()
    assert {s.source_path for s in studies} == {str(f.path) for f in (a1, a2, b1)}
    assert all(s.status == ImageStatus.queued and s.patient_key for s in studies)
    assert len(rows) == 3 and all(r.enqueued_at and r.image_id for r in rows)
    assert kinds == ["receive", "receive"]

    registrar.notify(a1, T0 + 50)  # the same instance sent again, and a restart: nothing new
    registrar.tick(now=T0 + 100)
    Registrar(settings, spool, stable_seconds=STABLE).tick(now=T0 + 200)
    assert (_count(settings, Image), _count(settings, ReceivedInstance)) == (3, 3)


def test_what_arrived_while_the_database_was_down_is_registered_at_the_next_start(
        db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    down = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing"
    data = tmp_path / "data"
    spool = Spool(data / "spool")
    files = _spooled(tmp_path, spool, 4, per_study=2)
    dead = Registrar(_settings(data, down, f"redis://127.0.0.1:{free_port()}/0"), spool,
                     stable_seconds=0)
    for f in files:
        dead.notify(f, T0)
    dead.tick(now=T0 + 10)  # never raises
    assert len(dead.pending) == 4 and "database unavailable" in caplog.text
    assert "PatientName" not in caplog.text

    settings = _settings(data, db_url, f"redis://127.0.0.1:{free_port()}/0")  # broker down too
    restarted = Registrar(settings, spool, stable_seconds=0, retry_seconds=0)
    restarted.tick()  # the spool files' own times: they arrived just now
    with settings.session() as session:
        rows = session.scalars(sa.select(ReceivedInstance)).all()
        statuses = session.scalars(sa.select(Image.status)).all()
    assert len(rows) == 4 and statuses == [ImageStatus.queued] * 4
    assert all(r.enqueued_at is None for r in rows)  # the broker refused: sent again later
    assert "broker unavailable" in caplog.text


@pytest.mark.redis
def test_studies_the_broker_refused_are_sent_once_it_is_back(tmp_path: Path) -> None:
    redis_or_skip(REDIS_URL)
    import redis

    data = tmp_path / "data"
    db_url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    spool = Spool(data / "spool")
    files = _spooled(tmp_path, spool, 3, per_study=3)
    first = Registrar(_settings(data, db_url, f"redis://127.0.0.1:{free_port()}/0"), spool,
                      stable_seconds=0)
    for f in files:
        first.notify(f, T0)
    first.tick(now=T0 + 1)
    settings = _settings(data, db_url, REDIS_URL)
    assert _count(settings, Image) == 3
    back = Registrar(settings, spool, stable_seconds=0)
    back.tick(now=time.time() + 1)
    with settings.session() as session:
        assert all(session.scalars(sa.select(ReceivedInstance.enqueued_at)).all())
    assert redis.Redis.from_url(REDIS_URL).llen("celery") == 1  # one task with the 3 studies
    back.tick(now=time.time() + 100)
    assert redis.Redis.from_url(REDIS_URL).llen("celery") == 1
