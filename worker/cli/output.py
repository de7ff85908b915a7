"""Shared output helpers: Rich consoles, tables and the plain-JSON mode scripts rely on."""

from __future__ import annotations

import enum
import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


class Format(str, enum.Enum):
    table = "table"
    json = "json"


class FormatCsv(str, enum.Enum):
    table = "table"
    csv = "csv"
    json = "json"


def print_json(data: Any) -> None:
    """A plain JSON document on stdout and nothing else (no Rich markup, no colour)."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def make_table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    table = Table(title=title, show_lines=False, header_style="bold")
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    return table


def fail(message: str, code: int = 1) -> NoReturn:
    """Print a clear error to stderr and leave with ``code``."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)
