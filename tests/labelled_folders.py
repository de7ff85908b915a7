"""A small labelled folder in the Kaggle layout, for training tests: train/{NORMAL,PNEUMONIA}
with bacterial and viral pneumonias, one patient per file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def labelled_tree(root: Path, n: int = 8, *, size: int = 48, viral: bool = True) -> Path:
    """``n`` normal and ``n`` pneumonia films of ``size`` px under ``root/train``: a bright blob
    marks a pneumonia, half of them viral (a narrower blob) unless ``viral`` is False."""
    rng = np.random.default_rng(0)
    for cls in ("NORMAL", "PNEUMONIA"):
        (root / "train" / cls).mkdir(parents=True)
    at = [round(size * v / 48) for v in (10, 30, 8, 28, 40)]  # the blob's edges at 48 px
    for i in range(n):
        base = rng.normal(0.35, 0.08, (size, size))
        Image.fromarray((np.clip(base, 0, 1) * 255).astype(np.uint8)).save(
            root / "train" / "NORMAL" / f"IM-{i:04d}-0001.png")
        sick = rng.normal(0.35, 0.08, (size, size))
        kind = "virus" if viral and i % 2 else "bacteria"
        sick[at[0]:at[1], at[2]:at[3] if kind == "virus" else at[4]] += 0.4
        Image.fromarray((np.clip(sick, 0, 1) * 255).astype(np.uint8)).save(
            root / "train" / "PNEUMONIA" / f"person{i}_{kind}_{i}.png")
    return root
