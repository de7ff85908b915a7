"""The audit chain: every event sealed with a keyed hash of the one before; a change, a
replacement, a removal or a hand-made row is found at its first broken link (issue 21, item 9).
On SQLite and PostgreSQL, tampering as the application's own database role would."""

from __future__ import annotations

import concurrent.futures
import os
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from live import run_screen

from pneumoscreen.db import session_scope
from pneumoscreen.db.audit import record_event, verify_chain

KEY = b"audit-test-key-7d1e0b9c4a2f86e35b10c9d8"


def _five(url: str) -> None:
    for i in range(5):
        with session_scope(url) as session:
            record_event(session, action="submit", os_user="ana", host="h1",
                         params={"batch": i, "folder": "/in"}, chain_key=KEY)


def _verify(url: str, key: bytes = KEY) -> tuple[int | None, str | None, int]:
    with session_scope(url) as session:
        report = verify_chain(session, key)
    return report.broken_id, report.problem, report.n_chained


def _tamper(url: str, *statements: str) -> None:
    """Run ``statements`` in one transaction with the append-only triggers out of the way, as
    the tables' owner can."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("ALTER TABLE audit_events DISABLE TRIGGER USER"))
        else:
            conn.execute(sa.text("DROP TRIGGER audit_events_no_update"))
            conn.execute(sa.text("DROP TRIGGER audit_events_no_delete"))
        for statement in statements:
            conn.execute(sa.text(statement))
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("ALTER TABLE audit_events ENABLE TRIGGER USER"))
    engine.dispose()


def test_an_untouched_trail_verifies(db_url: str) -> None:
    _five(db_url)
    assert _verify(db_url) == (None, None, 5)
    broken, problem, _ = _verify(db_url, b"another-key-0f3e9a1c7b5d2e8f4a6c")
    assert broken == 1 and "not the key it was written with" in (problem or "")


@pytest.mark.parametrize(("statements", "broken", "says"), [
    (["UPDATE audit_events SET params = '{\"batch\": 9, \"folder\": \"/in\"}' WHERE id = 3"],
     3, "its hash does not match"),
    (["UPDATE audit_events SET os_user = 'bob' WHERE id = 2"], 2, "its hash does not match"),
    (["DELETE FROM audit_events WHERE id = 3"], 4, "event 3 before it is missing"),
    (["DELETE FROM audit_events WHERE id IN (2, 3)"], 4, "events 2 to 3 before it are missing"),
    # a removal hidden by renumbering: the next hash no longer matches
    (["DELETE FROM audit_events WHERE id = 3", "UPDATE audit_events SET id = 3 WHERE id = 4"],
     3, "its hash does not match"),
    (["UPDATE audit_events SET chain_hash = NULL WHERE id = 4"], 4, "carries no hash"),
])
def test_tampering_is_found_at_its_first_broken_link(db_url: str, statements: list[str],
                                                     broken: int, says: str) -> None:
    _five(db_url)
    _tamper(db_url, *statements)
    found, problem, _ = _verify(db_url)
    assert found == broken and says in (problem or ""), problem


def test_sqlite_insert_or_replace_is_found(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.sqlite3'}"
    _five(url)
    with session_scope(url) as session:
        row = session.execute(sa.text("SELECT * FROM audit_events WHERE id = 2")).mappings().one()
        values = dict(row, action="nothing")
        session.execute(sa.text(
            "INSERT OR REPLACE INTO audit_events (id, created_at, os_user, host, action, params, "
            "chain_hash) VALUES (:id, :created_at, :os_user, :host, :action, :params, "
            ":chain_hash)"), values)
    assert _verify(url)[0] == 2


def test_concurrent_writers_keep_one_chain(db_url: str) -> None:
    """Writers in parallel threads each chain onto the event before: no fork."""
    _five(db_url)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: _one(db_url, i), range(12)))
    assert _verify(db_url) == (None, None, 17)


def _one(url: str, i: int) -> None:
    with session_scope(url) as session:
        record_event(session, action="resume", os_user="ana", host=f"h{i}", params={},
                     chain_key=KEY)


@pytest.mark.postgres
def test_an_insert_only_role_cannot_rewrite(pg_url: str) -> None:
    """The README's role: it can append events and use every other table, but neither update,
    delete nor disable the triggers of the audit trail."""
    _five(pg_url)
    role = f"screen_app_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("<!-- insert-only-role -->", 1)[1].split("```sql", 1)[1].split("```")[0]
    grants = "\n".join(line for line in block.splitlines() if not line.strip().startswith("--"))
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE ROLE {role} LOGIN"))
            for statement in grants.replace("screen_app", role).split(";"):
                if statement.strip():
                    conn.execute(sa.text(statement))
        url = sa.engine.make_url(pg_url).set(username=role, password=None)
        app = sa.create_engine(url)
        with app.begin() as conn:  # appending still works
            record_event(sa.orm.Session(bind=conn), action="resume", os_user="app", host="h",
                         params={}, chain_key=KEY)
        for statement in ["UPDATE audit_events SET action = 'x'", "DELETE FROM audit_events",
                          "TRUNCATE audit_events",
                          "ALTER TABLE audit_events DISABLE TRIGGER USER"]:
            with pytest.raises(sa.exc.ProgrammingError, match=r"permission denied|must be owner"), \
                    app.begin() as conn:
                conn.execute(sa.text(statement))
        app.dispose()
        assert _verify(pg_url) == (None, None, 6)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP OWNED BY {role}"))
            conn.execute(sa.text(f"DROP ROLE {role}"))
        admin.dispose()


def test_screen_audit_verify_names_the_broken_link(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCREEN_")}
    url = f"sqlite:///{tmp_path / 'x.sqlite3'}"
    env.update(SCREEN_DATA_DIR=str(tmp_path / "data"), SCREEN_DATABASE_URL=url,
               SCREEN_CONFIG=str(tmp_path / "none.toml"),
               SCREEN_PATIENT_KEY="verify-test-key-1c8e5a0f3d7b9264e1a5")
    for _ in range(3):
        assert run_screen(env, "resume", timeout=120).returncode == 0
    out = run_screen(env, "audit", "verify", timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("audit trail intact: 3 events chained; head: event 3, ")
    _tamper(url, "UPDATE audit_events SET host = 'elsewhere' WHERE id = 2")
    out = run_screen(env, "audit", "verify", timeout=120)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "error: audit trail broken at event 2: its hash does not match: the event was changed "
        "or replaced, an event before it was removed, or this is not the key it was written "
        "with (the chain is sound up to event 1)"]
