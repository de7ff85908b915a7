"""Find candidate files under a folder."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path


def iter_files(folder: Path, *, recursive: bool = True) -> Iterator[Path]:
    """Regular files under ``folder`` in a stable order, hidden files and folders left out."""
    if folder.is_file():
        yield folder
        return
    if not recursive:
        yield from sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        return
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                path = Path(root) / name
                if path.is_file():
                    yield path
