"""`screen listen` as a real subprocess, with a real Orthanc as the modality/PACS pushing to it.

The round trip's receive part, the allow-list and SOP-class refusals, TLS, a SIGKILL mid-transfer,
a database down at receive time, and 200 instances from two concurrent senders.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from listener import ListenerProcess, fresh_instances, spool_files, store
from live import (
    REDIS_URL,
    SAMPLES,
    TEST_PATIENT_KEY,
    WorkerProcess,
    free_port,
    redis_or_skip,
    screen_env,
    wait_until,
)
from orthanc import Orthanc

pytestmark = [pytest.mark.shared]

CR_DX = ["1.2.840.10008.5.1.4.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1",
         "1.2.840.10008.5.1.4.1.1.1.1.1"]
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def _env(data: Path, db_url: str, broker: str | None, *, allowed: list[str] | None,
         stable: float = 2, **extra: str) -> dict[str, str]:
    env = screen_env(data_dir=data, database_url=db_url, broker_url=broker or "",
                     SCREEN_STUDY_STABLE_SECONDS=str(stable), SCREEN_PATIENT_KEY=TEST_PATIENT_KEY,
                     SCREEN_LISTEN_TIMEOUT="20", **extra)
    if allowed is not None:
        env["SCREEN_CALLING_AE_TITLES"] = json.dumps(allowed)
    return env


def _no_broker() -> str:
    """A broker that is down: registration goes on, tasks wait (and no TensorFlow in the
    listener, as eager mode would load it)."""
    return f"redis://127.0.0.1:{free_port()}/0"


def _rows(db_url: str, sql: str) -> list[tuple]:
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql))]
    except sa.exc.OperationalError:  # the listener has not made the tables yet
        return []
    finally:
        engine.dispose()


def _count(db_url: str, table: str) -> int:
    rows = _rows(db_url, f"SELECT count(*) FROM {table}")
    return int(rows[0][0]) if rows else 0


def _chest(shared_dir: Path) -> list[Path]:
    return sorted((shared_dir / "dicom" / "chest").glob("*.dcm"))


@pytest.mark.slow
@pytest.mark.redis
def test_round_trip_receive_orthanc_pushes_and_a_worker_screens(
        orthanc: Orthanc, shared_dir: Path, tmp_path: Path) -> None:
    """Orthanc stores the chest files and pushes them; each study is screened once stable."""
    redis_or_skip(REDIS_URL)
    data, db_url, port = tmp_path / "data", f"sqlite:///{tmp_path / 'screen.sqlite3'}", free_port()
    # The RSNA/SIIM chest films are stored as Secondary Capture: this site accepts SC as well.
    env = _env(data, db_url, REDIS_URL, allowed=["ORTHANC"],
               SCREEN_LISTEN_SOP_CLASSES=json.dumps([*CR_DX, SECONDARY_CAPTURE]))
    listener = ListenerProcess(env, tmp_path / "listen.log", port)
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        listener.wait_ready()
        files = _chest(shared_dir)
        for path in files:
            orthanc.upload(path)
        orthanc.add_modality("pneumoscreen", "PNEUMOSCREEN", "127.0.0.1", port)
        started = time.monotonic()
        sent = orthanc.send_to_modality("pneumoscreen", orthanc.studies())
        assert sent["InstancesCount"] == len(files) and sent["FailedInstancesCount"] == 0
        worker.wait_ready()
        wait_until(lambda: _count(db_url, "studies WHERE status IN ('done', 'rejected', "
                                  "'failed')") == len(files), 300, "every study screened",
                   lambda: listener.log() + worker.log()[-3000:])
        elapsed = time.monotonic() - started
    finally:
        listener.stop()
        worker.stop()
    rows = _rows(db_url, "SELECT s.status, s.source_path, r.calling_aet, r.enqueued_at, "
                 "p.probability FROM studies s JOIN received_instances r ON r.study_id = s.id "
                 "LEFT JOIN predictions p ON p.study_id = s.id")
    assert len(rows) == len(files)
    assert all(status == "done" and prob is not None for status, _, _, _, prob in rows), rows
    assert {aet for _, _, aet, _, _ in rows} == {"ORTHANC"} and all(r[3] for r in rows)
    assert {Path(p) for _, p, *_ in rows} == set(spool_files(data))  # kept as the source
    print(f"\nround trip (receive): Orthanc pushed {len(files)} instances of "
          f"{len(orthanc.studies())} studies; all {len(rows)} screened {elapsed:.1f} s after the "
          "push; probabilities " + ", ".join(f"{r[4]:.3f}" for r in rows))


def test_calling_ae_titles_off_the_list_and_other_sop_classes_are_refused(
        orthanc: Orthanc, shared_dir: Path, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    data, db_url, port = tmp_path / "data", f"sqlite:///{tmp_path / 'screen.sqlite3'}", free_port()
    listener = ListenerProcess(_env(data, db_url, _no_broker(), allowed=["SCU1"]),
                               tmp_path / "listen.log", port)
    try:
        listener.wait_ready()
        orthanc.add_modality("pneumoscreen", "PNEUMOSCREEN", "127.0.0.1", port)
        orthanc.upload(_chest(shared_dir)[0])
        with pytest.raises(AssertionError, match="HTTP"):  # Orthanc calls as ORTHANC
            orthanc.send_to_modality("pneumoscreen", orthanc.instances())
        with pytest.raises(ConnectionError, match="refused"):
            store(port, _chest(shared_dir)[:1], calling="EVIL")
        assert "calling ae title not recognised" in caplog.text.lower()
        ct = shared_dir / "dicom" / "not_chest" / "CT_JPEG_LS_lossless.dcm"
        assert store(port, [ct, _chest(shared_dir)[0]], calling="SCU1") == [-1, 0]
        wait_until(lambda: _count(db_url, "received_instances") == 1, 30, "the CR registered",
                   listener.log)
    finally:
        listener.stop()
    assert len(spool_files(data)) == 1  # the CR only: nothing from the refused senders or CT
    log = listener.log()
    assert "'ORTHANC' refused" in log and "'EVIL' refused" in log
    assert "Patient" not in log and str(shared_dir) not in log


def test_an_empty_allow_list_refuses_everyone(tmp_path: Path, shared_dir: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    data, port = tmp_path / "data", free_port()
    listener = ListenerProcess(_env(data, f"sqlite:///{tmp_path / 'db.sqlite3'}", _no_broker(),
                                    allowed=None), tmp_path / "listen.log", port)
    try:
        assert "accepting nobody" in listener.wait_ready().log()
        for calling in ("SCU1", "ORTHANC", "PNEUMOSCREEN"):
            with pytest.raises(ConnectionError, match="refused"):
                store(port, _chest(shared_dir)[:1], calling=calling)
    finally:
        listener.stop()
    assert "calling ae title not recognised" in caplog.text.lower()
    assert spool_files(data) == []


def test_tls_with_a_self_signed_certificate(tmp_path: Path, shared_dir: Path) -> None:
    pytest.importorskip("cryptography", reason="cryptography makes the test's certificate")
    import ssl

    cert, key = _self_signed(tmp_path)
    data, db_url, port = tmp_path / "data", f"sqlite:///{tmp_path / 'db.sqlite3'}", free_port()
    env = _env(data, db_url, _no_broker(), allowed=["SCU1"], SCREEN_LISTEN_TLS_CERT=str(cert),
               SCREEN_LISTEN_TLS_KEY=str(key))
    listener = ListenerProcess(env, tmp_path / "listen.log", port)
    try:
        assert "over TLS" in listener.wait_ready().log()
        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
        client.check_hostname = False
        assert store(port, _chest(shared_dir)[:1], calling="SCU1", ssl_context=client) == [0]
        with pytest.raises(ConnectionError):  # the same sender in the clear
            store(port, _chest(shared_dir)[:1], calling="SCU1")
    finally:
        listener.stop()
    assert len(spool_files(data)) == 1


def _self_signed(folder: Path) -> tuple[Path, Path]:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pneumoscreen-test")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.mark.slow
@pytest.mark.redis
def test_listener_killed_mid_transfer_loses_and_duplicates_nothing(
        orthanc: Orthanc, shared_dir: Path, tmp_path: Path) -> None:
    redis_or_skip(REDIS_URL)
    data, db_url, port = tmp_path / "data", f"sqlite:///{tmp_path / 'screen.sqlite3'}", free_port()
    env = _env(data, db_url, REDIS_URL, allowed=["ORTHANC"], stable=1)
    dx = shared_dir / "dicom" / "chest" / "DX_chest_J2K_lossless_MONOCHROME1_12bit.dcm"
    files = fresh_instances([dx], tmp_path / "src", 30, per_study=3)  # 4 MB each: time to kill
    for path in files:
        orthanc.upload(path)
    orthanc.add_modality("pneumoscreen", "PNEUMOSCREEN", "127.0.0.1", port)
    listener = ListenerProcess(env, tmp_path / "listen.log", port).wait_ready()
    # The database is made on first use; killing a process in the middle of SQLite's
    # (non-transactional) first migration is another matter than a receipt cut short.
    wait_until(lambda: "spool: 0 files" in listener.log(), 60, "the database ready",
               listener.log)
    job = orthanc.send_to_modality("pneumoscreen", orthanc.studies(), asynchronous=True)
    deadline = time.monotonic() + 60
    while len(spool_files(data)) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    listener.kill()
    at_kill = len(spool_files(data))
    assert orthanc.wait_job(job["ID"])["State"] == "Failure"  # the transfer was cut
    assert 0 < at_kill < len(files)

    listener = ListenerProcess(env, tmp_path / "listen.log", port).wait_ready()
    try:  # the modality sends everything again, as a PACS does after a failed job
        sent = orthanc.send_to_modality("pneumoscreen", orthanc.studies())
        assert sent["FailedInstancesCount"] == 0
        wait_until(lambda: _count(db_url, "received_instances") == len(files), 120,
                   "every instance registered", lambda: (
                       f"{_count(db_url, 'received_instances')} rows, "
                       f"{len(spool_files(data))} spool files\n{listener.log()}"))
        time.sleep(2)  # a late duplicate would be registered by now
    finally:
        listener.stop()
    assert _count(db_url, "studies") == len(files)
    assert _count(db_url, "received_instances") == len(files) == len(spool_files(data))
    assert _rows(db_url, "SELECT count(DISTINCT sop_instance_uid) FROM studies") == [(len(files),)]
    assert not list((data / "spool").glob("*/.part-*"))
    print(f"\nkilled with {at_kill} of {len(files)} instances spooled; after the restart and a "
          f"resend: {len(files)} studies, {len(files)} received rows")


@pytest.mark.slow
def test_database_down_at_receive_time_then_registered_at_restart(
        orthanc: Orthanc, shared_dir: Path, tmp_path: Path) -> None:
    data, good = tmp_path / "data", f"sqlite:///{tmp_path / 'screen.sqlite3'}"
    down = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/screen"
    port = free_port()
    files = [p for p in _chest(shared_dir) if "J2K" in p.name]  # the CR and the DX
    for path in files:
        orthanc.upload(path)
    orthanc.add_modality("pneumoscreen", "PNEUMOSCREEN", "127.0.0.1", port)
    env = _env(data, down, _no_broker(), allowed=["ORTHANC"], stable=0)
    listener = ListenerProcess(env, tmp_path / "listen.log", port).wait_ready()
    try:
        sent = orthanc.send_to_modality("pneumoscreen", orthanc.studies())
        assert sent["InstancesCount"] == len(files) and sent["FailedInstancesCount"] == 0
        wait_until(lambda: "database unavailable" in listener.log(), 30, "the outage noticed",
                   listener.log)
    finally:
        listener.stop()
    assert len(spool_files(data)) == len(files)

    env = _env(data, good, _no_broker(), allowed=["ORTHANC"], stable=0)
    listener = ListenerProcess(env, tmp_path / "listen2.log", port).wait_ready()
    try:
        wait_until(lambda: _count(good, "received_instances") == len(files), 30,
                   "the spool registered at the start", listener.log)
    finally:
        listener.stop()
    assert _rows(good, "SELECT status FROM studies") == [("queued",)] * len(files)


@pytest.mark.slow
@pytest.mark.redis
def test_two_hundred_instances_from_two_concurrent_senders_are_registered_once(
        shared_dir: Path, tmp_path: Path) -> None:
    redis_or_skip(REDIS_URL)
    data, db_url, port = tmp_path / "data", f"sqlite:///{tmp_path / 'screen.sqlite3'}", free_port()
    env = _env(data, db_url, REDIS_URL, allowed=["SCU1", "SCU2"])
    sources = [p for p in _chest(shared_dir) if p.name.startswith("CR_chest_J2K")]
    batches = {aet: fresh_instances(sources, tmp_path / aet, 100, per_study=5, prefix=aet)
               for aet in ("SCU1", "SCU2")}
    listener = ListenerProcess(env, tmp_path / "listen.log", port).wait_ready()
    statuses: dict[str, list[int]] = {}
    try:
        def send(aet: str) -> None:
            statuses[aet] = store(port, batches[aet], calling=aet)

        started = time.monotonic()
        threads = [threading.Thread(target=send, args=(aet,)) for aet in batches]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        sent_s = time.monotonic() - started
        wait_until(lambda: _count(db_url, "received_instances") >= 200, 120,
                   "200 instances registered", listener.log)
        registered_s = time.monotonic() - started
        time.sleep(2)
    finally:
        listener.stop()
    assert statuses == {"SCU1": [0] * 100, "SCU2": [0] * 100}
    assert _count(db_url, "studies") == 200 == _count(db_url, "received_instances")
    assert _rows(db_url, "SELECT count(DISTINCT sop_instance_uid), count(DISTINCT "
                 "study_instance_uid) FROM studies") == [(200, 40)]
    assert _rows(db_url, "SELECT calling_aet, count(*) FROM received_instances GROUP BY "
                 "calling_aet ORDER BY calling_aet") == [("SCU1", 100), ("SCU2", 100)]
    mb = sum(p.stat().st_size for p in spool_files(data)) / 1e6
    print(f"\n200 instances ({mb:.0f} MB) from 2 concurrent senders: sent in {sent_s:.1f} s, all "
          f"registered {registered_s:.1f} s after the start (stable time 2 s); 200 studies, "
          "200 received rows, 40 Study Instance UIDs")


def test_an_instance_over_the_file_size_limit_is_refused(tmp_path: Path, shared_dir: Path
                                                         ) -> None:
    data, db_url, port = tmp_path / "data", f"sqlite:///{tmp_path / 'db.sqlite3'}", free_port()
    env = _env(data, db_url, _no_broker(), allowed=["SCU1"], SCREEN_MAX_FILE_BYTES="300000",
               SCREEN_LISTEN_MAX_PDU="16384")
    small = [SAMPLES / "cr_chest_jpeg_baseline.dcm"]  # 86 kB
    big = [p for p in _chest(shared_dir) if p.name.startswith("CR_chest_J2K")]  # 677 kB
    listener = ListenerProcess(env, tmp_path / "listen.log", port).wait_ready()
    try:
        assert store(port, big, calling="SCU1", contexts_of=small) != [0]
        assert store(port, small, calling="SCU1") == [0]
    finally:
        listener.stop()
    assert len(spool_files(data)) == 1
    assert "over the 300000-byte limit" in listener.log()
