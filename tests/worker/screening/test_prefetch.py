"""The prefetching pipeline: order, bounded memory, overlap."""

from __future__ import annotations

import threading

from pneumoscreen.worker.screening.prefetch import prefetched


class TestPrefetched:
    def test_results_in_order_whatever_the_threads(self) -> None:
        out = list(prefetched(range(10), lambda i: i * i, chunk_size=3, threads=4))
        assert out == [[0, 1, 4], [9, 16, 25], [36, 49, 64], [81]]

    def test_next_chunk_works_while_the_caller_holds_this_one(self) -> None:
        second_chunk_started = threading.Event()

        def work(i: int) -> int:
            if i >= 2:
                second_chunk_started.set()
            return i

        chunks = prefetched(range(4), work, chunk_size=2, threads=1)
        assert next(chunks) == [0, 1]
        # The caller (the model) is busy with chunk 0: chunk 1 decodes meanwhile.
        assert second_chunk_started.wait(10)
        assert next(chunks) == [2, 3]

    def test_next_chunk_starts_while_this_ones_last_file_decodes(self) -> None:
        # A slow last file must not leave the other decoding slot idle until it ends.
        next_chunk_started = threading.Event()

        def work(i: int) -> bool:
            if i == 1:  # chunk 0's straggler: done only once chunk 1 is being decoded
                return next_chunk_started.wait(10)
            if i >= 2:
                next_chunk_started.set()
            return True

        chunks = prefetched(range(4), work, chunk_size=2, threads=2)
        assert next(chunks) == [True, True]
        chunks.close()

    def test_never_more_than_two_chunks_in_flight(self) -> None:
        started: list[int] = []
        lock = threading.Lock()
        all_of_chunk_1 = threading.Event()

        def work(i: int) -> int:
            with lock:
                started.append(i)
                if {4, 5, 6, 7} <= set(started):
                    all_of_chunk_1.set()
            return i

        chunks = prefetched(range(40), work, chunk_size=4, threads=4)
        next(chunks)
        assert all_of_chunk_1.wait(10)
        # Chunk 2 must wait until the caller asks for chunk 1: memory stays at two chunks.
        assert sorted(started) == list(range(8))
        next(chunks)
        chunks.close()

    def test_no_prefetch_still_yields_every_chunk(self) -> None:
        out = list(prefetched(range(5), lambda i: i, chunk_size=2, threads=2, prefetch=0))
        assert out == [[0, 1], [2, 3], [4]]

    def test_closing_early_cancels_the_rest(self) -> None:
        started: list[int] = []
        chunks = prefetched(range(100), started.append, chunk_size=5, threads=2)
        next(chunks)
        chunks.close()
        assert len(started) <= 10
