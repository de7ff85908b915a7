"""The folder walk: regular files only, links followed only inside the folder, the rest counted
and never opened."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import sqlalchemy as sa

from pneumoscreen.db import Image, session_scope
from pneumoscreen.worker.intake.discovery import Walk, describe_skipped
from pneumoscreen.worker.intake.submit import submit_folder
from pneumoscreen.worker.settings import get_settings

SAMPLES = Path(__file__).resolve().parents[3] / "samples"


@pytest.fixture
def hostile(tmp_path: Path) -> Path:
    """One good file, a link to it inside, links out, a dangling link, a FIFO, a socket."""
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.png"
    secret.write_bytes((SAMPLES / "chest_export.png").read_bytes())
    (folder / "good.png").write_bytes((SAMPLES / "chest_export_opacity.jpg").read_bytes())
    (folder / "sub" / "inside_link.jpg").symlink_to(folder / "good.png")
    (folder / "shadow.png").symlink_to(secret)
    (folder / "up.png").symlink_to(Path("..") / "outside" / "secret.png")
    (folder / "dangling.png").symlink_to(folder / "nothing.png")
    (folder / "outdir").symlink_to(outside, target_is_directory=True)
    os.mkfifo(folder / "pipe.dcm")  # opening it would block for ever
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(folder / "sock.dcm"))
    sock.close()
    return folder


def test_walk_yields_regular_files_and_links_inside_only(hostile: Path) -> None:
    walk = Walk(hostile)
    names = [p.name for p in walk]
    assert names == ["good.png", "inside_link.jpg"]
    assert dict(walk.skipped) == {"link_outside": 3, "link_dangling": 1, "special": 2}
    assert describe_skipped(walk.skipped) == (
        "1 dangling link, 3 links out of the folder, 2 special files (FIFO, device, socket)")



def test_a_folder_named_through_a_link_is_walked_by_the_same_rules(hostile: Path,
                                                                  tmp_path: Path) -> None:
    """An inbox that is itself a link (a mount, say) is followed; what lies under it is not
    trusted any more for that."""
    inbox = tmp_path / "inbox"
    inbox.symlink_to(hostile, target_is_directory=True)
    walk = Walk(inbox)
    assert [p.name for p in walk] == ["good.png", "inside_link.jpg"]
    assert dict(walk.skipped) == {"link_outside": 3, "link_dangling": 1, "special": 2}


def test_submit_never_registers_what_lies_outside(hostile: Path) -> None:
    settings = get_settings()
    result = submit_folder(hostile, settings=settings)  # would hang on the FIFO if it opened it
    assert (result.n_files, result.n_new, result.n_duplicate) == (2, 1, 1)
    assert result.skipped == {"link_outside": 3, "link_dangling": 1, "special": 2}
    with session_scope(settings.effective_database_url) as s:
        paths = list(s.scalars(sa.select(Image.source_path)))
    assert paths == [str(hostile / "good.png")]


def test_summary_reports_the_left_out(hostile: Path) -> None:
    from typer.testing import CliRunner

    from pneumoscreen.worker.cli import app

    out = CliRunner().invoke(app, ["submit", str(hostile)])
    assert out.exit_code == 0, out.output
    text = " ".join(out.stdout.split())  # the console wraps at its width
    assert "2 files, 1 new study (1 to screen" in text
    assert "left out: 1 dangling link, 3 links out of the folder, 2 special files" in text
