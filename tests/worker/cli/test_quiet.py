"""TensorFlow's absl/CUDA start-up lines stay off the terminal unless --debug."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from live import SAMPLES, screen_cmd

from pneumoscreen.worker.cli import quiet

NOISE = ("cuInit", "absl", "cuda", "oneDNN", "cpu_feature_guard")


def _env(tmp_path: Path) -> dict[str, str]:
    # As an operator runs it: no TF_CPP_MIN_LOG_LEVEL of our own.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SCREEN_") and not k.startswith("TF_CPP")}
    env.update(SCREEN_DATA_DIR=str(tmp_path / "data"), SCREEN_CONFIG=str(tmp_path / "none.toml"))
    return env


@pytest.mark.slow
def test_predict_prints_no_tensorflow_chatter(tmp_path: Path) -> None:
    # The small model: TensorFlow starts (and chatters) the same for any model.
    out = subprocess.run(screen_cmd("predict", str(SAMPLES / "chest_export.png"), "--model",
                                    "bundled:cnn-s"),
                         env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "chest_export" in out.stdout
    assert not [n for n in NOISE if n in out.stderr], out.stderr


def test_the_filter_drops_only_known_noise(tmp_path: Path) -> None:
    """What TensorFlow's import writes to fd 2 is dropped when it is known noise, kept when not."""
    code = (
        "import os\n"
        "from pneumoscreen.worker.cli.quiet import filtered_stderr\n"
        "with filtered_stderr():\n"
        "    os.write(2, b'WARNING: All log messages before absl::InitializeLog() is called are "
        "written to STDERR\\n')\n"
        "    os.write(2, b'I0000 00:00:1796171155.517341   12987 cudart_stub.cc:31] Could not "
        "find cuda drivers on your machine, GPU will not be used.\\n')\n"
        "    os.write(2, b'E0000 00:00:1796171160.289253   12987 cuda_platform.cc:52] failed call "
        "to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\\n')\n"
        "    os.write(2, b'a real problem\\n')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stderr == "a real problem\n"


def test_debug_keeps_tensorflow_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    monkeypatch.delenv(quiet.DEBUG_ENV, raising=False)
    quiet.configure(True)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0" and quiet.debug_enabled()
