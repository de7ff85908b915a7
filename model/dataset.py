"""Labelled image folders, the patient-level split and the training/evaluation input pipelines.

Every image goes ``load_grey(path).grey`` -> :func:`pneumoscreen.model.preprocess`, exactly as in
serving. That is deterministic, so it runs once per file and the arrays are cached on disk; random
augmentation is applied on top, in the tf.data pipeline, to the training split only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pneumoscreen.model.augment import AugmentConfig, make_augmenter
from pneumoscreen.model.preprocess import preprocess

log = logging.getLogger(__name__)

CLASSES = ("NORMAL", "PNEUMONIA")  # label 0, label 1
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".dcm", ".dicom", ""}
SPLITS = ("train", "validation", "internal-test")
MANIFEST_NAME = "split_manifest.json"
# Bump when the cached arrays would change meaning (preprocess or loader semantics).
CACHE_VERSION = 1

_PATIENT_PATTERNS = (
    # person1000_bacteria_2931.jpeg, person1000_virus_1681.jpeg
    (re.compile(r"^person(\d+)_", re.IGNORECASE), "person"),
    # IM-0115-0001.jpeg and NORMAL2-IM-0115-0001.jpeg: the same number in both series is treated as
    # one patient. Grouping too much never leaks; grouping too little would.
    (re.compile(r"^(?:NORMAL2-)?IM-(\d+)-", re.IGNORECASE), "IM"),
)


@dataclass(frozen=True)
class Sample:
    """One labelled file; ``rel`` is its path relative to the dataset root (the manifest key)."""

    path: Path
    rel: str
    label: int


@dataclass
class Split:
    """The patient-level train / validation / internal-test split of a set of samples."""

    train: list[Sample]
    validation: list[Sample]
    internal_test: list[Sample]
    seed: int
    fractions: tuple[float, float, float]
    source: str = ""
    notes: list[str] = field(default_factory=list)

    def parts(self) -> dict[str, list[Sample]]:
        return {"train": self.train, "validation": self.validation,
                "internal-test": self.internal_test}

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for name, samples in self.parts().items():
            c = Counter(s.label for s in samples)
            out[name] = {"n": len(samples), CLASSES[0]: c[0], CLASSES[1]: c[1],
                         "patients": len({patient_id(s.rel) for s in samples})}
        return out

    def manifest(self) -> dict[str, Any]:
        """JSON-ready: seed, fractions, counts and every file's split (names only, no pixels)."""
        files = {s.rel: {"split": name, "label": CLASSES[s.label], "patient": patient_id(s.rel)}
                 for name, samples in self.parts().items() for s in samples}
        return {"format": 1, "source": self.source, "seed": self.seed,
                "fractions": list(self.fractions), "grouping": "patient id from the file name",
                "notes": self.notes, "counts": self.counts(), "files": dict(sorted(files.items()))}


def patient_id(name: str) -> str:
    """The patient key parsed from a Kermany file name; unknown patterns are their own patient."""
    base = Path(name).name
    for pattern, prefix in _PATIENT_PATTERNS:
        m = pattern.match(base)
        if m:
            return f"{prefix}-{int(m.group(1))}"
    # Unknown naming: one file, one patient (cannot group what we cannot parse).
    return f"file-{name}"


def _is_image_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and (
        path.suffix.lower() in IMAGE_SUFFIXES)


def scan_labelled(root: Path) -> list[Sample]:
    """Files under ``root/NORMAL`` and ``root/PNEUMONIA`` (recursively), sorted by relative path."""
    root = Path(root)
    samples: list[Sample] = []
    for label, cls in enumerate(CLASSES):
        folder = _class_dir(root, cls)
        if folder is None:
            continue
        for path in sorted(p for p in folder.rglob("*") if _is_image_file(p)):
            samples.append(Sample(path, path.relative_to(root).as_posix(), label))
    return samples


def _class_dir(root: Path, cls: str) -> Path | None:
    for candidate in (root / cls, root / cls.lower()):
        if candidate.is_dir():
            return candidate
    return None


def is_labelled_dir(root: Path) -> bool:
    return _class_dir(root, CLASSES[0]) is not None or _class_dir(root, CLASSES[1]) is not None


def split_by_patient(samples: Sequence[Sample], *, seed: int = 42,
                     fractions: tuple[float, float, float] = (0.70, 0.15, 0.15),
                     source: str = "") -> Split:
    """Assign whole patients to train / validation / internal-test, stratified by class.

    Patients are grouped by :func:`patient_id`, each labelled by its majority class, shuffled with
    ``seed`` within their class and dealt out in order until each split holds its fraction of that
    class's images. Deterministic for a given file list and seed.
    """
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) <= 0:
        raise ValueError(f"split fractions must be positive and sum to 1, got {fractions}")
    groups: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        groups[patient_id(s.rel)].append(s)
    by_class: dict[int, list[str]] = defaultdict(list)
    for pid in sorted(groups):
        labels = Counter(s.label for s in groups[pid])
        by_class[max(labels, key=lambda k: (labels[k], k))].append(pid)
    rng = random.Random(seed)
    parts: list[list[Sample]] = [[], [], []]
    for label in sorted(by_class):
        pids = by_class[label]
        rng.shuffle(pids)
        total = sum(len(groups[p]) for p in pids)
        bounds = np.cumsum(fractions)[:2] * total
        done = 0
        for pid in pids:
            # A patient goes to the first split whose share of this class is not yet filled.
            k = int(np.searchsorted(bounds, done, side="right"))
            parts[min(k, 2)].extend(groups[pid])
            done += len(groups[pid])
    for part in parts:
        part.sort(key=lambda s: s.rel)
    return Split(parts[0], parts[1], parts[2], seed, fractions, source)


def split_from_manifest(manifest: dict[str, Any], root: Path) -> Split:
    """Rebuild a saved split over the same files under ``root`` (missing files are an error)."""
    parts: dict[str, list[Sample]] = {name: [] for name in SPLITS}
    missing = []
    for rel, info in manifest["files"].items():
        path = Path(root) / rel
        if not path.is_file():
            missing.append(rel)
            continue
        parts[info["split"]].append(Sample(path, rel, CLASSES.index(info["label"])))
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} files of the split manifest are not under {root} "
            f"(first: {missing[0]})")
    return Split(parts["train"], parts["validation"], parts["internal-test"],
                 int(manifest["seed"]), tuple(manifest["fractions"]),  # type: ignore[arg-type]
                 manifest.get("source", ""), list(manifest.get("notes", [])))


def training_root(data_dir: Path) -> Path:
    """The folder to split: ``DATA_DIR/train`` in the Kaggle layout, else ``DATA_DIR`` itself."""
    data_dir = Path(data_dir)
    if (data_dir / "train").is_dir() and is_labelled_dir(data_dir / "train"):
        return data_dir / "train"
    if is_labelled_dir(data_dir):
        return data_dir
    raise FileNotFoundError(
        f"{data_dir} holds neither train/NORMAL|PNEUMONIA (the Kaggle layout) nor NORMAL/ and "
        "PNEUMONIA/ folders")


def write_manifest(split: Split, path: Path) -> Path:
    path.write_text(json.dumps(split.manifest(), indent=1) + "\n")
    return path


# ---------------------------------------------------------------------------------------------
# Arrays: load_grey -> preprocess, once per file, cached.


@dataclass
class Arrays:
    """Preprocessed images of a list of samples; ``errors`` maps files that could not be read."""

    x: np.ndarray  # (n, size, size, 1) float32 in [0, 1]
    y: np.ndarray  # (n,) int32
    samples: list[Sample]
    errors: dict[str, str] = field(default_factory=dict)


def load_one(path: Path, size: int) -> np.ndarray:
    """The serving preprocessing of one file: ingestion's grey image, then ``preprocess``."""
    from pneumoscreen.worker.ingest import load_grey

    return preprocess(load_grey(path).grey, size)


def _cache_key(samples: Sequence[Sample], size: int) -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION}:{size}".encode())
    for s in samples:
        st = s.path.stat()
        h.update(f"{s.rel}|{s.label}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def load_arrays(samples: Sequence[Sample], size: int, *, cache_dir: Path | None = None,
                workers: int = 2, progress: Callable[[int], None] | None = None) -> Arrays:
    """Preprocess ``samples`` (reusing an on-disk cache keyed by the files and the input size).

    Files ingestion cannot read are left out and reported in ``errors`` rather than aborting a
    training or evaluation run over thousands of files.
    """
    samples = list(samples)
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"arrays-{size}-{_cache_key(samples, size)}.npz"
        if cache_file.is_file():
            with np.load(cache_file, allow_pickle=False) as data:
                keep = set(data["kept"].tolist())
                errors = json.loads(str(data["errors"]))
                x, y = data["x"], data["y"]
            if progress:
                progress(len(samples))
            return Arrays(x, y, [s for s in samples if s.rel in keep], errors)

    from pneumoscreen.worker.ingest import IngestError

    def work(s: Sample) -> np.ndarray | str:
        try:
            return load_one(s.path, size)
        except (IngestError, ValueError, OSError) as exc:
            return f"{type(exc).__name__}: {exc}"

    xs: list[np.ndarray] = []
    kept: list[Sample] = []
    errors: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for s, out in zip(samples, pool.map(work, samples), strict=True):
            if isinstance(out, str):
                errors[s.rel] = out
            else:
                xs.append(out)
                kept.append(s)
            if progress:
                progress(1)
    x = np.stack(xs).astype(np.float32) if xs else np.zeros((0, size, size, 1), np.float32)
    y = np.array([s.label for s in kept], dtype=np.int32)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp.npz")
        np.savez(tmp, x=x, y=y, kept=np.array([s.rel for s in kept]),
                 errors=np.array(json.dumps(errors)))
        tmp.replace(cache_file)
    return Arrays(x, y, kept, errors)


# ---------------------------------------------------------------------------------------------
# tf.data pipelines.


def make_dataset(x: np.ndarray, y: np.ndarray, *, batch_size: int, training: bool, seed: int = 0,
                 augment: AugmentConfig | None = None, viral: np.ndarray | None = None,
                 class_weight: dict[int, float] | None = None,
                 viral_weight: dict[int, float] | None = None) -> Any:
    """Batches for ``fit``; shuffled and augmented only when ``training``.

    Without ``viral``: ``(image, label)``. With it (:func:`subtype_labels`, -1 = unknown):
    ``(image, {"pneumonia", "viral"}, weights)`` where the pneumonia weight is the class weight
    and the viral weight is zero for every normal image and every pneumonia without a known
    subtype, so the subtype loss is computed on labelled pneumonia images only.
    """
    import tensorflow as tf

    if viral is None:
        ds = tf.data.Dataset.from_tensor_slices((x, y.astype(np.float32)))
    else:
        cw = class_weight or {0: 1.0, 1: 1.0}
        vw = viral_weight or {0: 1.0, 1: 1.0}
        w_p = np.array([cw[int(v)] for v in y], np.float32)
        # Normal images never count for the subtype, whatever their viral entry says.
        w_v = np.array([vw[int(v)] if lab == 1 and v >= 0 else 0.0
                        for lab, v in zip(y, viral, strict=True)], np.float32)
        targets = {"pneumonia": y.astype(np.float32),
                   "viral": np.maximum(viral, 0).astype(np.float32)}
        ds = tf.data.Dataset.from_tensor_slices((x, targets, {"pneumonia": w_p, "viral": w_v}))
    ds = ds.cache()
    if training:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if training and augment is not None:
        fn = make_augmenter(augment, seed)
        ds = ds.map(lambda img, *rest: (fn(img), *rest), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def subtype_label(rel: str) -> int:
    """1 viral, 0 bacterial (from a Kermany pneumonia file name), -1 unknown or normal."""
    name = Path(rel).name.lower()
    if "_virus" in name:
        return 1
    if "_bacteria" in name:
        return 0
    return -1


def subtype_labels(samples: Iterable[Sample]) -> np.ndarray:
    """:func:`subtype_label` of each pneumonia sample; -1 for normals."""
    return np.array([subtype_label(s.rel) if s.label == 1 else -1 for s in samples], np.int32)

