"""Decode files in child processes, each file under a time limit.

Why processes: the C decoders (OpenJPEG, CharLS, libjpeg) hold the GIL for much of their work, so
decoding threads slow the model down; and a thread stuck in a hostile codestream cannot be
stopped, while a process can. Each child decodes one file at a time; a file that overruns
``timeout`` has its child killed and replaced, and fails alone ("decoding took longer than N s").
A child that dies (a decoder crash) likewise fails only its own file.

The children are plain ``python -m`` subprocesses (not multiprocessing: no fork of a process
holding TensorFlow's threads, and no trouble inside Celery's daemonic pool processes). Requests
go down as pickles (from us, trusted); answers come back as JSON plus raw float32 bytes, never as
pickles, since the child handles hostile files.
"""

from __future__ import annotations

import atexit
import json
import os
import pickle
import queue
import select
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from pneumoscreen.worker.ingest import IngestConfig
from pneumoscreen.worker.screening.decode_child import FileResult

_HEADER = struct.Struct(">I")
_START_TIMEOUT = 120.0  # imports on a busy machine; not the per-file limit
_MAX_ANSWER = 64 << 20  # a network input is a few hundred kB; more is a broken child


class _ChildGone(Exception):
    pass


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    """``n`` bytes from ``fd`` before ``deadline`` (monotonic), else TimeoutError."""
    parts, got = [], 0
    while got < n:
        wait = None if deadline is None else deadline - time.monotonic()
        if wait is not None and wait <= 0:
            raise TimeoutError
        ready, _, _ = select.select([fd], [], [], wait)
        if not ready:
            raise TimeoutError
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            raise _ChildGone
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


class _Child:
    """One decoding subprocess."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pneumoscreen.worker.screening.decode_child"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        self.started = False

    def _recv(self, deadline: float | None) -> bytes:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        (n,) = _HEADER.unpack(_read_exact(fd, _HEADER.size, deadline))
        if n > _MAX_ANSWER:
            raise _ChildGone
        return _read_exact(fd, n, deadline)

    def ensure_started(self) -> None:
        if not self.started:  # the child says "ready" once its imports are done
            self._recv(time.monotonic() + _START_TIMEOUT)
            self.started = True

    def ask(self, request: tuple[str, IngestConfig, int], timeout: float) -> FileResult:
        assert self.proc.stdin is not None
        data = pickle.dumps(request)
        try:
            self.proc.stdin.write(_HEADER.pack(len(data)) + data)
        except (BrokenPipeError, OSError) as exc:
            raise _ChildGone from exc
        header = json.loads(self._recv(time.monotonic() + timeout))
        tensor = None
        if header.get("shape") is not None:
            raw = self._recv(time.monotonic() + timeout)
            tensor = np.frombuffer(raw, dtype=np.float32).reshape(header["shape"]).copy()
        return FileResult(tensor, header.get("status"), header.get("reason"),
                          header.get("metadata") or {})

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


class DecoderUnavailable(ConnectionError):
    """No decoding process could be started: a transient fault of the worker, not of a file."""


class DecodePool:
    """``processes`` children; :meth:`run` may be called from as many threads at once."""

    def __init__(self, processes: int, timeout: float) -> None:
        if processes < 1:
            raise ValueError(f"a decode pool needs at least one process, got {processes}")
        self.processes, self.timeout = processes, timeout
        self._idle: queue.Queue[_Child] = queue.Queue()
        self._all: list[_Child] = []
        self._lock = threading.Lock()
        for _ in range(processes):
            self._spawn()

    def _spawn(self) -> None:
        child = _Child()
        with self._lock:
            self._all.append(child)
        self._idle.put(child)

    def _retire(self, child: _Child) -> None:
        child.kill()
        with self._lock:
            if child in self._all:
                self._all.remove(child)
        self._spawn()

    def run(self, path: str | Path, config: IngestConfig, size: int,
            timeout: float | None = None) -> FileResult:
        """Decode and preprocess ``path`` in a child (within ``timeout``, default the pool's);
        never raises for a bad file."""
        limit = self.timeout if timeout is None else timeout
        child = self._idle.get()
        try:
            child.ensure_started()
            result = child.ask((str(path), config, size), limit)
        except TimeoutError:
            self._retire(child)
            if not child.started:
                raise DecoderUnavailable("the decoding process did not start") from None
            return FileResult(status="failed", reason=f"decoding took longer than {limit:g} s")
        except (_ChildGone, ValueError, json.JSONDecodeError):
            code = child.proc.poll()
            self._retire(child)
            why = f" (exit status {code})" if code is not None else ""
            if not child.started:
                # E.g. a broken installation or no memory: not this file's fault, so no verdict
                # on it; the task is retried (its images stay claimed, then leased back).
                raise DecoderUnavailable(f"the decoding process did not start{why}") from None
            return FileResult(status="failed", reason=f"the decoder crashed on this file{why}")
        except BaseException:
            self._retire(child)  # interrupted mid-answer: the child's pipe is out of step
            raise
        self._idle.put(child)
        return result

    def close(self) -> None:
        with self._lock:
            children, self._all = list(self._all), []
        for child in children:
            child.kill()


_pools: dict[tuple[int, int, float], DecodePool] = {}
_pools_lock = threading.Lock()


def shared_pool(processes: int, timeout: float) -> DecodePool:
    """The process-wide pool for these settings (children start once, then serve every task).

    Keyed by process id too: a forked process (Celery's pool) must not share its parent's pipes.
    """
    key = (os.getpid(), processes, float(timeout))
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            pool = _pools[key] = DecodePool(processes, timeout)
        return pool


@atexit.register
def close_pools() -> None:
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.close()
