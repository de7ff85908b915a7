"""The pseudonym key: long enough, explicit with a broker, one per database; private files."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import sqlalchemy as sa
from live import make_pngs, run_screen, screen_env

from pneumoscreen.db import Image, session_scope
from pneumoscreen.db.keys import KeyMismatch
from pneumoscreen.worker.intake.submit import submit_folder
from pneumoscreen.worker.keys import key_fingerprint
from pneumoscreen.worker.settings import PatientKeyError, Settings

KEY_A = "key-a-3b9e0f7c21d84a6e95c0b1f2d7a84e63"
KEY_B = "key-b-c81f4e2a9d07b35f6e1a0c9d8b7f2e41"


def test_a_short_key_is_refused() -> None:
    with pytest.raises(PatientKeyError, match="SCREEN_PATIENT_KEY is 1 bytes; it needs at "
                       "least 32"):
        Settings(patient_key="x").effective_patient_key()


def test_an_empty_key_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "patient.key").write_text("")
    with pytest.raises(PatientKeyError, match=r"patient\.key is 0 bytes"):
        Settings().effective_patient_key()
    empty = tmp_path / "secret"
    empty.write_text("\n")
    empty.chmod(0o600)
    with pytest.raises(PatientKeyError, match="is 0 bytes"):
        Settings(patient_key_file=empty).effective_patient_key()


@pytest.mark.parametrize(("key", "why"), [
    ("a" * 32, "the same 1 character repeated"),
    ("0123456789abcdef" * 4, "the same 16 characters repeated"),
    ("abcdefghijklmnopqrstuvwxyz0123456789", "mostly runs of consecutive"),
    ("ciiceigiaiageiccgiiggcccigaaciaeaegigggi", "only 5 distinct characters"),
])
def test_an_obvious_key_is_refused(key: str, why: str) -> None:
    with pytest.raises(PatientKeyError, match=f"too easy to guess \\({why}"):
        Settings(patient_key=key).effective_patient_key()


def test_random_keys_pass() -> None:
    import secrets

    for _ in range(200):  # `openssl rand -hex 16` and `-hex 32`, urlsafe: never refused
        for key in (secrets.token_hex(16), secrets.token_hex(32), secrets.token_urlsafe(32)):
            assert Settings(patient_key=key).effective_patient_key() == key.encode()


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    key_file = tmp_path / "patient.key"
    key_file.write_text(KEY_A)
    key_file.chmod(0o644)
    with pytest.raises(PatientKeyError, match=r"readable by others \(mode 644\): run `chmod 600"):
        Settings(patient_key_file=key_file).effective_patient_key()
    key_file.chmod(0o600)
    assert Settings(patient_key_file=key_file).effective_patient_key() == KEY_A.encode()


def test_weak_key_in_one_line(tmp_path: Path) -> None:
    env = screen_env(data_dir=tmp_path / "d", database_url=f"sqlite:///{tmp_path / 'x.db'}",
                     broker_url="redis://127.0.0.1:1/0", SCREEN_PATIENT_KEY="a" * 32)
    make_pngs(tmp_path / "in", 1, size=32)
    out = run_screen(env, "submit", str(tmp_path / "in"))
    assert out.returncode == 1, out.stderr
    assert out.stderr.strip().splitlines() == [
        "error: the patient key from SCREEN_PATIENT_KEY is too easy to guess (the same 1 "
        "character repeated); make a random one, e.g. `openssl rand -hex 32`"], out.stderr


def test_a_missing_key_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PatientKeyError, match="cannot read the key file"):
        Settings(patient_key_file=tmp_path / "nope").effective_patient_key()


def test_a_broker_needs_an_explicit_key(tmp_path: Path) -> None:
    with pytest.raises(PatientKeyError, match="set SCREEN_PATIENT_KEY_FILE"):
        Settings(broker_url="redis://127.0.0.1:1/0").effective_patient_key()
    key_file = tmp_path / "key"
    key_file.write_text(KEY_A + "\n")
    key_file.chmod(0o600)
    assert Settings(broker_url="redis://127.0.0.1:1/0",
                    patient_key_file=key_file).effective_patient_key() == KEY_A.encode()


def test_the_cli_says_so_in_one_line(tmp_path: Path) -> None:
    env = screen_env(data_dir=tmp_path / "d", database_url=f"sqlite:///{tmp_path / 'x.db'}",
                     broker_url="redis://127.0.0.1:1/0", SCREEN_PATIENT_KEY="x")
    make_pngs(tmp_path / "in", 1, size=32)
    out = run_screen(env, "submit", str(tmp_path / "in"))
    assert out.returncode == 1
    assert out.stderr.strip().startswith("error: the patient key from SCREEN_PATIENT_KEY is 1")
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_another_key_is_refused_and_registers_nothing(tmp_path: Path) -> None:
    make_pngs(tmp_path / "a", 2, size=32, seed=1)
    make_pngs(tmp_path / "b", 2, size=32, seed=2)
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    assert submit_folder(tmp_path / "a", settings=Settings(database_url=url,
                                                           patient_key=KEY_A)).n_new == 2
    with pytest.raises(KeyMismatch, match="written with another patient key"):
        submit_folder(tmp_path / "b", settings=Settings(database_url=url, patient_key=KEY_B))
    with session_scope(url) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Image)) == 2
        stored = session.execute(sa.text("SELECT fingerprint FROM key_fingerprints")).scalar()
    assert stored == key_fingerprint(KEY_A.encode()) and KEY_A not in stored


def test_the_data_directory_and_its_files_are_private(isolated_settings: Path) -> None:
    isolated_settings.mkdir(mode=0o755)
    isolated_settings.chmod(0o755)
    settings = Settings()
    settings.effective_patient_key()
    with settings.session() as session:
        session.execute(sa.text("SELECT 1"))
    mode = {p.name: stat.S_IMODE(p.stat().st_mode) for p in isolated_settings.iterdir()}
    assert stat.S_IMODE(isolated_settings.stat().st_mode) == 0o700
    assert mode["patient.key"] == 0o600 and mode["pneumoscreen.sqlite3"] == 0o600


def test_an_existing_open_database_file_is_tightened(tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite3"
    db.touch(mode=0o644)
    db.chmod(0o644)
    with session_scope(f"sqlite:///{db}") as session:
        session.execute(sa.text("SELECT 1"))
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
