"""How long the read-only commands take from process start to exit (``screen bench commands``).

Each command runs ``runs`` times as its own ``screen`` process against a small SQLite database
made for the purpose (the bundled samples' rows, no model call), so the figure is what an operator
waits for: interpreter start, imports, one query, the table. ``python -X importtime`` of one run
names the imports that cost the most (cumulative microseconds, the interpreter's own figure).
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

#: The read-only commands timed, as an operator types them.
COMMANDS: tuple[tuple[str, ...], ...] = (
    ("status",), ("images",), ("flagged",), ("runs",), ("exports",), ("audit",),
)


@dataclass(frozen=True)
class Timing:
    command: str
    wall_median_s: float
    cpu_median_s: float
    runs: int


def screen_argv() -> list[str]:
    """The ``screen`` entry point in this interpreter (no PATH lookup)."""
    return [sys.executable, "-c", "from pneumoscreen.worker.cli import main; main()"]


def prepare_database(folder: Path) -> dict[str, str]:
    """A SQLite database with a few images, predictions and audit events in ``folder``;
    returns the environment that points ``screen`` at it."""
    from pneumoscreen.db import Batch, Image, ImageStatus, Prediction, session_scope
    from pneumoscreen.db.queries import get_or_create_model_version

    env = dict(os.environ, SCREEN_DATA_DIR=str(folder / "data"),
               SCREEN_DATABASE_URL=f"sqlite:///{folder / 'bench.sqlite3'}",
               SCREEN_BROKER_URL="", NO_COLOR="1", COLUMNS="120")
    env.pop("SCREEN_DEBUG", None)
    with session_scope(env["SCREEN_DATABASE_URL"]) as session:
        mv = get_or_create_model_version(session=session, name="bench", version="1",
                                         file_sha256="0" * 64, input_spec={}, threshold=0.5,
                                         target_recall=None, trained=True)
        batch = Batch(kind="submit", source="bench")
        session.add(batch)
        session.flush()
        for i in range(40):
            image = Image(sha256=f"{i:064x}", source_path=f"/bench/{i}.png", format="png",
                          status=ImageStatus.done, batch_id=batch.id)
            session.add(image)
            session.flush()
            session.add(Prediction(image_id=image.id, model_version_id=mv.id,
                                   probability=i / 40, threshold=0.5, flagged=i >= 20,
                                   in_scope=i % 10 != 0))
    return env


def time_command(args: tuple[str, ...], env: dict[str, str], runs: int) -> Timing:
    """Median wall and CPU (user + system) seconds of ``runs`` runs of ``screen *args``."""
    walls: list[float] = []
    cpus: list[float] = []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run([*screen_argv(), *args], env=env, capture_output=True, text=True,
                              timeout=120, check=False)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if done.returncode != 0:
            raise RuntimeError(f"screen {' '.join(args)} failed: {done.stderr.strip()[:300]}")
    return Timing(" ".join(args), statistics.median(walls), statistics.median(cpus), runs)


def heaviest_imports(args: tuple[str, ...], env: dict[str, str], top: int) -> list[tuple[str, int]]:
    """The top-level imports of one run with the largest cumulative time (µs), from
    ``python -X importtime``."""
    done = subprocess.run([sys.executable, "-X", "importtime", *screen_argv()[1:], *args],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    found: list[tuple[str, int]] = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.split("|", 2)
        if not name.startswith(" ") or name.startswith("  "):
            continue  # only modules imported directly by the program, not their children
        try:
            found.append((name.strip(), int(cumulative)))
        except ValueError:
            continue  # the header line
    return sorted(found, key=lambda item: -item[1])[:top]


def run(runs: int = 9, top: int = 8,
        say: Callable[[str], None] = print) -> tuple[list[Timing], list[tuple[str, int]]]:
    """Time every read-only command; the heaviest imports of ``screen status``."""
    with tempfile.TemporaryDirectory(prefix="pneumoscreen-bench-") as tmp:
        env = prepare_database(Path(tmp))
        say(f"{runs} runs of each command, load average {os.getloadavg()[0]:.2f}")
        time_command(("status",), env, 1)  # the first run writes the byte-code caches
        timings = [time_command(args, env, runs) for args in COMMANDS]
        imports = heaviest_imports(("status",), env, top)
    return timings, imports
