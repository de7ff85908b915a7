"""``screen bench throughput`` measures what it says: every study through the batch task, the
naive loop one ``predict`` per image, memory sampled."""

from __future__ import annotations

from typing import Any

import pytest

from pneumoscreen.worker.bench import throughput
from pneumoscreen.worker.settings import get_settings


def test_a_small_run_reports_every_figure(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = throughput.naive_loop

    def counting(paths: list[Any], keras_model: Any, size: int) -> None:
        original = keras_model.predict

        def predict(x: Any, **kw: Any) -> Any:
            calls.append(len(x))
            return original(x, **kw)

        keras_model.predict = predict
        try:
            real(paths, keras_model, size)
        finally:
            del keras_model.predict  # the class's own method again

    monkeypatch.setattr(throughput, "naive_loop", counting)
    result = throughput.run_throughput(6, settings=get_settings(), task_size=4, naive_n=3,
                                       image_size=64, heatmap_n=3)
    data = result.as_dict()
    for key in ("model_only_per_s", "pipeline_per_s", "naive_per_s", "peak_rss_mb"):
        assert data[key] > 0, key
    assert result.naive_studies == 3
    assert result.pipeline_heatmaps_per_s and result.pipeline_heatmaps_per_s > 0
    assert calls == [1] * (2 + 3)  # warm-up (2) then the timed loop: one image a call
    assert set(result.ratios) == {"pipeline_over_model_only", "pipeline_over_naive"}
