"""The tests never write into the user's own data or config folders (issue 21, item 12)."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import REAL_HOME, SANDBOX_HOME
from live import run_screen


def test_default_folders_are_in_the_sandbox() -> None:
    import platformdirs

    for folder in (platformdirs.user_data_dir("pneumoscreen"),
                   platformdirs.user_config_dir("pneumoscreen"), str(Path.home())):
        assert Path(folder).resolve().is_relative_to(SANDBOX_HOME.resolve()), folder
    assert not SANDBOX_HOME.resolve().is_relative_to(REAL_HOME.resolve() / ".local")


def test_a_subprocess_without_a_data_dir_writes_into_the_sandbox(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCREEN_")}
    out = run_screen(env, "config", "--format", "json", timeout=120)
    assert out.returncode == 0, out.stderr
    assert str(SANDBOX_HOME) in out.stdout
    assert str(REAL_HOME / ".local" / "share" / "pneumoscreen") not in out.stdout
