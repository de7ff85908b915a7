"""Real services for integration tests: a clean Redis database and `screen worker` subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

WORKER_START_TIMEOUT = 90.0
SAMPLES = Path(__file__).resolve().parents[1] / "samples"
REDIS_URL = os.environ.get("SCREEN_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
PG_ADMIN_URL = os.environ.get(
    "SCREEN_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@contextmanager
def fresh_pg_database() -> Iterator[str]:
    """A new, empty PostgreSQL database, dropped afterwards; skips when PostgreSQL is absent."""
    import sqlalchemy as sa

    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text("select 1"))
    except sa.exc.OperationalError:
        admin.dispose()
        pytest.skip(f"PostgreSQL is not reachable at {PG_ADMIN_URL}")
    name = f"pneumoscreen_t_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        from pneumoscreen.db import reset_engines

        reset_engines()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def redis_or_skip(url: str) -> None:
    """Flush the test's Redis database, or skip when Redis is not running."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2)
        client.flushdb()
        client.close()
    except redis.exceptions.ConnectionError:
        pytest.skip(f"Redis is not reachable at {url}")


# With a broker the submitter and the workers must share an explicit pseudonym key.
TEST_PATIENT_KEY = "test-only-patient-key-5f0c2a9e81b7d4366e2fa1c09b8d7e54"


def screen_env(*, data_dir: Path, database_url: str, broker_url: str,
               **extra: str) -> dict[str, str]:
    """The environment of a `screen` subprocess: these services, an explicit patient key (unless
    ``extra`` names a key or key file) and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCREEN_")}
    env.update(SCREEN_DATA_DIR=str(data_dir), SCREEN_DATABASE_URL=database_url,
               SCREEN_BROKER_URL=broker_url, SCREEN_CONFIG=str(data_dir / "none.toml"),
               TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    if not {"SCREEN_PATIENT_KEY", "SCREEN_PATIENT_KEY_FILE"} & extra.keys():
        env["SCREEN_PATIENT_KEY"] = TEST_PATIENT_KEY
    env.update(extra)
    return env


def screen_cmd(*args: str) -> list[str]:
    """The installed CLI, run with this interpreter (works in a venv without activating it)."""
    return [sys.executable, "-c", "from pneumoscreen.worker.cli import main; main()", *args]


def run_screen(env: dict[str, str], *args: str,
               timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(screen_cmd(*args), env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


class ScreenProcess:
    """A `screen` command in its own process group, its output kept in a log file."""

    what = "screen"
    ready_marker = ""
    start_timeout = 60.0

    def __init__(self, env: dict[str, str], log_path: Path, *args: str,
                 append: bool = False) -> None:
        self.log_path = log_path
        # Only this run's part of an appended log counts for readiness.
        self._start = log_path.stat().st_size if append and log_path.exists() else 0
        self._log = open(log_path, "a" if append else "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(screen_cmd(*args), env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float | None = None) -> ScreenProcess:
        timeout = self.start_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.what} exited early:\n{self.log()}")
            if self.ready_marker in self.log()[self._start:]:
                return self
            time.sleep(0.2)
        raise AssertionError(f"{self.what} not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the whole process group: the parent and its pool children die at once."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self._log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
        self._log.close()


class WorkerProcess(ScreenProcess):
    """`screen worker` with its log kept for failure messages."""

    what = "worker"
    ready_marker = " ready."
    start_timeout = WORKER_START_TIMEOUT

    def __init__(self, env: dict[str, str], log_path: Path, name: str = "w1",
                 *extra: str) -> None:
        super().__init__(env, log_path, "worker", "--hostname", f"{name}@%h", "--loglevel",
                         "INFO", *extra)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str,
               on_timeout: Callable[[], str] = lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{on_timeout()}")


def rows_of(database_url: str, sql: str) -> list[tuple]:
    """The rows of one SQL query: the cheap way to poll while a worker runs (a `screen` process
    per poll costs a core for most of a second)."""
    import sqlalchemy as sa

    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql))]
    except sa.exc.OperationalError:  # SQLite: not created yet
        return []
    finally:
        engine.dispose()


def all_final(database_url: str) -> bool:
    """Every registered image is done, rejected or failed (and there is at least one)."""
    rows = rows_of(database_url, "SELECT status FROM studies")
    return bool(rows) and all(r[0] in ("done", "rejected", "failed") for r in rows)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (for a broker that is down)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_pngs(folder: Path, n: int, *, size: int = 256, seed: int = 0,
              prefix: str = "study") -> list[Path]:
    """``n`` small grey PNGs with distinct contents (so each registers as its own study)."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"{prefix}_{seed}_{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def bundled_model_copy(folder: Path, version: str, name: str = "cnn-v2.keras") -> Path:
    """The bundled network as another file and version (same weights, a zip comment)."""
    import shutil
    import zipfile

    from pneumoscreen.model.bundle import bundled_model_path, read_spec, write_sidecar

    dst = Path(folder) / name
    shutil.copy(bundled_model_path(), dst)
    with zipfile.ZipFile(dst, "a") as archive:
        archive.comment = f"copy as {version}".encode()
    spec = read_spec(bundled_model_path())
    spec.version = version
    write_sidecar(dst, spec)
    return dst
