"""The machine's bound for the screening task: decoding alone, and the two stages overlapped.

On a few shared cores the decoding processes and the model take turns on the same CPUs, so the
best the screening task can do is a perfect overlap of the two: ``1 / (1 / model + 1 / decode)``
images per second (each image costs its model time plus its decode time, with nothing idle).
:func:`decode_only_per_s` measures the decode side exactly as the screening task decodes (the same
process pool, the same prefetching threads, the same chunks), only without the model.
"""

from __future__ import annotations

import time
from pathlib import Path

from pneumoscreen.worker.screening.decode_pool import shared_pool
from pneumoscreen.worker.screening.prefetch import prefetched
from pneumoscreen.worker.settings import Settings


def decode_only_per_s(paths: list[Path], settings: Settings, size: int) -> float:
    """Files per second through the screening task's decoding (every decoding process, or the
    decoding threads when ``decode_processes`` is 0), with no model call."""
    from pneumoscreen.model.preprocess import preprocess
    from pneumoscreen.worker.ingest import IngestError, load_grey

    if not paths:
        raise ValueError("no files to decode")
    config = settings.ingest_config(input_size=size)
    pool = (shared_pool(settings.decode_processes, settings.decode_timeout)
            if settings.decode_processes else None)

    def work(path: Path) -> object:
        if pool is not None:
            return pool.run(path, config, size)
        try:
            return preprocess(load_grey(path, config).grey, size)
        except IngestError as exc:  # a bad file still costs its time, as in the screening task
            return exc

    threads = pool.processes if pool else settings.decode_threads
    # Warm the children (imports) outside the clock, as the screening task's warm-up does.
    for _ in prefetched(paths[:threads], work, chunk_size=settings.chunk_size, threads=threads):
        pass
    start = time.perf_counter()
    done = 0
    # Two chunks ahead: the pool never waits for the caller (there is no model to wait for).
    for chunk in prefetched(paths, work, chunk_size=settings.chunk_size, threads=threads,
                            prefetch=2):
        done += len(chunk)
    return done / (time.perf_counter() - start)


def bound_per_s(model_only_per_s: float, decode_only_per_s: float) -> float:
    """Studies/s of a perfect overlap of the model and decoding on shared cores."""
    if model_only_per_s <= 0 or decode_only_per_s <= 0:
        raise ValueError("both rates must be positive")
    return 1.0 / (1.0 / model_only_per_s + 1.0 / decode_only_per_s)
