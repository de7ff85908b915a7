"""The header reader refuses encapsulated Pixel Data larger than any codec could need for the
header's image before reading it (issue 19: a 175 MB RLE file of repeated fragments took 560 MB
to decode a 1024 x 1024 image)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_frames, itemize_frame
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from pneumoscreen.worker.ingest.api import IngestConfig, load_grey
from pneumoscreen.worker.ingest.dicom_header import plausible_pixel_bytes
from pneumoscreen.worker.ingest.errors import FailedImage


def _rle(size: int, seed: int = 0) -> Dataset:
    """A 12-bit CR film of noise, RLE-compressed: RLE's worst case (noise does not repeat)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "CR", "CHEST", "PA"
    ds.Rows = ds.Columns = size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    noise = np.random.default_rng(seed).integers(0, 4096, (size, size), dtype=np.uint16)
    ds.PixelData = noise.tobytes()
    ds.compress(RLELossless)
    return ds


def test_rle_worst_case_is_within_the_bound() -> None:
    ds = _rle(128)
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    assert len(frame) > 128 * 128 * 2  # noise grows under RLE ...
    assert len(ds.PixelData) <= plausible_pixel_bytes(ds)  # ... and stays inside the bound


def test_repeated_fragments_are_refused_before_they_are_read(tmp_path: Path) -> None:
    ds = _rle(256)
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    # One frame in 200 copies of its own fragment: 26 MB for a 256 x 256 film.
    ds.PixelData = b"\xfe\xff\x00\xe0\x00\x00\x00\x00" + b"".join(itemize_frame(frame, 1)) * 200
    ds["PixelData"].is_undefined_length = True
    path = tmp_path / "repeated.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert path.stat().st_size > 16 << 20  # above the header bound, where the check applies
    with pytest.raises(FailedImage, match=r"implausible pixel data: \d+ bytes of RLE Lossless "
                                          r"data for 256 x 256 pixels \(at most \d+\); not read"):
        load_grey(path, IngestConfig())
    # Measured in a process of its own: refusing it costs no memory at all.
    probe = ("import resource, sys; from pathlib import Path;"
             "from pneumoscreen.worker.ingest.api import load_grey, IngestConfig;"
             "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
             "try:\n    load_grey(Path(sys.argv[1]), IngestConfig())\nexcept Exception:\n    pass\n"
             "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)")
    grown_kb = int(subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True,
                                  text=True, timeout=120, check=True).stdout)
    assert grown_kb < 8 * 1024, grown_kb  # under 8 MB for a 26 MB file


def test_a_plausible_rle_file_still_decodes(tmp_path: Path) -> None:
    path = tmp_path / "fine.dcm"
    _rle(256, seed=1).save_as(path, enforce_file_format=True)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == RLELossless
    assert load_grey(path, IngestConfig()).grey.shape == (256, 256)
