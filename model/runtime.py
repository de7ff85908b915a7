"""TensorFlow runtime set-up: threads, GPU memory growth, mixed precision, device placement.

Called once per process before the first model is built or loaded.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RuntimeConfig:
    device: str | None = None  # e.g. "/GPU:0", "/CPU:0"; None = TensorFlow's choice
    mixed_precision: bool = False
    memory_growth: bool = True
    intra_threads: int = 0
    inter_threads: int = 0


_configured: RuntimeConfig | None = None


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def auto_runtime(*, device: str | None = None, mixed_precision: bool = False,
                 memory_growth: bool = True, intra_threads: int = 0, inter_threads: int = 0,
                 decode_threads: int = 2) -> RuntimeConfig:
    """A RuntimeConfig whose 0 thread counts are computed: leave a core's worth for decoding."""
    cores = available_cores()
    # Decoding threads mostly wait on PIL/numpy with the GIL released; TensorFlow's own pool
    # would otherwise take every core and the two would thrash. Inter-op: a sequential CNN gains
    # nothing from more than two.
    intra = intra_threads or max(1, cores - min(decode_threads, cores) // 2)
    inter = inter_threads or min(2, cores)
    return RuntimeConfig(device=device, mixed_precision=mixed_precision,
                         memory_growth=memory_growth, intra_threads=intra, inter_threads=inter)


def configure(cfg: RuntimeConfig) -> str:
    """Apply ``cfg`` (first call wins; TensorFlow cannot change these later). Returns the device."""
    global _configured
    import keras
    import tensorflow as tf

    if _configured is None:
        if cfg.intra_threads:
            tf.config.threading.set_intra_op_parallelism_threads(cfg.intra_threads)
        if cfg.inter_threads:
            tf.config.threading.set_inter_op_parallelism_threads(cfg.inter_threads)
        gpus = tf.config.list_physical_devices("GPU")
        for gpu in gpus:
            # Without growth TensorFlow reserves the whole card at start-up.
            tf.config.experimental.set_memory_growth(gpu, cfg.memory_growth)
        if cfg.mixed_precision:
            if not gpus:
                log.warning("mixed precision asked for but no GPU found: float16 on CPU is slow")
            keras.mixed_precision.set_global_policy("mixed_float16")
        _configured = cfg
    return resolve_device(cfg.device)


def resolve_device(device: str | None) -> str:
    """The device string to place inference on: the configured one, else GPU:0 when present.

    A configured device must exist by type *and* index: ``/GPU:3`` on a one-GPU machine is an
    error, not a silent fall-back.
    """
    import tensorflow as tf

    if device:
        try:
            wanted = tf.DeviceSpec.from_string(device)
        except ValueError as exc:
            raise RuntimeError(f"device {device!r} is not a device name (e.g. /GPU:0)") from exc
        kind = (wanted.device_type or "").upper()
        index = wanted.device_index or 0
        present = [tf.DeviceSpec.from_string(d.name) for d in tf.config.list_logical_devices()]
        if not any(d.device_type == kind and (d.device_index or 0) == index for d in present):
            raise RuntimeError(f"device {device!r} is not available on this machine")
        return device
    return "/GPU:0" if tf.config.list_logical_devices("GPU") else "/CPU:0"
