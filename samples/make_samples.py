"""Make the synthetic sample studies in this folder (run: ``python samples/make_samples.py``).

The pixel data is a drawn phantom (body, two lungs, spine, ribs), not a patient: these files are for
trying the pipeline (DICOM encodings, rejection, failure), never for judging the model.
"""

from __future__ import annotations

import datetime as dt
import io
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    generate_uid,
)

HERE = Path(__file__).resolve().parent
CR_STORAGE = ComputedRadiographyImageStorage
SIZE = 512
# Fixed UIDs under pydicom's root, derived from the file name, so the files are reproducible.
UID_ROOT = "1.2.826.0.1.3680043.8.498."


def phantom(size: int = SIZE, seed: int = 0, opacity: float = 0.0) -> np.ndarray:
    """A chest-like picture in [0, 1] (1 = dense/white); ``opacity`` adds a hazy patch."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    img = np.full((size, size), 0.05)
    body = ((x - 0.5) / 0.42) ** 2 + ((y - 0.55) / 0.5) ** 2 < 1
    img[body] = 0.75
    for cx in (0.32, 0.68):
        lung = ((x - cx) / 0.14) ** 2 + ((y - 0.5) / 0.3) ** 2 < 1
        img[lung] = 0.2
    img[(np.abs(x - 0.5) < 0.04) & body] = 0.95  # spine
    for k in range(6):  # ribs
        ribs = (np.abs(y - 0.3 - 0.07 * k - 0.08 * (x - 0.5) ** 2) < 0.008) & body
        img[ribs] = np.maximum(img[ribs], 0.6)
    if opacity:
        patch = np.exp(-(((x - 0.66) / 0.08) ** 2 + ((y - 0.6) / 0.1) ** 2))
        img += opacity * patch
    img += rng.normal(0, 0.02, img.shape)
    return np.clip(img, 0, 1)


def base_dataset(name: str, sop_class: str, modality: str, **tags: object) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid(UID_ROOT, entropy_srcs=[name, "sop"])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.StudyInstanceUID = generate_uid(UID_ROOT, entropy_srcs=[name, "study"])
    ds.SeriesInstanceUID = generate_uid(UID_ROOT, entropy_srcs=[name, "series"])
    ds.Modality = modality
    ds.PatientName = "SYNTHETIC^PHANTOM"
    ds.PatientID = f"SYN-{name}"
    ds.PatientSex = "O"
    ds.PatientAge = "004Y"
    ds.StudyDate = dt.date(2026, 1, 1).strftime("%Y%m%d")
    ds.AccessionNumber = f"SYN{zlib.crc32(name.encode()) % 10**6:06d}"
    ds.Manufacturer = "pneumoscreen samples"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "AP"
    ds.SamplesPerPixel = 1
    ds.Rows = ds.Columns = SIZE
    for key, value in tags.items():
        setattr(ds, key, value)
    return ds


def set_pixels(ds: Dataset, arr: np.ndarray, bits_stored: int, photometric: str) -> None:
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16 if bits_stored > 8 else 8
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = arr.tobytes()


def write(ds: Dataset, name: str) -> Path:
    path = HERE / name
    ds.save_as(path, enforce_file_format=True)
    return path


def make_all() -> list[Path]:
    made = []
    # 16-bit MONOCHROME2 CR with a window, rescale and a hazy right lower zone.
    img = phantom(seed=1, opacity=0.45)
    ds = base_dataset("cr16", CR_STORAGE, "CR", WindowCenter=2048, WindowWidth=4096,
                      RescaleSlope=1, RescaleIntercept=0)
    set_pixels(ds, (img * 4095).astype(np.uint16), 12, "MONOCHROME2")
    made.append(write(ds, "cr_chest_mono2_12bit_windowed.dcm"))

    # MONOCHROME1 DX: white = low values, so the ingester must invert it.
    img = phantom(seed=2)
    ds = base_dataset("dx_mono1", DigitalXRayImageStorageForPresentation, "DX",
                      PresentationIntentType="FOR PRESENTATION")
    set_pixels(ds, ((1 - img) * 16383).astype(np.uint16), 14, "MONOCHROME1")
    made.append(write(ds, "dx_chest_mono1_14bit.dcm"))

    # JPEG baseline (8-bit, encapsulated by hand: pydicom has no baseline encoder).
    img = phantom(seed=3, opacity=0.3)
    buf = io.BytesIO()
    Image.fromarray((img * 255).astype(np.uint8)).save(buf, format="JPEG", quality=92)
    ds = base_dataset("cr_jpeg", CR_STORAGE, "CR")
    set_pixels(ds, np.zeros(0, np.uint8), 8, "MONOCHROME2")
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    made.append(write(ds, "cr_chest_jpeg_baseline.dcm"))

    # A CT slice: valid DICOM that must be rejected, not screened.
    ds = base_dataset("ct", CTImageStorage, "CT", RescaleSlope=1, RescaleIntercept=-1024,
                      BodyPartExamined="CHEST")
    set_pixels(ds, (phantom(seed=4) * 2000).astype(np.uint16), 12, "MONOCHROME2")
    made.append(write(ds, "ct_chest_rejected.dcm"))

    # A truncated DICOM (a valid header, a third of its pixels): must end as a failed study, alone.
    ds = base_dataset("broken", CR_STORAGE, "CR")
    set_pixels(ds, (phantom(seed=7) * 4095).astype(np.uint16), 12, "MONOCHROME2")
    broken = write(ds, "broken_truncated.dcm")
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 3])
    made.append(broken)

    # Plain PNG and JPEG exports.
    png = HERE / "chest_export.png"
    Image.fromarray((phantom(seed=5) * 255).astype(np.uint8)).save(png)
    made.append(png)
    jpg = HERE / "chest_export_opacity.jpg"
    Image.fromarray((phantom(seed=6, opacity=0.5) * 255).astype(np.uint8)).save(jpg, quality=90)
    made.append(jpg)
    return made


if __name__ == "__main__":
    for path in make_all():
        print(f"{path.name:40s} {path.stat().st_size:>9,d} bytes")
