"""`screen web` in a real browser: Debian's Chromium driven by Playwright against a `screen web`
process over a real SQLite database. One server for the module; screenshots of each page land
in the test's temporary folder (``shots/``)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner
from web_fixtures import (
    PASSWORD,
    add_image,
    chromium_args,
    film,
    metric,
    server_env,
    web_server,
)

CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (`apt-get install chromium`; "
    ".ci/run installs it)")
playwright_api = pytest.importorskip("playwright.sync_api",
                                     reason="playwright for Python is not installed")

SAMPLE = Path(__file__).resolve().parents[3] / "samples" / "chest_export.png"
HOSTILE = "<img src=x onerror=alert(1)>[bold red]rich[reset]<script>alert(2)<script>.png"


def screen_cli(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    """``screen ARGS`` in this process (the CLI's own code, a fresh Settings from ``env``)."""
    import os

    from pneumoscreen.worker.cli import app
    from pneumoscreen.worker.settings import get_settings

    saved = {k: os.environ[k] for k in list(os.environ) if k.startswith("SCREEN_")}
    os.environ.update({k: v for k, v in env.items() if k.startswith("SCREEN_")})
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, list(args), input=stdin)
    finally:
        for key in [k for k in os.environ if k.startswith("SCREEN_")]:
            del os.environ[key]
        os.environ.update(saved)
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    return result.stdout


class Site:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = f"sqlite:///{root / 'web.sqlite3'}"
        self.env = server_env(root / "data", self.url, SCREEN_WEB_REFRESH_SECONDS="1",
                              SCREEN_WEB_LOGIN_ATTEMPTS="3")
        self.shots = root / "shots"
        self.shots.mkdir(parents=True, exist_ok=True)
        self.base = ""
        self.ids: dict[str, int] = {}

    def add(self, key: str, name: str, probability: float, **kw: Any) -> int:
        self.ids[key] = add_image(self.url, film(self.root / "films" / name,
                                                 seed=len(self.ids)), probability, **kw)
        return self.ids[key]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    s = Site(tmp_path_factory.mktemp("web"))
    s.add("top", "top.png", 0.97, study_uid="1.2.826.0.1.1")
    s.add("sibling", "lateral.png", 0.2, view="LL", study_uid="1.2.826.0.1.1", heatmap=False)
    s.add("mid", "mid.png", 0.81)
    s.add("low", "low.png", 0.66)
    s.add("hostile", HOSTILE, 0.74, view="<b>x</b>")
    s.add("outside", "adult.png", 0.3, flagged=False, in_scope=False,
          scope_reason="patient age 54 y outside 0-10 y", heatmap=False)
    s.add("unflagged", "normal.png", 0.1)
    screen_cli(s.env, "users", "add", "rita", "--role", "reader", "--password-stdin",
               stdin=PASSWORD + "\n")
    screen_cli(s.env, "users", "add", "ada", "--role", "admin", "--password-stdin",
               stdin=PASSWORD + "\n")
    with web_server(s.env, s.root / "server.log") as base:
        s.base = base
        yield s


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(**chromium_args())
        yield b
        b.close()


def login(browser: Any, site: Site, name: str = "rita") -> Any:
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.goto(site.base + "/")
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(site.base + "/")
    return page


def submit(page: Any, selector: str) -> None:
    """Click a plain form's button and wait for the page the POST answers with, so the next
    step reads (or leaves) that page, not the one the click left behind."""
    with page.expect_navigation():
        page.click(selector)


def list_ids(page: Any) -> list[int]:
    return [int(v) for v in page.eval_on_selector_all(
        "#lists tr[data-image-id]", "rows => rows.map(r => r.dataset.imageId)")]


def test_unauthenticated_is_redirected_then_login_and_logout(browser: Any, site: Site) -> None:
    page = browser.new_context().new_page()
    page.goto(site.base + "/image/1")
    assert page.url.startswith(site.base + "/login?next=")
    page.screenshot(path=site.shots / "login.png")
    page.fill("input[name=username]", "rita")
    page.fill("input[name=password]", "wrong password")
    submit(page, "button[type=submit]")
    assert "Wrong name or password" in page.inner_text("main")
    page.fill("input[name=username]", "rita")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(site.base + "/image/1")  # back where the redirect came from
    cookie = next(c for c in page.context.cookies() if c["name"] == "pneumoscreen_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    page.click("#logout")
    page.wait_for_url(site.base + "/login")
    page.goto(site.base + "/")
    assert page.url.startswith(site.base + "/login")
    for path in ("/rows", "/monitor", "/image/1/film.png", "/colour-scale.png"):
        r = page.request.get(site.base + path, max_redirects=0)
        assert r.status == 303 and r.headers["location"].startswith("/login"), path
    assert page.request.get(site.base + "/metrics").status == 401
    page.context.close()


def test_row_order_equals_screen_flagged_json(browser: Any, site: Site) -> None:
    page = login(browser, site)
    expected = [r.get("image_id", r.get("study_id")) for r in json.loads(screen_cli(
        site.env, "flagged", "--format", "json", "--outside-scope"))]
    assert list_ids(page) == expected
    assert expected[:4] == [site.ids[k] for k in ("top", "mid", "hostile", "low")]
    assert expected[-1] == site.ids["outside"]  # the "Needs a human read" section comes last
    assert "patient age 54 y outside 0-10 y" in page.inner_text("#outside")
    page.screenshot(path=site.shots / "reading-list.png", full_page=True)
    page.context.close()


def test_hostile_name_and_tag_render_as_text(browser: Any, site: Site) -> None:
    page = login(browser, site)
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    row = page.locator(f'tr[data-image-id="{site.ids["hostile"]}"]')
    assert HOSTILE in row.inner_text()
    assert row.locator("img, script, b").count() == 0
    page.goto(site.base + f"/image/{site.ids['hostile']}")
    assert HOSTILE in page.inner_text("h1")
    assert "<b>x</b>" in page.inner_text("table.facts")
    assert page.locator("main script, main b").count() == 0
    page.wait_for_timeout(300)
    assert dialogs == []
    page.context.close()


def test_overlay_loads_and_toggles(browser: Any, site: Site) -> None:
    page = login(browser, site)
    page.click(f'tr[data-image-id="{site.ids["top"]}"] a')
    page.wait_for_url(site.base + f"/image/{site.ids['top']}")
    page.wait_for_function("() => document.querySelector('#overlay').complete && "
                           "document.querySelector('#film').complete")
    sizes = page.evaluate("() => ['#film', '#overlay'].map(s => "
                          "[document.querySelector(s).naturalWidth, "
                          "document.querySelector(s).naturalHeight])")
    assert sizes[0] == sizes[1] and sizes[0][0] > 0  # the overlay covers the film exactly
    assert page.is_visible("#overlay")
    page.screenshot(path=site.shots / "image-overlay.png", full_page=True)
    page.click("label[for=overlay-toggle]")
    assert page.is_hidden("#overlay")
    page.screenshot(path=site.shots / "image-plain.png", full_page=True)
    page.click("label[for=overlay-toggle]")
    assert page.is_visible("#overlay")
    text = page.inner_text("main")
    assert "0.9700" in text and "0.5000" in text and "ab" * 32 in text
    assert f"{site.ids['sibling']}" in page.inner_text("main")  # the study's other image
    assert "1.2.826.0.1.1" in page.inner_text("table.facts")  # a short UID whole, not cut
    page.context.close()


def test_agree_disagree_persist_and_show_in_screen_reads(browser: Any, site: Site) -> None:
    page = login(browser, site)
    page.goto(site.base + f"/image/{site.ids['mid']}")
    page.select_option("#label", "pneumonia")
    page.select_option("#subtype", "bacterial")
    submit(page, "#agree")
    assert "Your read was saved" in page.inner_text("main")
    page.goto(site.base + f"/image/{site.ids['low']}")
    page.select_option("#label", "normal")
    submit(page, "#disagree")
    assert "Your read was saved" in page.inner_text("main")
    page.reload()
    assert "disagree" in page.inner_text("#reads")
    reads = json.loads(screen_cli(site.env, "reads", "--format", "json"))
    got = {(r["image_id"], r["user"], r["verdict"], r["label"], r["subtype"]) for r in reads}
    assert {(site.ids["mid"], "rita", "agree", "pneumonia", "bacterial"),
            (site.ids["low"], "rita", "disagree", "normal", None)} <= got
    page.goto(site.base + "/")
    assert "agree · pneumonia" in page.locator(
        f'tr[data-image-id="{site.ids["mid"]}"]').inner_text()
    events = json.loads(screen_cli(site.env, "audit", "--format", "json"))
    assert any(e["action"] == "read.add" and e["params"].get("user") == "rita" for e in events)
    page.context.close()


def test_form_without_csrf_token_is_refused(browser: Any, site: Site) -> None:
    page = login(browser, site)
    before = len(json.loads(screen_cli(site.env, "reads", "--format", "json")))
    url = site.base + f"/image/{site.ids['top']}/read"
    for form in ({"verdict": "agree"}, {"verdict": "agree", "csrf": "forged"}):
        r = page.request.post(url, form=form, max_redirects=0)
        assert r.status == 403, form
        assert "security token" in r.text()
    assert len(json.loads(screen_cli(site.env, "reads", "--format", "json"))) == before
    page.context.close()


def screen_submit(site: Site, *files: Path) -> None:
    """A real ``screen submit`` in its own process: no broker, the same SQLite database as the
    running ``screen web``, the small bundled model (fast to load)."""
    folder = site.root / f"inbox-{len(list(site.root.glob('inbox-*')))}"
    folder.mkdir()
    for f in files:
        shutil.copy(f, folder / f.name)
    env = dict(site.env, SCREEN_MODEL_PATH="bundled:cnn-s")
    done = subprocess.run(
        [sys.executable, "-c", "from pneumoscreen.worker.cli import main; main()", "submit",
         str(folder)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]


def test_a_real_submit_updates_the_open_list_and_the_metrics(browser: Any, site: Site) -> None:
    """`screen submit` of a sample film while the list is open: the new flagged row appears,
    marked new, where `screen flagged` puts it, and the screen's series on /metrics move."""
    if not SAMPLE.exists():
        pytest.skip(f"{SAMPLE} is not in this checkout")
    page = login(browser, site, "ada")

    def scrape() -> str:
        r = page.request.get(site.base + "/metrics")
        assert r.status == 200
        return r.text()

    series = (("pneumoscreen_images", {"status": "done"}),
              ("pneumoscreen_images_finished_last_hour", {}))
    first = scrape()
    before = {name: metric(first, name, **labels) for name, labels in series}
    shown = list_ids(page)
    screen_submit(site, SAMPLE)
    rows = json.loads(screen_cli(site.env, "flagged", "--format", "json", "--outside-scope"))
    new = [r for r in rows if r.get("image_id", r.get("study_id")) not in shown]
    assert len(new) == 1 and new[0]["flagged"], f"the sample was not flagged: {new}"
    new_id = new[0].get("image_id", new[0].get("study_id"))
    page.wait_for_selector(f'#lists tr.new[data-image-id="{new_id}"]', timeout=15_000)
    assert list_ids(page) == [r.get("image_id", r.get("study_id")) for r in rows]
    assert page.locator("#lists tr.new").count() == 1  # only the one that arrived
    page.screenshot(path=site.shots / "reading-list-new.png", full_page=True)
    deadline = time.monotonic() + 10
    while True:  # the collector caches its queries for two seconds
        text = scrape()
        after = {name: metric(text, name, **labels) for name, labels in series}
        if after != before or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert after == {name: value + 1 for name, value in before.items()}, (before, after)
    page.goto(site.base + f"/image/{new_id}")  # the worker's own result renders
    assert f"{new[0]['probability']:.4f}" in page.inner_text("main")
    page.wait_for_function("() => document.querySelector('#film').complete")
    page.screenshot(path=site.shots / "image-submitted.png", full_page=True)
    page.context.close()


def test_metrics_change_after_a_read(browser: Any, site: Site) -> None:
    page = login(browser, site, "ada")

    def scrape() -> str:
        r = page.request.get(site.base + "/metrics")
        assert r.status == 200
        return r.text()

    first = scrape()
    assert "pneumoscreen_images" in first and "pneumoscreen_queue_depth" in first
    agreed = metric(first, "pneumoscreen_web_reads_submitted_total", verdict="agree")
    by_admins = metric(first, "pneumoscreen_reads", verdict="agree", role="admin")
    page.goto(site.base + f"/image/{site.ids['top']}")
    submit(page, "#agree")
    text = scrape()  # a read invalidates the collector's cache
    assert metric(text, "pneumoscreen_web_reads_submitted_total", verdict="agree") == agreed + 1
    assert metric(text, "pneumoscreen_reads", verdict="agree", role="admin") == by_admins + 1
    page.context.close()


def test_monitor_page_for_admins_only(browser: Any, site: Site) -> None:
    page = login(browser, site, "ada")
    page.goto(site.base + "/monitor")
    page.wait_for_function("() => [...document.querySelectorAll('img.plot')].every("
                           "i => i.complete && i.naturalWidth > 0)")
    text = page.inner_text("main")
    assert "PPV of flags" in text and "PSI" in text
    page.screenshot(path=site.shots / "monitor.png", full_page=True)
    page.context.close()
    reader = login(browser, site, "rita")
    assert reader.request.get(site.base + "/monitor").status == 403
    reader.context.close()


def test_sign_in_is_rate_limited(browser: Any, site: Site) -> None:
    page = browser.new_context().new_page()
    screen_cli(site.env, "users", "add", "mallory", "--password-stdin", stdin=PASSWORD)
    for _ in range(3):
        page.goto(site.base + "/login")
        page.fill("input[name=username]", "mallory")
        page.fill("input[name=password]", "guess")
        submit(page, "button[type=submit]")
    page.goto(site.base + "/login")
    page.fill("input[name=username]", "mallory")
    page.fill("input[name=password]", PASSWORD)  # right, but too late
    submit(page, "button[type=submit]")
    assert "Too many failed sign-ins" in page.inner_text("main")
    page.context.close()
