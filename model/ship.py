"""Ship a trained run (or an ensemble's folder) as a bundled model.

Usage: ``python -m pneumoscreen.model.ship RUN_DIR [NAME]`` copies ``model.keras``, its sidecar
and the split manifest from a ``screen train`` or ``screen models ensemble`` output folder into
``model/bundled/`` as the bundled model NAME (default: the default model, see
:data:`pneumoscreen.model.bundle.BUNDLED`). The model card is written by hand from
the figures ``screen evaluate`` prints.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from pneumoscreen.model.bundle import (
    BUNDLED,
    DEFAULT_BUNDLED,
    read_spec,
    sidecar_path,
)
from pneumoscreen.model.dataset import MANIFEST_NAME
from pneumoscreen.worker.ingest.files import file_sha256

MAX_BYTES = 20 * 1024 * 1024  # per model: the package must stay small enough to install anywhere


def ship(run_dir: Path, dest: Path | None = None, name: str = DEFAULT_BUNDLED) -> Path:
    """Copy the run's model, sidecar and manifest into ``dest`` (default: the bundled folder)
    as the bundled model ``name``."""
    run_dir = Path(run_dir)
    dest = Path(dest) if dest else Path(__file__).resolve().parent / "bundled"
    src = run_dir / "model.keras"
    spec = read_spec(src)
    if not spec.trained:
        raise ValueError(f"{src} is not a trained model")
    if spec.sha256 != file_sha256(src):
        raise ValueError(f"{src} does not match the sha256 in its sidecar")
    if src.stat().st_size > MAX_BYTES:
        raise ValueError(f"{src} is {src.stat().st_size / 2**20:.1f} MiB; the limit is 20 MiB")
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / BUNDLED[name]
    manifest = dest / MANIFEST_NAME
    if manifest.is_file() and json.loads(manifest.read_text())["files"] != json.loads(
            (run_dir / MANIFEST_NAME).read_text())["files"]:
        raise ValueError("the bundled models must share one patient split: this run's "
                         "split_manifest.json differs from the bundled one")
    shutil.copyfile(src, target)
    # The sidecar is copied as is: its sha256 is the file's, which the copy keeps.
    sidecar = json.loads(sidecar_path(src).read_text())
    sidecar_path(target).write_text(json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
    shutil.copyfile(run_dir / MANIFEST_NAME, dest / MANIFEST_NAME)
    return target


if __name__ == "__main__":
    print(ship(Path(sys.argv[1]), name=sys.argv[2] if len(sys.argv) > 2 else DEFAULT_BUNDLED))
