"""The spool: every received instance as one file, written atomically, named by its content hash.

A file appears under its final name only once it is complete and on disk (temp file in the same
file system, fsync, ``os.replace``, fsync of the folder), so whatever is in the spool was
acknowledged and is whole. Names come from the sha256 of the bytes, never from anything the sender
wrote; a received instance is named by its data set alone (not the file meta we write, which
records the sender), so the same data set from another AE is "already have it".

Limits: beyond ``max_bytes`` in the spool, or with less than ``min_free_bytes`` left on its disk,
a write is refused with :class:`SpoolFull` saying which.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

_NAME = re.compile(r"^[0-9a-f]{64}\.dcm$")
TEMP_PREFIX = ".part-"
INCOMING = "incoming"  # temp files of streamed writes, renamed into place when complete
CHUNK = 1 << 20


class SpoolFull(OSError):
    """The spool's quota or its disk's free-space floor would be passed (the reason says
    which, in numbers)."""


@dataclass(frozen=True)
class SpoolFile:
    path: Path
    sha256: str
    mtime: float


class Spool:
    """``data_dir/spool``: ``<sha[:2]>/<sha256>.dcm`` files (two-level, so no folder gets huge)."""

    def __init__(self, root: Path, *, max_bytes: int = 0, min_free_bytes: int = 0) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.min_free_bytes = min_free_bytes
        self._used: int | None = None  # bytes in the spool, counted once, then kept up to date
        self._lock = threading.Lock()

    @property
    def incoming(self) -> Path:
        """Where writes in progress are (temp files, renamed into place when complete)."""
        return self.root / INCOMING

    def used_bytes(self) -> int:
        with self._lock:
            if self._used is None:
                self._used = sum(f.path.stat().st_size for f in self.files())
            return self._used

    def _add_used(self, n: int) -> None:
        with self._lock:
            if self._used is not None:
                self._used += n

    def check_room(self, incoming: int) -> None:
        """Raise :class:`SpoolFull` when ``incoming`` more bytes would pass a limit."""
        if self.max_bytes:
            used = self.used_bytes()
            if used + incoming > self.max_bytes:
                raise SpoolFull(f"the spool holds {used / 1e9:.2f} GB and the limit "
                                f"SCREEN_SPOOL_MAX_GB is {self.max_bytes / 1e9:.2f} GB")
        if self.min_free_bytes:
            self.root.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(self.root).free
            if free - incoming < self.min_free_bytes:
                raise SpoolFull(f"{free / 1e9:.2f} GB free on the spool's disk, at least "
                                f"{self.min_free_bytes / 1e9:.2f} GB must stay free "
                                "(SCREEN_SPOOL_MIN_FREE_GB)")

    def write_stream(self, header: bytes, source: BinaryIO, *, limit: int) -> SpoolFile:
        """Store ``header`` + the rest of ``source`` (a data set), named by the sha256 of the
        data set alone; at most ``limit`` data-set bytes (ValueError beyond). Streamed in
        chunks: memory stays flat whatever the size."""
        incoming = self.private_folder(self.incoming)
        fd, tmp = tempfile.mkstemp(dir=incoming, prefix=TEMP_PREFIX)
        digest, size = hashlib.sha256(), 0
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(header)
                while chunk := source.read(CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise ValueError(f"over the {limit}-byte limit")
                    digest.update(chunk)
                    fh.write(chunk)
                fh.flush()
                os.fsync(fh.fileno())
            sha = digest.hexdigest()
            final = self.root / sha[:2] / f"{sha}.dcm"
            if final.is_file():  # the same data set again, from whichever sender
                os.unlink(tmp)
                return SpoolFile(final, sha, final.stat().st_mtime)
            self.private_folder(final.parent)
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return self._committed(final, sha, len(header) + size)

    def private_folder(self, folder: Path) -> Path:
        """``folder`` (under the spool), made 0700 with the spool itself: received films are
        patient data (the data directory too, in PostgreSQL mode where no SQLite file made
        it)."""
        if not folder.is_dir():
            from pneumoscreen.worker.settings import private_dir

            private_dir(self.root)
            folder.mkdir(exist_ok=True, mode=0o700)
        return folder

    def _committed(self, final: Path, sha: str, size: int) -> SpoolFile:
        """A file just renamed into place: its folder synced, the spool's size updated."""
        _fsync_dir(final.parent)
        self._add_used(size)
        return SpoolFile(final, sha, final.stat().st_mtime)

    def write(self, data: bytes) -> SpoolFile:
        """Store ``data`` durably under its hash; the same bytes twice are one file."""
        sha = hashlib.sha256(data).hexdigest()
        folder = self.root / sha[:2]
        final = folder / f"{sha}.dcm"
        if final.is_file():
            return SpoolFile(final, sha, final.stat().st_mtime)
        self.private_folder(folder)
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
        return self._committed(final, sha, len(data))

    def remove(self, file: SpoolFile) -> int:
        """Delete a spooled file (retention); the bytes freed."""
        try:
            size = file.path.stat().st_size
            file.path.unlink()
        except OSError:
            return 0
        self._add_used(-size)
        return size

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
