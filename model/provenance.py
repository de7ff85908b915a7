"""Where a result came from: the package version and the git commit of the code that made it."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]


def package_version() -> str:
    try:
        return metadata.version("pneumoscreen")
    except metadata.PackageNotFoundError:
        return "unknown"


def git_commit(folder: Path = PACKAGE_DIR) -> str:
    """The checkout's commit (12 hex digits, "+dirty" with uncommitted changes), or "unknown"
    for an installed copy without git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(folder), *args], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")
