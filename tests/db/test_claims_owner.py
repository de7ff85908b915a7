"""Claims name their process; the next run on this host frees what a gone process held, and
only that (issue 21, item 1)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from pneumoscreen.db import Image, ImageStatus, session_scope
from pneumoscreen.db.claims import claimer_gone, free_orphans, this_claimer
from pneumoscreen.db.models import utcnow


def _dead_claimer() -> str:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return f"{socket.gethostname()[:80]}:{int(proc.stdout)}:1"


def test_who_is_gone() -> None:
    me = this_claimer()
    assert not claimer_gone(me)
    assert claimer_gone(_dead_claimer())
    host, pid, _ = me.rsplit(":", 2)
    assert claimer_gone(f"{host}:{pid}:0")  # this pid, but a process started at another time
    assert not claimer_gone(f"another-host:{pid}:1")  # other machines: the lease decides


def test_free_orphans_frees_only_the_gone(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.sqlite3'}"
    owners = [this_claimer(), _dead_claimer(), "another-host:1:1"]
    with session_scope(url) as session:
        for i, owner in enumerate(owners):
            session.add(Image(sha256=f"{i:064d}", source_path=f"/in/{i}.png", format="png",
                              status=ImageStatus.processing, claim_token=f"t{i}",
                              claimed_at=utcnow(), claimed_by=owner))
    with session_scope(url) as session:
        assert free_orphans(session=session) == 1
    with session_scope(url) as session:
        rows = {i.claimed_by or "freed": i.status for i in session.query(Image)}
    assert rows == {owners[0]: ImageStatus.processing, "freed": ImageStatus.queued,
                    owners[2]: ImageStatus.processing}
