"""``screen bench web``: server time of the reading list over a database of made-up rows."""

from __future__ import annotations

import datetime as dt
import json
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

SEED = 7


def fill(url: str, images: int) -> dict[str, int]:
    """``images`` screened images with predictions (a third flagged, 2% outside scope), one
    read in ten, a reader ``bench``; returns the counts."""
    import random

    from sqlalchemy import insert

    from pneumoscreen.db import session_scope
    from pneumoscreen.db import web as q
    from pneumoscreen.db.models import Batch, Image, ImageStatus, Prediction, Read
    from pneumoscreen.db.queries import get_or_create_model_version
    from pneumoscreen.worker.web.auth import hash_password

    rng = random.Random(SEED)
    now = dt.datetime.now(dt.timezone.utc)
    flagged = outside = 0
    with session_scope(url) as session:
        # The bundled model's sidecar (tens of kB of JSON): the list must not pay for it per row.
        from pneumoscreen.model.bundle import bundled_model_path, sidecar_path

        sidecar = json.loads(sidecar_path(bundled_model_path()).read_text())
        mv = get_or_create_model_version(
            session=session, name="bench", version="1", file_sha256="b" * 64,
            input_spec={"height": 224}, threshold=0.5, target_recall=0.95, trained=True,
            sidecar=sidecar)
        batch = Batch(kind="submit", source="bench")
        session.add(batch)
        session.flush()
        user = q.add_user("bench", "reader", hash_password("bench-password"), session=session)
        images_, preds, reads = [], [], []
        for i in range(1, images + 1):
            at = now - dt.timedelta(seconds=images - i)
            images_.append({"id": i, "sha256": f"{i:064x}", "source_path": f"/in/img{i}.dcm",
                            "format": "dicom", "status": ImageStatus.done, "batch_id": batch.id,
                            "patient_key": f"{rng.getrandbits(64):016x}", "modality": "DX",
                            "view_position": "PA", "created_at": at, "updated_at": at,
                            "finished_at": at, "study_instance_uid": f"1.2.3.{i // 2}"})
            p = rng.random()
            is_flagged = p < 1 / 3
            in_scope = rng.random() >= 0.02
            flagged += is_flagged
            outside += not in_scope
            prob = 0.5 + p * 1.5 if is_flagged else 0.5 * rng.random()
            preds.append({"id": i, "image_id": i, "model_version_id": mv.id,
                          "batch_id": batch.id, "probability": min(prob, 1.0),
                          "p_viral": rng.random(), "in_scope": in_scope,
                          "scope_reason": None if in_scope else "atypical film",
                          "atypicality": rng.random() * 2, "threshold": 0.5,
                          "flagged": is_flagged, "created_at": at})
            if i % 10 == 0:
                reads.append({"image_id": i, "prediction_id": i, "user_id": user.id,
                              "verdict": "agree", "created_at": at})
        for table, rows in ((Image, images_), (Prediction, preds), (Read, reads)):
            for start in range(0, len(rows), 2000):
                session.execute(insert(table), rows[start:start + 2000])
    return {"images": images, "flagged": flagged, "outside": outside}


def _server_ms(response: Any) -> float:
    match = re.search(r"app;dur=([0-9.]+)", response.headers.get("server-timing", ""))
    if response.status_code != 200 or not match:
        raise RuntimeError(f"{response.request.url.path} answered {response.status_code}")
    return float(match.group(1))


def bench(*, images: int, requests: int, limit: int,
          database_url: str | None = None) -> dict[str, Any]:
    import warnings

    with warnings.catch_warnings():  # Starlette's note about its test client's HTTP library
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    from pneumoscreen.worker.settings import Settings
    from pneumoscreen.worker.web.app import create_app

    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        url = database_url or f"sqlite:///{Path(tmp) / 'bench.sqlite3'}"
        counts = fill(url, images)
        settings = Settings(database_url=url, data_dir=Path(tmp) / "data")
        with TestClient(create_app(settings)) as client:
            page = client.get("/login")
            token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
            client.post("/login", data={"username": "bench", "password": "bench-password",
                                        "csrf": token}, follow_redirects=False)
            first = client.get(f"/?limit={limit}")
            rows = first.text.count("data-image-id=")
            times = [_server_ms(client.get(f"/?limit={limit}")) for _ in range(requests)]
            image = [_server_ms(client.get(f"/image/{i}")) for i in range(1, requests + 1)]
            # /metrics caches its figures 2 s: time the uncached scrapes
            scrape = []
            for _ in range(min(requests, 5)):
                time.sleep(2.1)
                scrape.append(_server_ms(client.get("/metrics")))
        from pneumoscreen.db.session import reset_engines

        reset_engines()
    times.sort()
    return {**counts, "rows": rows, "requests": requests,
            "median_ms": statistics.median(times),
            "p95_ms": times[min(len(times) - 1, round(0.95 * (len(times) - 1)))],
            "image_median_ms": statistics.median(image),
            "metrics_median_ms": statistics.median(scrape),
            "database": "temporary SQLite" if database_url is None else "given database"}
