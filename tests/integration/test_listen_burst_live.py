"""A 50-study burst into `screen listen` with no broker (issue 20, finding 3): registration runs
in its own thread, apart from screening, so each study is registered about
SCREEN_STUDY_STABLE_SECONDS after its last instance whatever the screening backlog. Prints the
figures (last instance -> registered, -> result); asserts only that every study got both."""

from __future__ import annotations

import datetime as dt
import json
import statistics
from pathlib import Path

import pytest
import sqlalchemy as sa
from ingest_factories import chest_like, make_ds, write
from listener import ListenerProcess, store
from live import free_port, screen_env, wait_until
from pydicom.uid import generate_uid

pytestmark = [pytest.mark.slow]
N = 50


def _times(url: str, sql: str) -> dict[str, dt.datetime]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = [(uid, t if isinstance(t, dt.datetime) else dt.datetime.fromisoformat(t))
                    for uid, t in conn.execute(sa.text(sql)) if t is not None]
        return {uid: t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc) for uid, t in rows}
    except sa.exc.OperationalError:
        return {}
    finally:
        engine.dispose()


def test_a_burst_is_registered_on_time_while_screening_runs(tmp_path: Path) -> None:
    files = []
    for i in range(N):
        ds = make_ds(chest_like(256, 256, seed=i), StudyInstanceUID=generate_uid(),
                     ViewPosition="PA")
        files.append(write(ds, tmp_path / f"s{i:02d}.dcm"))
    data, url, port = tmp_path / "data", f"sqlite:///{tmp_path / 'db.sqlite3'}", free_port()
    stable = 2.0
    env = screen_env(data_dir=data, database_url=url, broker_url="",
                     SCREEN_CALLING_AE_TITLES=json.dumps(["SCU"]),
                     SCREEN_STUDY_STABLE_SECONDS=str(stable), SCREEN_MODEL_PATH="bundled:cnn-s",
                     SCREEN_HEATMAPS="all")
    listener = ListenerProcess(env, tmp_path / "listen.log", port)
    sent: dict[str, dt.datetime] = {}
    try:
        listener.wait_ready()
        import pydicom

        for path in files:  # one association per study, back to back, as modalities do
            assert store(port, [path], calling="SCU") == [0]
            sent[str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)] = (
                dt.datetime.now(dt.timezone.utc))
        registered_sql = ("SELECT study_instance_uid, registered_at FROM received_instances")
        result_sql = ("SELECT s.study_instance_uid, p.created_at FROM predictions p "
                      "JOIN studies s ON s.id = p.study_id")
        wait_until(lambda: len(_times(url, result_sql)) == N, 600, "every study screened",
                   on_timeout=listener.log)
    finally:
        listener.stop()
    registered, results = _times(url, registered_sql), _times(url, result_sql)
    reg = sorted((registered[u] - sent[u]).total_seconds() for u in sent)
    res = sorted((results[u] - sent[u]).total_seconds() for u in sent)
    print(f"\n{N}-study burst, no broker, stable after {stable:g} s: last instance -> "
          f"registered median {statistics.median(reg):.1f} s, max {reg[-1]:.1f} s; "
          f"-> result median {statistics.median(res):.1f} s, max {res[-1]:.1f} s")
    assert len(reg) == len(res) == N
