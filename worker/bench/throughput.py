"""``screen bench throughput``: studies per second of the model alone, of the whole batch task and
of the naive per-image loop of the reference notebooks, with the resident memory over the run.

Synthetic studies only: a few distinct PNG phantoms written to a temporary folder and registered
N times under distinct hashes straight into the database (registration is not what is measured),
so ``--studies 10000`` costs neither 10,000 files nor a long set-up.
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
from PIL import Image
from sqlalchemy import insert, select

from pneumoscreen.db import Batch, Study, StudyStatus, session_scope
from pneumoscreen.worker.screening.prefetch import split
from pneumoscreen.worker.screening.screen import get_model, screen_task
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

    @property
    def ratios(self) -> dict[str, float]:
        return {"pipeline_over_model_only": round(self.pipeline_per_s / self.model_only_per_s, 3),
                "pipeline_over_naive": round(self.pipeline_per_s / self.naive_per_s, 2)}

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), **self.ratios}


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
        Image.fromarray(phantom(size, i)).save(path)
        paths.append(path)
    return paths


def register(paths: list[Path], n: int, *, url: str, tag: str) -> list[int]:
    """``n`` queued studies cycling over ``paths``, each with its own (made-up) content hash."""
    with session_scope(url) as session:
        batch = Batch(kind="submit", source=f"bench:{tag}", n_files=n, n_new=n)
        session.add(batch)
        session.flush()
        rows = [{"sha256": hashlib.sha256(f"bench:{tag}:{i}".encode()).hexdigest(),
                 "source_path": str(paths[i % len(paths)]), "format": "png",
                 "status": StudyStatus.queued, "batch_id": batch.id, "attempts": 0}
                for i in range(n)]
        for part in split(rows, 1000):
            session.execute(insert(Study), part)
        first = batch.id
    with session_scope(url) as session:
        return list(session.scalars(select(Study.id).where(Study.batch_id == first)
                                    .order_by(Study.id)))


@contextmanager
def _timer() -> Iterator[Callable[[], float]]:
    start = time.perf_counter()
    end: list[float] = []
    yield lambda: (end[0] if end else time.perf_counter()) - start
    end.append(time.perf_counter())


def naive_loop(paths: list[Path], keras_model: Any, size: int) -> None:
    """The reference notebooks: open, resize, scale, and ``model.predict`` on one image."""
    for path in paths:
        img = Image.open(path).convert("L").resize((size, size))
        x = np.asarray(img, dtype=np.float32)[None, ..., None] / 255.0
        keras_model.predict(x, verbose=0)


def run_throughput(n: int, *, settings: Settings, task_size: int = 256, naive_n: int = 100,
                   image_size: int = 512, database_url: str | None = None,
                   heatmap_n: int = 0,
                   say: Callable[[str], None] = lambda _: None) -> ThroughputResult:
    """Measure (a) model only, (b) the batch task end to end without heatmaps, (b') with a
    heatmap for each of ``heatmap_n`` studies, (c) the naive loop, and RSS."""
    rss: dict[str, float] = {"start": round(rss_mb(), 1)}
    with tempfile.TemporaryDirectory(prefix="screen-bench-") as tmp, RssSampler() as sampler:
        folder = Path(tmp)
        url = database_url or f"sqlite:///{folder / 'bench.sqlite3'}"
        settings = settings.model_copy(update={"database_url": url})
        tag = hashlib.sha256(f"{time.time_ns()}".encode()).hexdigest()[:12]
        paths = write_files(folder, min(n, DISTINCT_FILES), image_size)
        chunk = settings.chunk_size
        warm_ids = register(paths, 2 * chunk, url=url, tag=tag + "-warm")
        ids = register(paths, n, url=url, tag=tag)
        cam_ids = register(paths, heatmap_n, url=url, tag=tag + "-cam") if heatmap_n else []
        plain_settings = settings.model_copy(update={"heatmaps": "none"})
        say(f"{n} studies registered ({len(paths)} distinct {image_size}px PNGs); warming up")

        model = get_model(settings)
        size = model.spec.input_size
        screen_task(warm_ids, settings.model_copy(update={"heatmaps": "all"}),
                    model=model)  # traces the model and its gradients, opens the database
        rss["after_warmup"] = round(rss_mb(), 1)

        say("(a) model alone on ready tensors")
        tensors = np.random.default_rng(0).random((chunk, size, size, 1), dtype=np.float32)
        calls = -(-n // chunk)
        with _timer() as elapsed:
            for _ in range(calls):
                model.predict_batch(tensors)
        model_only = calls * chunk / elapsed()

        say(f"(b) batch task: decode → preprocess → predict → database, tasks of {task_size}")
        groups = split(ids, task_size)
        screened = 0
        with _timer() as elapsed:
            for k, group in enumerate(groups, 1):
                screened += screen_task(group, plain_settings, model=model).screened
                if k == max(1, len(groups) // 2):
                    rss["pipeline_half"] = round(rss_mb(), 1)
        pipeline = n / elapsed()
        rss["pipeline_end"] = round(rss_mb(), 1)
        if screened != n:
            raise RuntimeError(f"the batch task screened {screened} of {n} studies")

        with_maps = None
        if cam_ids:
            say(f"(b') batch task with a heatmap for every study, {len(cam_ids)} studies")
            all_maps = settings.model_copy(update={"heatmaps": "all"})
            with _timer() as elapsed:
                for group in split(cam_ids, task_size):
                    screen_task(group, all_maps, model=model)
            with_maps = round(len(cam_ids) / elapsed(), 1)

        naive_paths = [paths[i % len(paths)] for i in range(min(n, naive_n))]
        say(f"(c) naive loop, model.predict per image, {len(naive_paths)} studies")
        naive_loop(naive_paths[:2], model.keras_model, size)  # its own warm-up
        with _timer() as elapsed:
            naive_loop(naive_paths, model.keras_model, size)
        naive = len(naive_paths) / elapsed()
        rss["end"] = round(rss_mb(), 1)
    return ThroughputResult(
        studies=n, model_only_per_s=round(model_only, 1), pipeline_per_s=round(pipeline, 1),
        naive_per_s=round(naive, 2), naive_studies=len(naive_paths),
        pipeline_heatmaps_per_s=with_maps,
        peak_rss_mb=round(max(sampler.peak, peak_rss_mb()), 1), rss_mb=rss,
        config={"task_size": task_size, "chunk_size": chunk,
                "decode_threads": settings.decode_threads, "image_size": image_size,
                "model": model.spec.label, "device": model.device,
                "database": url.split("://", 1)[0]})
