"""``screen bench decode``: decode + normalise time per file, full versus reduced resolution."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from pneumoscreen.model.preprocess import preprocess
from pneumoscreen.worker.ingest import IngestConfig, IngestError, load_grey

_REPO = Path(__file__).resolve().parents[2]


def default_chest_folder() -> Path | None:
    """``../shared/dicom/chest`` from SCREEN_SHARED_DIR, the working directory or the repo."""
    roots = [Path(os.environ["SCREEN_SHARED_DIR"])] if os.environ.get("SCREEN_SHARED_DIR") else []
    roots += [Path.cwd().parent / "shared", _REPO.parent / "shared"]
    for root in roots:
        if (root / "dicom" / "chest").is_dir():
            return root / "dicom" / "chest"
    return None


def measure(path: Path, config: IngestConfig, *, reduced: bool, repeat: int,
            size: int) -> dict[str, Any]:
    """Median seconds of ``load_grey`` + ``preprocess`` over ``repeat`` runs, after a warm-up."""
    decoded = load_grey(path, config, reduced=reduced)  # warm-up (file cache, codec set-up)
    net = preprocess(decoded.grey, size)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        decoded = load_grey(path, config, reduced=reduced)
        net = preprocess(decoded.grey, size)
        times.append(time.perf_counter() - start)
    return {"seconds": statistics.median(times), "shape": list(decoded.grey.shape), "net": net,
            "transfer_syntax": _ts_keyword(decoded.metadata.get("transfer_syntax"))}


def _ts_keyword(uid: str | None) -> str | None:
    from pydicom.uid import UID

    return (UID(uid).keyword or uid) if uid else None


def run_decode(files: list[Path], config: IngestConfig, *, repeat: int,
               size: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One row per file (or its error) and the summary figures."""
    rows: list[dict[str, Any]] = []
    for path in files:
        try:
            full = measure(path, config, reduced=False, repeat=repeat, size=size)
            red = measure(path, config, reduced=True, repeat=repeat, size=size)
        except IngestError as exc:
            rows.append({"file": path.name, "error": f"{exc.status}: {exc}"})
            continue
        rows.append({
            "file": path.name,
            "transfer_syntax": full["transfer_syntax"],
            "full_shape": full["shape"],
            "reduced_shape": red["shape"],
            "full_ms": round(full["seconds"] * 1000, 1),
            "reduced_ms": round(red["seconds"] * 1000, 1),
            "speedup": round(full["seconds"] / red["seconds"], 2),
            # How far the network input moves: the price of decoding fewer pixels.
            "input_mean_abs_diff": round(float(np.abs(full["net"] - red["net"]).mean()), 4),
        })
    timed = [r for r in rows if "error" not in r]
    summary: dict[str, Any] = {"files": len(files), "timed": len(timed), "repeat": repeat,
                               "input_size": size}
    if timed:
        t_full = sum(r["full_ms"] for r in timed) / 1000
        t_red = sum(r["reduced_ms"] for r in timed) / 1000
        summary.update({
            "full_files_per_s": round(len(timed) / t_full, 2),
            "reduced_files_per_s": round(len(timed) / t_red, 2),
            "speedup": round(t_full / t_red, 2),
        })
    return rows, summary
