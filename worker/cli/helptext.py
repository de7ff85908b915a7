"""Help as an operator reads it: literal brackets, no ``<bool>`` on flags, no ``<list[Path]>``.

Typer renders help with Rich markup, so a help text saying ``[default: SCREEN_TASK_SIZE]`` lost
its bracket and printed " ."; flags showed ``<bool>`` and repeatable options ``<list[Path]>``.
:class:`ScreenGroup` tidies every command of the tree once, before Click parses anything, so
commands added by any module get the same treatment.
"""

from __future__ import annotations

import re
from typing import Any

from rich.markup import escape
from typer.core import TyperGroup

_LIST = re.compile(r"<list\[(\w+)\]>")


def _display(original: Any, *, flag: bool) -> Any:
    def display_type_rich(ctx: Any) -> str | None:
        if flag:
            return None
        shown = original(ctx)
        return shown if shown is None else _LIST.sub(lambda m: f"<{m[1].lower()}>", shown)
    return display_type_rich


def _tidy_param(param: Any) -> None:
    if getattr(param, "help", None):
        param.help = escape(param.help)
    if hasattr(param, "display_type_rich"):
        flag = bool(getattr(param, "is_flag", False))
        param.display_type_rich = _display(param.display_type_rich, flag=flag)


def tidy(command: Any) -> None:
    """Escape every help text (none is meant as markup) and simplify the type column."""
    if getattr(command, "_screen_tidy", False):
        return
    command._screen_tidy = True
    if command.help:
        command.help = escape(command.help)
    if getattr(command, "short_help", None):
        command.short_help = escape(command.short_help)
    for param in command.params:
        _tidy_param(param)
    made = command.get_help_option

    def get_help_option(ctx: Any) -> Any:  # Click makes --help per context
        option = made(ctx)
        if option is not None and not getattr(option, "_screen_tidy", False):
            option._screen_tidy = True
            _tidy_param(option)
        return option

    command.get_help_option = get_help_option
    for sub in getattr(command, "commands", {}).values():
        tidy(sub)


class ScreenGroup(TyperGroup):
    """The root ``screen`` group: tidies the help of the whole tree before running."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        tidy(self)
        return super().main(*args, **kwargs)
