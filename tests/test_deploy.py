"""The deployment files: the compose file validates, the CLI explains itself, CI runs the README."""

from __future__ import annotations

import re
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


SECRETS = ("REDIS_PASSWORD", "POSTGRES_PASSWORD", "FLOWER_PASSWORD", "PATIENT_KEY_FILE",
           "WEB_SECRET_KEY_FILE", "AUDIT_KEY_FILE")


def _config(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*_compose(), "config", *args], cwd=REPO,
                          env={"PATH": "/usr/bin:/bin:/usr/local/bin", **env},
                          capture_output=True, text=True)


@pytest.fixture
def secrets(tmp_path: Path) -> dict[str, str]:
    key = tmp_path / "patient.key"
    key.write_text("0" * 64)
    web_key = tmp_path / "web.key"
    web_key.write_text("1" * 64)
    audit_key = tmp_path / "audit.key"
    audit_key.write_text("2" * 64)
    return {"REDIS_PASSWORD": "r3dis-pw", "POSTGRES_PASSWORD": "pg-pw",
            "FLOWER_PASSWORD": "fl-pw", "PATIENT_KEY_FILE": str(key),
            "WEB_SECRET_KEY_FILE": str(web_key), "AUDIT_KEY_FILE": str(audit_key)}


def test_compose_file_is_valid_and_has_every_service(secrets: dict[str, str]) -> None:
    out = _config(secrets, "--services")
    assert out.returncode == 0, out.stderr
    assert {"redis", "postgres", "migrate", "worker", "beat", "flower", "listener",
            "orthanc", "web"} <= set(out.stdout.split())


@pytest.mark.parametrize("missing", SECRETS)
def test_compose_refuses_to_run_without_each_secret(secrets: dict[str, str],
                                                    missing: str) -> None:
    result = _config({k: v for k, v in secrets.items() if k != missing}, "-q")
    assert result.returncode != 0 and missing in result.stderr


def test_compose_secrets_reach_only_the_services_that_need_them(
        secrets: dict[str, str]) -> None:
    import yaml

    out = _config(secrets)
    assert out.returncode == 0, out.stderr
    services = yaml.safe_load(out.stdout)["services"]
    env = {name: svc.get("environment") or {} for name, svc in services.items()}
    def holders(secret: str) -> set[str]:
        return {n for n, s in services.items()
                if any((x if isinstance(x, str) else x.get("source")) == secret
                       for x in s.get("secrets") or [])}

    # worker and listener pseudonymise; beat, flower, migrate and web don't. Only web signs
    # session cookies.
    assert holders("patient_key") == {"worker", "listener"}
    assert holders("web_key") == {"web"}
    # Every writer of audit events seals them with one chain key.
    assert holders("audit_key") == {"worker", "listener", "web"}
    assert {env[n]["SCREEN_AUDIT_KEY_FILE"] for n in ("worker", "listener", "web")} == {
        "/run/secrets/audit_key"}
    assert env["web"]["SCREEN_WEB_SECRET_KEY_FILE"] == "/run/secrets/web_key"
    assert "SCREEN_BROKER_URL" not in env["web"]
    assert env["worker"]["SCREEN_PATIENT_KEY_FILE"] == "/run/secrets/patient_key"
    assert not any("SCREEN_PATIENT_KEY" in e for e in env.values())
    with_db = {n for n, e in env.items() if "SCREEN_DATABASE_URL" in e}
    assert with_db == {"migrate", "worker", "listener", "web"}
    assert env["worker"]["SCREEN_EXPORT_TO"] == "dicom://ORTHANC@orthanc:4242"
    assert all(e["SCREEN_BROKER_URL"] == "redis://:r3dis-pw@redis:6379/0"
               for n, e in env.items() if "SCREEN_BROKER_URL" in e)
    assert "--requirepass" in " ".join(services["redis"]["command"])
    assert env["flower"]["FLOWER_BASIC_AUTH"] == "admin:fl-pw"
    for svc in services.values():  # pinned images: an exact version, never a floating tag
        if "image" in svc:
            assert re.fullmatch(r"[a-z/-]+:\d+\.\d+(\.\d+)?(-alpine)?", svc["image"]), svc["image"]


def test_the_image_installs_from_the_lock() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "-c constraints.txt" in dockerfile
    assert re.search(r"^FROM python:\d+\.\d+\.\d+-", dockerfile, re.M)
    pins = dict(line.split("==") for line in (REPO / "constraints.txt").read_text().splitlines()
                if "==" in line)
    for dep in ("tensorflow", "keras", "celery", "redis", "sqlalchemy", "pydicom", "flower"):
        assert dep in {k.lower() for k in pins}, dep


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
                                     ["worker"], ["config"], ["db", "upgrade"], ["listen"],
                                     ["web"], ["users", "add"], ["reads"]])
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
    # A read-only command creates no database (issue 21): a writing one makes and migrates it.
    assert "alembic" in _heavy_modules("resume")
    for command in (["status"], ["studies"], ["flagged"], ["runs"], ["reports"],
                    ["status", "--format", "json"], ["reads"], ["users", "list"]):
        assert not _heavy_modules(*command), command
