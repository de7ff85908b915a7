"""A small labelled folder in the Kaggle layout, for training tests: train/{NORMAL,PNEUMONIA}
with bacterial and viral pneumonias, one patient per file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def labelled_tree(root: Path, n: int = 8) -> Path:
    """``n`` normal and ``n`` pneumonia films (half viral) under ``root/train``."""
    rng = np.random.default_rng(0)
    for cls in ("NORMAL", "PNEUMONIA"):
        (root / "train" / cls).mkdir(parents=True)
    for i in range(n):
        base = rng.normal(0.35, 0.08, (48, 48))
        Image.fromarray((np.clip(base, 0, 1) * 255).astype(np.uint8)).save(
            root / "train" / "NORMAL" / f"IM-{i:04d}-0001.png")
        sick = rng.normal(0.35, 0.08, (48, 48))
        kind = "virus" if i % 2 else "bacteria"
        sick[10:30, 8:28 if kind == "virus" else 40] += 0.4
        Image.fromarray((np.clip(sick, 0, 1) * 255).astype(np.uint8)).save(
            root / "train" / "PNEUMONIA" / f"person{i}_{kind}_{i}.png")
    return root
