"""``screen bench register``: files/s of registration at scale (walk + hash + header probe +
inserts, committed every ``FILES_PER_COMMIT`` files) on a temporary corpus of distinct
real-sized DICOMs, and the memory it took.

The corpus is one DICOM written once with placeholder UIDs of fixed length; each copy gets its own
UIDs by a byte substitution, so making 10,000 files of 1 MB costs little more than writing them.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pneumoscreen.model.progress import Silent
from pneumoscreen.worker.bench.throughput import RssSampler, peak_rss_mb, rss_mb
from pneumoscreen.worker.settings import Settings

# A syntactically valid UID root (a private one) padded to a fixed width: 64 characters at most.
_ROOT = "1.2.826.0.1.3680043.8.498."
_WIDTH = 60
_FILES_PER_FOLDER = 1000


def _uid(kind: int, index: int) -> bytes:
    tail = f"{kind}{index:0{_WIDTH - len(_ROOT) - 1}d}"
    return (_ROOT + tail).encode()


def template(source: Path | None, size_mb: float) -> bytes:
    """One DICOM with placeholder UIDs: ``source`` re-labelled, or a synthetic CR chest film of
    about ``size_mb`` MB (16-bit, uncompressed)."""
    import io

    import numpy as np
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ComputedRadiographyImageStorage, ExplicitVRLittleEndian

    if source is not None:
        ds = pydicom.dcmread(source)
    else:
        side = max(64, int((size_mb * 1e6 / 2) ** 0.5))
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ComputedRadiographyImageStorage
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "CR", "CHEST", "PA"
        ds.PatientID, ds.PatientName = "BENCH", "Bench^Register"
        ds.Rows = ds.Columns = side
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        rng = np.random.default_rng(0)
        ds.PixelData = rng.integers(0, 4096, (side, side), dtype=np.uint16).tobytes()
    ds.SOPInstanceUID = _uid(1, 0).decode()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = _uid(2, 0).decode(), _uid(3, 0).decode()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def make_corpus(folder: Path, n: int, data: bytes) -> int:
    """``n`` distinct files (their own SOP, study and series UIDs) in sub-folders of 1000;
    returns the bytes written."""
    written = 0
    for i in range(n):
        sub = folder / f"{i // _FILES_PER_FOLDER:04d}"
        if i % _FILES_PER_FOLDER == 0:
            sub.mkdir(parents=True, exist_ok=True)
        body = data
        for kind in (1, 2, 3):
            body = body.replace(_uid(kind, 0), _uid(kind, i + 1))
        (sub / f"{i:06d}.dcm").write_bytes(body)
        written += len(body)
    return written


class _Clock(Silent):
    """Progress that notes when the first file was examined and how many went by."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.scanned = 0
        self.rss_at_half: float | None = None
        self.half: int | None = None

    def advance(self, stage: str, n: int = 1) -> None:
        if stage == "scan":
            self.scanned += n
            if self.first is None:
                self.first = time.perf_counter()
            if self.half is not None and self.scanned == self.half:
                self.rss_at_half = rss_mb()


@dataclass
class RegisterBench:
    files: int
    mean_file_mb: float
    seconds: float
    files_per_s: float
    mb_per_s: float
    first_file_after_s: float
    peak_rss_mb: float
    rss_mb: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_register(n: int, *, settings: Settings, size_mb: float = 1.0, source: Path | None = None,
                 database_url: str | None = None, say: Any = print) -> RegisterBench:
    """Make the corpus, then register it once, as ``screen submit`` does (without enqueueing)."""
    from pneumoscreen.worker.intake.submit import FILES_PER_COMMIT, register_folder

    with tempfile.TemporaryDirectory(prefix="pneumoscreen-bench-register-") as tmp:
        root = Path(tmp)
        corpus = root / "corpus"
        say(f"making {n} distinct DICOM files …")
        written = make_corpus(corpus, n, template(source, size_mb))
        url = database_url or f"sqlite:///{root / 'bench.sqlite3'}"
        bench_settings = settings.model_copy(update={"database_url": url, "broker_url": None})
        say(f"registering {n} files ({written / 1e6:.0f} MB) …")
        clock = _Clock()
        clock.half = max(1, n // 2)
        rss_before = rss_mb()
        with RssSampler() as sampler:
            started = time.perf_counter()
            result = register_folder(corpus, settings=bench_settings, progress=clock,
                                     kind="bench")
            seconds = time.perf_counter() - started
        rss_after = rss_mb()
    return RegisterBench(
        files=result.n_files, mean_file_mb=round(written / max(n, 1) / 1e6, 3),
        seconds=round(seconds, 2), files_per_s=round(result.n_files / seconds, 1),
        mb_per_s=round(written / 1e6 / seconds, 1),
        first_file_after_s=round((clock.first or started) - started, 3),
        peak_rss_mb=round(peak_rss_mb(), 1),
        rss_mb={"before": round(rss_before, 1),
                "at_half": round(clock.rss_at_half or rss_after, 1),
                "after": round(rss_after, 1), "peak_while_registering": round(sampler.peak, 1)},
        counts={"new": result.n_new, "duplicate": result.n_duplicate,
                "not_images": result.n_not_images, "to_screen": result.n_to_screen,
                "rejected": result.n_rejected, "failed": result.n_failed},
        config={"register_chunk": FILES_PER_COMMIT, "database": url.split(":", 1)[0],
                "source": "synthetic CR" if source is None else source.name,
                "note": "one run on a shared 2-core machine: a noisy figure"})
