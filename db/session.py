"""Engines and sessions; the schema is brought to the newest migration on first use of a URL."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from pneumoscreen.db.migrate import ensure_schema

_lock = threading.Lock()
_makers: dict[str, sessionmaker[Session]] = {}
_may_create = True


class DatabaseMissing(RuntimeError):
    """A command that only reads met no database: it never creates one (one line, the fix)."""


def set_read_only(read_only: bool) -> None:
    """Whether this process only reads: a missing SQLite file (or its folder) is then an error,
    never created (a mistyped path must not give an empty database that says "0 studies")."""
    global _may_create
    _may_create = not read_only


def may_create() -> bool:
    return _may_create


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL + a busy timeout let the CLI read while a worker writes.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def private_file(path: Path) -> None:
    """Create the SQLite file 0600 (its folder 0700 if new), or tighten an existing file of ours
    to 0600; SQLite gives its -wal and -shm files the database's mode."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        st = path.stat()
        if st.st_uid == os.getuid() and st.st_mode & 0o077:
            path.chmod(0o600)


def create_migrated_engine(url: str) -> Engine:
    """A new engine for ``url`` whose database has been upgraded to the newest migration."""
    parsed = make_url(url)
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            path = Path(parsed.database)
            if not _may_create and not path.exists():
                raise DatabaseMissing(
                    f"no database at {path}: this command only reads and never creates one; "
                    "check SCREEN_DATABASE_URL (or SCREEN_DATA_DIR), or `screen submit` first")
            private_file(path)
        kwargs["connect_args"] = {"timeout": 30}
    else:
        kwargs["pool_pre_ping"] = True
    engine = create_engine(url, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    ensure_schema(engine)
    return engine


def get_engine(url: str) -> Engine:
    """The process's engine for ``url`` (created and migrated on first use)."""
    return _maker(url).kw["bind"]


def _maker(url: str) -> sessionmaker[Session]:
    with _lock:
        if url not in _makers:
            _makers[url] = sessionmaker(create_migrated_engine(url), expire_on_commit=False)
        return _makers[url]


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """One transaction on the database at ``url``: commit on success, roll back on error."""
    with _maker(url).begin() as session:
        yield session


def known_urls() -> list[str]:
    """The database URLs this process has opened."""
    with _lock:
        return list(_makers)


def reset_engines() -> None:
    """Dispose of every cached engine (tests; a worker process after fork)."""
    with _lock:
        for maker in _makers.values():
            maker.kw["bind"].dispose(close=False)
        _makers.clear()
