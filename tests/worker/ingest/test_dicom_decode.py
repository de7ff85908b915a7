"""DICOM ingestion on generated files: format, policy, pixel steps, failures, metadata."""

from __future__ import annotations

import hashlib
import hmac
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from ingest_factories import (
    PATIENT_ID,
    PATIENT_NAME,
    chest_like,
    jpeg_baseline_ds,
    make_ds,
    secondary_capture,
    write,
)
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)

from pneumoscreen.model.preprocess import preprocess
from pneumoscreen.worker.ingest import (
    FailedImage,
    IngestError,
    RejectedImage,
    load_grey,
    probe,
    sniff_format,
)
from pneumoscreen.worker.ingest.api import IngestConfig as Ingest
from pneumoscreen.worker.settings import Settings, get_settings


@pytest.fixture
def settings() -> Ingest:
    """What the worker's default settings tell ingestion."""
    return get_settings().ingest_config()


def cfg(**kw: object) -> Ingest:
    """Ingestion configured from settings with ``kw`` changed."""
    return Settings(**kw).ingest_config()  # type: ignore[arg-type]


def _grey(path: Path, settings: Ingest, **kw: object) -> np.ndarray:
    decoded = load_grey(path, settings, **kw)  # type: ignore[arg-type]
    grey = decoded.grey
    assert grey.dtype == np.float32 and grey.ndim == 2
    assert grey.min() >= 0.0 and grey.max() <= 1.0
    preprocess(grey, 32)  # the model's own range check accepts it
    return grey


class TestSniffFormat:
    def test_part10(self, tmp_path: Path) -> None:
        assert sniff_format(write(make_ds(chest_like()), tmp_path / "a.dcm")) == "dicom"

    def test_no_preamble_and_no_extension(self, tmp_path: Path) -> None:
        path = write(make_ds(chest_like()), tmp_path / "IM0001", preamble=False)
        assert sniff_format(path) == "dicom"

    def test_no_meta_implicit(self, tmp_path: Path) -> None:
        path = write(make_ds(chest_like()), tmp_path / "raw", preamble=False, meta=False)
        assert sniff_format(path) == "dicom"

    def test_text_is_not_an_image(self, tmp_path: Path) -> None:
        (tmp_path / "notes.txt").write_text("hello, this is not an image\n" * 10)
        assert sniff_format(tmp_path / "notes.txt") is None

    def test_empty_dcm_is_a_broken_dicom_not_a_skip(self, tmp_path: Path) -> None:
        (tmp_path / "empty.dcm").write_bytes(b"")
        assert sniff_format(tmp_path / "empty.dcm") == "dicom"
        with pytest.raises(FailedImage, match=r"^empty file \(0 bytes\)$"):
            probe(tmp_path / "empty.dcm")


class TestPolicy:
    @pytest.mark.parametrize("modality", ["CR", "DX"])
    def test_chest_radiographs_accepted(self, tmp_path: Path, modality: str) -> None:
        found = probe(write(make_ds(chest_like(), modality=modality), tmp_path / "a.dcm"))
        assert found.format == "dicom" and found.metadata["modality"] == modality

    @pytest.mark.parametrize("modality", ["CT", "MR", "US", "XA", "MG", "NM"])
    def test_other_modalities_rejected(self, tmp_path: Path, modality: str) -> None:
        path = write(make_ds(chest_like(), modality=modality), tmp_path / "a.dcm")
        with pytest.raises(RejectedImage, match=rf"^Modality {modality} is not screened "
                                                r"\(accepted: CR, DX\)$") as info:
            probe(path)
        assert info.value.status == "rejected"
        assert info.value.metadata["modality"] == modality  # still listed with its header

    def test_blank_body_part_accepted_other_rejected(self, tmp_path: Path) -> None:
        probe(write(make_ds(chest_like(), BodyPartExamined=""), tmp_path / "blank.dcm"))
        path = write(make_ds(chest_like(), BodyPartExamined="HIP"), tmp_path / "hip.dcm")
        with pytest.raises(RejectedImage, match=r"^Body Part Examined HIP is not screened"):
            probe(path)

    @pytest.mark.parametrize("view", ["LL", "LATERAL", "RL"])
    def test_lateral_view_rejected(self, tmp_path: Path, view: str) -> None:
        path = write(make_ds(chest_like(), ViewPosition=view), tmp_path / "a.dcm")
        with pytest.raises(RejectedImage, match=rf"^View Position {view} is not screened"):
            probe(path)

    def test_lateral_view_code_rejected(self, tmp_path: Path) -> None:
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator = "R-10236", "SRT"
        code.CodeMeaning = "left lateral"
        ds = make_ds(chest_like(), ViewPosition="", ViewCodeSequence=[code])
        with pytest.raises(RejectedImage,
                           match=r"View Code Sequence \(0054,0220\) names a lateral view"):
            probe(write(ds, tmp_path / "a.dcm"))

    def test_dx_for_processing_rejected_for_presentation_accepted(self, tmp_path: Path) -> None:
        ok = make_ds(chest_like(), modality="DX", PresentationIntentType="FOR PRESENTATION")
        probe(write(ok, tmp_path / "pres.dcm"))
        raw = make_ds(chest_like(), modality="DX", PresentationIntentType="FOR PROCESSING")
        with pytest.raises(RejectedImage, match=r"^Presentation Intent Type FOR PROCESSING"):
            probe(write(raw, tmp_path / "proc.dcm"))

    def test_structured_report_rejected_as_non_image(self, tmp_path: Path) -> None:
        ds = make_ds(chest_like(), modality="SR", sop_class="1.2.840.10008.5.1.4.1.1.88.11")
        for kw in ("Rows", "Columns", "PixelData", "BitsAllocated"):
            delattr(ds, kw)
        with pytest.raises(RejectedImage, match=r"Basic Text SR Storage\) is not an image"):
            probe(write(ds, tmp_path / "sr.dcm"))

    def test_multi_frame_rejected(self, tmp_path: Path, settings: Ingest) -> None:
        frames = np.stack([chest_like(seed=i) for i in range(3)])
        ds = make_ds(frames[0], NumberOfFrames=3)
        ds.PixelData = frames.tobytes()
        path = write(ds, tmp_path / "mf.dcm")
        with pytest.raises(RejectedImage,
                           match=r"^Number of Frames 3: multi-frame objects are not screened$"):
            load_grey(path, settings)

    def test_policy_is_configurable(self, tmp_path: Path) -> None:
        path = write(make_ds(chest_like(), modality="CT"), tmp_path / "ct.dcm")
        assert probe(path, cfg(accept_modalities=["CT"])).metadata["modality"] == "CT"


class TestPixelSteps:
    def test_signed_16bit_with_rescale(self, tmp_path: Path, settings: Ingest) -> None:
        base = chest_like(maximum=2000).astype(np.int16) - 1000  # -1000..1000, negative stored
        ds = make_ds(base, signed=True, RescaleSlope=2, RescaleIntercept=-24,
                     WindowCenter=-24, WindowWidth=4000, VOILUTFunction="LINEAR_EXACT")
        grey = _grey(write(ds, tmp_path / "s.dcm"), settings)
        expected = np.clip(((base * 2.0 - 24) - (-24)) / 4000 + 0.5, 0, 1)
        np.testing.assert_allclose(grey, expected, atol=1e-6)

    def test_signed_12bit_in_16_is_sign_extended(self, tmp_path: Path, settings: Ingest) -> None:
        values = (chest_like(maximum=2000).astype(np.int16) - 1000)  # -1000..1000
        stored = (values.astype(np.uint16) & 0x0FFF) | 0x5000  # 12-bit two's complement + junk
        ds = make_ds(stored, bits_stored=12, signed=True, WindowCenter=0, WindowWidth=2000,
                     VOILUTFunction="LINEAR_EXACT")
        grey = _grey(write(ds, tmp_path / "s12.dcm"), settings)
        np.testing.assert_allclose(grey, np.clip(values / 2000 + 0.5, 0, 1), atol=1e-6)

    def test_bits_stored_masks_unused_high_bits(self, tmp_path: Path, settings: Ingest) -> None:
        base = chest_like(maximum=4095)
        noisy = base | 0xF000  # garbage in the 4 unused bits must not count
        clean = _grey(write(make_ds(base, bits_stored=12), tmp_path / "a.dcm"), settings)
        dirty = _grey(write(make_ds(noisy, bits_stored=12), tmp_path / "b.dcm"), settings)
        np.testing.assert_allclose(clean, dirty)

    def test_explicit_window_equals_equivalent_voi_lut(
        self, tmp_path: Path, settings: Ingest
    ) -> None:
        base = chest_like(maximum=4095)
        windowed = make_ds(base, WindowCenter=2048, WindowWidth=4096,
                           VOILUTFunction="LINEAR_EXACT")
        lut = Dataset()
        lut.LUTDescriptor = [4096, 0, 16]
        lut.LUTData = list(np.round(np.arange(4096) / 4096 * 65535).astype(int))
        lut["LUTData"].VR = "US"
        with_lut = make_ds(base, VOILUTSequence=[lut], WindowCenter=10, WindowWidth=20)
        a = _grey(write(windowed, tmp_path / "w.dcm"), settings)
        b = _grey(write(with_lut, tmp_path / "l.dcm"), settings)
        np.testing.assert_allclose(a, b, atol=1 / 4096 + 1e-6)

    def test_window_differs_from_robust_window(self, tmp_path: Path, settings: Ingest) -> None:
        base = chest_like(maximum=4095)
        narrow = _grey(write(make_ds(base, WindowCenter=1000, WindowWidth=200), tmp_path / "n.dcm"),
                       settings)
        auto = _grey(write(make_ds(base), tmp_path / "a.dcm"), settings)
        assert np.abs(narrow - auto).mean() > 0.1
        steps = load_grey(tmp_path / "a.dcm", settings).steps
        assert any(s.startswith("robust window: percentiles 0.5-99.5") for s in steps)

    @pytest.mark.parametrize("windowed", [False, True])
    def test_monochrome1_and_monochrome2_give_the_same_image(
        self, tmp_path: Path, settings: Ingest, windowed: bool
    ) -> None:
        base = chest_like(maximum=4095)
        tags2 = dict(WindowCenter=2000, WindowWidth=3000, VOILUTFunction="LINEAR_EXACT")
        tags1 = dict(WindowCenter=4095 - 2000, WindowWidth=3000, VOILUTFunction="LINEAR_EXACT")
        mono2 = make_ds(base, bits_stored=12, **(tags2 if windowed else {}))
        mono1 = make_ds(4095 - base, bits_stored=12, photometric="MONOCHROME1",
                        **(tags1 if windowed else {}))
        a = _grey(write(mono2, tmp_path / "m2.dcm"), settings)
        b = _grey(write(mono1, tmp_path / "m1.dcm"), settings)
        np.testing.assert_allclose(a, b, atol=1e-6)
        assert "MONOCHROME1 inverted" in load_grey(tmp_path / "m1.dcm", settings).steps

    def test_padding_is_black_and_out_of_the_window(
        self, tmp_path: Path, settings: Ingest
    ) -> None:
        base = chest_like(maximum=4000) + 50
        padded = base.copy()
        padded[:, :10] = 4095  # collimator border, declared as padding
        grey = _grey(write(make_ds(padded, PixelPaddingValue=4095), tmp_path / "p.dcm"), settings)
        # The robust window is that of the anatomy alone, as if the border were not there.
        inner = _grey(write(make_ds(base[:, 10:].copy()), tmp_path / "b.dcm"), settings)
        assert (grey[:, :10] == 0).all()
        np.testing.assert_allclose(grey[:, 10:], inner, atol=1e-6)

    def test_rgb_becomes_luminance(self, tmp_path: Path, settings: Ingest) -> None:
        grey8 = (chest_like(maximum=255)).astype(np.uint8)
        rgb = np.stack([grey8] * 3, axis=-1)
        grey = _grey(write(secondary_capture(rgb, photometric="RGB", modality="CR"),
                           tmp_path / "rgb.dcm"), settings)
        np.testing.assert_allclose(grey, grey8 / 255.0, atol=1e-6)

    def test_uniform_image_fails(self, tmp_path: Path, settings: Ingest) -> None:
        path = write(make_ds(np.full((8, 8), 7, np.uint16)), tmp_path / "u.dcm")
        with pytest.raises(FailedImage,
                           match=r"^pixel data decodes to a constant image \(every pixel is 7\)"):
            load_grey(path, settings)


class TestTransferSyntaxes:
    """Every encoding decodes to the same grey image as the native original."""

    @pytest.fixture
    def reference(self, tmp_path: Path, settings: Ingest) -> tuple[np.ndarray, np.ndarray]:
        base = chest_like(maximum=4095)
        return base, _grey(write(make_ds(base, bits_stored=12), tmp_path / "ref.dcm"), settings)

    @pytest.mark.parametrize("ts", [ImplicitVRLittleEndian, ExplicitVRBigEndian,
                                    DeflatedExplicitVRLittleEndian, RLELossless, JPEG2000Lossless])
    def test_lossless(self, tmp_path: Path, settings: Ingest, reference, ts) -> None:
        base, expected = reference
        ds = make_ds(base, bits_stored=12)
        if ts.is_compressed:
            ds.compress(ts, base)
        else:
            ds.file_meta.TransferSyntaxUID = ts
            if ts == ExplicitVRBigEndian:
                ds.PixelData = base.astype(">u2").tobytes()
        path = write(ds, tmp_path / "enc.dcm")
        got = load_grey(path, settings, reduced=False)
        np.testing.assert_allclose(got.grey, expected, atol=1e-6)
        assert got.metadata["transfer_syntax"] == str(ts)

    def test_jpeg2000_lossy(self, tmp_path: Path, settings: Ingest, reference) -> None:
        base, expected = reference
        ds = make_ds(base, bits_stored=12)
        ds.compress(JPEG2000, base, j2k_cr=[5])
        got = _grey(write(ds, tmp_path / "j2k.dcm"), settings, reduced=False)
        assert np.abs(got - expected).mean() < 0.02

    def test_jpeg_baseline(self, tmp_path: Path, settings: Ingest) -> None:
        base = chest_like(maximum=255).astype(np.uint8)
        ds = jpeg_baseline_ds(base, WindowCenter=127.5, WindowWidth=256)
        got = _grey(write(ds, tmp_path / "jpg.dcm"), settings, reduced=False)
        assert np.abs(got - base / 255.0).mean() < 0.02

    def test_missing_preamble_is_read(self, tmp_path: Path, settings: Ingest, reference) -> None:
        base, expected = reference
        path = write(make_ds(base, bits_stored=12), tmp_path / "nopre.dcm", preamble=False)
        np.testing.assert_allclose(_grey(path, settings), expected, atol=1e-6)

    def test_missing_meta_infers_the_transfer_syntax(
        self, tmp_path: Path, settings: Ingest, reference
    ) -> None:
        base, expected = reference
        path = write(make_ds(base, bits_stored=12), tmp_path / "raw", preamble=False, meta=False)
        got = load_grey(path, settings)
        np.testing.assert_allclose(got.grey, expected, atol=1e-6)
        assert "transfer syntax inferred: Implicit VR Little Endian" in got.steps
        assert got.metadata["transfer_syntax"] == str(ImplicitVRLittleEndian)


class TestReducedResolution:
    def test_j2k_reduced_matches_downsampled_full(self, tmp_path: Path) -> None:
        base = chest_like(512, 384, maximum=4095)
        ds = make_ds(base, bits_stored=12)
        ds.compress(JPEG2000Lossless, base)
        path = write(ds, tmp_path / "big.dcm")
        s = cfg(reduced_min_side=96)
        full = load_grey(path, s, reduced=False)
        red = load_grey(path, s, reduced=True)
        assert red.grey.shape == (128, 96)  # 1/4: 384 >> 2 = 96 ≥ reduced_min_side
        assert any("JPEG 2000 resolution level 1/4" in step for step in red.steps)
        np.testing.assert_allclose(preprocess(full.grey, 64), preprocess(red.grey, 64), atol=0.03)

    def test_jpeg_dct_scaling(self, tmp_path: Path) -> None:
        base = chest_like(256, 256, maximum=255).astype(np.uint8)
        path = write(jpeg_baseline_ds(base), tmp_path / "j.dcm")
        red = load_grey(path, cfg(reduced_min_side=64), reduced=True)
        assert red.grey.shape == (64, 64)
        full = load_grey(path, cfg(reduced_min_side=64), reduced=False)
        np.testing.assert_allclose(preprocess(full.grey, 32), preprocess(red.grey, 32), atol=0.03)

    def test_not_below_the_floor(self, tmp_path: Path) -> None:
        base = chest_like(128, 128, maximum=4095)
        ds = make_ds(base, bits_stored=12)
        ds.compress(JPEG2000Lossless, base)
        got = load_grey(write(ds, tmp_path / "s.dcm"), cfg(reduced_min_side=128))
        assert got.grey.shape == (128, 128)


class TestBrokenInput:
    def test_truncated_pixel_data(self, tmp_path: Path, settings: Ingest) -> None:
        ds = make_ds(chest_like(32, 32))
        ds.PixelData = ds.PixelData[:1000]
        with pytest.raises(FailedImage,
                           match=r"^pixel data truncated: 2048 bytes expected, 1000 found$"):
            load_grey(write(ds, tmp_path / "t.dcm"), settings)

    def test_truncated_file(self, tmp_path: Path, settings: Ingest) -> None:
        path = write(make_ds(chest_like(64, 64)), tmp_path / "t.dcm")
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - 3000])
        with pytest.raises(FailedImage, match=r"^pixel data truncated"):
            load_grey(path, settings)

    def test_file_cut_inside_the_header(self, tmp_path: Path, settings: Ingest) -> None:
        path = write(make_ds(chest_like(64, 64)), tmp_path / "t.dcm")
        path.write_bytes(path.read_bytes()[:300])
        with pytest.raises(FailedImage):
            load_grey(path, settings)

    def test_missing_pixel_data(self, tmp_path: Path, settings: Ingest) -> None:
        ds = make_ds(chest_like())
        del ds.PixelData
        with pytest.raises(FailedImage, match=r"^no Pixel Data \(7FE0,0010\)"):
            load_grey(write(ds, tmp_path / "n.dcm"), settings)

    def test_missing_pixel_attributes(self, tmp_path: Path, settings: Ingest) -> None:
        ds = make_ds(chest_like())
        ds["PixelData"].VR = "OW"  # pydicom cannot infer it without Bits Allocated
        del ds.BitsAllocated, ds.PhotometricInterpretation
        with pytest.raises(FailedImage, match=r"^missing Image Pixel attributes: BitsAllocated "
                                              r"\(0028,0100\), PhotometricInterpretation"):
            probe(write(ds, tmp_path / "m.dcm"), settings)

    def test_absurd_dimensions(self, tmp_path: Path) -> None:
        ds = make_ds(chest_like(8, 8))
        ds.Rows = ds.Columns = 65535
        with pytest.raises(FailedImage, match=r"^Rows x Columns 65535 x 65535 = 4294836225 pixels "
                                              r"exceeds the limit of 1000000 \(max_pixels\)$"):
            probe(write(ds, tmp_path / "big.dcm"), cfg(max_pixels=1_000_000))

    def test_codestream_bigger_than_the_header_says(self, tmp_path: Path) -> None:
        base = chest_like(256, 256, maximum=4095)
        ds = make_ds(base, bits_stored=12)
        ds.compress(JPEG2000Lossless, base)
        ds.Rows = ds.Columns = 16  # the header lies; the codestream would be a "bomb"
        with pytest.raises(FailedImage, match=r"^codestream declares 256 x 256 pixels, beyond"):
            load_grey(write(ds, tmp_path / "b.dcm"), cfg(max_pixels=1000))

    @pytest.mark.parametrize("damage", ["truncated", "bad_marker"])
    @pytest.mark.parametrize("reduced", [False, True])
    def test_corrupt_codestream(
        self, tmp_path: Path, settings: Ingest, damage: str, reduced: bool
    ) -> None:
        base = chest_like(128, 128, maximum=4095)
        ds = make_ds(base, bits_stored=12)
        ds.compress(JPEG2000Lossless, base)
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
        sot = frame.find(b"\xff\x90")
        if damage == "truncated":
            frame = frame[: len(frame) // 2]
        else:  # the first tile-part marker is no longer SOT
            frame = frame[:sot] + b"\xff\x91" + frame[sot + 2 :]
        ds.PixelData = encapsulate([frame])
        path = write(ds, tmp_path / "c.dcm")
        why = {"truncated": r"^pixel data truncated: the JPEG 2000 codestream ends before its "
                            r"end marker$",
               "bad_marker": r"^cannot decode JPEG 2000 Image Compression"}[damage]
        with pytest.raises(FailedImage, match=why):
            load_grey(path, cfg(reduced_min_side=64), reduced=reduced)

    def test_deflate_bomb(self, tmp_path: Path) -> None:
        ds = make_ds(np.zeros((1000, 1000), np.uint16) + np.eye(1000, dtype=np.uint16))
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        path = write(ds, tmp_path / "bomb.dcm")
        assert path.stat().st_size < 100_000  # 2 MB of pixels deflate to a few kB
        with pytest.raises(FailedImage, match=r"^deflated data set inflates beyond"):
            probe(path, cfg(max_pixels=10_000))

    def test_not_dicom_content_with_dcm_name(self, tmp_path: Path, settings: Ingest) -> None:
        (tmp_path / "x.dcm").write_bytes(b"\x20garbage that is not a data set" * 20)
        with pytest.raises(FailedImage):
            load_grey(tmp_path / "x.dcm", settings)


class TestMetadata:
    def test_columns_and_keyed_patient_hash(self, tmp_path: Path, settings: Ingest) -> None:
        ds = make_ds(chest_like(), modality="DX", ViewPosition="AP")
        path = write(ds, tmp_path / "m.dcm")
        found = probe(path, settings)
        md = found.metadata
        assert found.sop_instance_uid == ds.SOPInstanceUID
        assert md["study_instance_uid"] == ds.StudyInstanceUID
        assert md["series_instance_uid"] == ds.SeriesInstanceUID
        key = settings.patient_key
        assert (md["accession_number"], md["study_date"], md["modality"]) == (
            hmac.new(key, b"accession:ACC123", hashlib.sha256).hexdigest(), "20240131", "DX")
        assert (md["body_part"], md["view_position"], md["patient_age"], md["patient_sex"]) == (
            "CHEST", "AP", "042Y", "F")
        assert md["manufacturer"] == "Acme" and md["photometric_interpretation"] == "MONOCHROME2"
        assert md["transfer_syntax"] == "1.2.840.10008.1.2.1"
        expected = hmac.new(key, f"id:{PATIENT_ID}".encode(), hashlib.sha256).hexdigest()
        assert md["patient_key"] == expected and len(expected) == 64
        assert md["patient_key"] != hashlib.sha256(PATIENT_ID.encode()).hexdigest()

    def test_default_key_is_generated_once_and_kept(self, tmp_path: Path, settings: Ingest,
                                                    isolated_settings: Path) -> None:
        path = write(make_ds(chest_like()), tmp_path / "m.dcm")
        first = probe(path, settings).metadata["patient_key"]
        assert (isolated_settings / "patient.key").is_file()
        assert probe(path, cfg()).metadata["patient_key"] == first
        other = cfg(patient_key="7d1e0c9b4a6f2e8d5c3b1a0f9e8d7c6b5a4f3e2d")
        assert probe(path, other).metadata["patient_key"] != first

    def test_name_is_used_when_there_is_no_id(self, tmp_path: Path, settings: Ingest) -> None:
        ds = make_ds(chest_like())
        del ds.PatientID
        md = probe(write(ds, tmp_path / "n.dcm"), settings).metadata
        key = settings.patient_key
        assert md["patient_key"] == hmac.new(key, f"name:{PATIENT_NAME}".encode(),
                                             hashlib.sha256).hexdigest()

    def test_patient_identity_never_in_the_clear(self, tmp_path: Path, settings: Ingest) -> None:
        ds = make_ds(chest_like(), modality="CT", PatientComments=PATIENT_ID)
        ok = write(make_ds(chest_like()), tmp_path / "ok.dcm")
        rejected = write(ds, tmp_path / "ct.dcm")
        outputs: list[str] = [repr(load_grey(ok, settings).metadata),
                              repr(load_grey(ok, settings).steps)]
        with pytest.raises(IngestError) as info:
            load_grey(rejected, settings)
        outputs += [str(info.value), repr(info.value.metadata)]
        for text in outputs:
            assert PATIENT_ID not in text and "Doe" not in text

    def test_redact_removes_identity_from_messages(self) -> None:
        from pneumoscreen.worker.ingest.metadata import redact

        ds = make_ds(chest_like())
        msg = f"Invalid value for VR PN: '{PATIENT_NAME}' (id {PATIENT_ID})"
        out = redact(msg, ds)
        assert "Doe" not in out and "Jane" not in out and PATIENT_ID not in out
        assert out.startswith("Invalid value for VR PN")

    def test_bundled_pydicom_files_never_crash(self, tmp_path: Path) -> None:
        """pydicom's own test files: every one ends as done, rejected or failed."""
        folder = Path(pydicom.data.__file__).parent / "test_files"
        files = [p for p in folder.rglob("*") if p.is_file()]
        assert len(files) > 50
        permissive = cfg(accept_modalities=["CR", "DX", "CT", "MR", "OT", "US", "NM"],
                              accept_body_parts=["", "CHEST", "WHOLE BODY"])
        done = 0
        for path in files:
            for s in (cfg(), permissive):
                try:
                    load_grey(path, s)
                    done += s is permissive
                except IngestError as exc:
                    assert exc.status in ("rejected", "failed") and str(exc)
                    # decoded, then found too small or empty (pydicom's test files are tiny)
                    done += s is permissive and str(exc).startswith(("image is", "no content"))
        assert done > 40  # the decoders really ran: big/little endian, RLE, J2K, JPEG(-LS)…


def test_deflate_helper_reads_real_deflated_files(tmp_path: Path, settings: Ingest) -> None:
    """The bomb guard must not refuse an honest deflated file (the zlib path is exercised)."""
    base = chest_like(maximum=4095)
    ds = make_ds(base, bits_stored=12)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    path = write(ds, tmp_path / "d.dcm")
    assert zlib.decompressobj(-zlib.MAX_WBITS)  # zlib present
    assert load_grey(path, settings).grey.shape == base.shape
