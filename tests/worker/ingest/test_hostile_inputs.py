"""Hostile and broken inputs: every one ends as a study outcome with a reason naming its tag,
bounded before anything large is read, and no patient value leaks into a reason or a log."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from ingest_factories import (
    PATIENT_ID,
    chest_like,
    jpeg_baseline_ds,
    make_ds,
    patch_element,
    write,
)
from pydicom.dataset import Dataset
from pydicom.uid import RLELossless

from pneumoscreen.worker.ingest import (
    FailedImage,
    IngestConfig,
    RejectedImage,
    check_file,
    load_grey,
    probe,
)
from pneumoscreen.worker.ingest.inspection import inspect_file

KEY = b"k" * 32
CONFIG = IngestConfig(patient_key=KEY)


def _lut(descriptor: object, data: object = None, vr: str = "US") -> Dataset:
    item = Dataset()
    item.LUTDescriptor = descriptor
    if data is not None:
        item.add_new("LUTData", vr, data)
    return item


class TestDecodingReasons:
    """Each former catch-all ("unexpected IndexError/TypeError while decoding") names its tag."""

    @pytest.mark.parametrize(("item", "why"), [
        (_lut([4096, 0, 16], [1, 2, 3]), r"LUT Data \(0028,3006\) holds 3 entries, the "
                                         r"descriptor says 4096"),
        (_lut(4096, list(range(4096))), r"LUT Descriptor \(0028,3002\) is not three numbers"),
        (_lut([0, 0, 16], b"", "OW"), r"LUT Data \(0028,3006\) is missing or empty"),
        (_lut([256, 0, 40], list(range(256))), r"LUT Descriptor \(0028,3002\) declares 40 "
                                               r"bits per entry \(allowed: 8-16\)$"),
    ])
    def test_broken_voi_lut(self, tmp_path: Path, item: Dataset, why: str) -> None:
        path = write(make_ds(chest_like(), bits_stored=12, VOILUTSequence=[item]),
                     tmp_path / "voi.dcm")
        with pytest.raises(FailedImage, match=r"^VOI LUT Sequence \(0028,3010\) is malformed: "
                                              + why):
            load_grey(path, CONFIG)

    @pytest.mark.parametrize(("item", "why"), [
        (_lut([4096, 0, 16]), r"LUT Data \(0028,3006\) is missing or empty"),
        (_lut([4096, 0, 16], [1, 2, 3]), r"LUT Data \(0028,3006\) holds 3 entries"),
    ])
    def test_broken_modality_lut(self, tmp_path: Path, item: Dataset, why: str) -> None:
        path = write(make_ds(chest_like(), bits_stored=12, ModalityLUTSequence=[item]),
                     tmp_path / "mod.dcm")
        with pytest.raises(FailedImage,
                           match=r"^Modality LUT Sequence \(0028,3000\) is malformed: " + why):
            load_grey(path, CONFIG)

    def test_a_good_modality_lut_still_applies(self, tmp_path: Path) -> None:
        item = _lut([4096, 0, 16], list(range(4096)))
        path = write(make_ds(chest_like(), bits_stored=12, ModalityLUTSequence=[item]),
                     tmp_path / "mod.dcm")
        assert "Modality LUT Sequence" in load_grey(path, CONFIG).steps

    def test_empty_rescale_slope(self, tmp_path: Path) -> None:
        path = write(make_ds(chest_like(), RescaleSlope="", RescaleIntercept="0"),
                     tmp_path / "s.dcm")
        with pytest.raises(FailedImage, match=r"^Rescale Slope \(0028,1053\) is empty$"):
            load_grey(path, CONFIG)

    @pytest.mark.parametrize(("keyword", "tag", "value"), [
        ("RescaleSlope", 0x00281053, b"ab"), ("RescaleIntercept", 0x00281052, b"nan "),
    ])
    def test_non_numeric_rescale(self, tmp_path: Path, keyword: str, tag: int,
                                 value: bytes) -> None:
        path = write(make_ds(chest_like(), RescaleSlope="1", RescaleIntercept="0"),
                     tmp_path / "s.dcm")
        patch_element(path, tag, value)
        name = "Rescale Slope" if keyword == "RescaleSlope" else "Rescale Intercept"
        with pytest.raises(FailedImage, match=rf"^{name} \({tag >> 16:04X},{tag & 0xFFFF:04X}\) "
                                              r"is not a finite number$"):
            load_grey(path, CONFIG)

    def test_unknown_vr_names_the_tag(self, tmp_path: Path) -> None:
        path = patch_element(write(make_ds(chest_like()), tmp_path / "vr.dcm"), 0x00180015,
                             b"CHEST ", vr=b"ZZ")
        with pytest.raises(FailedImage, match=r"^unknown Value Representation \(VR\) in tag "
                                              r"\(0018,0015\) Body Part Examined$"):
            probe(path, CONFIG)

    def test_palette_color_without_its_table(self, tmp_path: Path) -> None:
        arr = np.zeros((32, 32), np.uint8)
        arr[8:20] = 3
        path = write(make_ds(arr, photometric="PALETTE COLOR"), tmp_path / "p.dcm")
        with pytest.raises(FailedImage, match=r"^PALETTE COLOR image without its Palette Color "
                                              r"Lookup Table: missing Red Palette Color Lookup "
                                              r"Table Descriptor \(0028,1101\)"):
            probe(path, CONFIG)

    @pytest.mark.parametrize(("uid", "why"), [
        (b"1.2.840.10008.5.1.4.1.1.1", r"1\.2\.840\.10008\.5\.1\.4\.1\.1\.1 is not a transfer "
                                       r"syntax \(Computed Radiography Image Storage\)$"),
        (b"1.2.3.4", r"1\.2\.3\.4 is not a transfer syntax \(unknown UID\)$"),
        (b"abc", r"is not a valid UID: an invalid value \(3 characters"),
        (b"1.2.840.10008.1.2.1" + b"1" * 60, r"is not a valid UID: an invalid value \(79 char"),
    ])
    def test_transfer_syntax_uid_that_is_not_one(self, tmp_path: Path, uid: bytes,
                                                 why: str) -> None:
        path = patch_element(write(make_ds(chest_like()), tmp_path / "ts.dcm"), 0x00020010, uid)
        for call in (probe, load_grey):
            with pytest.raises(FailedImage, match=r"^Transfer Syntax UID \(0002,0010\) " + why):
                call(path, CONFIG)

    def test_failed_study_carries_only_valid_values(self, tmp_path: Path) -> None:
        path = patch_element(write(make_ds(chest_like()), tmp_path / "ts.dcm"), 0x00020010,
                             b"1.2.840.10008.1.2.1" + b"1" * 60)
        with pytest.raises(FailedImage) as info:
            probe(path, CONFIG)
        assert info.value.metadata["transfer_syntax"] is None
        assert info.value.metadata["modality"] == "CR"  # the rest of the header still listed

    @pytest.mark.parametrize("encapsulated", ["jpeg", "rle"])
    def test_cut_inside_encapsulated_pixel_data(self, tmp_path: Path, encapsulated: str) -> None:
        base = chest_like()
        if encapsulated == "jpeg":
            ds = jpeg_baseline_ds((base >> 4).astype(np.uint8))
        else:
            ds = make_ds(base, bits_stored=12)
            ds.compress(RLELossless, base)
        path = write(ds, tmp_path / "cut.dcm")
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - 300])
        probe(path, CONFIG)  # the header is intact: it registers
        with pytest.raises(FailedImage, match=r"^pixel data truncated: the file ends inside "
                                              r"its encapsulated Pixel Data \(7FE0,0010\)$"):
            load_grey(path, CONFIG)


class TestHeaderValues:
    """Every value reaching a column is valid for its VR; over-long UIDs fail alone."""

    @pytest.mark.parametrize(("tag", "name"), [
        (0x00080018, "SOP Instance UID (0008,0018)"),
        (0x0020000D, "Study Instance UID (0020,000D)"),
        (0x0020000E, "Series Instance UID (0020,000E)"),
    ])
    def test_over_long_uid_fails_naming_the_tag(self, tmp_path: Path, tag: int,
                                                name: str) -> None:
        path = patch_element(write(make_ds(chest_like()), tmp_path / "u.dcm"), tag,
                             b"1.2.3." + b"4" * 70)
        with pytest.raises(FailedImage, match=rf"^{name.replace('(', '[(]').replace(')', '[)]')}"
                                              r" is not a valid UID: an invalid value"):
            probe(path, CONFIG)

    def test_invalid_values_are_not_stored(self, tmp_path: Path) -> None:
        path = write(make_ds(chest_like(), PatientSex="female person",
                             ManufacturerModelName="m"), tmp_path / "v.dcm")
        patch_element(path, 0x00080070, b"M" * 130)  # Manufacturer: LO is at most 64
        patch_element(path, 0x00081090, b"model\x1b[2J")  # a control character
        md = probe(path, CONFIG).metadata
        assert md["manufacturer"] is None and md["patient_sex"] is None
        assert "ManufacturerModelName" not in md["meta"]

    def test_a_name_in_body_part_is_neither_stored_nor_quoted(self, tmp_path: Path) -> None:
        path = write(make_ds(chest_like(), BodyPartExamined="Doe^Jane"), tmp_path / "b.dcm")
        with pytest.raises(RejectedImage, match=r"^Body Part Examined an invalid value is not "
                                                r"screened \(accepted: CHEST") as info:
            probe(path, CONFIG)
        assert "Doe" not in str(info.value) and info.value.metadata["body_part"] is None

    @pytest.mark.parametrize(("keyword", "value", "shown"), [
        ("Modality", "Jane Doe", "an invalid value"), ("Modality", "CT", "CT"),
        ("ViewPosition", "[blink]LL[/blink]", None), ("ViewPosition", "LL", "LL"),
    ])
    def test_reasons_quote_only_valid_code_strings(self, tmp_path: Path, keyword: str,
                                                   value: str, shown: str | None) -> None:
        ds = make_ds(chest_like())
        setattr(ds, keyword, value)
        path = write(ds, tmp_path / "q.dcm")
        if shown is None:  # not a lateral code: screened, and the column holds nothing
            assert probe(path, CONFIG).metadata["view_position"] is None
            return
        with pytest.raises(RejectedImage) as info:
            probe(path, CONFIG)
        assert shown in str(info.value) and (shown == value or value not in str(info.value))

    def test_accession_number_is_a_keyed_hash(self, tmp_path: Path) -> None:
        path = write(make_ds(chest_like(), AccessionNumber="ACC-77-SECRET"), tmp_path / "a.dcm")
        md = probe(path, CONFIG).metadata
        other = probe(path, IngestConfig(patient_key=b"x" * 32)).metadata
        assert len(md["accession_number"]) == 64 and "ACC" not in md["accession_number"]
        assert md["accession_number"] != other["accession_number"]
        assert probe(path, IngestConfig()).metadata["accession_number"] is None  # no key
        tags = inspect_file(path, CONFIG).tags
        assert tags["AccessionNumber"] == f"(keyed hash) {md['accession_number'][:12]}"


class TestBounds:
    """Size, type and plausibility are checked before anything large is read."""

    def test_ten_gigabyte_sparse_file_is_refused_from_its_size(self, tmp_path: Path) -> None:
        path = tmp_path / "huge.dcm"
        with open(path, "wb") as fh:
            fh.truncate(10 << 30)  # sparse: takes no disk space
        limit = CONFIG.file_limit
        assert limit == 60_000_000 * 4 + (64 << 20)  # max_pixels x 2 bytes x 2 + 64 MiB
        for call in (check_file, probe, load_grey):
            with pytest.raises(FailedImage, match=rf"^file is {10 << 30} bytes, beyond the "
                                                  rf"limit of {limit} bytes "
                                                  r"\(SCREEN_MAX_FILE_BYTES\)$"):
                call(path, CONFIG)

    def test_the_limit_is_a_setting(self, tmp_path: Path) -> None:
        from pneumoscreen.worker.settings import Settings

        path = write(make_ds(chest_like()), tmp_path / "a.dcm")
        config = Settings(max_file_bytes=1000).ingest_config()
        with pytest.raises(FailedImage, match=r"beyond the limit of 1000 bytes"):
            probe(path, config)
        assert Settings().ingest_config().file_limit == CONFIG.file_limit

    def test_zeros_are_refused_before_a_forced_parse(self, tmp_path: Path) -> None:
        path = tmp_path / "zeros.dcm"
        with open(path, "wb") as fh:
            fh.truncate(100 << 20)
        for call in (probe, load_grey):
            with pytest.raises(FailedImage, match=r"^not a DICOM file: no DICM marker at byte "
                                                  r"128 and the first bytes do not start a "
                                                  r"data set$"):
                call(path, CONFIG)

    def test_header_reads_are_bounded(self, tmp_path: Path) -> None:
        ds = make_ds(chest_like())
        ds.add_new(0x00091010, "OB", b"\0" * 20_000)  # a big private block before the pixels
        path = write(ds, tmp_path / "big_header.dcm")
        small = IngestConfig(patient_key=KEY, max_header_bytes=8192)
        for call in (probe, load_grey):
            with pytest.raises(FailedImage, match=r"^header larger than 8192 bytes before the "
                                                  r"Pixel Data: not read further "
                                                  r"\(header bound\)$"):
                call(path, small)
        probe(path, CONFIG)  # the default bound (16 MiB) reads it
        load_grey(path, CONFIG)

    @pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
    def test_a_fifo_is_refused_without_opening_it_for_a_blocking_read(self, tmp_path: Path) -> None:
        fifo = tmp_path / "pipe.dcm"
        os.mkfifo(fifo)
        for call in (check_file, probe, load_grey):
            with pytest.raises(FailedImage, match=r"^not a regular file \(a FIFO \(named "
                                                  r"pipe\)\): only regular files are read$"):
                call(fifo, CONFIG)
        result = inspect_file(fifo, CONFIG)
        assert result.decision == "failed" and "FIFO" in (result.reason or "")

    @pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
    def test_screen_inspect_on_a_fifo_answers(self, tmp_path: Path) -> None:
        """Through the real entry point: it used to wait for a writer for ever."""
        fifo = tmp_path / "pipe.dcm"
        os.mkfifo(fifo)
        env = {**os.environ, "SCREEN_DATA_DIR": str(tmp_path / "data")}
        res = subprocess.run(
            [sys.executable, "-c", "from pneumoscreen.worker.cli import main; main()",
             "inspect", str(fifo)], env=env, capture_output=True, text=True, timeout=120)
        assert "not a regular file (a FIFO (named pipe))" in res.stdout, res.stdout + res.stderr
        assert "Traceback" not in res.stderr


WRONG_VR_ID = "MRN-998877"


def _wrong_vr_file(path: Path) -> Path:
    """PatientID written with VR IS (pydicom then warns, quoting the value) and a birth date
    with VR DS."""
    write(make_ds(chest_like(), PatientBirthDate="19800101"), path)
    patch_element(path, 0x00100020, WRONG_VR_ID.encode(), vr=b"IS")
    return path


class TestPydicomMessages:
    def test_no_patient_value_in_logs_warnings_or_steps(self, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
        path = _wrong_vr_file(tmp_path / "vr.dcm")
        caplog.set_level(logging.DEBUG)
        with warnings.catch_warnings(record=True) as stray:
            warnings.simplefilter("default")
            probe(path, CONFIG)
            decoded = load_grey(path, CONFIG)
            inspected = inspect_file(path, CONFIG)
        # caplog also listens on non-propagating loggers: pydicom's own records reach it
        # directly, but no application handler (they hang on the root logger) ever sees them.
        assert logging.getLogger("pydicom").propagate is False
        logged = "\n".join(r.getMessage() for r in caplog.records if r.name != "pydicom")
        everything = "\n".join([logged, *map(str, (w.message for w in stray)),
                                *decoded.steps, str(inspected.to_dict())])
        assert "Invalid value for VR IS: <value>" in logged  # the message is there, scrubbed
        assert WRONG_VR_ID not in everything and "998877" not in everything
        assert str(path) not in logged
        assert PATIENT_ID not in everything

    def test_debug_logging_process_shows_no_patient_value(self, tmp_path: Path) -> None:
        """A fresh process with root logging at DEBUG to stderr and Python's default warning
        display: what a worker started with ``--loglevel debug`` would print."""
        path = _wrong_vr_file(tmp_path / "vr.dcm")
        code = (
            "import logging, sys; logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)\n"
            "logging.captureWarnings(True)\n"
            "from pneumoscreen.worker.ingest import IngestConfig, load_grey, probe\n"
            f"c = IngestConfig(patient_key=b'k' * 32); p = {str(path)!r}\n"
            "probe(p, c); load_grey(p, c); print('ok')\n"
        )
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=120)
        assert res.stdout.strip() == "ok", res.stderr
        assert "Invalid value for VR IS: <value>" in res.stderr
        assert WRONG_VR_ID not in res.stderr and str(path) not in res.stderr


def test_submit_records_an_oversized_file_without_hashing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The size is checked before the content hash: a 10 GB sparse file is never read."""
    import sqlalchemy as sa

    from pneumoscreen.db import Image
    from pneumoscreen.worker.intake import submit as submit_module
    from pneumoscreen.worker.settings import get_settings

    hashed: list[str] = []
    real_hash = submit_module.file_sha256

    def spy(path: Path) -> str:
        hashed.append(Path(path).name)
        return real_hash(path)

    monkeypatch.setattr(submit_module, "file_sha256", spy)
    folder = tmp_path / "inbox"
    folder.mkdir()
    with open(folder / "huge.dcm", "wb") as fh:
        fh.truncate(10 << 30)
    write(make_ds(chest_like(), modality="CT"), folder / "ct.dcm")
    settings = get_settings()
    result = submit_module.submit_folder(folder, settings=settings)
    assert (result.n_failed, result.n_rejected) == (1, 1)
    assert hashed == ["ct.dcm"]
    with settings.session() as session:
        reasons = dict(session.execute(sa.select(Image.source_path, Image.reason)).all())
    assert reasons[str(folder / "huge.dcm")].startswith(f"file is {10 << 30} bytes, beyond")
