"""Ctrl-C, remembered: a KeyboardInterrupt raised where Python cannot propagate it (a ``__del__``,
a weakref or pool callback: "Exception ignored in …") would be lost, and an interrupted submit
would screen on to the end. The CLI's handler records the request too; the in-process screening
loops check it between tasks and chunks and stop there."""

from __future__ import annotations

import signal
import threading
from typing import Any

_requested = threading.Event()


def _handler(signum: int, frame: Any) -> None:
    _requested.set()
    raise KeyboardInterrupt


def install() -> None:
    """Handle SIGINT in this (main) thread: remember it, then raise KeyboardInterrupt."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _handler)


def check() -> None:
    """KeyboardInterrupt if Ctrl-C was pressed and its exception got lost on the way."""
    if _requested.is_set():
        raise KeyboardInterrupt
