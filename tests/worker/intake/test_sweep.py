"""The recovery sweep on a real Redis (no worker): it sends again exactly the studies no task on
the broker carries, and nothing twice."""

from __future__ import annotations

from pathlib import Path

import pytest
from live import REDIS_URL, free_port, make_pngs, redis_or_skip

from pneumoscreen.worker.intake.submit import submit_folder
from pneumoscreen.worker.intake.sweep import UnreadableMessage, _ids_in, live_image_ids, sweep
from pneumoscreen.worker.queue.app import configure
from pneumoscreen.worker.queue.publish import BrokerUnavailable
from pneumoscreen.worker.settings import get_settings

pytestmark = pytest.mark.redis


@pytest.fixture
def on_redis():  # type: ignore[no-untyped-def]
    redis_or_skip(REDIS_URL)
    settings = get_settings().model_copy(update={
        "broker_url": REDIS_URL, "patient_key": get_settings().effective_patient_key().decode()})
    yield settings
    redis_or_skip(REDIS_URL)
    configure(get_settings())


def test_sweep_sends_only_what_no_task_carries(tmp_path: Path, on_redis) -> None:
    import redis

    settings = on_redis
    make_pngs(tmp_path / "a", 3, size=32, seed=1)
    make_pngs(tmp_path / "b", 2, size=32, seed=2)
    sent = submit_folder(tmp_path / "a", settings=settings)  # three studies with a live task
    down = settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{free_port()}/0"})
    with pytest.raises(BrokerUnavailable):
        submit_folder(tmp_path / "b", settings=down)  # two studies stranded, no task
    assert live_image_ids(settings) == set(sent.queued_ids)

    first = sweep(settings=settings, grace_s=0)
    assert (first.n_requeued, first.n_live) == (2, 3)
    assert len(live_image_ids(settings)) == 5
    again = sweep(settings=settings, grace_s=0)  # idempotent: everything has a live task now
    assert (again.n_requeued, again.n_live) == (0, 5)

    redis.Redis.from_url(REDIS_URL).flushdb()  # a restart that kept nothing
    after = sweep(settings=settings, grace_s=0)
    assert (after.n_requeued, after.n_live) == (5, 0)
    assert sweep(settings=settings).n_requeued == 0  # within the grace: a submit may be sending


def test_other_tasks_count_for_nothing_and_unreadable_ones_are_said() -> None:
    assert list(_ids_in(b'{"headers": {"task": "other"}, "body": "W1tbMV1dLCB7fSwge31d"}')) == []
    body = b'{"headers": {"task": "pneumoscreen.screen_task"}, "body": "[[[4, 5]], {}, {}]"}'
    assert list(_ids_in(body)) == [4, 5]
    # A signed or malformed message may carry any study: it cannot be counted as carrying none.
    for raw in (b"not json", b'{"headers": {"task": "pneumoscreen.screen_task"}, "body": 5}'):
        with pytest.raises(UnreadableMessage):
            _ids_in(raw)


def test_an_unreadable_message_on_the_queue_leaves_the_sweep_to_the_lease(on_redis) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.lpush("celery", b'{"headers": {"task": "pneumoscreen.screen_task"}, "body": "x"}')
    client.close()
    assert live_image_ids(on_redis) is None


def test_a_submit_with_a_broker_also_sends_what_was_stranded(
        tmp_path: Path, on_redis, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from pneumoscreen.worker.cli import app

    make_pngs(tmp_path / "a", 2, size=32, seed=3)
    make_pngs(tmp_path / "b", 1, size=32, seed=4)
    down = on_redis.model_copy(update={"broker_url": f"redis://127.0.0.1:{free_port()}/0"})
    with pytest.raises(BrokerUnavailable):
        submit_folder(tmp_path / "a", settings=down)
    monkeypatch.setenv("SCREEN_BROKER_URL", REDIS_URL)
    # With a broker the key must be given explicitly: the one the first submit used.
    monkeypatch.setenv("SCREEN_PATIENT_KEY", on_redis.patient_key)
    get_settings.cache_clear()
    out = CliRunner().invoke(app, ["submit", str(tmp_path / "b")])
    assert out.exit_code == 0, out.output
    text = " ".join(out.stdout.split())
    assert "1 new study" in text and "Also queued 2 studies left waiting by earlier runs." in text
    assert len(live_image_ids(get_settings())) == 3
