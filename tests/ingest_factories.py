"""Generated DICOM, PNG and JPEG files for the ingestion tests (written into tmp_path)."""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    SecondaryCaptureImageStorage,
    generate_uid,
)

CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
PATIENT_ID = "PAT-4711-SECRET"
PATIENT_NAME = "Doe^Jane"


def chest_like(rows: int = 64, cols: int = 48, *, maximum: int = 4095, seed: int = 0) -> np.ndarray:
    """A smooth image with structure (gradient, blobs, noise) in 0..maximum, as uint16."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols]
    img = 0.4 * x / cols + 0.3 * np.sin(y / rows * 6) ** 2
    img += 0.3 * np.exp(-(((x - cols / 3) ** 2 + (y - rows / 2) ** 2) / (rows * cols / 20)))
    img += rng.normal(0, 0.02, img.shape)
    img = (img - img.min()) / (img.max() - img.min())
    return np.round(img * maximum).astype(np.uint16)


def make_ds(
    arr: np.ndarray,
    *,
    modality: str = "CR",
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    signed: bool = False,
    sop_class: str = CR_STORAGE,
    **tags: Any,
) -> Dataset:
    """A minimal but complete single-frame image data set holding ``arr`` (native encoding)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName = PATIENT_ID, PATIENT_NAME
    ds.AccessionNumber, ds.StudyDate = "ACC123", "20240131"
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = modality, "CHEST", "PA"
    ds.PatientAge, ds.PatientSex, ds.Manufacturer = "042Y", "F", "Acme"
    colour = arr.ndim == 3
    ds.Rows, ds.Columns = arr.shape[:2]
    ds.SamplesPerPixel = 3 if colour else 1
    if colour:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = arr.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelData = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
    for key, value in tags.items():
        setattr(ds, key, value)
    return ds


def write(ds: Dataset, path: Path, *, preamble: bool = True, meta: bool = True) -> Path:
    """Write Part-10 (default), or without preamble, or without preamble and file meta."""
    if preamble:
        ds.save_as(path, enforce_file_format=True)
        return path
    if not meta:
        del ds.file_meta
        ds.save_as(path, implicit_vr=True, little_endian=True, enforce_file_format=False)
        return path
    ds.preamble = None
    ds.save_as(path, enforce_file_format=False)
    return path


def jpeg_bytes(arr: np.ndarray, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def jpeg_baseline_ds(arr: np.ndarray, **kwargs: Any) -> Dataset:
    """8-bit grey JPEG baseline, encoded by Pillow and encapsulated (pydicom has no encoder)."""
    ds = make_ds(arr.astype(np.uint8), **kwargs)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([jpeg_bytes(arr.astype(np.uint8))])
    ds["PixelData"].is_undefined_length = True
    ds["PixelData"].VR = "OB"
    return ds


def secondary_capture(arr: np.ndarray, **kwargs: Any) -> Dataset:
    return make_ds(arr, sop_class=SecondaryCaptureImageStorage, **kwargs)


def patch_element(path: Path, tag: int, value: bytes, *, vr: bytes | None = None) -> Path:
    """Rewrite one explicit-VR little-endian element (2-byte length VRs) of a written file in
    place: a new value (padded to even length) and optionally a new VR, which pydicom would
    refuse to write (a PatientID of VR IS, an 80-character UID). Fixes the file meta's group
    length when the element is in group 0002."""
    data = bytearray(path.read_bytes())
    key = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    start = next(i for i in range(len(data))
                 if data[i:i + 4] == key and data[i + 4:i + 6].isalpha())
    old_len = struct.unpack("<H", data[start + 6:start + 8])[0]
    if len(value) % 2:
        value += b"\0" if data[start + 4:start + 6] == b"UI" else b" "
    data[start + 8:start + 8 + old_len] = value
    data[start + 6:start + 8] = struct.pack("<H", len(value))
    if vr is not None:
        data[start + 4:start + 6] = vr
    if tag >> 16 == 0x0002:
        glen = data.index(b"\x02\x00\x00\x00UL")
        old = struct.unpack("<I", data[glen + 8:glen + 12])[0]
        data[glen + 8:glen + 12] = struct.pack("<I", old + len(value) - old_len)
    path.write_bytes(bytes(data))
    return path
