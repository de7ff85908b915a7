"""The spool: every received instance as one file, written atomically, named by its content hash.

A file appears under its final name only once it is complete and on disk (temp file in the same
folder, fsync, ``os.replace``, fsync of the folder), so whatever is in the spool was acknowledged
and is whole. Names come from the sha256 of the bytes, never from anything the sender wrote.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_NAME = re.compile(r"^[0-9a-f]{64}\.dcm$")
TEMP_PREFIX = ".part-"


@dataclass(frozen=True)
class SpoolFile:
    path: Path
    sha256: str
    mtime: float


class Spool:
    """``data_dir/spool``: ``<sha[:2]>/<sha256>.dcm`` files (two-level, so no folder gets huge)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def write(self, data: bytes) -> SpoolFile:
        """Store ``data`` durably under its hash; the same bytes twice are one file."""
        sha = hashlib.sha256(data).hexdigest()
        folder = self.root / sha[:2]
        final = folder / f"{sha}.dcm"
        if final.is_file():
            return SpoolFile(final, sha, final.stat().st_mtime)
        if not folder.is_dir():
            # Received films are patient data: the spool and its folders are 0700 (the data
            # directory too, in PostgreSQL mode where no SQLite file made it).
            from pneumoscreen.worker.settings import private_dir

            private_dir(self.root)
            folder.mkdir(exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(folder)
        return SpoolFile(final, sha, final.stat().st_mtime)

    def files(self) -> Iterator[SpoolFile]:
        """Every complete file in the spool (temp files and anything foreign left out)."""
        if not self.root.is_dir():
            return
        for folder in sorted(self.root.iterdir()):
            if not folder.is_dir() or folder.is_symlink():
                continue
            for path in sorted(folder.iterdir()):
                if _NAME.match(path.name) and path.is_file() and not path.is_symlink():
                    yield SpoolFile(path, path.name[:-4], path.stat().st_mtime)

    def remove_stale_temp_files(self, older_than_s: float = 600.0) -> int:
        """Delete temp files of writes that never finished (never acknowledged to the sender)."""
        removed = 0
        if not self.root.is_dir():
            return 0
        limit = time.time() - older_than_s
        for path in self.root.glob(f"*/{TEMP_PREFIX}*"):
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < limit:
                    path.unlink()
                    removed += 1
        return removed


def _fsync_dir(folder: Path) -> None:
    # The rename is durable only once the folder's entry is on disk too.
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
