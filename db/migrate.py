"""Alembic, driven from code: ``screen db upgrade`` and the automatic upgrade on first use.

Importing Alembic and loading its scripts costs more than a read-only command's whole answer, so
the automatic upgrade first reads ``alembic_version`` with a plain query and compares it with the
head revision read from the migration files' ``revision``/``down_revision`` lines; Alembic runs
only when they differ.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")
MIGRATION_LOCK_KEY = 0x5C12EE17  # any constant shared by every pneumoscreen process
_ASSIGN = re.compile(r"^(revision|down_revision)\s*(?::[^=]*)?=\s*['\"]?([\w.-]+|None)['\"]?",
                     re.MULTILINE)


@functools.lru_cache(maxsize=1)
def head_revision() -> str | None:
    """The one head of the migration scripts, from their text (None if it is not one head)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in (MIGRATIONS / "versions").glob("*.py"):
        found = dict((k, v) for k, v in _ASSIGN.findall(script.read_text(encoding="utf-8")))
        if "revision" in found:
            revisions.add(found["revision"])
            if found.get("down_revision") not in (None, "None"):
                parents.add(found["down_revision"])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def at_head(engine: Engine) -> bool:
    """The database's ``alembic_version`` is the scripts' head (one cheap query, no Alembic)."""
    head = head_revision()
    if head is None:
        return False
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT version_num FROM alembic_version")).all()
    except DBAPIError as exc:
        if exc.connection_invalidated or "alembic_version" not in str(exc.orig):
            raise  # unreachable or misconfigured: say so, do not try to migrate
        return False  # a new, empty database
    return [r[0] for r in rows] == [head]


def ensure_schema(engine: Engine) -> None:
    """Upgrade the database to the newest migration unless it is already there."""
    if not at_head(engine):
        upgrade(engine)


def alembic_config(engine: Engine | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if engine is not None:
        cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrade the database behind ``engine`` to ``revision`` on one of its connections."""
    from alembic import command

    cfg = alembic_config(engine)
    with engine.begin() as conn:
        # Processes starting together on a fresh database (workers, a submit beside a listener)
        # must not race to create the tables: the second waits for the first's lock, then finds
        # the scripts applied and does nothing.
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        elif conn.dialect.name == "sqlite":
            # pysqlite opens no transaction for DDL by itself; this one holds the file's write
            # lock until the upgrade commits (the others wait up to their busy timeout).
            conn.exec_driver_sql("BEGIN EXCLUSIVE")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def current(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
