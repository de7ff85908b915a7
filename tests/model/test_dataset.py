"""Patient ids, the patient-level split, its manifest, and training input == serving input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pneumoscreen.model.dataset import (
    Sample,
    load_arrays,
    make_dataset,
    patient_id,
    scan_labelled,
    split_by_patient,
    split_from_manifest,
    training_root,
)
from pneumoscreen.model.preprocess import preprocess


def _samples(names: list[tuple[str, int]]) -> list[Sample]:
    return [Sample(Path(n), n, label) for n, label in names]


class TestPatientId:
    @pytest.mark.parametrize(("name", "expected"), [
        ("PNEUMONIA/person1000_bacteria_2931.jpeg", "person-1000"),
        ("PNEUMONIA/person1000_virus_1681.jpeg", "person-1000"),
        ("person7_bacteria_29.jpeg", "person-7"),
        ("NORMAL/IM-0115-0001.jpeg", "IM-115"),
        ("NORMAL/NORMAL2-IM-0115-0001.jpeg", "IM-115"),
        ("NORMAL/IM-0117-0002.jpeg", "IM-117"),
    ])
    def test_kermany_names(self, name: str, expected: str) -> None:
        assert patient_id(name) == expected

    def test_unknown_names_are_their_own_patient(self) -> None:
        assert patient_id("NORMAL/scan.png") != patient_id("NORMAL/scan2.png")


class TestSplitByPatient:
    def test_no_patient_in_two_splits_and_all_files_kept(self) -> None:
        names = []
        for p in range(60):
            names += [(f"PNEUMONIA/person{p}_bacteria_{k}.jpeg", 1) for k in range(1 + p % 3)]
            names += [(f"NORMAL/IM-{p:04d}-000{k}.jpeg", 0) for k in range(1 + p % 2)]
        split = split_by_patient(_samples(names), seed=1)
        owners: dict[str, str] = {}
        for part, samples in split.parts().items():
            for s in samples:
                assert owners.setdefault(patient_id(s.rel), part) == part
        assert sum(len(v) for v in split.parts().values()) == len(names)
        counts = split.counts()
        assert all(counts[p]["NORMAL"] > 0 and counts[p]["PNEUMONIA"] > 0 for p in counts)

    def test_seeded(self) -> None:
        names = [(f"PNEUMONIA/person{p}_virus_1.jpeg", 1) for p in range(40)]
        names += [(f"NORMAL/IM-{p:04d}-0001.jpeg", 0) for p in range(40)]
        a = split_by_patient(_samples(names), seed=5).manifest()
        b = split_by_patient(_samples(names), seed=5).manifest()
        c = split_by_patient(_samples(names), seed=6).manifest()
        assert a == b and a["files"] != c["files"]

    @pytest.mark.shared
    def test_kermany_train_split(self, shared_dir: Path) -> None:
        """The real file names: every patient in one split, roughly 70/15/15 in each class."""
        root = training_root(shared_dir / "data" / "chest_xray")
        samples = scan_labelled(root)
        split = split_by_patient(samples, seed=42)
        seen: dict[str, str] = {}
        for part, members in split.parts().items():
            for s in members:
                assert seen.setdefault(patient_id(s.rel), part) == part, s.rel
        counts = split.counts()
        for cls in ("NORMAL", "PNEUMONIA"):
            total = sum(counts[p][cls] for p in counts)
            assert counts["train"][cls] / total == pytest.approx(0.70, abs=0.02)
            assert counts["validation"][cls] / total == pytest.approx(0.15, abs=0.02)

    def test_manifest_round_trip(self, tmp_path: Path) -> None:
        for cls, label in (("NORMAL", 0), ("PNEUMONIA", 1)):
            (tmp_path / cls).mkdir()
            for i in range(6):
                name = f"IM-{i:04d}-0001.png" if label == 0 else f"person{i}_virus_1.png"
                (tmp_path / cls / name).write_bytes(b"x")
        split = split_by_patient(scan_labelled(tmp_path), seed=0)
        manifest = json.loads(json.dumps(split.manifest()))
        again = split_from_manifest(manifest, tmp_path)
        assert {k: [s.rel for s in v] for k, v in again.parts().items()} == {
            k: [s.rel for s in v] for k, v in split.parts().items()}


def _png(path: Path, seed: int, mode: str = "L") -> None:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (150, 170), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).convert(mode).save(path)


def test_training_pipeline_gives_the_serving_tensor(tmp_path: Path) -> None:
    """The un-augmented training input of a file equals preprocess(load_grey(file).grey)."""
    from pneumoscreen.worker.ingest import load_grey

    _png(tmp_path / "NORMAL" / "IM-0001-0001.png", 1)
    _png(tmp_path / "PNEUMONIA" / "person1_virus_1.png", 2, mode="RGB")  # grey as 3 channels
    samples = scan_labelled(tmp_path)
    for cache in (None, tmp_path / "cache", tmp_path / "cache"):  # fresh, then from the cache
        arrays = load_arrays(samples, 48, cache_dir=cache)
        batches = list(make_dataset(arrays.x, arrays.y, batch_size=8, training=False))
        x = np.concatenate([np.asarray(b[0]) for b in batches])
        for i, s in enumerate(arrays.samples):
            serving = preprocess(load_grey(s.path).grey, 48)
            assert x[i].dtype == serving.dtype and x[i].shape == serving.shape == (48, 48, 1)
            np.testing.assert_array_equal(x[i], serving)


def test_unreadable_files_are_reported_not_fatal(tmp_path: Path) -> None:
    _png(tmp_path / "NORMAL" / "IM-0001-0001.png", 1)
    (tmp_path / "PNEUMONIA").mkdir()
    (tmp_path / "PNEUMONIA" / "person1_virus_1.png").write_text("not an image")
    arrays = load_arrays(scan_labelled(tmp_path), 32)
    assert len(arrays.y) == 1
    assert list(arrays.errors) == ["PNEUMONIA/person1_virus_1.png"]
