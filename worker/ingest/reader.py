"""Minimal reader (to be replaced by the full DICOM-aware ingester)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pneumoscreen.worker.ingest.errors import FailedStudy, RejectedStudy
from pneumoscreen.worker.settings import Settings, get_settings


@dataclass
class Probe:
    format: str
    sop_instance_uid: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Decoded:
    grey: np.ndarray
    format: str
    metadata: dict[str, Any] = field(default_factory=dict)
    steps: list[str] = field(default_factory=list)


def sniff_format(path: Path) -> str | None:
    with open(path, "rb") as fh:
        head = fh.read(132)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[128:132] == b"DICM":
        return "dicom"
    return None


def probe(path: Path, settings: Settings | None = None) -> Probe:
    settings = settings or get_settings()
    fmt = sniff_format(path)
    if fmt is None:
        raise FailedStudy("not a DICOM, PNG or JPEG file")
    if fmt != "dicom":
        return Probe(fmt)
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:
        raise FailedStudy(f"unreadable DICOM header: {exc}") from exc
    modality = str(ds.get("Modality", "")).upper()
    if modality not in settings.accept_modalities:
        raise RejectedStudy(f"Modality {modality or '(blank)'} is not screened")
    return Probe("dicom", str(ds.get("SOPInstanceUID", "")) or None, {"modality": modality})


def load_grey(path: Path, settings: Settings | None = None) -> Decoded:
    p = probe(path, settings)
    if p.format != "dicom":
        from PIL import Image

        try:
            with Image.open(path) as im:
                arr = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
        except Exception as exc:
            raise FailedStudy(f"cannot decode {p.format}: {exc}") from exc
        return Decoded(arr, p.format, p.metadata, ["grey"])
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(path)
        arr = ds.pixel_array.astype(np.float64)
    except Exception as exc:
        raise FailedStudy(f"cannot decode pixel data: {exc}") from exc
    arr = apply_voi_lut(apply_modality_lut(arr, ds), ds)
    lo, hi = np.percentile(arr, [0.5, 99.5])
    arr = np.clip((arr - lo) / max(hi - lo, 1e-6), 0, 1)
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        arr = 1.0 - arr
    return Decoded(arr.astype(np.float32), "dicom", p.metadata, ["modality_lut", "voi", "window"])
