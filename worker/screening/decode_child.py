"""Decoding one file for screening, the one route: :func:`decode_file` runs in the worker's own
threads (``decode_processes`` 0) or in this module's subprocess for :mod:`.decode_pool`.

The subprocess reads a request, decodes, answers, repeats. Requests: length-prefixed pickles
``(path, IngestConfig, input size)``. Answers: a length-prefixed JSON header, then (for a
screenable file) the network input as raw float32 bytes.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

_HEADER = struct.Struct(">I")


def _send(out: BinaryIO, data: bytes) -> None:
    out.write(_HEADER.pack(len(data)) + data)
    out.flush()


def _read(inp: BinaryIO, n: int) -> bytes | None:
    data = inp.read(n)
    return data if data and len(data) == n else None


@dataclass
class FileResult:
    """One file decoded for the network: its input, or the image status and reason."""

    tensor: Any = None  # an ndarray; Any keeps NumPy out of this module's import
    status: str | None = None  # "failed" or "rejected" when tensor is None
    reason: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def decode_file(path: str, config: object, size: int) -> FileResult:
    """Decode and preprocess one file to the ``size`` input; never raises for a bad file."""
    # Imported here: the subprocess answers "ready" only after these, and its parent imports
    # this module for FileResult without paying for them.
    from pneumoscreen.model.preprocess import preprocess
    from pneumoscreen.worker.ingest import IngestError, load_grey

    try:
        decoded = load_grey(Path(path), config)  # type: ignore[arg-type]
        return FileResult(preprocess(decoded.grey, size), metadata=decoded.metadata)
    except IngestError as exc:
        return FileResult(status=exc.status, reason=str(exc))
    except Exception as exc:  # a bug or an unforeseen file fails the file, not the task
        return FileResult(status="failed",
                          reason=f"unexpected error: {type(exc).__name__}: {exc}")


def answer(path: str, config: object, size: int) -> tuple[dict, bytes | None]:
    """:func:`decode_file` as the JSON header and the tensor bytes (or None)."""
    found = decode_file(path, config, size)
    if found.tensor is None:
        return {"status": found.status, "reason": found.reason, "shape": None}, None
    return ({"shape": list(found.tensor.shape), "metadata": found.metadata},
            found.tensor.tobytes())


def main() -> None:
    # The protocol gets its own copy of stdout; fd 1 goes to stderr, so that a library printing
    # to stdout cannot corrupt an answer.
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    inp = sys.stdin.buffer
    import pneumoscreen.model.preprocess  # imports before "ready"
    import pneumoscreen.worker.ingest  # noqa: F401

    _send(out, b"{}")
    while (head := _read(inp, _HEADER.size)) is not None:
        body = _read(inp, _HEADER.unpack(head)[0])
        if body is None:
            break
        path, config, size = pickle.loads(body)
        header, tensor = answer(path, config, size)
        _send(out, json.dumps(header, default=str).encode())
        if tensor is not None:
            _send(out, tensor)


if __name__ == "__main__":
    main()
