"""The one progress protocol: training, evaluation, submits and benchmarks report through it.

Callers pass an object with these three methods (the CLI draws Rich progress bars; tests, the
worker and the beat task pass nothing and get :class:`Silent`). It lives in ``model`` because
that is the lowest layer both the training code and the worker import.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def start(self, stage: str, total: int | None) -> None:
        """A stage begins; ``total`` units are expected (None: unknown)."""

    def advance(self, stage: str, n: int = 1) -> None:
        """``n`` more units of ``stage`` are done."""

    def note(self, text: str) -> None:
        """A line worth showing (a stage's name, an epoch's figures)."""


class Silent:
    """Reports nothing."""

    def start(self, stage: str, total: int | None) -> None:
        pass

    def advance(self, stage: str, n: int = 1) -> None:
        pass

    def note(self, text: str) -> None:
        pass
