"""Open an input file safely: a regular file only, never blocking, within the size limit.

Everything ingestion reads goes through :func:`open_regular`, so a FIFO, a device or a socket is
refused before a byte is read (opening a FIFO for reading would wait for a writer for ever), and
a 10 GB file is refused from its size alone, before it is hashed or parsed.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path
from typing import BinaryIO

from pneumoscreen.worker.ingest.errors import FailedImage

_KINDS = (
    (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _refuse_special(mode: int) -> None:
    if not stat.S_ISREG(mode):
        raise FailedImage(f"not a regular file ({_kind(mode)}): only regular files are read")


def check_size(size: int, max_bytes: int | None) -> None:
    """FailedImage if ``size`` exceeds ``max_bytes`` (None: no limit)."""
    if max_bytes is not None and size > max_bytes:
        raise FailedImage(
            f"file is {size} bytes, beyond the limit of {max_bytes} bytes (SCREEN_MAX_FILE_BYTES)"
        )


def open_regular(path: Path, max_bytes: int | None = None) -> BinaryIO:
    """``path`` opened for binary reading if it is a regular file of at most ``max_bytes``.

    Raises FailedImage for anything else and OSError when the file cannot be opened at all.
    The type is checked before opening (no open of a FIFO) and again on the descriptor (the
    path may have been swapped meanwhile); O_NONBLOCK makes even that race unable to block.
    """
    _refuse_special(os.stat(path).st_mode)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        info = os.fstat(fd)
        _refuse_special(info.st_mode)
        check_size(info.st_size, max_bytes)
        os.set_blocking(fd, True)  # a regular file: reads never wait anyway
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def file_size(fh: BinaryIO) -> int:
    return os.fstat(fh.fileno()).st_size


class BoundedReader:
    """A read-only view of ``fh`` for pydicom that hands out at most ``limit`` bytes from the
    start (None: no bound).

    ``exceeded`` says the parser wanted more, i.e. the header is larger than the bound (or the
    data set never reaches its Pixel Data). ``name`` is a label, not the path: pydicom puts it
    in its messages (and needs a string there).
    """

    name = "input"

    def __init__(self, fh: BinaryIO, limit: int | None = None) -> None:
        self._fh, self.limit, self.exceeded = fh, limit, False

    def read(self, size: int | None = -1) -> bytes:
        if self.limit is None:
            return self._fh.read(-1 if size is None else size)
        allowed = max(0, self.limit - self._fh.tell())
        if size is None or size < 0 or size > allowed:
            self.exceeded = True
            size = allowed
        return self._fh.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()


def file_sha256(path: Path) -> str:
    """The sha256 of a regular file's content; OSError for anything else (a FIFO swapped in for a
    file is never waited on)."""
    digest = hashlib.sha256()
    try:
        opened = open_regular(Path(path))
    except FailedImage as exc:
        raise OSError(errno.EINVAL, str(exc)) from None
    with opened as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
