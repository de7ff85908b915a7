"""A real `screen worker` on Redis refuses task messages that name a model path, an unknown
model version, a version whose file changed, or malformed ids: nothing changes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from bundled_default import DEFAULT_VERSION
from live import (
    REDIS_URL,
    SAMPLES,
    WorkerProcess,
    all_final,
    bundled_model_copy,
    redis_or_skip,
    run_screen,
    screen_env,
    wait_until,
)

from pneumoscreen.worker.queue.app import configure
from pneumoscreen.worker.settings import Settings

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def test_hostile_task_messages_are_refused(tmp_path: Path) -> None:
    redis_or_skip(REDIS_URL)
    samples = tmp_path / "samples"
    shutil.copytree(SAMPLES, samples, ignore=shutil.ignore_patterns("*.py"))
    models, evil = tmp_path / "models", tmp_path / "evil"
    models.mkdir()
    evil.mkdir()
    env = screen_env(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 's.db'}",
                     broker_url=REDIS_URL, SCREEN_MODEL_DIRS=json.dumps([str(models)]),
                     SCREEN_TF_INTRA_THREADS="1", SCREEN_HEATMAPS="none")
    assert run_screen(env, "submit", str(samples)).returncode == 0
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        worker.wait_ready()

        def studies() -> list[dict]:
            return json.loads(run_screen(env, "studies", "--format", "json").stdout)

        wait_until(lambda: all_final(env["SCREEN_DATABASE_URL"]), 180, "the samples screened",
                   worker.log)
        before = studies()
        flagged_before = run_screen(env, "flagged", "--format", "json").stdout
        ids = [s["study_id"] for s in before]

        # A model the attacker placed outside the model folders, with a threshold that flags
        # nothing; a registered copy whose file is then swapped.
        attack = bundled_model_copy(evil, "6.6.6")
        side = json.loads(attack.with_suffix(".json").read_text())
        side["threshold"] = 2.0
        attack.with_suffix(".json").write_text(json.dumps(side))
        legit = bundled_model_copy(models, "5.5.5")
        reg = run_screen(env, "models", "register", str(legit))
        assert reg.returncode == 0, reg.stderr
        version = int(reg.stdout.split("model version")[1].split()[0])
        bundled_model_copy(models, "5.5.5-swapped")  # same file name: the registered file changes

        app = configure(Settings(broker_url=REDIS_URL))
        hostile = [
            ([ids], {"model": str(attack), "rescreen": True}),
            ([ids], {"model_version": 987654, "rescreen": True}),
            ([ids], {"model_version": version, "rescreen": True}),
            (["1,2,3"], {"rescreen": True}),
            ([[True, 2]], {"rescreen": True}),
            ([ids], {"rescreen": "yes"}),
        ]
        for args, kwargs in hostile:
            app.send_task("pneumoscreen.screen_task", args, kwargs)
        wait_until(lambda: worker.log().count("refused task") >= len(hostile), 120,
                   "every hostile message refused", worker.log)
    finally:
        worker.stop()
        configure(Settings())
    log = worker.log()
    assert "unexpected argument(s): model" in log
    assert "model version 987654 is not registered" in log
    assert f"model version {version}: the file's sha256 is not the one recorded" in log
    assert "study_ids must be a list" in log and "each study id must be" in log
    assert "rescreen must be true or false" in log
    assert str(attack) not in log  # never opened, never named
    assert studies() == before
    assert run_screen(env, "flagged", "--format", "json").stdout == flagged_before
    predictions = json.loads(run_screen(env, "models", "--format", "json").stdout)["models"]
    assert {m["version"] for m in predictions} - {"5.5.5"} == {DEFAULT_VERSION}
