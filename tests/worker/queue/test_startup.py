"""The worker's start-up: GPU pinning per pool process."""

from __future__ import annotations

import pytest

from pneumoscreen.worker.queue.startup import pin_gpu


class TestPinGpu:
    def test_pool_process_i_sees_gpu_i(self) -> None:
        env: dict[str, str] = {}
        assert pin_gpu(1, env) == "1" and env["CUDA_VISIBLE_DEVICES"] == "1"

    def test_respects_the_workers_gpu_list(self) -> None:
        env = {"CUDA_VISIBLE_DEVICES": "2,3"}
        assert pin_gpu(1, env) == "3" and env["CUDA_VISIBLE_DEVICES"] == "3"

    def test_more_processes_than_gpus_is_an_error(self) -> None:
        with pytest.raises(RuntimeError, match="use --concurrency 2"):
            pin_gpu(2, {"CUDA_VISIBLE_DEVICES": "0,1"})
