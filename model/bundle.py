"""The model contract: a ``.keras`` file plus a JSON sidecar that travels with it.

The sidecar holds what serving needs besides the weights: version, input size, the recall-tuned
threshold, the target recall, the file's sha256 and whether the network was trained at all.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pneumoscreen.db.models import model_label
from pneumoscreen.model.architectures import crop_pixels, load_keras
from pneumoscreen.model.names import BUNDLED, BUNDLED_PREFIX, DEFAULT_BUNDLED, bundled_dir
from pneumoscreen.model.preprocess import preprocess

BUNDLED_NAME = BUNDLED[DEFAULT_BUNDLED]


def inside(path: Path, folders: list[Path] | tuple[Path, ...]) -> bool:
    """Whether ``path`` (symlinks resolved) lies inside one of ``folders`` (resolved too)."""
    real = Path(path).resolve()
    return any(real.is_relative_to(Path(f).expanduser().resolve()) for f in folders)


def bundled_model_path(name: str = DEFAULT_BUNDLED) -> Path:
    if name not in BUNDLED:
        raise ModelFileError(f"no bundled model {name!r}; bundled: {', '.join(BUNDLED)}")
    return bundled_dir() / BUNDLED[name]


def model_file(ref: str | Path | None) -> Path:
    """The model file a setting or option names: a path, ``bundled:NAME``, or None (the default
    bundled model)."""
    if ref is None or str(ref) == "":
        return bundled_model_path()
    text = str(ref)
    if text.startswith(BUNDLED_PREFIX):
        return bundled_model_path(text[len(BUNDLED_PREFIX):])
    return Path(ref)


def sidecar_path(model_path: Path) -> Path:
    return Path(model_path).with_suffix(".json")


def _sha256(path: Path) -> str:
    # Imported here, not at the top: commands that only read a sidecar stay without pydicom.
    from pneumoscreen.worker.ingest.files import file_sha256

    return file_sha256(path)


class ModelFileError(RuntimeError):
    """The model file or its sidecar is missing, inconsistent or unreadable."""


@dataclass
class ModelSpec:
    """The sidecar's contents."""

    name: str
    version: str
    input_size: int
    threshold: float
    trained: bool
    sha256: str = ""
    channels: int = 1
    target_recall: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelSpec:
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        missing = {"name", "version", "input_size", "threshold", "trained"} - data.keys()
        if missing:
            raise ModelFileError(f"model sidecar lacks {sorted(missing)}")
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(**{k: v for k, v in data.items() if k in known}, extra=extra)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        extra = data.pop("extra")
        return {**data, **extra}

    @property
    def input_spec(self) -> dict[str, Any]:
        return {"height": self.input_size, "width": self.input_size, "channels": self.channels,
                "range": [0.0, 1.0], "preprocess": "pneumoscreen.model.preprocess"}

    @property
    def label(self) -> str:
        return model_label(self.name, self.version, self.trained)

    @property
    def score_histogram(self) -> dict[str, Any] | None:
        """The validation histogram of the calibrated pneumonia probability, as
        ``{"bins": [edges], "counts": [...], "n", "split", "of"}`` (the drift reference), or
        None for a model that does not carry one."""
        hist = self.extra.get("score_histogram")
        if not isinstance(hist, dict):
            return None
        bins, counts = hist.get("bins"), hist.get("counts")
        if not isinstance(bins, list) or not isinstance(counts, list) \
                or len(bins) != len(counts) + 1 or len(counts) == 0:
            return None
        return hist


def write_sidecar(model_path: Path, spec: ModelSpec) -> Path:
    """Write the sidecar for ``model_path``, stamping the file's current sha256 into it."""
    spec.sha256 = _sha256(model_path)
    path = sidecar_path(model_path)
    path.write_text(json.dumps(spec.to_json(), indent=2, sort_keys=True) + "\n")
    return path


def read_spec(model_path: Path) -> ModelSpec:
    side = sidecar_path(model_path)
    if not Path(model_path).is_file():
        raise ModelFileError(f"model file {model_path} does not exist")
    if not side.is_file():
        raise ModelFileError(f"model sidecar {side} does not exist (it must sit beside the model)")
    try:
        return ModelSpec.from_json(json.loads(side.read_text()))
    except (json.JSONDecodeError, TypeError) as exc:
        raise ModelFileError(f"model sidecar {side} is not valid: {exc}") from exc


# Sane bounds for what a sidecar may say: a threshold of 2.0 would flag nothing, an input of
# 100000 pixels a side would exhaust memory on the first model call.
INPUT_SIZE_RANGE = (16, 1024)
_SHA256 = re.compile(r"[0-9a-f]{64}")


def validate_spec(spec: ModelSpec, where: Path | str) -> None:
    """Refuse a sidecar whose values no real model has (ModelFileError naming the field)."""
    def bad(what: str) -> ModelFileError:
        return ModelFileError(f"model sidecar of {where}: {what}")

    if not isinstance(spec.sha256, str) or not _SHA256.fullmatch(spec.sha256):
        raise bad("sha256 (64 lower-case hex digits) is required")
    threshold = spec.threshold
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) \
            or not 0.0 < float(threshold) < 1.0:
        raise bad(f"threshold must lie strictly between 0 and 1, not {threshold!r}")
    low, high = INPUT_SIZE_RANGE
    if isinstance(spec.input_size, bool) or not isinstance(spec.input_size, int) \
            or not low <= spec.input_size <= high:
        raise bad(f"input_size must be an integer in [{low}, {high}], not {spec.input_size!r}")
    if spec.channels not in (1, 3):
        raise bad(f"channels must be 1 or 3, not {spec.channels!r}")
    for name in ("name", "version"):
        value = getattr(spec, name)
        if not isinstance(value, str) or not 0 < len(value) <= 64:
            raise bad(f"{name} must be a string of 1 to 64 characters")
    arch = spec.extra.get("architecture")
    arch = arch if isinstance(arch, dict) else {}
    members = arch.get("members")
    for record in [arch, *(members if isinstance(members, list) else [])]:
        if isinstance(record, dict) and "crop" in record and not _fits(record["crop"],
                                                                       spec.input_size):
            raise bad(f"architecture crop must be [y0, x0, y1, x1] fractions with y0 < y1 and "
                      f"x0 < x1 leaving at least 32 px, not {record['crop']!r}")


def _fits(crop: Any, size: int) -> bool:
    """``crop`` is a box a network of input ``size`` can be cut to (documentation of what the
    model's crop layer does: Grad-CAM reads the layer itself)."""
    if not isinstance(crop, list):
        return False
    try:
        crop_pixels(size, tuple(crop))  # checks the box too
    except ValueError:
        return False
    return True


def verified_spec(model_path: Path, *, verify: bool = True) -> ModelSpec:
    """The sidecar's spec, validated, with ``sha256`` set to the file's own hash.

    ``verify`` refuses a sidecar without a sha256 or a file whose hash differs from the one its
    sidecar records, so a swapped file cannot pass as another version.
    """
    spec = read_spec(model_path)
    sha = _sha256(model_path)
    if verify:
        validate_spec(spec, model_path)
    if verify and spec.sha256 != sha:
        raise ModelFileError(
            f"{model_path} has sha256 {sha[:12]}…, its sidecar says {spec.sha256[:12]}…"
        )
    spec.sha256 = sha
    return spec


def check_model_file(ref: str | Path | None) -> Path:
    """Refuse a model that cannot load before anything is registered: the file exists, is a
    Keras archive, its sidecar is valid and records the file's sha256 (ModelFileError)."""
    import zipfile

    path = model_file(ref)
    try:
        verified_spec(path)
        if not zipfile.is_zipfile(path):
            raise ModelFileError(f"model file {path} is not a Keras archive")
    except OSError as exc:
        raise ModelFileError(f"cannot read model file {path}: {exc.strerror or exc}") from exc
    return path


@dataclass
class Scores:
    """One model call's outputs: pneumonia probabilities; viral-vs-bacterial ones and the
    atypicality score (each None for a model without that output)."""

    pneumonia: np.ndarray
    viral: np.ndarray | None = None
    atypicality: np.ndarray | None = None


def _flat(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.float32).reshape(-1)


class LoadedModel:
    """A Keras model with its spec; ``predict`` is the single model call (every output at once;
    ``pneumonia_probabilities`` keeps one output of it)."""

    def __init__(self, path: Path, spec: ModelSpec, keras_model: Any, device: str) -> None:
        self.path = path
        self.spec = spec
        self.keras_model = keras_model
        self.device = device
        self._cam_targets: list[Any] | None = None
        self._forward: Any | None = None

    def preprocess(self, grey: np.ndarray) -> np.ndarray:
        return preprocess(grey, self.spec.input_size)

    def predict(self, inputs: np.ndarray) -> Scores:
        """Every output for ``(n, size, size, 1)`` inputs, in one model call."""
        import tensorflow as tf

        inputs = np.asarray(inputs, dtype=np.float32)
        expected = (self.spec.input_size, self.spec.input_size, self.spec.channels)
        if inputs.ndim != 4 or inputs.shape[1:] != expected:
            raise ValueError(f"inputs shape {inputs.shape} does not match input {expected}")
        if len(inputs) == 0:
            empty = np.zeros((0,), dtype=np.float32)
            return Scores(empty, empty if self.has_subtype else None,
                          empty if self.atypicality_threshold is not None else None)
        with tf.device(self.device):
            out = self.forward(inputs)
        if isinstance(out, dict):
            viral, atyp = out.get("viral"), out.get("atypicality")
            return Scores(_flat(out["pneumonia"]), None if viral is None else _flat(viral),
                          None if atyp is None else _flat(atyp))
        return Scores(_flat(out), None)  # wave-1 models: one output, no subtype

    @property
    def forward(self) -> Any:
        """The network's inference pass as one traced graph for any number of inputs.

        Why: called eagerly, a three-member ensemble pays ~0.2 s of per-op overhead on every
        call whatever the number of inputs; traced once, that overhead goes (same outputs).
        """
        if self._forward is None:
            import tensorflow as tf

            size, channels = self.spec.input_size, self.spec.channels
            model = self.keras_model
            self._forward = tf.function(
                lambda x: model(x, training=False),
                input_signature=[tf.TensorSpec([None, size, size, channels], tf.float32)])
        return self._forward

    @property
    def atypicality_threshold(self) -> float | None:
        """Scores above it are atypical for this model (set on validation; in the sidecar)."""
        value = (self.spec.extra.get("atypicality") or {}).get("threshold")
        return None if value is None else float(value)

    def heatmaps(self, inputs: np.ndarray) -> np.ndarray:
        """Grad-CAM maps ``(n, h, w)`` in [0, 1] for the inputs, in one gradient pass per
        network (an ensemble: the mean of its members' maps)."""
        import tensorflow as tf

        from pneumoscreen.model import gradcam

        if self._cam_targets is None:
            self._cam_targets = gradcam.targets(self.keras_model, self.spec.extra)
        with tf.device(self.device):
            return gradcam.compute(self._cam_targets, np.asarray(inputs, np.float32))

    def pneumonia_probabilities(self, inputs: np.ndarray) -> np.ndarray:
        """Pneumonia probabilities for ``(n, size, size, 1)`` inputs, in one model call."""
        return self.predict(inputs).pneumonia

    @property
    def has_subtype(self) -> bool:
        names = getattr(self.keras_model, "output_names", None) or []
        return "viral" in names or isinstance(getattr(self.keras_model, "output", None), dict)


_cache: dict[tuple[str, str], LoadedModel] = {}
_cache_lock = threading.Lock()


def load_model(path: Path | str | None = None, *, verify: bool = True,
               runtime: Any | None = None) -> LoadedModel:
    """Load (once per process) the model at ``path``, default the bundled one.

    ``verify``: see :func:`verified_spec`. ``runtime`` is a
    :class:`~pneumoscreen.model.runtime.RuntimeConfig`.
    """
    from pneumoscreen.model.runtime import RuntimeConfig, configure

    model_path = model_file(path)
    spec = verified_spec(model_path, verify=verify)
    key = (str(model_path.resolve()), spec.sha256)
    with _cache_lock:
        if key not in _cache:
            device = configure(runtime or RuntimeConfig())
            try:
                keras_model = load_keras(model_path)
            except Exception as exc:  # keras raises many types for a bad archive
                raise ModelFileError(f"cannot load {model_path}: {exc}") from exc
            _cache[key] = LoadedModel(model_path, spec, keras_model, device)
        return _cache[key]
