"""Find candidate files under a folder, lazily, without opening anything that is not a regular file.

Only regular files are yielded. A symbolic link is followed only when it resolves to a regular
file inside the submitted folder (a link out of it could make the tool read and record a system
file); links out, dangling links, linked folders and special files (FIFOs, devices, sockets:
opening a FIFO blocks for ever) are counted in :attr:`Walk.skipped` and never opened (``lstat``
and ``stat`` only).
"""

from __future__ import annotations

import os
import stat
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

# Why a path was left out, as the submit summary words it: (singular, plural).
SKIP_REASONS = {
    "link_outside": ("link out of the folder", "links out of the folder"),
    "link_dangling": ("dangling link", "dangling links"),
    "link_folder": ("linked folder", "linked folders"),
    "special": ("special file (FIFO, device, socket)", "special files (FIFO, device, socket)"),
}


class Walk:
    """The regular files under ``folder`` in a stable order (hidden files and folders left out);
    iterate it once. ``skipped`` counts what was left out, by reason (see ``SKIP_REASONS``)."""

    def __init__(self, folder: Path, *, recursive: bool = True) -> None:
        self.folder = Path(folder)
        self.recursive = recursive
        self.skipped: Counter[str] = Counter()
        self._root = os.path.realpath(self.folder)

    def __iter__(self) -> Iterator[Path]:
        try:
            top = os.lstat(self.folder)
            if stat.S_ISLNK(top.st_mode) and os.path.isdir(self.folder):
                # The folder the operator named may itself be a link (an inbox on a mount):
                # follow it; the rules apply to what lies under it.
                top = os.stat(self.folder)
        except OSError:
            return
        if not stat.S_ISDIR(top.st_mode):
            # One file named on the command line: the operator chose it, links included; a
            # special file is still never opened.
            path = self._admit(self.folder, top, inside=os.path.dirname(self._root))
            if path is not None:
                yield path
            return
        yield from self._walk(self.folder)

    def _walk(self, folder: Path) -> Iterator[Path]:
        try:
            with os.scandir(folder) as it:
                entries = sorted((e for e in it if not e.name.startswith(".")),
                                 key=lambda e: e.name)
        except OSError:
            return
        subdirs: list[Path] = []
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(info.st_mode):
                subdirs.append(Path(entry.path))
                continue
            path = self._admit(Path(entry.path), info, inside=self._root)
            if path is not None:
                yield path
        if self.recursive:
            for sub in subdirs:
                yield from self._walk(sub)

    def _admit(self, path: Path, info: os.stat_result, *, inside: str) -> Path | None:
        if stat.S_ISREG(info.st_mode):
            return path
        if not stat.S_ISLNK(info.st_mode):
            self.skipped["special"] += 1
            return None
        target = os.path.realpath(path)
        if os.path.commonpath([inside, target]) != inside:
            self.skipped["link_outside"] += 1
            return None
        try:
            resolved = os.stat(target)
        except OSError:
            self.skipped["link_dangling"] += 1
            return None
        if stat.S_ISREG(resolved.st_mode):
            return path
        self.skipped["link_folder" if stat.S_ISDIR(resolved.st_mode) else "special"] += 1
        return None


def describe_skipped(skipped: dict[str, int]) -> str:
    """``"2 links out of the folder, 1 special file …"`` for the summary; empty when none."""
    words = [(n, SKIP_REASONS.get(k, (k, k))) for k, n in sorted(skipped.items()) if n]
    return ", ".join(f"{n} {one if n == 1 else many}" for n, (one, many) in words)
