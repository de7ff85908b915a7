"""``screen bench throughput``: studies per second of the model alone, of the whole screening
task and of the naive per-image loop of the reference notebooks, with the resident memory over
the run.

Synthetic mode: a few distinct PNG phantoms written to a temporary folder and registered N times
under distinct hashes straight into the database (registration is not what is measured), so
``--studies 10000`` costs neither 10,000 files nor a long set-up.

Corpus mode (``--corpus DIR``): every file under DIR is one study, registered once; the screening
task runs codec by codec, which gives studies/s per transfer syntax, and a separate in-process
pass times decoding per file. The naive loop is then the notebooks' DICOM loop: ``dcmread`` →
``pixel_array`` → Modality/VOI LUT → resize → one ``predict`` per image.
"""

from __future__ import annotations

import hashlib
import resource
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image

from pneumoscreen.db import Batch, ImageStatus, session_scope
from pneumoscreen.db.images import images_of_batch, insert_images
from pneumoscreen.db.lists import split
from pneumoscreen.worker.bench.bound import bound_per_s, decode_only_per_s
from pneumoscreen.worker.screening.screen import get_model, screen_images
from pneumoscreen.worker.settings import Settings

DISTINCT_FILES = 64


def rss_mb() -> float:
    """This process's resident set size now (Linux /proc; else the peak so far)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak_rss_mb()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class RssSampler:
    """Samples RSS in a background thread: the peak between explicit marks is not missed."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(rss_mb())
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak(self) -> float:
        return max(self.samples, default=rss_mb())


@dataclass
class CodecFigures:
    """One transfer syntax of a corpus run."""

    files: int
    decode_ms_per_file: float | None  # load + pixel steps + resize, in-process, one thread
    studies_per_s: float  # the screening task on this codec's files alone
    screened: int


@dataclass
class ThroughputResult:
    studies: int
    model_only_per_s: float
    pipeline_per_s: float
    naive_per_s: float
    naive_studies: int
    peak_rss_mb: float
    pipeline_heatmaps_per_s: float | None = None  # (b) with a Grad-CAM map for every study
    rss_mb: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    per_codec: dict[str, CodecFigures] | None = None  # corpus mode only
    #: (d) the screening task's decoding alone (all decode processes, no model), studies/s
    decode_only_per_s: float | None = None

    @property
    def bound_per_s(self) -> float | None:
        """A perfect overlap of (a) and (d) on the shared cores: what (b) can reach at best."""
        if not self.decode_only_per_s:
            return None
        return round(bound_per_s(self.model_only_per_s, self.decode_only_per_s), 1)

    @property
    def ratios(self) -> dict[str, float]:
        out = {"pipeline_over_model_only": round(self.pipeline_per_s / self.model_only_per_s, 3),
               "pipeline_over_naive": round(self.pipeline_per_s / self.naive_per_s, 2)}
        if self.bound_per_s:
            out["pipeline_over_bound"] = round(self.pipeline_per_s / self.bound_per_s, 3)
        return out

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "bound_per_s": self.bound_per_s, **self.ratios}


def phantom(size: int, seed: int) -> np.ndarray:
    """A chest-like grey picture, 8-bit, different for every seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    img = np.full((size, size), 0.05)
    img[((x - 0.5) / 0.42) ** 2 + ((y - 0.55) / 0.5) ** 2 < 1] = 0.75
    for cx in (0.32, 0.68):
        img[((x - cx) / 0.14) ** 2 + ((y - 0.5) / 0.3) ** 2 < 1] = 0.2 + 0.2 * rng.random()
    img += rng.normal(0, 0.03, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def write_files(folder: Path, n: int, size: int) -> list[Path]:
    paths = []
    for i in range(n):
        path = folder / f"bench_{i:03d}.png"
        PIL.Image.fromarray(phantom(size, i)).save(path)
        paths.append(path)
    return paths


def register(paths: list[Path], n: int, *, url: str, tag: str, fmt: str = "png") -> list[int]:
    """``n`` queued studies cycling over ``paths``, each with its own (made-up) content hash."""
    with session_scope(url) as session:
        batch = Batch(kind="submit", source=f"bench:{tag}", n_files=n, n_new=n)
        session.add(batch)
        session.flush()
        rows = [{"sha256": hashlib.sha256(f"bench:{tag}:{i}".encode()).hexdigest(),
                 "source_path": str(paths[i % len(paths)]), "format": fmt,
                 "status": ImageStatus.queued, "batch_id": batch.id, "attempts": 0}
                for i in range(n)]
        insert_images(rows, session=session)
        first = batch.id
    with session_scope(url) as session:
        return images_of_batch(first, session=session)


@contextmanager
def _timer() -> Iterator[Callable[[], float]]:
    start = time.perf_counter()
    end: list[float] = []
    yield lambda: (end[0] if end else time.perf_counter()) - start
    end.append(time.perf_counter())


def naive_loop(paths: list[Path], keras_model: Any, size: int) -> None:
    """The reference notebooks: open, resize, scale, and ``model.predict`` on one image."""
    for path in paths:
        img = PIL.Image.open(path).convert("L").resize((size, size))
        x = np.asarray(img, dtype=np.float32)[None, ..., None] / 255.0
        keras_model.predict(x, verbose=0)


def naive_dicom_loop(paths: list[Path], keras_model: Any, size: int) -> None:
    """The reference notebooks on DICOM: read, decode all pixels, LUTs, min-max, resize, and
    ``model.predict`` on one image."""
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    for path in paths:
        ds = pydicom.dcmread(path)
        arr = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds).astype(np.float32)
        arr = (arr - arr.min()) / max(float(arr.max() - arr.min()), 1e-6)
        if ds.get("PhotometricInterpretation") == "MONOCHROME1":
            arr = 1.0 - arr
        img = PIL.Image.fromarray(arr).resize((size, size))
        keras_model.predict(np.asarray(img, dtype=np.float32)[None, ..., None], verbose=0)


def corpus_files(folder: Path) -> dict[str, list[Path]]:
    """Every file under ``folder`` (recursive), grouped by transfer syntax (or image format)."""
    import pydicom

    from pneumoscreen.worker.ingest import sniff_format

    groups: dict[str, list[Path]] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        fmt = sniff_format(path)
        if fmt is None:
            continue
        key = fmt.upper()
        if fmt == "dicom":
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
                uid = ds.file_meta.TransferSyntaxUID
                key = uid.name if uid.is_transfer_syntax else str(uid)
            except Exception:  # an unreadable file is still a study: the pipeline fails it
                key = "unreadable DICOM"
        groups.setdefault(key, []).append(path)
    return groups


def _decode_ms(paths: list[Path], settings: Settings, size: int) -> float | None:
    """Mean milliseconds of load + pixel steps + resize per file, in this process."""
    from pneumoscreen.model.preprocess import preprocess
    from pneumoscreen.worker.ingest import IngestError, load_grey

    config = settings.ingest_config(input_size=size)
    times = []
    for path in paths:
        start = time.perf_counter()
        try:
            preprocess(load_grey(path, config).grey, size)
        except IngestError:
            continue
        times.append(time.perf_counter() - start)
    return round(1000 * sum(times) / len(times), 1) if times else None


def run_throughput(n: int, *, settings: Settings, task_size: int = 256, naive_n: int = 100,
                   image_size: int = 512, database_url: str | None = None,
                   heatmap_n: int = 0, corpus: Path | None = None, decode_sample: int = 30,
                   say: Callable[[str], None] = lambda _: None) -> ThroughputResult:
    """Measure (a) model only, (b) the screening task end to end without heatmaps, (b') with a
    heatmap for each of ``heatmap_n`` studies, (c) the naive loop, and RSS.

    With ``corpus``, ``n`` is ignored: the studies are the files under ``corpus``."""
    rss: dict[str, float] = {"start": round(rss_mb(), 1)}
    with tempfile.TemporaryDirectory(prefix="screen-bench-") as tmp, RssSampler() as sampler:
        folder = Path(tmp)
        url = database_url or f"sqlite:///{folder / 'bench.sqlite3'}"
        settings = settings.model_copy(update={"database_url": url})
        tag = hashlib.sha256(f"{time.time_ns()}".encode()).hexdigest()[:12]
        chunk = settings.chunk_size
        fmt = "png"
        groups: dict[str, list[int]] = {}
        if corpus is not None:
            by_codec = corpus_files(corpus)
            paths = [p for files in by_codec.values() for p in files]
            if not paths:
                raise ValueError(f"no DICOM, PNG or JPEG file under {corpus}")
            n, fmt = len(paths), "dicom"
            ids = register(paths, n, url=url, tag=tag, fmt=fmt)  # each file once, codec by codec
            start = 0
            for codec, files in by_codec.items():
                groups[codec] = ids[start:start + len(files)]
                start += len(files)
            say(f"{n} files registered, one study each: " + ", ".join(
                f"{codec} {len(files)}" for codec, files in by_codec.items()))
        else:
            paths = write_files(folder, min(n, DISTINCT_FILES), image_size)
            ids = register(paths, n, url=url, tag=tag)
            say(f"{n} studies registered ({len(paths)} distinct {image_size}px PNGs)")
        warm_ids = register(paths, 2 * chunk, url=url, tag=tag + "-warm", fmt=fmt)
        cam_ids = (register(paths, heatmap_n, url=url, tag=tag + "-cam", fmt=fmt)
                   if heatmap_n else [])
        plain_settings = settings.model_copy(update={"heatmaps": "none"})
        say("warming up (model, gradients, database, decoding processes)")

        model = get_model(settings)
        size = model.spec.input_size
        screen_images(warm_ids, settings.model_copy(update={"heatmaps": "all"}),
                    model=model)  # traces the model and its gradients, opens the database
        rss["after_warmup"] = round(rss_mb(), 1)

        say("(a) model alone on ready tensors")
        tensors = np.random.default_rng(0).random((chunk, size, size, 1), dtype=np.float32)
        calls = -(-n // chunk)
        with _timer() as elapsed:
            for _ in range(calls):
                model.pneumonia_probabilities(tensors)
        model_only = calls * chunk / elapsed()

        say(f"(b) screening task: decode → preprocess → predict → database, tasks of {task_size}")
        tasks = [(codec, part) for codec, members in (groups or {"": ids}).items()
                 for part in split(members, task_size)]
        screened, finished = 0, 0
        codec_s: dict[str, float] = {}
        codec_screened: dict[str, int] = {}
        with _timer() as elapsed:
            for k, (codec, group) in enumerate(tasks, 1):
                started = time.perf_counter()
                outcome = screen_images(group, plain_settings, model=model)
                codec_s[codec] = codec_s.get(codec, 0.0) + time.perf_counter() - started
                codec_screened[codec] = codec_screened.get(codec, 0) + outcome.screened
                screened += outcome.screened
                finished += outcome.screened + outcome.rejected + outcome.failed
                if k == max(1, len(tasks) // 2):
                    rss["pipeline_half"] = round(rss_mb(), 1)
        pipeline = n / elapsed()
        rss["pipeline_end"] = round(rss_mb(), 1)
        if finished != n or (corpus is None and screened != n):
            raise RuntimeError(f"the screening task finished {finished} (screened {screened}) of "
                               f"{n} studies")

        say("(d) decoding alone: the screening task's decode processes, no model")
        decode_paths = paths if corpus is not None else [paths[i % len(paths)] for i in range(n)]
        decode_only = decode_only_per_s(decode_paths, plain_settings, size)

        with_maps = None
        if cam_ids:
            say(f"(b') screening task with a heatmap for every study, {len(cam_ids)} studies")
            all_maps = settings.model_copy(update={"heatmaps": "all"})
            with _timer() as elapsed:
                for group in split(cam_ids, task_size):
                    screen_images(group, all_maps, model=model)
            with_maps = round(len(cam_ids) / elapsed(), 1)

        per_codec = None
        if corpus is not None:
            say(f"decode time per file, in-process, up to {decode_sample} files per codec")
            per_codec = {codec: CodecFigures(
                files=len(members),
                decode_ms_per_file=_decode_ms(by_codec[codec][:decode_sample], settings, size),
                studies_per_s=round(len(members) / codec_s[codec], 1),
                screened=codec_screened[codec]) for codec, members in groups.items()}
            # The naive loop takes every codec in turn, so its mix is the corpus's.
            rounds = [by_codec[c] for c in by_codec]
            mixed = [files[i] for i in range(max(map(len, rounds)))
                     for files in rounds if i < len(files)]
            naive_paths, loop = mixed[:min(n, naive_n)], naive_dicom_loop
        else:
            naive_paths = [paths[i % len(paths)] for i in range(min(n, naive_n))]
            loop = naive_loop
        say(f"(c) naive loop, model.predict per image, {len(naive_paths)} studies")
        loop(naive_paths[:2], model.keras_model, size)  # its own warm-up
        with _timer() as elapsed:
            loop(naive_paths, model.keras_model, size)
        naive = len(naive_paths) / elapsed()
        rss["end"] = round(rss_mb(), 1)
    return ThroughputResult(per_codec=per_codec, decode_only_per_s=round(decode_only, 1),
        studies=n, model_only_per_s=round(model_only, 1), pipeline_per_s=round(pipeline, 1),
        naive_per_s=round(naive, 2), naive_studies=len(naive_paths),
        pipeline_heatmaps_per_s=with_maps,
        peak_rss_mb=round(max(sampler.peak, peak_rss_mb()), 1), rss_mb=rss,
        config={"task_size": task_size, "chunk_size": chunk,
                "decode_processes": settings.decode_processes,
                "decode_threads": settings.decode_threads,
                "image_size": None if corpus else image_size,
                "corpus": str(corpus) if corpus else None,
                "model": model.spec.label, "device": model.device,
                "database": url.split("://", 1)[0]})
