"""TensorFlow runtime settings for the worker; GPU paths with a fake tf.config (no GPU here)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from pneumoscreen.worker.settings import Settings


class TestRuntimeConfig:
    def test_settings_map_through(self) -> None:
        cfg = Settings(device="/GPU:1", mixed_precision=True, memory_growth=False,
                                      tf_intra_threads=3, tf_inter_threads=1).runtime_config()
        assert (cfg.device, cfg.mixed_precision, cfg.memory_growth) == ("/GPU:1", True, False)
        assert (cfg.intra_threads, cfg.inter_threads) == (3, 1)

    def test_auto_threads_leave_room_for_the_decoding_pool(
            self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(os, "sched_getaffinity", lambda _: set(range(8)), raising=False)
        # The decoding pool is the processes, or the threads when processes are off.
        for cfg in (Settings(decode_processes=4, decode_threads=1).runtime_config(),
                    Settings(decode_processes=0, decode_threads=4).runtime_config()):
            assert (cfg.intra_threads, cfg.inter_threads) == (6, 2)
        monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0}, raising=False)
        assert Settings(decode_processes=4).runtime_config().intra_threads == 1


class FakeConfig:
    """Records what runtime.configure asks of tf.config; reports two GPUs."""

    def __init__(self) -> None:
        self.growth: list[tuple[str, bool]] = []
        self.threads: dict[str, int] = {}
        self.experimental = self
        self.threading = self

    def list_physical_devices(self, kind: str) -> list[str]:
        return ["GPU:0", "GPU:1"] if kind == "GPU" else ["CPU:0"]

    def set_memory_growth(self, gpu: str, value: bool) -> None:
        self.growth.append((gpu, value))

    def set_intra_op_parallelism_threads(self, n: int) -> None:
        self.threads["intra"] = n

    def set_inter_op_parallelism_threads(self, n: int) -> None:
        self.threads["inter"] = n


@pytest.fixture
def fake_gpus(monkeypatch: pytest.MonkeyPatch) -> tuple[FakeConfig, list[str]]:
    import keras
    import tensorflow as tf

    from pneumoscreen.model import runtime

    fake = FakeConfig()
    policies: list[str] = []
    monkeypatch.setattr(runtime, "_configured", None)
    monkeypatch.setattr(tf, "config", fake)
    monkeypatch.setattr(runtime, "resolve_device", lambda device: device or "/GPU:0")
    monkeypatch.setattr(keras.mixed_precision, "set_global_policy", policies.append)
    return fake, policies


class TestGpuPaths:
    def test_memory_growth_per_gpu_and_mixed_policy(self, fake_gpus: Any) -> None:
        from pneumoscreen.model.runtime import configure

        fake, policies = fake_gpus
        cfg = Settings(mixed_precision=True, tf_intra_threads=2,
                                      tf_inter_threads=1).runtime_config()
        assert configure(cfg) == "/GPU:0"
        assert fake.growth == [("GPU:0", True), ("GPU:1", True)]
        assert policies == ["mixed_float16"]
        assert fake.threads == {"intra": 2, "inter": 1}

    def test_no_mixed_policy_unless_asked(self, fake_gpus: Any) -> None:
        from pneumoscreen.model.runtime import configure

        fake, policies = fake_gpus
        configure(Settings(memory_growth=False).runtime_config())
        assert fake.growth == [("GPU:0", False), ("GPU:1", False)] and policies == []


def test_a_configured_device_that_is_absent_is_a_clear_error() -> None:
    from pneumoscreen.model.runtime import resolve_device

    # No machine has a 100th GPU: the real check, no mock, on a CPU or a GPU machine alike.
    with pytest.raises(RuntimeError, match=r"device '/GPU:99' is not available"):
        resolve_device("/GPU:99")
    assert resolve_device("/CPU:0") == "/CPU:0"
