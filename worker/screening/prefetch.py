"""Decode the next chunk of images in a thread pool while the model runs on the current one.

With ``decode_processes`` (the default) each thread only drives one decoding process of
:mod:`.decode_pool`, so the decoding itself runs outside the model's process and under a time limit.

A bounded producer/consumer: the consumer (the model, then the database write) holds one chunk
while at most ``prefetch`` further chunks decode, so a task of any size keeps at most
``prefetch + 2`` chunks of tensors in memory (three by default, for a moment: the one the caller
still holds, the one it waits for and the next) and the CPU/GPU is never idle waiting for
decoding after the first chunk.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from pneumoscreen.db.lists import split

T = TypeVar("T")
R = TypeVar("R")


def prefetched(items: Sequence[T], work: Callable[[T], R], *, chunk_size: int, threads: int,
               prefetch: int = 1) -> Iterator[list[R]]:
    """Yield ``[work(item) for item in chunk]`` chunk by chunk, in order.

    While the caller handles chunk k, chunks k+1 … k+``prefetch`` are being worked on in a pool
    of ``threads``; no more is started before the caller asks for the next chunk, which is what
    keeps memory flat however long ``items`` is. Closing the generator early cancels what has
    not started yet.
    """
    if prefetch < 0:
        raise ValueError(f"prefetch must be >= 0, got {prefetch}")
    groups = iter(split(items, chunk_size))
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="decode")
    pending: deque[list[Future[R]]] = deque()

    def start_next() -> bool:
        group = next(groups, None)
        if group is None:
            return False
        pending.append([pool.submit(work, item) for item in group])
        return True

    try:
        while pending or start_next():
            futures = pending.popleft()
            # Top up before waiting for this chunk, not after: the pool works on while this
            # chunk's last files finish, so no decoding slot idles at a chunk boundary, and the
            # next chunks decode while the caller runs the model.
            while len(pending) < prefetch and start_next():
                pass
            yield [f.result() for f in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
