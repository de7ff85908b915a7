"""The deployment files: the compose file validates, the CLI explains itself, CI runs the README."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pneumoscreen.worker.cli import app

REPO = Path(__file__).resolve().parents[1]


def _compose() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(
            ["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    pytest.skip("neither docker-compose nor the docker compose plugin is installed")


def test_compose_file_is_valid_and_has_every_service() -> None:
    cmd = _compose()
    env = {"SCREEN_PATIENT_KEY": "k", "PATH": "/usr/bin:/bin:/usr/local/bin"}
    out = subprocess.run([*cmd, "config", "--services"], cwd=REPO, env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert {"redis", "postgres", "worker", "beat", "flower", "listener", "orthanc"} <= set(out)


def test_compose_worker_sends_results_to_the_demo_pacs() -> None:
    import yaml

    env = {"SCREEN_PATIENT_KEY": "k", "PATH": "/usr/bin:/bin:/usr/local/bin"}
    config = yaml.safe_load(subprocess.run([*_compose(), "config"], cwd=REPO, env=env,
                                           capture_output=True, text=True, check=True).stdout)
    worker = config["services"]["worker"]["environment"]
    assert worker["SCREEN_EXPORT_TO"] == "dicom://ORTHANC@orthanc:4242"
    assert worker["SCREEN_BROKER_URL"] == "redis://redis:6379/0"  # the shared settings kept


def test_compose_refuses_to_run_without_a_patient_key() -> None:
    cmd = _compose()
    result = subprocess.run([*cmd, "config", "-q"], cwd=REPO, env={"PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True)
    assert result.returncode != 0 and "SCREEN_PATIENT_KEY" in result.stderr


def test_ci_runs_the_readme_test_command() -> None:
    readme = (REPO / "README.md").read_text()
    lines = readme.split("<!-- test-command -->", 1)[1].splitlines()
    command = next(line for line in lines if line[:1].isalpha())
    extracted = subprocess.run(
        ["awk", "/<!-- test-command -->/{getline; while ($0 !~ /^[a-z.]/) getline; print; exit}",
         "README.md"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    assert extracted == command and "pytest" in command
    assert "awk '/<!-- test-command -->/" in (REPO / ".ci" / "run").read_text()
    assert "screen submit samples/" in "\n".join(readme.splitlines()[:10])


@pytest.mark.parametrize("command", [[], ["submit"], ["flagged"], ["status"], ["studies"],
                                     ["worker"], ["config"], ["db", "upgrade"], ["listen"]])
def test_help_explains(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output and len(result.output.splitlines()) > 5


# Runs a command through the real entry point, then names the heavy modules it imported.
_HEAVY = ("tensorflow", "keras", "alembic", "pydicom", "celery", "numpy", "PIL", "sklearn")
_PROBE = ("import sys\nfrom pneumoscreen.worker.cli import main\nsys.argv = sys.argv[1:]\n"
          "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
          f"print('HEAVY=' + ','.join(m for m in {_HEAVY!r} if m in sys.modules), "
          "file=sys.stderr)\n")


def _heavy_modules(*args: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", _PROBE, "screen", *args], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith("HEAVY="), out.stderr
    return set(filter(None, line[len("HEAVY="):].split(",")))


def test_help_and_read_only_commands_start_light() -> None:
    """`--help` and the read-only commands never load TensorFlow (nor Keras, pydicom, Celery,
    NumPy, Pillow, scikit-learn); on a database already at the newest migration they do not load
    Alembic either."""
    assert not _heavy_modules("--help")
    assert not _heavy_modules("submit", "--help")
    assert "alembic" in _heavy_modules("status")  # a new database: migrated on first use
    for command in (["status"], ["studies"], ["flagged"], ["runs"], ["reports"],
                    ["status", "--format", "json"]):
        assert not _heavy_modules(*command), command
