"""``screen bench corpus OUT``: a mixed real-DICOM corpus for ``screen bench throughput --corpus``.

Each source file (default ``../shared/dicom/chest``) is re-encoded once per codec (JPEG 2000
lossless and lossy, JPEG-LS lossless and near-lossless, HTJ2K lossless, JPEG lossless SV1; JPEG
baseline sources keep their own encoding), then written ``per_codec`` times per codec with fresh
Study/Series/SOP Instance UIDs, so every file is a distinct study. Encoders: pydicom with
pylibjpeg-openjpeg and pyjpegls, imagecodecs for HTJ2K (OpenJPH) and lossless JPEG
(libjpeg-turbo); a codec whose encoder is missing is skipped and said so.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    JPEG2000,
    UID,
    HTJ2KLossless,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    generate_uid,
)

CODECS = ("jpeg-baseline", "j2k-lossless", "j2k-lossy", "jpegls-lossless", "jpegls-near",
          "htj2k-lossless", "jpeg-lossless")


@dataclass
class CorpusResult:
    out: Path
    files: dict[str, int]  # codec -> files written
    skipped: dict[str, str]  # codec -> why


def _encapsulated(ds: Dataset, arr: np.ndarray, ts: UID, frame: bytes) -> Dataset:
    out = copy.deepcopy(ds)
    out.file_meta.TransferSyntaxUID = ts
    out.PixelData = encapsulate([frame])
    out["PixelData"].VR = "OB"
    out["PixelData"].is_undefined_length = True
    return out


def _imagecodecs() -> object:
    import imagecodecs

    return imagecodecs


def encode(ds: Dataset, codec: str) -> Dataset | None:
    """``ds`` re-encoded with ``codec``, or None when the codec does not apply to this source."""
    ts = ds.file_meta.TransferSyntaxUID
    if codec == "jpeg-baseline":
        return copy.deepcopy(ds) if ts == JPEGBaseline8Bit else None
    arr = ds.pixel_array
    if arr.ndim != 2:
        return None
    out = copy.deepcopy(ds)
    bits = int(ds.BitsStored)
    if codec == "j2k-lossless":
        out.compress(JPEG2000Lossless, arr)
    elif codec == "j2k-lossy":
        out.compress(JPEG2000, arr, j2k_cr=[15])
        out.LossyImageCompression = "01"
    elif codec == "jpegls-lossless":
        out.compress(JPEGLSLossless, arr)
    elif codec == "jpegls-near":
        out.compress(JPEGLSNearLossless, arr, jls_error=2)
        out.LossyImageCompression = "01"
    elif codec == "htj2k-lossless":
        ic = _imagecodecs()
        frame = ic.htj2k_encode(arr, reversible=True)  # type: ignore[attr-defined]
        out = _encapsulated(ds, arr, HTJ2KLossless, frame)
    elif codec == "jpeg-lossless":
        ic = _imagecodecs()
        frame = ic.jpeg8_encode(arr, lossless=True, predictor=1,  # type: ignore[attr-defined]
                                bitspersample=bits)
        out = _encapsulated(ds, arr, JPEGLosslessSV1, frame)
    else:
        raise ValueError(f"unknown codec {codec!r}: choose from {', '.join(CODECS)}")
    return out


def make_corpus(sources: list[Path], out: Path, *, per_codec: int,
                codecs: tuple[str, ...] = CODECS,
                say: Callable[[str], None] = lambda _: None) -> CorpusResult:
    """Write ``per_codec`` distinct files per codec into ``out/<codec>/``."""
    originals = [pydicom.dcmread(p) for p in sources]
    files: dict[str, int] = {}
    skipped: dict[str, str] = {}
    for codec in codecs:
        try:
            templates = [t for t in (encode(ds, codec) for ds in originals) if t is not None]
        except (ImportError, RuntimeError) as exc:
            skipped[codec] = f"no encoder: {exc}"
            continue
        if not templates:
            skipped[codec] = "no source file in this encoding"
            continue
        folder = out / codec
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_codec):
            ds = templates[i % len(templates)]
            ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.save_as(folder / f"{codec}_{i:04d}.dcm", enforce_file_format=True)
        files[codec] = per_codec
        say(f"{codec}: {per_codec} files from {len(templates)} sources")
    return CorpusResult(out, files, skipped)
