"""What ingestion hands back: a header probe, or a decoded grey image."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Probe:
    """Header facts of a screenable file (no pixels decoded)."""

    format: str
    sop_instance_uid: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Decoded:
    """``grey``: 2-D float32 in [0, 1], 0 black, 1 white; ``steps``: what was done to get it."""

    grey: np.ndarray
    format: str
    metadata: dict[str, Any] = field(default_factory=dict)
    steps: list[str] = field(default_factory=list)
