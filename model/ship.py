"""Ship a trained run as the bundled default model.

Usage: ``python -m pneumoscreen.model.ship RUN_DIR`` copies ``model.keras``, its sidecar and the
split manifest from a ``screen train`` output folder into ``model/bundled/`` under the names
:func:`pneumoscreen.model.bundle.load_model` looks for. The model card is written by hand from
the figures ``screen evaluate`` prints.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from pneumoscreen.model.bundle import BUNDLED_NAME, file_sha256, read_spec, sidecar_path
from pneumoscreen.model.dataset import MANIFEST_NAME

MAX_BYTES = 20 * 1024 * 1024  # the package must stay small enough to install anywhere


def ship(run_dir: Path, dest: Path | None = None) -> Path:
    """Copy the run's model, sidecar and manifest into ``dest`` (default: the bundled folder)."""
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
    target = dest / BUNDLED_NAME
    shutil.copyfile(src, target)
    # The sidecar is copied as is: its sha256 is the file's, which the copy keeps.
    sidecar = json.loads(sidecar_path(src).read_text())
    sidecar_path(target).write_text(json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
    shutil.copyfile(run_dir / MANIFEST_NAME, dest / MANIFEST_NAME)
    return target


if __name__ == "__main__":
    print(ship(Path(sys.argv[1])))
