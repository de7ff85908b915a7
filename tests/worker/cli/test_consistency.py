"""Small things that must agree everywhere (issue 21, item 12): bad option values are bad usage
(exit 2), help texts show no escaping backslash. Through the real entry point where it counts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from live import run_screen
from typer.testing import CliRunner

from pneumoscreen.worker.cli import app


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCREEN_")}
    env.update(SCREEN_DATA_DIR=str(tmp_path / "data"), SCREEN_CONFIG=str(tmp_path / "x.toml"))
    return env


@pytest.mark.parametrize("args", [["images", "--status", "finished"],
                                  ["flagged", "--since", "yesterday-ish"],
                                  ["flagged", "--watch", "--mark-for", "soon"]])
def test_a_bad_option_value_is_bad_usage(tmp_path: Path, args: list[str]) -> None:
    assert run_screen(_env(tmp_path), "resume", timeout=120).returncode == 0  # a database
    out = run_screen(_env(tmp_path), *args, timeout=120)
    assert out.returncode == 2, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and args[-1] in out.stderr


def _commands(group: object, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    import typer.main

    click_group = typer.main.get_command(app) if not prefix else group
    found = []
    for name, command in getattr(click_group, "commands", {}).items():
        path = (*prefix, name)
        found.append(path)
        found += _commands(command, path)
    return found


def test_no_help_text_shows_an_escaping_backslash() -> None:
    commands = _commands(app)
    assert ("export",) in commands and ("audit", "verify") in commands
    runner = CliRunner()
    for command in commands:
        out = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
        assert out.exit_code == 0, (command, out.output)
        assert "\\[" not in out.output, (command, out.output)
    export = runner.invoke(app, ["export", "--help"], env={"COLUMNS": "200"}).output
    assert "[default: all]" in export and "[default: SCREEN_EXPORT_TO]" in export


def test_nightly_records_the_inbox_as_an_absolute_path(tmp_path: Path) -> None:
    import json
    import subprocess

    from live import screen_cmd

    (tmp_path / "inbox").mkdir()
    out = subprocess.run(screen_cmd("nightly", "--inbox", "inbox", "--format", "json"),
                         env=_env(tmp_path), cwd=tmp_path, capture_output=True, text=True,
                         timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    runs = subprocess.run(screen_cmd("runs", "--format", "json"), env=_env(tmp_path),
                          capture_output=True, text=True, timeout=120, check=False)
    assert str(tmp_path / "inbox") in runs.stdout, runs.stdout
    assert json.loads(out.stdout)["status"]


def _seed_one(url: str, probability: float, flagged: bool) -> None:
    import datetime as dt

    from pneumoscreen import db

    now = dt.datetime.now(dt.timezone.utc)
    with db.session_scope(url) as session:
        mv = db.ModelVersion(name="m", version="1", file_sha256="f" * 64, input_spec={},
                             threshold=0.5, target_recall=0.95, trained=True, sidecar={})
        session.add(mv)
        session.flush()
        image = db.Image(sha256="0" * 64, source_path="/in/a.png", format="png",
                          status=db.ImageStatus.done, finished_at=now)
        session.add(image)
        session.flush()
        session.add(db.Prediction(image_id=image.id, model_version_id=mv.id,
                                  probability=probability, p_viral=0.83, threshold=0.5,
                                  flagged=flagged, in_scope=True, created_at=now))


def test_probabilities_print_alike_in_every_table(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.sqlite3'}"
    _seed_one(url, 1.0, True)
    env = {**_env(tmp_path), "SCREEN_DATABASE_URL": url, "COLUMNS": "200"}
    for command in (["flagged"], ["images"]):
        out = run_screen(env, *command, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "1.0000" in out.stdout and "│ 1.0 " not in out.stdout, out.stdout
    out = run_screen(env, "flagged", "--by", "study", timeout=120)
    assert "threshold 0.5000" in out.stdout, out.stdout


def test_predict_shows_the_subtype_for_flagged_films_only(tmp_path: Path,
                                                        shared_dir: Path) -> None:
    """A normal child's film (in scope, not flagged): the JSON keeps the model's subtype
    output, the table shows none. (A drawn sample would be out of scope: no subtype at all.)"""
    import json
    from concurrent.futures import ThreadPoolExecutor

    # The one-network default: any model with a subtype head makes the point.
    env = {**_env(tmp_path), "COLUMNS": "200"}
    film = str(shared_dir / "data/chest_xray/train/NORMAL/IM-0115-0001.jpeg")
    with ThreadPoolExecutor(max_workers=2) as pool:  # two processes, side by side
        as_json = pool.submit(run_screen, env, "predict", film, "--format", "json", timeout=600)
        as_table = pool.submit(run_screen, env, "predict", film, timeout=600)
        out, table = as_json.result(), as_table.result().stdout
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)["results"][0]
    assert result["in_scope"] is True and result["flagged"] is False
    assert result["p_viral"] is not None  # JSON keeps it
    assert f"{result['p_viral']:.2f}" not in table and f"{result['p_viral']:.3f}" not in table


def test_a_received_image_is_listed_by_its_sop_instance_uid(tmp_path: Path) -> None:
    import datetime as dt

    from pneumoscreen import db

    url = f"sqlite:///{tmp_path / 'x.sqlite3'}"
    uid = "1.2.826.0.1.3680043.8.498.1234567890"
    spooled = str(tmp_path / "data" / "spool" / "ab" / ("ab" + "c" * 62 + ".dcm"))
    now = dt.datetime.now(dt.timezone.utc)
    with db.session_scope(url) as session:
        session.add(db.Image(sha256="ab" + "c" * 62, source_path=spooled, format="dicom",
                             status=db.ImageStatus.queued, sop_instance_uid=uid,
                             finished_at=now))
    env = {**_env(tmp_path), "SCREEN_DATABASE_URL": url, "COLUMNS": "250"}
    out = run_screen(env, "images", timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"received, SOP {uid}" in out.stdout and "cccccccc" not in out.stdout, out.stdout
