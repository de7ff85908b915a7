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
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

# C0 and C1 control characters (ESC among them) would reach the terminal as escape sequences.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean(value: Any) -> str:
    """``str(value)`` with C0 and C1 control characters (ESC among them) replaced by U+FFFD."""
    return _CONTROL.sub("\ufffd", str(value))


def _pipe_width() -> int | None:
    """In a pipe (no terminal, no COLUMNS) tables may be wider than 80 columns rather than break
    words; on a terminal Rich uses its width."""
    if sys.stdout.isatty() or os.environ.get("COLUMNS"):
        return None
    return 160


class SafeConsole(Console):
    """A console that never lets a C0/C1 control character of the text reach the terminal.

    The safety net under :func:`plain`: whatever a command prints (a table cell, a progress
    description, a caption, an error), the characters of every text segment are cleaned just
    before styles are rendered to escape sequences, so ``ESC]0;…`` or ``ESC[2J`` in a file name
    prints as U+FFFD. Rich's own control segments (cursor moves of live displays) pass.
    """

    def _render_buffer(self, buffer: Iterable[Segment]) -> str:
        return super()._render_buffer(
            seg if seg.control or not _CONTROL.search(seg.text)
            else Segment(clean(seg.text), seg.style, seg.control) for seg in buffer)


console = SafeConsole(width=_pipe_width())
err_console = SafeConsole(stderr=True)


class Format(str, enum.Enum):
    table = "table"
    json = "json"


class FormatCsv(str, enum.Enum):
    table = "table"
    csv = "csv"
    json = "json"


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


# A spreadsheet reads a cell starting with one of these as a formula (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: str) -> str:
    """A text cell made safe for a spreadsheet: a leading formula character gets a ``'`` before
    it (OWASP's advice), then control characters are replaced."""
    return clean("'" + value if value.startswith(FORMULA_STARTS) else value)


def write_csv(rows: Iterable[dict[str, Any]], fields: Sequence[str]) -> None:
    """CSV on stdout, text values neutralised (:func:`csv_cell`: no formula, and a file name's
    ``ESC[2J`` must not reach the terminal from a CSV either); extra keys are ignored. Numbers
    stay numbers."""
    import csv

    writer = csv.DictWriter(sys.stdout, fieldnames=list(fields), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: csv_cell(v) if isinstance(v, str) else v for k, v in row.items()})


def print_json(data: Any) -> None:
    """A plain JSON document on stdout and nothing else (no Rich markup, no colour)."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


# Words up to this long are never broken across lines; a column with longer tokens (paths,
# versions) folds them instead.
_WORD = 12


def _longest_word(text: str) -> int:
    return max((len(w) for w in text.split()), default=0)


def _fit(natural: list[int], least: list[int], room: int) -> list[int]:
    """Column widths within ``room``: the widest columns give way first, none below its least."""
    widths = list(natural)
    while sum(widths) > room:
        shrinkable = [i for i, w in enumerate(widths) if w > least[i]]
        if not shrinkable:
            break  # even the least widths do not fit: the table is wider than the terminal
        widest = max(shrinkable, key=lambda i: widths[i])
        widths[widest] -= 1
    return widths


def make_table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    """A table whose every cell is plain text (file names and tag values are untrusted); a cell
    that is already a ``Text`` keeps its style. Header words and cell words up to 12 characters
    are never broken (they wrap between words); columns with longer tokens (paths, versions)
    fold them. In a pipe the table may be wider than 80 columns (see :func:`_pipe_width`)."""
    cells = [[Text("") if v is None else plain(v) for v in row] for row in rows]
    headers = [col.replace("_", " ") for col in columns]  # "outside_scope" wraps between words
    table = Table(title=None if title is None else plain(title), show_lines=False,
                  header_style="bold")
    natural, least, folds = [], [], []
    for i, header in enumerate(headers):
        texts = [header] + [r[i].plain for r in cells if i < len(r)]
        longest = max(_longest_word(t) for t in texts[1:]) if len(texts) > 1 else 0
        fold = longest > _WORD
        folds.append(fold)
        least.append(max(_longest_word(header), 6 if fold else longest))
        natural.append(max(len(line) for t in texts for line in (t.split("\n") or [""])))
    # Rich squeezes an over-wide table evenly and then re-grows columns to their minimum, which
    # crops the right edge; widths chosen here fit the console when the minimums do.
    room = console.width - (3 * len(headers) + 1)
    for header, fold, width, low in zip(headers, folds, _fit(natural, least, room), least,
                                        strict=True):
        table.add_column(plain(header), overflow="fold" if fold else "ellipsis",
                         min_width=low, max_width=max(width, low))
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
