"""`screen web` in-process (Starlette's test client over a real SQLite database), `screen users`
and `screen reads`, and the monitoring figures."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner
from web_fixtures import PASSWORD, add_image, film, metric

from pneumoscreen.model.drift import drift, ks_distance, psi, score_histogram
from pneumoscreen.worker.cli import app as cli_app
from pneumoscreen.worker.settings import Settings, get_settings
from pneumoscreen.worker.web.monitor import (
    agreement,
    control_limits,
    reason_class,
    references,
    wilson,
)


def _client(tmp_path: Path, **settings: Any) -> Any:
    from starlette.testclient import TestClient

    from pneumoscreen.worker.web.app import create_app

    return TestClient(create_app(Settings(**settings)), follow_redirects=False)


def _users(*lines: tuple[str, ...]) -> None:
    for args in lines:
        result = CliRunner().invoke(cli_app, ["users", "add", *args], input=PASSWORD + "\n")
        assert result.exit_code == 0, result.output


def _login(client: Any, name: str, password: str = PASSWORD) -> Any:
    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
    return client.post("/login", data={"username": name, "password": password, "csrf": token})


def test_users_add_list_disable(tmp_path: Path) -> None:
    _users(("rita", "--role", "reader", "--password-stdin"))
    runner = CliRunner()
    again = runner.invoke(cli_app, ["users", "add", "rita", "--password-stdin"], input="x\n")
    assert again.exit_code == 1 and "exists already" in again.output
    bad = runner.invoke(cli_app, ["users", "add", "<b>", "--password-stdin"], input="x\n")
    assert bad.exit_code == 1 and "a name is" in bad.output
    listed = json.loads(runner.invoke(cli_app, ["users", "list", "--format", "json"]).stdout)
    assert [(u["name"], u["role"], u["disabled"]) for u in listed] == [("rita", "reader", False)]
    db = get_settings().effective_database_url
    from pneumoscreen.db import session_scope
    from pneumoscreen.db.models import User

    with session_scope(db) as session:
        stored = session.query(User).one().password_hash
    assert stored.startswith("$argon2id$") and PASSWORD not in stored

    client = _client(tmp_path, database_url=db, data_dir=tmp_path / "d")
    assert _login(client, "rita").status_code == 303
    assert client.get("/").status_code == 200
    assert runner.invoke(cli_app, ["users", "disable", "rita"]).exit_code == 0
    assert client.get("/").status_code == 303  # the open session ends at the next request
    assert _login(client, "rita").status_code == 401


def test_security_headers_health_and_trusted_proxy_header(tmp_path: Path) -> None:
    _users(("sso-user", "--no-password"))
    db = get_settings().effective_database_url
    client = _client(tmp_path, database_url=db, data_dir=tmp_path / "d")
    health = client.get("/healthz")
    assert health.status_code == 200 and health.text == "ok"
    page = client.get("/login")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    cookie = page.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    # The header means nothing while the mode is off (the default) ...
    assert client.get("/", headers={"X-Remote-User": "sso-user"}).status_code == 303
    assert _login(client, "sso-user", "").status_code in (400, 401)
    # ... and names an enabled user when it is on (the test client's address is "testclient").
    sso = _client(tmp_path, database_url=db, data_dir=tmp_path / "d",
                  web_trusted_user_header="X-Remote-User", web_trusted_proxies=["testclient"])
    assert sso.get("/", headers={"X-Remote-User": "sso-user"}).status_code == 200
    assert sso.get("/", headers={"X-Remote-User": "nobody"}).status_code == 303
    closed = _client(tmp_path, database_url=db, data_dir=tmp_path / "d",
                     web_public_healthz=False, web_public_metrics=True)
    assert closed.get("/healthz").status_code == 303
    assert "pneumoscreen_database_up 1.0" in closed.get("/metrics").text


def test_reads_csv_and_bad_inputs(tmp_path: Path) -> None:
    db = get_settings().effective_database_url
    image = add_image(db, film(tmp_path / "a.png"), 0.9)
    _users(("rita", "--password-stdin"))
    client = _client(tmp_path, database_url=db, data_dir=tmp_path / "d")
    assert _login(client, "rita").status_code == 303
    token = re.search(r'name="csrf" value="([^"]+)"', client.get(f"/image/{image}").text)[1]
    post = f"/image/{image}/read"
    assert client.post(post, data={"csrf": token, "verdict": "maybe"}).status_code == 400
    assert client.post(post, data={"csrf": token, "verdict": "agree", "label": "normal",
                                   "subtype": "viral"}).status_code == 400
    assert client.post("/image/999/read", data={"csrf": token,
                                                "verdict": "agree"}).status_code == 404
    assert client.get("/?since=yesterday").status_code == 400
    assert client.get("/login?next=//evil.example").status_code == 200
    assert 'value="/"' in client.get("/login?next=//evil.example").text
    ok = client.post(post, data={"csrf": token, "verdict": "agree", "label": "pneumonia"})
    assert ok.status_code == 303 and ok.headers["location"] == f"/image/{image}?saved=1"
    out = CliRunner().invoke(cli_app, ["reads", "--format", "csv"]).stdout.splitlines()
    assert out[0].startswith("read_id,image_id,prediction_id,user,verdict,label")
    assert f",{image}," in out[1] and ",rita,agree,pneumonia," in out[1]
    assert metric(client.get("/metrics").text, "pneumoscreen_reader_ppv") == 1.0


def test_monitoring_figures() -> None:
    lo, hi = wilson(8, 10)
    assert 0.49 < lo < 0.50 and 0.94 < hi < 0.95  # the textbook Wilson interval of 8/10
    assert wilson(0, 0) is None
    lo, hi = control_limits(0.5, 100)
    assert (round(lo, 2), round(hi, 2)) == (0.35, 0.65)
    assert psi([50, 50], [50, 50]) == 0.0
    assert psi([50, 50], [90, 10]) > 0.25
    assert ks_distance([50, 50], [90, 10]) == pytest.approx(0.4)
    hist = score_histogram([0.1, 0.2, 0.8, 0.95], threshold=0.5, atypicality=[0.1, 3, 0.2, 0.3],
                           atypicality_threshold=1.0)
    assert sum(hist["counts"]) == 4 and hist["flag_rate"] == 0.5
    assert hist["out_of_scope_rate"] == 0.25
    assert drift(hist, [0.1, 0.2, 0.8, 0.95])["psi"] == 0.0
    # the sidecar histogram as training writes it (issue 23): edges under "bins", no rates
    bare = {"bins": [0.0, 0.5, 1.0], "counts": [1, 3], "n": 4}
    assert drift(bare, [0.9, 0.9, 0.9, 0.1])["psi"] == 0.0
    assert references({"score_histogram": bare, "metrics": {"validation": {
        "n": 4, "tp": 2, "fp": 1}}})["flag_rate"] == 0.75
    # agree with a flag: TP; disagree with a flag: FP; a label overrides the verdict; no
    # unflagged read: no sensitivity.
    a = agreement([(True, "agree", None), (True, "disagree", None),
                   (True, "disagree", "pneumonia")])
    assert (a["ppv"], a["ppv_n"], a["sensitivity"]) == (2 / 3, 3, None)
    b = agreement([(True, "agree", None), (False, "disagree", None), (False, "agree", None)])
    assert (b["sensitivity"], b["sensitivity_n"]) == (0.5, 2)
    assert reason_class("view position LL: a lateral view (0020,0020)") == "view position ll"


def test_alert_rules_use_exported_series(tmp_path: Path) -> None:
    """Every pneumoscreen_ series the alert rules name is one /metrics exports (with the data
    that makes each appear); promtool checks the file where it is installed."""
    import shutil
    import subprocess

    import yaml
    from prometheus_client import generate_latest

    from pneumoscreen.db import session_scope
    from pneumoscreen.worker.web.metrics import screen_registry

    rules = Path(__file__).resolve().parents[3] / "deploy" / "prometheus" / "alerts.yml"
    exprs = " ".join(r["expr"] for g in yaml.safe_load(rules.read_text())["groups"]
                     for r in g["rules"])
    db = get_settings().effective_database_url
    add_image(db, film(tmp_path / "a.png"), 0.9)
    add_image(db, film(tmp_path / "b.png"), 0.2, in_scope=False, scope_reason="adult")
    from pneumoscreen.db.models import Export, ExportStatus

    with session_scope(db) as session:
        session.add(Export(study_instance_uid="1.2.3", destination="file:///x",
                           model_version_id=1, status=ExportStatus.failed))
    text = generate_latest(screen_registry(lambda: session_scope(db))).decode()
    exported = set(re.findall(r"^(pneumoscreen_[a-z_]+)", text, re.M))
    named = set(re.findall(r"pneumoscreen_[a-z_]+", exprs))
    assert named and named <= exported, named - exported
    if shutil.which("promtool"):
        done = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True,
                              text=True)
        assert done.returncode == 0, done.stdout + done.stderr


def test_worker_and_listener_metrics_endpoint(tmp_path: Path) -> None:
    """What `screen worker --metrics-port` and `screen listen --metrics-port` start: the same
    pneumoscreen_ series, from the database."""
    import urllib.request

    from web_fixtures import free_port

    from pneumoscreen.worker.web.metrics import serve_metrics

    settings = get_settings()
    add_image(settings.effective_database_url, film(tmp_path / "a.png"), 0.9)
    assert serve_metrics(settings, port=0) is None  # 0: none
    port = serve_metrics(settings, port=free_port())
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    assert metric(text, "pneumoscreen_images", status="done") == 1
    assert metric(text, "pneumoscreen_images_today") == 1


def test_times_are_shown_in_utc_and_say_so() -> None:
    import datetime as dt

    from pneumoscreen.worker.web.app import _parse_since, _when

    berlin = dt.timezone(dt.timedelta(hours=1))
    assert _when(dt.datetime(2026, 12, 5, 9, 30, tzinfo=berlin)) == "2026-12-05 08:30 UTC"
    assert _when(dt.datetime(2026, 12, 5, 8, 30)) == "2026-12-05 08:30 UTC"  # SQLite: naive UTC
    assert _when("2026-12-05T09:30:00+01:00") == "2026-12-05 08:30 UTC"
    assert _when(None) == "" and _when("not a time") == "not a time"
    # what a page prints, pasted into the "since" filter, means the same instant
    assert _parse_since("2026-12-05 08:30 UTC") == dt.datetime(2026, 12, 5, 8, 30,
                                                               tzinfo=dt.timezone.utc)
    assert _parse_since("2026-12-05T08:30") == _parse_since("2026-12-05 09:30+01:00")
