"""Count package changes and returns on a path through pneumoscreen, by tracing a real run.

Usage: ``python tests/path_trace.py submit|store [list]`` (SCREEN_PATIENT_KEY set; no broker,
SQLite in a temporary folder). ``submit``: a folder of one PNG and one DICOM through
``submit_folder`` to prediction rows; ``store``: one received DICOM from the spool write through
the registrar, screening and the export to a ``file://`` destination (the SR written).

Method: every pneumoscreen function called directly by pneumoscreen code (module and class
bodies, what they call while an import runs, and calls made back by libraries, e.g. SQLAlchemy
column defaults, left out) is listed in the order of its first call, each other thread's calls
together where that thread's first call fell (a path is one thread of control). Each gets its
package (pneumoscreen.db, pneumoscreen.model, pneumoscreen.worker.intake, ...; modules at
worker/'s top level: pneumoscreen.worker). Runs of the same package collapse into one step. A
*change* is a step to another package; a *return* is a change into a package the path has been
in before (intake -> model -> ingest -> intake: three changes, one return).

The second count (``db_top_level_progress_aside``) leaves out ``db``, worker/'s top level and
``model.progress``, and what runs while one of them is on the stack (their own work); a function
first called there counts at its first call elsewhere.
"""

from __future__ import annotations

import inspect
import itertools
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(os.environ.get("REPO") or Path(__file__).resolve().parents[1])


def package(mod: str) -> str:
    parts = mod.split(".")
    if parts[:2] == ["pneumoscreen", "worker"] and len(parts) >= 4:
        return ".".join(parts[:3])
    return ".".join(parts[:2])


NEWLOCALS = inspect.CO_NEWLOCALS
seen: set[str] = set()  # functions with an entry on the path
seen_aside: set[str] = set()  # functions with an entry made while an aside function ran
order: list[tuple[str, str]] = []
threads: list[int] = []  # the thread of each entry of ``order`` (numbered, never reused)
#: Entries made while a function left out of the second count ran (its own work): a function
#: gets such an entry at its first call there and a path entry at its first call elsewhere.
under_aside: list[bool] = []
_thread = threading.local()
_numbers = itertools.count()


def thread_number() -> int:
    """This thread's number: unlike ``threading.get_ident()``, never given to a later thread."""
    if not hasattr(_thread, "number"):
        _thread.number = next(_numbers)
    return _thread.number


def prof(frame: Any, event: str, arg: Any) -> None:
    if event != "call":
        return
    mod = frame.f_globals.get("__name__", "")
    if not mod.startswith("pneumoscreen.") or not frame.f_code.co_flags & NEWLOCALS:
        return  # module and class bodies run at import: not the path
    back = frame.f_back
    if back is None or not str(back.f_globals.get("__name__", "")).startswith("pneumoscreen."):
        return
    if not back.f_code.co_flags & NEWLOCALS:
        return  # called while a module or class body runs (an import)
    name = f"{mod}.{frame.f_code.co_qualname}"
    if name in seen:
        return
    aside = _under_aside(back)
    if aside and name in seen_aside:
        return
    (seen_aside if aside else seen).add(name)
    order.append((name, package(mod)))
    threads.append(thread_number())
    under_aside.append(aside)


def _aside(mod: str) -> bool:
    return mod.startswith(ASIDE) or package(mod) == "pneumoscreen.worker"


def _under_aside(frame: Any) -> bool:
    """Whether a function left out of the second count is on the stack (the caller or above)."""
    while frame is not None:
        mod = str(frame.f_globals.get("__name__", ""))
        if mod.startswith("pneumoscreen.") and frame.f_code.co_flags & NEWLOCALS and _aside(mod):
            return True
        frame = frame.f_back
    return False


MAIN_THREAD = thread_number()  # the thread that imports this module runs the scenario


def run(fn: Callable[[], None]) -> None:
    sys.setprofile(prof)
    threading.setprofile(prof)
    try:
        fn()
    finally:
        sys.setprofile(None)
        threading.setprofile(None)


#: Left out of the second count: the statements' room, the worker's top-level helpers (settings,
#: keys, audit, logs) and the progress protocol every long loop reports to, with what they call
#: (the settings' session names the default model, its ingest_config builds the policy).
ASIDE = ("pneumoscreen.db.", "pneumoscreen.model.progress.")


def by_thread(entries: list[Any] | None = None) -> list[Any]:
    """``entries`` (default: ``order``; one per entry of ``order``) with each other thread's
    calls together, where that thread's first call fell: a path is what one thread of control
    passes, not how two threads' first calls interleave."""
    entries = order if entries is None else entries
    placed: set[int] = set()
    out: list[Any] = []
    for entry, number in zip(entries, threads, strict=True):
        if number == MAIN_THREAD:
            out.append(entry)
        elif number not in placed:
            placed.add(number)
            out.extend(e for e, t in zip(entries, threads, strict=True) if t == number)
    return out


def _steps(entries: list[tuple[str, str]]) -> list[str]:
    steps: list[str] = []
    for _, pkg in entries:
        if not steps or steps[-1] != pkg:
            steps.append(pkg)
    return steps


def _count(steps: list[str]) -> dict[str, int]:
    return {"changes": len(steps) - 1,
            "returns": sum(1 for i, p in enumerate(steps) if p in steps[:i])}


def counts() -> dict[str, Any]:
    # Every step: each function once, at its first call. Aside: the entries made outside the
    # aside functions' own work, without the aside functions themselves.
    first: set[str] = set()
    marked: list[tuple[str, str, bool, bool]] = []
    for (name, pkg), aside in zip(order, under_aside, strict=True):
        everywhere = name not in first
        first.add(name)
        on_path = not aside and not (name.startswith(ASIDE) or pkg == "pneumoscreen.worker")
        marked.append((name, pkg, everywhere, on_path))
    path = by_thread(marked)
    steps = _steps([(n, p) for n, p, everywhere, _ in path if everywhere])
    aside_steps = _steps([(n, p) for n, p, _, on_path in path if on_path])
    return {"functions": len(first), **_count(steps),
            "db_top_level_progress_aside": _count(aside_steps), "steps": steps}


def settings_for(tmp: str, **extra: Any) -> Any:
    from pneumoscreen.worker.settings import Settings
    return Settings(database_url=f"sqlite:///{tmp}/t.sqlite3", data_dir=Path(tmp, "data"),
                    broker_url=None, decode_processes=0, **extra)


def submit_scenario(tmp: str) -> None:
    """`screen submit` of a folder holding one PNG and one DICOM, no broker: to prediction rows."""
    from pneumoscreen.worker.intake.submit import submit_folder
    folder = Path(tmp, "in")
    folder.mkdir()
    for name in ("chest_export.png", "cr_chest_mono2_12bit_windowed.dcm"):
        shutil.copy(REPO / "samples" / name, folder / name)
    settings = settings_for(tmp)
    run(lambda: submit_folder(folder, settings=settings))


def store_scenario(tmp: str) -> None:
    """A received instance (from the spool write on) to its SR in a file:// destination."""
    from pneumoscreen.worker.receive.registrar import Registrar
    from pneumoscreen.worker.receive.spool import Spool
    out = Path(tmp, "out")
    out.mkdir()
    settings = settings_for(tmp, export_to=[f"file://{out}"])
    spool = Spool(settings.data_dir / "spool")
    data = (REPO / "samples" / "cr_chest_mono2_12bit_windowed.dcm").read_bytes()

    def go() -> None:
        registrar = Registrar(settings, spool, stable_seconds=0)
        file = spool.write(data)
        registrar.notify(file, time.time() - 100)
        registrar.tick(time.time() + 100)

    run(go)
    assert list(out.rglob("*.dcm")), "no SR written"


if __name__ == "__main__":
    scenario = {"submit": submit_scenario, "store": store_scenario}[sys.argv[1]]
    with tempfile.TemporaryDirectory() as tmp:
        scenario(tmp)
    print(json.dumps(counts()))
    if len(sys.argv) > 2:
        for name, pkg in by_thread():
            print(f"  {pkg:32} {name}")
