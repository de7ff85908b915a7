"""TensorFlow runtime set-up: threads, GPU memory growth, mixed precision, device placement.

Called once per process before the first model is built or loaded.
"""

from __future__ import annotations

import logging
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
    """The device string to place inference on: the configured one, else GPU:0 when present."""
    import tensorflow as tf

    if device:
        kind = device.split(":")[-2].strip("/").upper() if ":" in device else device.upper()
        if not tf.config.list_logical_devices(kind):
            raise RuntimeError(f"device {device!r} is not available on this machine")
        return device
    return "/GPU:0" if tf.config.list_logical_devices("GPU") else "/CPU:0"
