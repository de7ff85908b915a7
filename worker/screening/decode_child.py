"""The decoding subprocess of :mod:`.decode_pool`: read a request, decode, answer, repeat.

Requests: length-prefixed pickles ``(path, IngestConfig, input size)``. Answers: a length-prefixed
JSON header, then (for a screenable file) the network input as raw float32 bytes.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import sys
from pathlib import Path
from typing import BinaryIO

_HEADER = struct.Struct(">I")


def _send(out: BinaryIO, data: bytes) -> None:
    out.write(_HEADER.pack(len(data)) + data)
    out.flush()


def _read(inp: BinaryIO, n: int) -> bytes | None:
    data = inp.read(n)
    return data if data and len(data) == n else None


def answer(path: str, config: object, size: int) -> tuple[dict, bytes | None]:
    """Decode and preprocess one file: the JSON header and the tensor bytes (or None)."""
    from pneumoscreen.model.preprocess import preprocess
    from pneumoscreen.worker.ingest import IngestError, load_grey

    try:
        decoded = load_grey(Path(path), config)  # type: ignore[arg-type]
        tensor = preprocess(decoded.grey, size)
    except IngestError as exc:
        return {"status": exc.status, "reason": str(exc), "shape": None}, None
    except Exception as exc:  # a bug must fail the file, not the child
        return {"status": "failed", "reason": f"unexpected error: {type(exc).__name__}: {exc}",
                "shape": None}, None
    return {"shape": list(tensor.shape), "metadata": decoded.metadata}, tensor.tobytes()


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
