"""Worker start-up: what a ``screen worker`` does before it takes its first task.

Before the fork: logging quietened, the database migrated once. In each pool process after the
fork: fresh database engines, a GPU of its own (``SCREEN_GPU_PER_PROCESS``), the model loaded and
warmed. The main process says "ready" only once every pool process is warm, then sweeps what a
broker restart stranded. Loaded by the Celery app's ``include``, beside the tasks.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from billiard.process import current_process
from celery.signals import worker_init, worker_process_init, worker_ready

from pneumoscreen.db import get_engine, reset_engines, session_scope
from pneumoscreen.db.audit import audit_events
from pneumoscreen.db.queries import model_version_for
from pneumoscreen.worker.audit import audit
from pneumoscreen.worker.intake.sweep import sweep_safely
from pneumoscreen.worker.keys import checked_key
from pneumoscreen.worker.logs import quiet_libraries
from pneumoscreen.worker.screening.model_choice import configured_model
from pneumoscreen.worker.settings import Settings, get_settings

log = logging.getLogger(__name__)

# Each pool process marks itself warm here; the main process waits for all of them before it
# says "ready" and starts taking tasks (set by the main process, inherited through the fork).
WARM_DIR_ENV = "PNEUMOSCREEN_WARM_DIR"
WARM_TIMEOUT_S = 900


@worker_init.connect
def _before_pool(**_: Any) -> None:
    quiet_libraries()
    os.environ[WARM_DIR_ENV] = tempfile.mkdtemp(prefix="pneumoscreen-warm-")
    # Migrate once here, before the fork: pool processes opening a fresh SQLite file together
    # would race to create the tables.
    try:
        get_engine(get_settings().effective_database_url)
    except Exception as exc:  # the pool processes report it again, with each task
        log.error("the database cannot be opened: %s", exc)


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    # Connections opened before the fork must not be shared between processes.
    reset_engines()
    settings = get_settings()
    index = current_process().index
    if settings.gpu_per_process:
        pin_gpu(index, os.environ)
    try:
        warm(settings, index)
    finally:
        folder = os.environ.get(WARM_DIR_ENV)
        if folder and os.path.isdir(folder):
            Path(folder, str(os.getpid())).touch()


@worker_ready.connect
def _wait_until_warm(sender: Any = None, **_: Any) -> None:
    """Hold "ready" (and the first task) until every pool process has its model warm."""
    folder = os.environ.get(WARM_DIR_ENV)
    wanted = getattr(getattr(sender, "pool", None), "num_processes", None) or 1
    if not folder:
        return
    deadline = time.monotonic() + WARM_TIMEOUT_S
    while len(os.listdir(folder)) < wanted and time.monotonic() < deadline:
        time.sleep(0.2)
    shutil.rmtree(folder, ignore_errors=True)


@worker_ready.connect  # after _wait_until_warm: the pool processes have migrated the database
def _sweep_at_start(**_: Any) -> None:
    # What a broker restart (or a crash) stranded is sent again before the first beat tick.
    sweep_safely(get_settings())


def warm(settings: Settings, index: int = 0) -> None:
    """Open the database (engine, migration check, the key's fingerprint), load the configured
    model and run one dummy chunk (and heatmap) through it, so the first task runs at steady
    speed. What cannot be warmed is logged; its tasks then say why."""
    started = time.monotonic()
    try:
        checked_key(settings)
        model = configured_model(settings)
        record_default(model, settings)
        size, channels = model.spec.input_size, model.spec.channels
        dummy = np.zeros((settings.chunk_size, size, size, channels), np.float32)
        model.predict(dummy)
        if settings.heatmaps != "none":
            model.heatmaps(dummy[:1])
    except Exception as exc:
        log.error("pool process %d: the model could not be warmed: %s", index, exc)
        return
    log.info("model %s warm in pool process %d (%.1f s)", model.spec.label, index,
             time.monotonic() - started)


def record_default(model: Any, settings: Settings) -> None:
    """Audit a change of the default model, as a worker starting with it sees it."""
    with session_scope(settings.effective_database_url) as session:
        mv = model_version_for(model.spec, session=session)
        last = audit_events(session=session, action="model.default", limit=1)
        if not last or last[0]["params"].get("sha256") != mv.file_sha256:
            audit(session, "model.default", model_version=mv.id, label=mv.label,
                  sha256=mv.file_sha256)


def pin_gpu(index: int, environ: Any) -> str:
    """Let pool process ``index`` see one GPU only (before TensorFlow is imported in it).

    Respects a CUDA_VISIBLE_DEVICES list given to the whole worker: process i takes its i-th
    entry. Returns the GPU chosen; TensorFlow then calls it /GPU:0.
    """
    visible = [d for d in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    if visible and index >= len(visible):
        raise RuntimeError(f"pool process {index} has no GPU: CUDA_VISIBLE_DEVICES lists "
                           f"{len(visible)}; use --concurrency {len(visible)}")
    chosen = visible[index] if visible else str(index)
    environ["CUDA_VISIBLE_DEVICES"] = chosen
    log.info("pool process %d uses GPU %s", index, chosen)
    return chosen
