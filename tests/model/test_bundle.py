"""The model contract's sidecar checks: a sidecar no real model has is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pneumoscreen.model.bundle import (
    BUNDLED,
    ModelFileError,
    ModelSpec,
    bundled_model_path,
    inside,
    verified_spec,
)


def _copy(folder: Path, **changes: object) -> Path:
    src = bundled_model_path("cnn-s")
    dst = folder / "m.keras"
    shutil.copy(src, dst)
    side = json.loads(src.with_suffix(".json").read_text())
    for key, value in changes.items():
        if value is None:
            side.pop(key, None)
        else:
            side[key] = value
    dst.with_suffix(".json").write_text(json.dumps(side))
    return dst


def test_the_bundled_sidecars_are_valid() -> None:
    for name in BUNDLED:
        assert 0 < verified_spec(bundled_model_path(name)).threshold < 1


def test_every_bundled_model_carries_its_validation_score_histogram() -> None:
    """The drift reference: the calibrated pneumonia probability on the validation split, in
    fixed bins over [0, 1], counting every validation image once; and the operating points,
    the shipped threshold among them."""
    from pneumoscreen.model.dataset import MANIFEST_NAME

    manifest = json.loads((bundled_model_path("cnn-s").parent / MANIFEST_NAME).read_text())
    n_val = sum(1 for f in manifest["files"].values() if f["split"] == "validation")
    for name in BUNDLED:
        spec = verified_spec(bundled_model_path(name))
        hist = spec.score_histogram
        assert hist is not None, name
        assert hist["bins"][0] == 0.0 and hist["bins"][-1] == 1.0
        assert np.all(np.diff(hist["bins"]) > 0)
        assert sum(hist["counts"]) == hist["n"] == n_val
        points = {p["target_recall"]: p for p in spec.extra["operating_points"]}
        assert {0.95, 0.98} <= set(points)
        assert points[spec.target_recall]["threshold"] == pytest.approx(spec.threshold, abs=1e-4)
        assert points[spec.target_recall]["validation"]["recall"] >= spec.target_recall
        # No shipped threshold sits on a validation film's score (a few ulps on another CPU
        # would move that film across it): both neighbours lie well away, as served.
        room = spec.extra["threshold_room"]
        assert room["lowest_flagged"] > spec.threshold > room["highest_not_flagged"], name
        assert min(room["room_above"], room["room_below"]) > 1e-3, name


def test_score_histogram_is_none_when_absent_or_malformed() -> None:
    base = {"name": "m", "version": "1", "input_size": 32, "threshold": 0.5, "trained": True}
    assert ModelSpec.from_json(base).score_histogram is None
    bad = {**base, "score_histogram": {"bins": [0, 1], "counts": [1, 2]}}
    assert ModelSpec.from_json(bad).score_histogram is None
    good = {**base, "score_histogram": {"bins": [0, 0.5, 1], "counts": [1, 2]}}
    assert ModelSpec.from_json(good).score_histogram == good["score_histogram"]


@pytest.mark.parametrize(("change", "message"), [
    ({"threshold": 2.0}, "threshold must lie strictly between 0 and 1"),
    ({"threshold": 0.0}, "threshold must lie strictly between 0 and 1"),
    ({"threshold": "0.5"}, "threshold must lie strictly between 0 and 1"),
    ({"sha256": None}, "sha256 .* is required"),
    ({"sha256": ""}, "sha256 .* is required"),
    ({"input_size": 100000}, "input_size must be an integer in"),
    ({"input_size": 4}, "input_size must be an integer in"),
    ({"channels": 7}, "channels must be 1 or 3"),
    ({"version": "x" * 200}, "version must be a string"),
    ({"architecture": {"name": "mobilenetv2", "crop": [0.9, 0.0, 0.1, 1.0]}},
     "architecture crop must be"),
    ({"architecture": {"name": "ensemble", "members": [{"crop": "everything"}]}},
     "architecture crop must be"),
    ({"architecture": {"name": "mobilenetv2", "crop": [0.1, 0.1, 0.105, 0.105]}},
     "architecture crop must be"),
])
def test_a_bad_sidecar_is_refused(tmp_path: Path, change: dict, message: str) -> None:
    with pytest.raises(ModelFileError, match=message):
        verified_spec(_copy(tmp_path, **change))


def test_inside_resolves_symlinks(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "elsewhere").mkdir()
    target = tmp_path / "elsewhere" / "m.keras"
    target.write_bytes(b"x")
    link = tmp_path / "models" / "m.keras"
    link.symlink_to(target)
    assert not inside(link, [tmp_path / "models"])
    assert inside(target, [tmp_path / "elsewhere"])
    assert not inside(tmp_path / "models" / ".." / "elsewhere" / "m.keras", [tmp_path / "models"])


def test_predict_runs_one_traced_graph_with_the_eager_outputs() -> None:
    """Every batch size goes through one traced forward pass, with the network's own outputs."""
    import numpy as np

    from pneumoscreen.model.bundle import load_model

    model = load_model(bundled_model_path("cnn-s"))
    size = model.spec.input_size
    rng = np.random.default_rng(0)
    for n in (1, 5):
        batch = rng.random((n, size, size, 1), dtype=np.float32)
        eager = model.keras_model(batch, training=False)
        scores = model.predict(batch)
        np.testing.assert_allclose(scores.pneumonia, np.ravel(eager["pneumonia"]), atol=1e-6)
        np.testing.assert_allclose(scores.atypicality, np.ravel(eager["atypicality"]),
                                   rtol=1e-5, atol=1e-5)
    assert model.forward.experimental_get_tracing_count() == 1


def test_file_sha256_refuses_a_fifo_at_once(tmp_path: Path) -> None:
    """A path swapped for a FIFO (a twin's, say) raises instead of blocking for ever."""
    import os

    from pneumoscreen.worker.ingest.files import file_sha256

    fifo = tmp_path / "twin.dcm"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        file_sha256(fifo)
