"""The rooms and which way their imports point, counting imports inside functions.

db -> nothing of the project; worker/ingest -> nothing else of the project; model -> db and
worker/ingest; the rest of worker -> anything.
"""

from __future__ import annotations

import ast
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
