"""Shared output helpers: Rich consoles, tables and the plain-JSON mode scripts rely on."""

from __future__ import annotations

import enum
import json
import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

console = Console()
err_console = Console(stderr=True)


class Format(str, enum.Enum):
    table = "table"
    json = "json"


class FormatCsv(str, enum.Enum):
    table = "table"
    csv = "csv"
    json = "json"


# C0 and C1 control characters (ESC among them) would reach the terminal as escape sequences.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def plain(value: Any) -> Text:
    """Untrusted or variable text as a Rich ``Text``: never read as markup, control characters
    replaced by U+FFFD."""
    if isinstance(value, Text):
        return value
    return Text(_CONTROL.sub("\ufffd", str(value)))


def counted(n: int, one: str, many: str | None = None) -> str:
    """``"1 study"``, ``"2 studies"``: a count with its noun in the right number."""
    return f"{n} {one if n == 1 else (many or one + 's')}"


def print_json(data: Any) -> None:
    """A plain JSON document on stdout and nothing else (no Rich markup, no colour)."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def make_table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    """A table whose every cell is plain text (file names and tag values are untrusted); a cell
    that is already a ``Text`` keeps its style."""
    table = Table(title=None if title is None else plain(title), show_lines=False,
                  header_style="bold")
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*(Text("") if v is None else plain(v) for v in row))
    return table


class RichProgress:
    """The :class:`pneumoscreen.model.progress.Progress` protocol on Rich progress bars: one bar
    per stage, notes logged above them."""

    def __init__(self, progress: Any, labels: dict[str, str] | None = None) -> None:
        self.progress = progress
        self.labels = labels or {}
        self.tasks: dict[str, Any] = {}

    def start(self, stage: str, total: int | None) -> None:
        if stage in self.tasks:
            self.progress.reset(self.tasks[stage], total=total)
        else:
            self.tasks[stage] = self.progress.add_task(self.labels.get(stage, stage),
                                                       total=total)

    def advance(self, stage: str, n: int = 1) -> None:
        if stage in self.tasks:
            self.progress.advance(self.tasks[stage], n)

    def note(self, text: str) -> None:
        self.progress.console.log(text)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print a clear error to stderr and leave with ``code``."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)
