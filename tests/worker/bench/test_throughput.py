"""``screen bench throughput`` measures what it says: every study through the screening task, the
naive loop one ``predict`` per image, memory sampled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pneumoscreen.worker.bench import throughput
from pneumoscreen.worker.settings import get_settings


def count_naive_predicts(monkeypatch: pytest.MonkeyPatch, loop_name: str) -> list[int]:
    """Wrap the naive loop ``loop_name`` so every ``keras_model.predict`` it makes is counted
    (the batch size of each call)."""
    calls: list[int] = []
    real = getattr(throughput, loop_name)

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

    monkeypatch.setattr(throughput, loop_name, counting)
    return calls


def test_a_small_run_reports_every_figure(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = count_naive_predicts(monkeypatch, "naive_loop")
    result = throughput.run_throughput(6, settings=get_settings(), task_size=4, naive_n=3,
                                       image_size=64, heatmap_n=3)
    data = result.as_dict()
    for key in ("model_only_per_s", "pipeline_per_s", "naive_per_s", "peak_rss_mb"):
        assert data[key] > 0, key
    assert result.naive_studies == 3
    assert result.pipeline_heatmaps_per_s and result.pipeline_heatmaps_per_s > 0
    assert calls == [1] * (2 + 3)  # warm-up (2) then the timed loop: one image a call
    assert set(result.ratios) == {"pipeline_over_model_only", "pipeline_over_naive",
                                  "pipeline_over_bound"}
    # The bound is the perfect overlap of the model and decoding, from the two measured rates.
    assert result.decode_only_per_s and result.decode_only_per_s > 0
    assert data["bound_per_s"] == pytest.approx(
        1 / (1 / result.model_only_per_s + 1 / result.decode_only_per_s), abs=0.06)
    assert data["bound_per_s"] < min(result.model_only_per_s, result.decode_only_per_s)
    assert data["pipeline_over_bound"] == pytest.approx(
        result.pipeline_per_s / data["bound_per_s"], abs=1e-3)


@pytest.mark.slow
def test_corpus_mode_counts_each_file_once_and_reports_per_codec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ingest_factories import chest_like, make_ds, write
    from pydicom.uid import JPEG2000Lossless, JPEGLSLossless

    corpus = tmp_path / "corpus"
    (corpus / "deep" / "er").mkdir(parents=True)
    expected = {"Explicit VR Little Endian": 3, "JPEG 2000 Image Compression (Lossless Only)": 2,
                "JPEG-LS Lossless Image Compression": 1}
    k = 0
    for ts, n in [(None, 3), (JPEG2000Lossless, 2), (JPEGLSLossless, 1)]:
        for _ in range(n):
            base = chest_like(80, 64, seed=k)
            ds = make_ds(base, bits_stored=12)
            if ts is not None:
                ds.compress(ts, base)
            write(ds, corpus / ("deep/er" if k % 2 else ".") / f"f{k}.dcm")
            k += 1
    (corpus / "notes.txt").write_text("not an image")

    screened: list[int] = []
    real_task = throughput.screen_images

    def counting_task(ids: list[int], *args: Any, **kw: Any) -> Any:
        outcome = real_task(ids, *args, **kw)
        screened.extend(ids)
        return outcome

    monkeypatch.setattr(throughput, "screen_images", counting_task)
    calls = count_naive_predicts(monkeypatch, "naive_dicom_loop")
    settings = get_settings().model_copy(update={"chunk_size": 2})
    result = throughput.run_throughput(1000, settings=settings, task_size=2, naive_n=4,
                                       corpus=corpus)
    assert result.studies == 6  # the files, not --studies
    assert result.per_codec is not None
    assert {codec: f.files for codec, f in result.per_codec.items()} == expected
    assert all(f.screened == f.files and f.studies_per_s > 0 and f.decode_ms_per_file
               for f in result.per_codec.values())
    warm = 2 * settings.chunk_size
    timed = screened[warm:]  # after the warm-up task
    assert len(timed) == 6 and len(set(timed)) == 6  # each file once, as one study
    assert calls == [1] * (2 + 4)  # the naive loop: one predict per image
    data = result.as_dict()
    for key in ("model_only_per_s", "pipeline_per_s", "naive_per_s", "peak_rss_mb"):
        assert data[key] > 0, key
    assert data["per_codec"]["JPEG-LS Lossless Image Compression"]["files"] == 1
    assert data["decode_only_per_s"] > 0 and data["bound_per_s"] > 0
    assert "pipeline_over_bound" in data


def test_decode_only_counts_every_file_through_the_pool(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """(d) sends every file through the decoding pool once (after a warm-up), never a model."""
    from pneumoscreen.worker.bench import bound

    paths = throughput.write_files(tmp_path, 5, 64)
    seen: list[str] = []
    real = bound.shared_pool

    def counting_pool(processes: int, timeout: float) -> Any:
        pool = real(processes, timeout)
        run = pool.run

        class Counting:
            processes = pool.processes

            def run(self, path: Any, *a: Any, **kw: Any) -> Any:
                seen.append(str(path))
                return run(path, *a, **kw)

        return Counting()

    monkeypatch.setattr(bound, "shared_pool", counting_pool)
    settings = get_settings().model_copy(update={"decode_processes": 1, "chunk_size": 2})
    rate = bound.decode_only_per_s(paths, settings, 32)
    assert rate > 0
    warm = settings.decode_processes
    assert sorted(seen[warm:]) == sorted(map(str, paths))
    with pytest.raises(ValueError):
        bound.bound_per_s(0.0, 1.0)
    assert bound.bound_per_s(100.0, 100.0) == pytest.approx(50.0)
