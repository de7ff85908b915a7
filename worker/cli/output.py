"""Shared output helpers: Rich consoles, tables and the plain-JSON mode scripts rely on."""

from __future__ import annotations

import enum
import json
import os
import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text


def _pipe_width() -> int | None:
    """In a pipe (no terminal, no COLUMNS) tables may be wider than 80 columns rather than break
    words; on a terminal Rich uses its width."""
    if sys.stdout.isatty() or os.environ.get("COLUMNS"):
        return None
    return 160


console = Console(width=_pipe_width())
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


def clean(value: Any) -> str:
    """``str(value)`` with C0 and C1 control characters (ESC among them) replaced by U+FFFD."""
    return _CONTROL.sub("\ufffd", str(value))


def plain(value: Any, style: str = "") -> Text:
    """Untrusted or variable text as a Rich ``Text``: never read as markup, control characters
    replaced by U+FFFD. A ``Text`` keeps its style; its characters are cleaned too."""
    if isinstance(value, Text):
        if _CONTROL.search(value.plain):
            value = value.copy()
            value.plain = clean(value.plain)
        return value
    return Text(clean(value), style=style)


def counted(n: int, one: str, many: str | None = None) -> str:
    """``"1 study"``, ``"2 studies"``: a count with its noun in the right number."""
    return f"{n} {one if n == 1 else (many or one + 's')}"


def print_json(data: Any) -> None:
    """A plain JSON document on stdout and nothing else (no Rich markup, no colour)."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


# Words up to this long are never broken across lines; longer tokens (paths) fold.
_WORD = 24


def _longest_word(text: str) -> int:
    return max((len(w) for w in text.split()), default=0)


def make_table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    """A table whose every cell is plain text (file names and tag values are untrusted); a cell
    that is already a ``Text`` keeps its style. Headers and words are not broken mid-word;
    columns holding paths or other long tokens fold them."""
    cells = [[Text("") if v is None else plain(v) for v in row] for row in rows]
    table = Table(title=None if title is None else plain(title), show_lines=False,
                  header_style="bold")
    for i, col in enumerate(columns):
        words = [_longest_word(col)] + [_longest_word(r[i].plain) for r in cells if i < len(r)]
        longest = max(words)
        path_like = any("/" in r[i].plain or "\\" in r[i].plain for r in cells if i < len(r))
        fold = path_like or longest > _WORD
        table.add_column(plain(col), overflow="fold" if fold else "ellipsis",
                         min_width=min(longest, _WORD))
    for row in cells:
        table.add_row(*row)
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
            self.tasks[stage] = self.progress.add_task(
                escape(clean(self.labels.get(stage, stage))), total=total)

    def advance(self, stage: str, n: int = 1) -> None:
        if stage in self.tasks:
            self.progress.advance(self.tasks[stage], n)

    def note(self, text: str) -> None:
        self.progress.console.log(plain(text))


def error_line(message: str) -> None:
    """``error: message`` on stderr; the message is plain text (it quotes paths and values)."""
    # soft_wrap: the terminal wraps long lines; the message stays the lines it was written as.
    err_console.print(Text("error: ", style="bold red") + plain(message), highlight=False,
                      soft_wrap=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print a clear error to stderr and leave with ``code``."""
    error_line(message)
    raise typer.Exit(code)
