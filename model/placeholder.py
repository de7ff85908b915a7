"""Build the untrained placeholder model: the CNN with fixed random weights (seed 0).

Usage: ``python -m pneumoscreen.model.placeholder OUT.keras SIZE``. Its sidecar says
``trained: false`` and every output of the tool says so too.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pneumoscreen.model.bundle import ModelSpec, write_sidecar


def make_placeholder(out: Path, input_size: int) -> ModelSpec:
    import keras

    from pneumoscreen.model.architectures import build

    keras.utils.set_random_seed(0)
    model = build("cnn-s", input_size)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    spec = ModelSpec(name="pneumoscreen-cnn", version="0.0.0-untrained", input_size=input_size,
                     threshold=0.5, trained=False, target_recall=None,
                     extra={"note": "fixed random weights (seed 0); not a screening model"})
    write_sidecar(out, spec)
    return spec


if __name__ == "__main__":
    make_placeholder(Path(sys.argv[1]), int(sys.argv[2]))
