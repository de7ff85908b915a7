"""Keep TensorFlow's start-up chatter off the operator's terminal unless ``--debug``.

On a CPU machine TensorFlow prints absl and CUDA lines on import ("failed call to cuInit …",
"Could not find cuda drivers …", oneDNN notes) that read like failures. Its C++ log level must be
set before the import, and the absl lines printed before ``absl::InitializeLog()`` ignore that
level, so the first ``import tensorflow`` runs with file descriptor 2 captured and only those
known lines are dropped; anything else it wrote is passed on.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from pneumoscreen.worker.logs import quiet_tensorflow

DEBUG_ENV = "SCREEN_DEBUG"
# time.perf_counter() when the running command began (its process's start under `screen`), for
# commands that report their own wall time; set by the CLI's root callback.
COMMAND_CLOCK = [0.0]


def process_age() -> float:
    """Seconds since this process started (Linux /proc; 0 where unknown)."""
    try:
        from pathlib import Path

        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0

# What TensorFlow, XLA and absl print on a CPU-only import; nothing else is dropped.
NOISE = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|[IW]\d{4} [\d:. ]+\d+ (port|cudart_stub|cpu_feature_guard|cuda_\w+|gpu_\w+)\.cc:\d+\] .*"
    rb"|E\d{4} [\d:. ]+\d+ cuda_\w+\.cc:\d+\] .*(cuInit|cuda drivers|CUDA).*)$"
)


def debug_enabled() -> bool:
    """``SCREEN_DEBUG`` is set to something other than 0/false/no (``--debug`` sets it)."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def configure(debug: bool) -> None:
    """Set TensorFlow's log levels before it is imported; install the quiet import once."""
    if debug:
        os.environ[DEBUG_ENV] = "1"
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
        return
    # 3 hides C++ INFO, WARNING and ERROR lines such as the cuInit failure on a CPU machine.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    quiet_tensorflow()
    if "tensorflow" not in sys.modules and not any(
            isinstance(f, _QuietTensorFlow) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlow())


@contextmanager
def filtered_stderr() -> Iterator[None]:
    """Capture file descriptor 2; afterwards write back every line that is not known noise."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        sys.stderr.flush()
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [line for line in tmp.read().splitlines(keepends=True)
                    if not NOISE.match(line.rstrip(b"\r\n"))]
            if kept:
                os.write(2, b"".join(kept))


class _QuietLoader(importlib.abc.Loader):
    """The real loader of ``tensorflow``, run with stderr filtered."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        with filtered_stderr():
            self._loader.exec_module(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _QuietTensorFlow(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` the normal way once, and wraps its loader in :class:`_QuietLoader`."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once: the real finders do the work from here on
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec
