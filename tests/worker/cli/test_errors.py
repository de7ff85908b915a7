"""Every command answers a broken database, broker, model or setting in one or two lines with
the fix and a non-zero exit; `--debug` keeps the traceback. Through the real entry point."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from live import REDIS_URL, SAMPLES, TEST_PATIENT_KEY, free_port, redis_or_skip, run_screen


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SCREEN_") and not k.startswith("TF_CPP")}
    env.update(SCREEN_DATA_DIR=str(tmp_path / "data"), SCREEN_CONFIG=str(tmp_path / "none.toml"),
               PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def _error_lines(stderr: str) -> list[str]:
    """The lines from ``error:`` on (progress bars printed before it are not the answer)."""
    lines = stderr.strip().splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("error:")]
    assert starts, stderr
    return lines[starts[0]:]


def _assert_short(out: object, code: int, *needles: str) -> None:
    stderr = out.stderr  # type: ignore[attr-defined]
    assert out.returncode == code, (out.returncode, stderr)  # type: ignore[attr-defined]
    assert "Traceback" not in stderr, stderr
    lines = _error_lines(stderr)
    assert 1 <= len(lines) <= 2, stderr
    for needle in needles:
        assert needle in stderr, stderr


@pytest.mark.parametrize("command", [["status"], ["studies"], ["flagged"], ["runs"],
                                     ["reports"], ["models"], ["submit", str(SAMPLES)]])
def test_unreachable_database(tmp_path: Path, command: list[str]) -> None:
    url = f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/x"
    out = run_screen(_env(tmp_path, SCREEN_DATABASE_URL=url), *command, timeout=120)
    _assert_short(out, 3, "cannot use the database", "SCREEN_DATABASE_URL=postgresql")


@pytest.mark.parametrize(("url", "needle"), [
    ("nonsense://x", "invalid setting SCREEN_DATABASE_URL: 'nonsense' databases are not"),
    ("sqlite:////proc/no-such-folder/x.sqlite3", "no database at /proc/no-such-folder"),
])
def test_misconfigured_database(tmp_path: Path, url: str, needle: str) -> None:
    out = run_screen(_env(tmp_path, SCREEN_DATABASE_URL=url), "status", timeout=120)
    _assert_short(out, 1, needle)


def test_debug_keeps_the_traceback(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/x"
    out = run_screen(_env(tmp_path, SCREEN_DATABASE_URL=url), "--debug", "status", timeout=120)
    assert out.returncode != 0 and "Traceback" in out.stderr and "OperationalError" in out.stderr
    out = run_screen(_env(tmp_path, SCREEN_DATABASE_URL=url, SCREEN_DEBUG="1"), "status",
                     timeout=120)
    assert out.returncode != 0 and "Traceback" in out.stderr


def test_invalid_setting(tmp_path: Path) -> None:
    out = run_screen(_env(tmp_path, SCREEN_TASK_SIZE="0"), "status", timeout=120)
    _assert_short(out, 1, "invalid setting SCREEN_TASK_SIZE")


def test_unreachable_broker(tmp_path: Path) -> None:
    broker = f"redis://127.0.0.1:{free_port()}/0"
    out = run_screen(_env(tmp_path, SCREEN_BROKER_URL=broker,
                          SCREEN_PATIENT_KEY=TEST_PATIENT_KEY), "submit", str(SAMPLES),
                     timeout=120)
    _assert_short(out, 3, "cannot reach the broker", "screen resume")


@pytest.mark.parametrize("command", [["predict", str(SAMPLES / "chest_export.png")], ["models"],
                                     ["evaluate", str(SAMPLES)]])
def test_missing_model(tmp_path: Path, command: list[str]) -> None:
    env = _env(tmp_path, SCREEN_MODEL_PATH=str(tmp_path / "nope.keras"))
    out = run_screen(env, *command, timeout=120)
    assert out.returncode != 0
    _assert_short(out, out.returncode, "nope.keras")


def test_submit_with_a_broker_says_queueing(tmp_path: Path) -> None:
    """With a broker the studies are only queued: the bar must not say they are screened."""
    redis_or_skip(REDIS_URL)
    out = run_screen(_env(tmp_path, SCREEN_BROKER_URL=REDIS_URL,
                          SCREEN_PATIENT_KEY=TEST_PATIENT_KEY), "submit", str(SAMPLES),
                     timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Queueing" in out.stderr and "Screening" not in out.stderr
    assert "Queued." in out.stdout


@pytest.mark.postgres
def test_a_value_the_database_refuses_does_not_blame_the_server(pg_url: str) -> None:
    """A real PostgreSQL refusal of a NUL: the answer says the value was refused and the
    database is fine, never "check that its server is running" (exit 1, not 3)."""
    import sqlalchemy as sa

    from pneumoscreen.worker.cli.errors import EXIT_ERROR, explain

    engine = sa.create_engine(pg_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE t (v text)"))
            conn.execute(sa.text("INSERT INTO t VALUES (:v)"), {"v": "1.2.840\x00.10008"})
    except Exception as exc:  # the refusal is what is tested
        message, code = explain(exc)
    else:
        pytest.fail("PostgreSQL accepted a NUL")
    finally:
        engine.dispose()
    assert code == EXIT_ERROR
    assert message.startswith("the database refused a value: ")
    assert "server is running" not in message and "the database is fine" in message
