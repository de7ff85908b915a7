"""The rooms and which way their imports point, counting imports inside functions.

db -> nothing of the project; worker/ingest -> nothing else of the project; model -> db and
worker/ingest; the rest of worker -> anything of those. Inside worker/, its own rooms point one
way too (see WORKER_ALLOWED), and no import chain between worker modules comes back to where it
started.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ALLOWED = {"db": set(), "ingest": set(), "model": {"db", "ingest"},
           "worker": {"db", "ingest", "model"}}


def room_of_file(path: Path) -> str | None:
    rel = path.relative_to(REPO).as_posix()
    if rel.startswith("worker/ingest/"):
        return "ingest"
    for room in ("db", "model", "worker"):
        if rel.startswith(f"{room}/"):
            return room
    return None


def room_of_module(name: str) -> str | None:
    parts = name.split(".")
    if parts[0] != "pneumoscreen" or len(parts) < 2:
        return None
    if parts[1:3] == ["worker", "ingest"]:
        return "ingest"
    return parts[1] if parts[1] in ALLOWED else None


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):  # every import, at module level or inside a function
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def wrong_way_imports() -> list[str]:
    bad = []
    for path in sorted(REPO.glob("[dmw]*/**/*.py")):
        room = room_of_file(path)
        if room is None or "migrations" in path.parts:
            continue
        for line, module in imported_modules(ast.parse(path.read_text())):
            target = room_of_module(module)
            if target and target != room and target not in ALLOWED[room]:
                bad.append(f"{path.relative_to(REPO)}:{line} ({room}) imports {module}")
    return bad


def test_imports_point_one_way() -> None:
    assert wrong_way_imports() == []


def test_the_check_sees_a_wrong_way_import(tmp_path: Path) -> None:
    """The walker finds an import hidden inside a function."""
    tree = ast.parse("def f():\n    from pneumoscreen.worker.settings import get_settings\n")
    assert imported_modules(tree) == [(2, "pneumoscreen.worker.settings")]
    assert room_of_module("pneumoscreen.worker.ingest.api") == "ingest"
    assert room_of_module("pneumoscreen.worker.settings") == "worker"
    assert "worker" not in ALLOWED["model"] and not ALLOWED["db"] and not ALLOWED["ingest"]


@pytest.mark.parametrize("room", ["db", "model", "worker"])
def test_every_module_is_in_a_room(room: str) -> None:
    files = list((REPO / room).rglob("*.py"))
    assert files and all(room_of_file(f) for f in files)


# The rooms inside worker/ and the rooms each may import (db, model, ingest aside: above).
# "base" is the shared top level (settings, audit, keys, status); "publish" is task publishing
# (queue/publish.py with the app and the message checks it needs); "tasks" the Celery entries.
WORKER_ALLOWED = {
    "base": set(),
    "publish": {"base"},
    "screening": {"base"},
    "export": {"base", "publish"},
    "intake": {"base", "publish", "screening"},
    "receive": {"base", "publish", "screening", "intake"},
    "tasks": {"base", "publish", "screening", "intake", "export"},
    "bench": {"base", "publish", "screening", "intake", "export"},
    "cli": {"base", "publish", "screening", "intake", "export", "receive", "tasks", "bench"},
}
PUBLISH = {"app", "publish", "messages"}


def worker_room(module: str) -> str | None:
    """The worker room of ``pneumoscreen.worker.X…`` (None outside worker/ or in ingest)."""
    parts = module.split(".")
    if parts[:2] != ["pneumoscreen", "worker"] or len(parts) < 3 or parts[2] == "ingest":
        return None
    if parts[2] == "queue":
        if len(parts) == 3:
            return "tasks"
        return "publish" if parts[3] in PUBLISH else "tasks"
    return parts[2] if parts[2] in WORKER_ALLOWED else "base"


def module_of_file(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["pneumoscreen", *parts])


def worker_modules() -> dict[str, set[str]]:
    """Each worker module (ingest aside) and the worker modules it imports, anywhere in it."""
    graph: dict[str, set[str]] = {}
    for path in sorted((REPO / "worker").rglob("*.py")):
        name = module_of_file(path)
        if worker_room(name) is None:
            continue
        graph[name] = {m for _, m in imported_modules(ast.parse(path.read_text()))
                       if worker_room(m) is not None and m != name}
    return graph


def wrong_way_worker_imports(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for name, targets in graph.items():
        room = worker_room(name)
        for target in sorted(targets):
            other = worker_room(target)
            if other != room and other not in WORKER_ALLOWED[room or ""]:
                bad.append(f"{name} ({room}) imports {target} ({other})")
    return bad


def cycles(graph: dict[str, Iterable[str]]) -> list[list[str]]:
    """The import cycles (as module paths) of ``graph``, one per strongly connected set."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in graph:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_worker_rooms_point_one_way() -> None:
    assert wrong_way_worker_imports(worker_modules()) == []


def test_no_import_cycle_inside_worker() -> None:
    """Package __init__ modules that only gather their room (cli's command registry) aside."""
    graph = worker_modules()
    gathering = {"pneumoscreen.worker.cli"}
    graph = {k: {m for m in v if m not in gathering} for k, v in graph.items()}
    assert cycles(graph) == []


def test_the_worker_checks_see_a_cycle_and_a_wrong_way_import() -> None:
    graph = {"pneumoscreen.worker.intake.enqueue": {"pneumoscreen.worker.queue.tasks"},
             "pneumoscreen.worker.queue.tasks": {"pneumoscreen.worker.intake.nightly"},
             "pneumoscreen.worker.intake.nightly": {"pneumoscreen.worker.intake.enqueue"}}
    assert cycles(graph) == [sorted(graph)]
    assert wrong_way_worker_imports(graph) == [
        "pneumoscreen.worker.intake.enqueue (intake) imports pneumoscreen.worker.queue.tasks "
        "(tasks)"]
    assert worker_room("pneumoscreen.worker.queue.publish") == "publish"
    assert worker_room("pneumoscreen.worker.settings") == "base"
    assert worker_room("pneumoscreen.worker.ingest.api") is None


PATH_DOC = REPO / "docs" / "architecture.md"


def path_names() -> list[str]:
    """Every ``pneumoscreen.…`` name in the data-flow section of docs/architecture.md."""
    import re

    text = PATH_DOC.read_text()
    section = text[text.index("## The path of an image"):text.index("## Modules")]
    return re.findall(r"`(pneumoscreen\.[\w.]+)`", section)


def test_the_documented_path_names_real_functions() -> None:
    import importlib

    names = path_names()
    assert len(names) >= 30
    for name in names:
        parts = name.split(".")
        for cut in range(len(parts) - 1, 1, -1):  # the longest importable module prefix
            try:
                obj: object = importlib.import_module(".".join(parts[:cut]))
            except ModuleNotFoundError:
                continue
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
            assert callable(obj), name
            break
        else:
            raise AssertionError(f"{name}: no such module")
