"""Rows as the worker writes them (image, prediction, heatmap), real film files, and a
`screen web` server in its own process, for the web tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

PASSWORD = "correct horse battery staple"


def film(path: Path, seed: int = 0) -> Path:
    """A grey PNG chest-sized film (a gradient with a bright blob)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:320, 0:256]
    img = 60 + 0.3 * y + 80 * np.exp(-((x - 90) ** 2 + (y - 150) ** 2) / 900.0)
    img = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img, "L").save(path, "PNG")
    return path


def add_image(url: str, path: Path, probability: float, *, flagged: bool | None = None,
              in_scope: bool = True, scope_reason: str | None = None,
              view: str | None = "PA", study_uid: str | None = None,
              heatmap: bool = True) -> int:
    """One screened image: a studies row, its prediction (and Grad-CAM map); its id."""
    from pneumoscreen.db import Batch, Heatmap, Image, ImageStatus, Prediction, session_scope
    from pneumoscreen.db.models import utcnow
    from pneumoscreen.db.queries import get_or_create_model_version
    from pneumoscreen.model.gradcam import to_bytes

    flagged = probability >= 0.5 if flagged is None else flagged
    with session_scope(url) as session:
        mv = get_or_create_model_version(
            session=session, name="pneumoscreen-test", version="1.0", file_sha256="ab" * 32,
            input_spec={"height": 64}, threshold=0.5, target_recall=0.95, trained=True,
            sidecar={"score_histogram": {"split": "validation", "n": 100,
                                         "bins": [i / 4 for i in range(5)],
                                         "counts": [30, 10, 10, 50], "flag_rate": 0.6,
                                         "out_of_scope_rate": 0.01}})
        batch = Batch(kind="submit", source="test")
        session.add(batch)
        session.flush()
        now = utcnow()
        image = Image(sha256=os.urandom(32).hex(), source_path=str(path), format="png",
                      status=ImageStatus.done, batch_id=batch.id, modality="DX",
                      view_position=view, study_instance_uid=study_uid,
                      patient_key="f" * 64, finished_at=now)
        session.add(image)
        session.flush()
        pred = Prediction(image_id=image.id, model_version_id=mv.id, batch_id=batch.id,
                          probability=probability, p_viral=0.3, in_scope=in_scope,
                          scope_reason=scope_reason, atypicality=0.5, threshold=0.5,
                          flagged=flagged, created_at=now)
        session.add(pred)
        session.flush()
        if heatmap:
            cam = np.zeros((7, 7), np.float32)
            cam[3:5, 1:3] = 1.0
            session.add(Heatmap(prediction_id=pred.id, height=7, width=7, data=to_bytes(cam)))
        return image.id


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(data_dir: Path, url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCREEN_")}
    env.update({"SCREEN_DATA_DIR": str(data_dir), "SCREEN_DATABASE_URL": url,
                "SCREEN_CONFIG": str(data_dir / "none.toml"), **extra})
    return env


@contextmanager
def web_server(env: dict[str, str], log: Path) -> Iterator[str]:
    """`screen web` on a free port; its base URL once /healthz answers."""
    port = free_port()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from pneumoscreen.worker.cli import main; main()", "web",
             "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"screen web did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one series in a Prometheus exposition (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v
                                           for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def chromium_args() -> dict[str, Any]:
    return {"executable_path": "/usr/bin/chromium", "headless": True,
            "args": ["--headless", "--no-sandbox", "--disable-gpu",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync"]}
