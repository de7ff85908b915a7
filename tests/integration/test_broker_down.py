"""A broker that is down at submit: a clear, fast error, queued studies, and `screen resume`."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from live import REDIS_URL, free_port, make_pngs, redis_or_skip, run_screen, screen_env


@pytest.mark.redis
@pytest.mark.postgres
def test_broker_down_then_resume(tmp_path: Path, pg_url: str) -> None:
    redis_or_skip(REDIS_URL)
    make_pngs(tmp_path / "in", 7, size=64)
    down = f"redis://127.0.0.1:{free_port()}/0"
    env = screen_env(data_dir=tmp_path / "data", database_url=pg_url, broker_url=down)

    # A short timeout: the publish must give up quickly, not spin in a retry loop.
    out = run_screen(env, "submit", str(tmp_path / "in"), "--task-size", "3", timeout=60)
    assert out.returncode == 3, out.stdout + out.stderr
    message = " ".join(out.stderr.split())
    assert "cannot reach the broker at redis://127.0.0.1" in message
    assert "7 studies stay queued" in message and "screen resume" in message
    assert "Traceback" not in out.stderr

    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        statuses = conn.execute(sa.text("SELECT status FROM studies")).scalars().all()
        n_tasks = conn.execute(sa.text("SELECT n_tasks FROM batches")).scalars().all()
    engine.dispose()
    assert statuses == ["queued"] * 7 and n_tasks == [0]  # consistent: registered, not sent

    up = {**env, "SCREEN_BROKER_URL": REDIS_URL}
    resumed = run_screen(up, "resume", "--task-size", "3")
    assert resumed.returncode == 0, resumed.stderr
    assert "Re-enqueued 7 studies (0 stuck processing) in 3 tasks" in resumed.stdout

    import redis

    client = redis.Redis.from_url(REDIS_URL)
    messages = [json.loads(m) for m in client.lrange("celery", 0, -1)]
    client.flushdb()
    client.close()
    sent = sorted(i for m in messages
                  for i in json.loads(base64.b64decode(m["body"]))[0][0])
    with sa.create_engine(pg_url).connect() as conn:
        ids = sorted(conn.execute(sa.text("SELECT id FROM studies")).scalars())
    assert sent == ids and len(messages) == 3

    again = run_screen(env, "resume", timeout=60)  # the broker still down for this one
    assert again.returncode == 3 and "cannot reach the broker" in again.stderr
