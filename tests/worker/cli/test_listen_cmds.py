"""``screen listen`` (worker/cli/listen_cmds.py): every bad setting or option is one clear line."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pneumoscreen.worker.cli import app
from pneumoscreen.worker.settings import get_settings

runner = CliRunner()


def _listen(*args: str) -> tuple[int, str]:
    get_settings.cache_clear()
    result = runner.invoke(app, ["listen", *args])
    return result.exit_code, result.output


@pytest.mark.parametrize(("env", "args", "message"), [
    ({"SCREEN_CALLING_AE_TITLES": '["A\\\\B"]'}, [], "SCREEN_CALLING_AE_TITLES"),
    ({"SCREEN_LISTEN_SOP_CLASSES": '["1.2.x"]'}, [], "is not a DICOM UID"),
    ({}, ["--ae-title", "SEVENTEEN_CHARS_X"], "bad --ae-title"),
    ({"SCREEN_LISTEN_TLS_CERT": "/nonexistent/cert.pem",
      "SCREEN_LISTEN_TLS_KEY": "/nonexistent/key.pem"}, [], "cannot set up TLS"),
    ({"SCREEN_LISTEN_TLS_KEY": "/k.pem"}, [], "needs both"),
    ({"SCREEN_LISTEN_TLS_CA": "/ca.pem"}, [], "needs SCREEN_LISTEN_TLS_CERT"),
])
def test_bad_input_is_one_line(env: dict[str, str], args: list[str], message: str,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code, output = _listen("--port", "1", *args)
    assert code != 0 and message in output and "Traceback" not in output
    assert len(output.strip().splitlines()) <= 2  # one line, maybe wrapped


def test_a_port_in_use_is_one_line(isolated_settings: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        code, output = _listen("--port", str(busy.getsockname()[1]))
    assert code != 0 and "cannot listen on 127.0.0.1:" in output and "Traceback" not in output
    assert not (isolated_settings / "spool").exists() or not any(
        (isolated_settings / "spool").iterdir())
