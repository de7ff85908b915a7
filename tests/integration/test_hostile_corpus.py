"""Issue 13, end to end: a hostile corpus made here, submitted through a real Redis and a real
``screen worker --loglevel debug``. No PHI string reaches the database file, the logs or any
listing; every table command exits 0 and prints no control character."""

from __future__ import annotations

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from ingest_factories import chest_like, make_ds, patch_element, write
from live import (
    REDIS_URL,
    TEST_PATIENT_KEY,
    WorkerProcess,
    all_final,
    redis_or_skip,
    run_screen,
    screen_env,
    wait_until,
)
from PIL import Image

pytestmark = [pytest.mark.redis, pytest.mark.slow]

# Distinctive strings that must never be seen again, one per identifying tag.
PHI = {
    "PatientName": "Zephyrine^Quillfeather",
    "PatientID": "PID-53817-QX",
    "AccessionNumber": "ACCX7731",
    "PatientBirthDate": "19230417",
    "InstitutionName": "St Quillfeather Infirmary",
    "ReferringPhysicianName": "Drumblethwaite^Ottoline",
    "OtherPatientIDs": "OPID-99172-QX",
    "OtherPatientNames": "Quillfeather^Zeph",
    "PatientMotherBirthName": "Vandersnoot^Mabel",
    "PatientAddress": "12 Bramblewick Lane",
    "PatientTelephoneNumbers": "+44 7700 900461",
}
WRONG_VR_ID = "MRN-998877"  # a PatientID written with VR IS: pydicom warns, quoting it
PHI_STRINGS = [*PHI.values(), *PHI["PatientName"].split("^"), WRONG_VR_ID,
               *PHI["ReferringPhysicianName"].split("^"), *PHI["OtherPatientNames"].split("^")]
LINK = "[link=https://evil.example]x[/link]"
BLINK = "[blink]HIP[/blink]"
OSC_TITLE = "\x1b]0;title\x07"
CLEAR = "\x1b[2J"
# C0 and C1 control characters but newline (and the tab some tables may use).
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _phi_ds(seed: int, **tags: object) -> object:
    ds = make_ds(chest_like(64, 64, seed=seed), **tags)
    for keyword, value in PHI.items():
        setattr(ds, keyword, value)
    return ds


def _nested(folder: Path, name: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def make_corpus(folder: Path, outside: Path) -> dict[str, Path]:
    """The hostile corpus; returns the files worth naming in assertions."""
    folder.mkdir()
    files = {
        "good": write(_phi_ds(1), folder / "good.dcm"),
        "wrong_vr": write(_phi_ds(2), folder / "wrong_vr.dcm"),
        "link_tag": write(_phi_ds(3, Manufacturer=LINK), folder / "link_tag.dcm"),
        "blink_part": write(_phi_ds(4, BodyPartExamined="HIP"), folder / "blink_part.dcm"),
        "name_part": write(_phi_ds(5, BodyPartExamined="HIP"), folder / "name_part.dcm"),
        "escape_tags": write(_phi_ds(6, ManufacturerModelName="m", StationName="s"),
                             folder / "escape_tags.dcm"),
        # A slash cannot be in a file name: the markup spans folders, as it does in the stored
        # path ("…/inbox/[link=https:/evil.example]x[/link].dcm").
        "link_name": write(_phi_ds(7), _nested(folder, "[link=https:/evil.example]x[/link].dcm")),
        "blink_name": write(_phi_ds(8), _nested(folder, f"{BLINK}.dcm")),
        "osc_name": write(_phi_ds(9), folder / f"{OSC_TITLE}.dcm"),
        "clear_name": folder / f"{CLEAR}.png",
    }
    patch_element(files["wrong_vr"], 0x00100020, WRONG_VR_ID.encode(), vr=b"IS")
    patch_element(files["blink_part"], 0x00180015, BLINK.encode())
    patch_element(files["name_part"], 0x00180015, PHI["PatientName"].encode())
    patch_element(files["escape_tags"], 0x00081090, OSC_TITLE.encode())
    patch_element(files["escape_tags"], 0x00081010, CLEAR.encode())
    Image.fromarray((chest_like(64, 64, seed=10) >> 4).astype(np.uint8)).save(files["clear_name"])
    files["huge"] = folder / "huge.dcm"
    with open(files["huge"], "wb") as fh:
        fh.truncate(10 << 30)  # sparse: 10 GB that take no disk space
    files["fifo"] = folder / "pipe.dcm"
    os.mkfifo(files["fifo"])
    outside.mkdir()
    secret = write(_phi_ds(11), outside / "outside_secret.dcm")
    files["shadow"] = folder / "shadow.dcm"
    files["shadow"].symlink_to(secret)
    return files


class Run:
    """What one submit of the corpus through a real worker left behind."""

    def __init__(self, files: dict[str, Path], data: Path, worker_log: str,
                 outputs: dict[str, str], stdout: dict[str, str], codes: dict[str, int]) -> None:
        self.files, self.data, self.worker_log = files, data, worker_log
        self.outputs, self.stdout, self.codes = outputs, stdout, codes


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    if not hasattr(os, "mkfifo"):
        pytest.skip("needs FIFOs and symlinks")
    redis_or_skip(REDIS_URL)
    tmp_path = tmp_path_factory.mktemp("hostile")
    folder = tmp_path / "inbox"
    files = make_corpus(folder, tmp_path / "elsewhere")
    data = tmp_path / "data"
    env = screen_env(data_dir=data, database_url=f"sqlite:///{data / 'screen.sqlite3'}",
                     broker_url=REDIS_URL, SCREEN_PATIENT_KEY=TEST_PATIENT_KEY,
                     SCREEN_MODEL_PATH="bundled:cnn-s")  # what is stored and printed is tested
    outputs: dict[str, str] = {}  # stdout and stderr, for the PHI and control-character checks
    stdout: dict[str, str] = {}
    codes: dict[str, int] = {}

    def record(key: str, *args: str) -> None:
        res = run_screen(env, *args, timeout=300)
        outputs[key], stdout[key], codes[key] = res.stdout + res.stderr, res.stdout, res.returncode

    record("submit", "submit", str(folder))
    worker = WorkerProcess(env, tmp_path / "worker.log", "hostile", "--loglevel", "DEBUG")
    try:
        worker.wait_ready()
        wait_until(lambda: all_final(env["SCREEN_DATABASE_URL"]), 300,
                   "every study in a final state", on_timeout=worker.log)
    finally:
        worker.stop()
    calls = [(f"{' '.join(command)} {fmt}", [*command, "--format", fmt])
             for command in (["studies"], ["flagged"], ["flagged", "--by", "study"], ["status"])
             for fmt in ("table", "csv", "json")]
    calls += [(f"inspect {name} {fmt}", ["inspect", str(path), "--format", fmt])
              for name, path in files.items() if name != "shadow"  # outside: not ours to open
              for fmt in ("table", "json")]
    with ThreadPoolExecutor(max_workers=2) as pool:  # the read-only commands, side by side
        list(pool.map(lambda call: record(call[0], *call[1]), calls))
    for key in [k for k in codes if not k.startswith(("submit", "inspect"))]:
        if not key.endswith("table") and codes[key] == 2 and "--format" in outputs[key]:
            del outputs[key], codes[key]  # this command has no such format
    return Run(files, data, worker.log(), outputs, stdout, codes)


def test_no_phi_in_the_database_the_logs_or_any_listing(run: Run) -> None:
    assert "DEBUG" in run.worker_log  # debug logging was on
    assert "Traceback" not in run.worker_log
    db_bytes = b"".join(p.read_bytes() for p in run.data.glob("screen.sqlite3*"))
    assert db_bytes
    for phi in PHI_STRINGS:
        assert phi.encode() not in db_bytes, f"{phi!r} is in the database file"
        assert phi not in run.worker_log, f"{phi!r} is in the worker log"
        for key, text in run.outputs.items():
            assert phi not in text, f"{phi!r} is in the output of {key}"
    assert "Invalid value for VR IS: <value>" in run.worker_log or (
        "Invalid value for VR IS" not in run.worker_log)
    for path in run.files.values():  # logs name study ids, not paths
        assert path.name not in run.worker_log, f"{path.name!r} is in the worker log"


def test_outcomes_of_the_hostile_files(run: Run) -> None:
    assert run.codes["submit"] == 0, run.outputs["submit"]
    studies = json.loads(run.stdout["studies json"])
    by_name = {Path(s["path"]).name: s for s in studies}
    assert by_name["huge.dcm"]["status"] == "failed"
    assert by_name["huge.dcm"]["reason"].startswith(f"file is {10 << 30} bytes, beyond the limit")
    assert by_name["good.dcm"]["status"] == "done"
    assert by_name["wrong_vr.dcm"]["status"] == "done"
    for name in ("blink_part.dcm", "name_part.dcm"):
        assert by_name[name]["status"] == "rejected"
        assert by_name[name]["reason"].startswith(
            "Body Part Examined an invalid value is not screened")
    assert "pipe.dcm" not in by_name  # a FIFO is no regular file: never opened
    assert "not a regular file (a FIFO (named pipe))" in run.outputs["inspect fifo table"]
    assert "beyond the limit" in run.outputs["inspect huge table"]
    accession = {s.get("accession") for s in json.loads(run.stdout["flagged json"])
                 if isinstance(s, dict)} - {None}
    assert all(re.fullmatch(r"[0-9a-f]{12}", a) for a in accession)


def test_every_table_command_exits_0_and_prints_no_control_character(run: Run) -> None:
    for key, text in run.outputs.items():
        if key.startswith(("studies", "flagged", "status")):
            assert run.codes[key] == 0, (key, text)
        if key.endswith("table"):
            assert not CONTROL.search(text), f"a control character in the output of {key}"


def test_a_symlink_outside_the_folder_is_not_registered(run: Run) -> None:
    studies = json.loads(run.stdout["studies json"])
    paths = [s["path"] for s in studies]
    assert not any("outside_secret" in p or p.endswith("shadow.dcm") for p in paths), paths
    assert "1 link out of the folder" in run.outputs["submit"]  # counted and reported
