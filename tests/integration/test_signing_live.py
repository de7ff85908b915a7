"""Message signing (Celery's ``auth`` serializer): a worker configured for it screens what a
signed submit sends and refuses an unsigned message, which changes nothing."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest
from live import (
    REDIS_URL,
    SAMPLES,
    WorkerProcess,
    all_final,
    redis_or_skip,
    run_screen,
    screen_env,
    wait_until,
)

from pneumoscreen.worker.queue.app import configure
from pneumoscreen.worker.settings import Settings

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def make_identity(folder: Path) -> tuple[Path, Path]:
    """A private key and its self-signed certificate (what an operator makes with openssl)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pneumoscreen")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .sign(key, hashes.SHA256()))
    folder.mkdir(parents=True)
    key_path, cert_path = folder / "key.pem", folder / "certs" / "cert.pem"
    cert_path.parent.mkdir()
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def test_a_signing_worker_refuses_unsigned_messages(tmp_path: Path) -> None:
    redis_or_skip(REDIS_URL)
    key, cert = make_identity(tmp_path / "pki")
    samples = tmp_path / "samples"
    shutil.copytree(SAMPLES, samples, ignore=shutil.ignore_patterns("*.py"))
    env = screen_env(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 's.db'}",
                     broker_url=REDIS_URL, SCREEN_TF_INTRA_THREADS="1", SCREEN_HEATMAPS="none",
                     # the small model: signing is tested, not the model, and it loads in a second
                     SCREEN_MODEL_PATH="bundled:cnn-s",
                     SCREEN_SIGNING_KEY_FILE=str(key), SCREEN_SIGNING_CERT_FILE=str(cert),
                     SCREEN_SIGNING_CERT_STORE=str(cert.parent))
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        worker.wait_ready()
        submitted = run_screen(env, "submit", str(samples))
        assert submitted.returncode == 0, submitted.stderr

        def studies() -> list[dict]:
            return json.loads(run_screen(env, "studies", "--format", "json").stdout)

        wait_until(lambda: all_final(env["SCREEN_DATABASE_URL"]), 180, "the signed tasks screened",
                   worker.log)
        before = studies()
        app = configure(Settings(broker_url=REDIS_URL))  # this process does not sign
        app.send_task("pneumoscreen.screen_task", [[s["study_id"] for s in before]],
                      {"rescreen": True})
        wait_until(lambda: "untrusted content" in worker.log(), 60,
                   "the unsigned message refused", worker.log)
    finally:
        worker.stop()
        configure(Settings())
    assert studies() == before
