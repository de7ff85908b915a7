"""``screen bench models A B …``: the model call alone, several models in one run.

Each model gets the same random ready tensors in chunks of ``chunk`` (the screening task's call),
after a warm-up call that traces its graph. The models take turns round by round (A B A B …), so
a shared machine's changing load falls on all of them alike; each figure is the total studies
over the total time of that model's rounds, the same ``model_only_per_s`` as
``screen bench throughput`` measures for one model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from pneumoscreen.model.bundle import load_model


@dataclass
class ModelSpeed:
    model: str
    label: str
    input_size: int
    params: int
    model_only_per_s: float


def compare(refs: list[str], *, studies: int = 1000, chunk: int = 64, rounds: int = 4,
            runtime: Any | None = None) -> list[ModelSpeed]:
    """``model_only_per_s`` of each model in ``refs``, measured in alternating rounds."""
    if not refs:
        raise ValueError("name at least one model")
    models = [load_model(ref, runtime=runtime) for ref in refs]
    rng = np.random.default_rng(0)
    tensors = {m.spec.input_size: rng.random((chunk, m.spec.input_size, m.spec.input_size, 1),
                                             dtype=np.float32) for m in models}
    for m in models:
        m.pneumonia_probabilities(tensors[m.spec.input_size])  # trace outside the clock
    calls = max(1, -(-studies // (chunk * rounds)))
    seconds = [0.0] * len(models)
    for _ in range(rounds):
        for i, m in enumerate(models):
            x = tensors[m.spec.input_size]
            start = time.perf_counter()
            for _ in range(calls):
                m.pneumonia_probabilities(x)
            seconds[i] += time.perf_counter() - start
    n = calls * chunk * rounds
    return [ModelSpeed(ref, m.spec.label, m.spec.input_size, int(m.keras_model.count_params()),
                       round(n / s, 1)) for ref, m, s in zip(refs, models, seconds, strict=True)]
