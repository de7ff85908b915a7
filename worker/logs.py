"""The one logging set-up: which libraries' loggers are kept quiet, and the listener's format.

Logs carry no patient data: highdicom's warnings quote header values and pynetdicom's INFO and
DEBUG lines show tag values; alembic's migration chatter and matplotlib's font-cache notices
are noise in a worker's start-up log. TensorFlow's Python loggers are set here too; its C++ lines
are handled before it is imported (``cli/quiet.py``). Every logger level of the project is set in
this module.
"""

from __future__ import annotations

import logging
import sys

LIBRARY_LEVELS = {
    "alembic": logging.WARNING,
    "highdicom": logging.WARNING,
    "pynetdicom": logging.WARNING,
    "matplotlib": logging.ERROR,
}
TENSORFLOW_LOGGERS = ("absl", "tensorflow", "h5py._conv")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def quiet_libraries() -> None:
    """Set the libraries' loggers to their levels (idempotent)."""
    for name, level in LIBRARY_LEVELS.items():
        logging.getLogger(name).setLevel(level)


def quiet_tensorflow() -> None:
    """TensorFlow's (and absl's) Python loggers at ERROR: a command's output stays its own."""
    for name in TENSORFLOW_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def log_to_stderr(level: int = logging.INFO) -> None:
    """A long-running service's log on stderr (``screen listen``), libraries quietened."""
    logging.basicConfig(level=level, stream=sys.stderr, format=FORMAT)
    quiet_libraries()
