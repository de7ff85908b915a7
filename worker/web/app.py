"""``screen web``: the reading list, the image page, readers' feedback and monitoring in a
browser (Starlette, Jinja2 with autoescaping, htmx served from our own static folder).

Every page but ``/login`` needs a session (``/healthz`` and ``/metrics`` as configured).
Sessions are signed, HttpOnly, SameSite=Strict cookies; every form carries a CSRF token bound
to the session; failed sign-ins are rate-limited per name and per client address. URLs carry
internal ids only.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from pneumoscreen.worker.web import auth, data

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
COOKIE = "pneumoscreen_session"
MAX_FORM_BYTES = 16 * 1024  # every form here is a few fields
CSP = ("default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")


class SecurityHeaders:
    """Pure-ASGI middleware: security headers on every answer, and Server-Timing with the time
    the app spent (what ``screen bench web`` reads)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()

        async def wrapped(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                elapsed = (time.perf_counter() - start) * 1000
                headers += [(b"content-security-policy", CSP.encode()),
                            (b"x-content-type-options", b"nosniff"),
                            (b"x-frame-options", b"DENY"),
                            (b"referrer-policy", b"no-referrer"),
                            (b"server-timing", f"app;dur={elapsed:.1f}".encode())]
                if not any(k.lower() == b"cache-control" for k, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, wrapped)


class WebError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _parse_since(value: str | None) -> dt.datetime | None:
    """ISO date/time (UTC unless it gives a zone; a trailing " UTC", as the pages print
    times, is accepted), or 30m / 12h / 7d ago; WebError 400 otherwise."""
    if not value:
        return None
    value = value.strip()[:40]
    if value.upper().endswith("UTC"):
        value = value[:-3].rstrip() + "+00:00"
    units = {"m": 60, "h": 3600, "d": 86400}
    if value[-1:] in units and value[:-1].isdigit():
        return dt.datetime.now(dt.timezone.utc) - dt.timedelta(
            seconds=min(int(value[:-1]) * units[value[-1]], 3650 * 86400))
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise WebError(400, "since: give an ISO date/time (2026-11-23T08:00) or 30m / 12h / "
                            "7d") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def _when(value: dt.datetime | str | None) -> str:
    """A time as ``2026-12-05 08:30 UTC``: naive times are UTC (SQLite); aware ones (PostgreSQL
    answers in its session's zone) are converted, so no page shows an unlabelled local time."""
    if not value:
        return ""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            return value[:40]
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc)
    return value.strftime("%Y-%m-%d %H:%M UTC")


def _local_path(value: str | None) -> str:
    """A redirect target after sign-in: a path on this site only."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value[:500]


def create_app(settings: Any) -> Starlette:
    """The web app over the configured database (``settings``: a :class:`Settings`)."""
    from pneumoscreen.worker.web.metrics import ScreenCollector

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["pct"] = lambda v, d=1: "" if v is None else f"{100 * v:.{d}f}%"
    env.filters["num"] = lambda v, d=3: "" if v is None else f"{v:.{d}f}"
    env.filters["when"] = _when
    templates = Jinja2Templates(env=env)
    # Per name, and (ten times looser, since a hospital's proxy or NAT puts many readers
    # behind one address) per client address.
    name_limiter = auth.LoginLimiter(settings.web_login_attempts, settings.web_login_window)
    addr_limiter = auth.LoginLimiter(10 * settings.web_login_attempts, settings.web_login_window)
    registry = CollectorRegistry(auto_describe=False)
    collector = ScreenCollector(settings.session, settings.monitor_days)
    registry.register(collector)
    reads_total = Counter("pneumoscreen_web_reads_submitted", "Reads submitted in this web "
                          "process", ["verdict"], registry=registry)
    logins_total = Counter("pneumoscreen_web_logins", "Sign-in attempts in this web process",
                           ["result"], registry=registry)
    latency = Histogram("pneumoscreen_web_request_seconds", "Time to answer, by page",
                        ["page"], registry=registry,
                        buckets=(0.01, 0.03, 0.1, 0.3, 1, 3, 10))
    ingest_config = settings.ingest_config(with_key=False)

    def db(fn: Any, *args: Any, **kw: Any) -> Any:
        """Run ``fn(session, ...)`` in one transaction, off the event loop."""
        def run() -> Any:
            with settings.session() as session:
                return fn(session, *args, **kw)
        return run_in_threadpool(run)

    def user_of(request: Request) -> Any:
        """The signed-in user (a detached row), or None."""
        from pneumoscreen.db import web as q

        header = settings.web_trusted_user_header
        client = request.client.host if request.client else ""
        if header and client in settings.web_trusted_proxies and request.headers.get(header):
            name = request.headers[header].strip()[:64]
            with settings.session() as session:
                user = q.user_named(name, session=session)
            return None if user is None or user.disabled else user
        uid = request.session.get("uid")
        if not isinstance(uid, int):
            return None
        with settings.session() as session:
            user = q.user_by_id(uid, session=session)
        if user is None or user.disabled:
            request.session.clear()
            return None
        return user

    def csrf(request: Request) -> str:
        token = request.session.get("csrf")
        if not isinstance(token, str):
            token = auth.new_csrf_token()
            request.session["csrf"] = token
        return token

    async def form_of(request: Request) -> Any:
        """The posted form, its CSRF token checked (WebError 403 without the right one)."""
        if int(request.headers.get("content-length") or 0) > MAX_FORM_BYTES:
            raise WebError(413, "form too large")
        form = await request.form(max_files=0, max_fields=20)
        given = form.get("csrf") or request.headers.get("x-csrf-token")
        if not auth.same_token(request.session.get("csrf"), given if isinstance(given, str)
                               else None):
            raise WebError(403, "The form's security token is missing or out of date: reload "
                                "the page and try again.")
        return form

    def render(request: Request, name: str, context: dict[str, Any],
               status: int = 200) -> HTMLResponse:
        context = {"request": request, "csrf": csrf(request),
                   "user": context.pop("user", None), **context}
        return templates.TemplateResponse(request, name, context, status_code=status)

    async def needs_user(request: Request, *, admin: bool = False) -> Any:
        user = await run_in_threadpool(user_of, request)
        if user is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise _Redirect("/login?" + urlencode({"next": target}))
        if admin and user.role.value != "admin":
            raise WebError(403, "This page is for administrators.")
        return user

    # ---- pages --------------------------------------------------------------------------

    async def login_page(request: Request) -> Response:
        return render(request, "login.html", {"next": _local_path(
            request.query_params.get("next")), "error": None})

    async def login(request: Request) -> Response:
        from pneumoscreen.db import web as q
        from pneumoscreen.worker.audit import audit

        form = await form_of(request)
        name = str(form.get("username") or "").strip()[:64]
        password = str(form.get("password") or "")
        target = _local_path(str(form.get("next") or "/"))
        name_key = name.lower()
        addr_key = request.client.host if request.client else ""
        if name_limiter.blocked(name_key) or addr_limiter.blocked(addr_key):
            logins_total.labels("limited").inc()
            return render(request, "login.html", {"next": target, "error": (
                "Too many failed sign-ins: wait a few minutes and try again.")}, 429)

        def check(session: Any) -> Any:
            user = q.user_named(name, session=session)
            ok = auth.check_password(None if user is None else user.password_hash, password)
            if not ok or user is None or user.disabled:
                return None
            user.last_login_at = dt.datetime.now(dt.timezone.utc)
            audit(session, "web.login", user=user.name)
            return user.id

        uid = await db(check)
        if uid is None:
            name_limiter.failed(name_key)
            addr_limiter.failed(addr_key)
            logins_total.labels("failed").inc()
            return render(request, "login.html", {"next": target, "error": (
                "Wrong name or password, or the account is disabled.")}, 401)
        name_limiter.succeeded(name_key)
        logins_total.labels("ok").inc()
        request.session.clear()  # a new session (and CSRF token) for the signed-in user
        request.session.update({"uid": uid, "csrf": auth.new_csrf_token()})
        return RedirectResponse(target, 303)

    async def logout(request: Request) -> Response:
        from pneumoscreen.worker.audit import audit

        await form_of(request)
        uid = request.session.get("uid")
        if isinstance(uid, int):
            from pneumoscreen.db import web as q

            def record(session: Any) -> None:
                user = q.user_by_id(uid, session=session)
                if user is not None:
                    audit(session, "web.logout", user=user.name)
            await db(record)
        request.session.clear()
        return RedirectResponse("/login", 303)

    def list_args(request: Request) -> dict[str, Any]:
        params = request.query_params
        status = params.get("status") or "all"
        if status not in data.READ_STATUSES:
            raise WebError(400, f"status: one of {', '.join(data.READ_STATUSES)}")
        opened = params.get("opened")
        try:
            limit = min(max(int(params.get("limit") or 500), 1), 5000)
            opened_id = int(opened) if opened else None
        except ValueError:
            raise WebError(400, "limit and opened are whole numbers") from None
        return {"since": _parse_since(params.get("since")), "model": (params.get("model")
                                                                      or "")[:64] or None,
                "status": status, "limit": limit, "opened": opened_id}

    def filters_of(request: Request, opened: int) -> dict[str, str]:
        params = request.query_params
        return {"since": (params.get("since") or "")[:40], "status": params.get("status")
                or "all", "model": (params.get("model") or "")[:64], "opened": str(opened)}

    async def reading_list(request: Request) -> Response:
        started = time.perf_counter()
        user = await needs_user(request)
        args = list_args(request)
        rl = await db(lambda s: data.reading_list(session=s, **args))
        opened = args["opened"] if args["opened"] is not None else rl.newest
        filters = filters_of(request, opened)
        response = render(request, "list.html", {
            "user": user, "rl": rl, "filters": filters, "rows_url": "/rows?" + urlencode(
                filters), "refresh": int(settings.web_refresh_seconds),
            "self_url": "/?" + urlencode(filters)})
        latency.labels("list").observe(time.perf_counter() - started)
        return response

    async def rows(request: Request) -> Response:
        await needs_user(request)
        args = list_args(request)
        rl = await db(lambda s: data.reading_list(session=s, **args))
        return render(request, "rows.html", {"rl": rl})

    async def image_page(request: Request) -> Response:
        started = time.perf_counter()
        user = await needs_user(request)
        image_id = request.path_params["image_id"]
        page = await db(lambda s: data.image_page(image_id, session=s))
        if page is None:
            raise WebError(404, f"No image with id {image_id}.")
        response = render(request, "image.html", {
            "user": user, "page": page, "has_map": page["heatmap"] is not None,
            "saved": request.query_params.get("saved") == "1"})
        latency.labels("image").observe(time.perf_counter() - started)
        return response

    async def film(request: Request) -> Response:
        from pneumoscreen.worker.web.images import film_png

        await needs_user(request)
        image_id = request.path_params["image_id"]
        page = await db(lambda s: data.image_page(image_id, session=s))
        if page is None:
            raise WebError(404, "no such image")
        try:
            png = await run_in_threadpool(film_png, page["path"], ingest_config)
        except Exception as exc:  # a file gone, unreadable or refused: one line
            log.info("film of image %s not shown: %s", image_id, type(exc).__name__)
            raise WebError(404, "The file cannot be shown (moved, unreadable or not "
                                "screened).") from None
        return Response(png, media_type="image/png",
                        headers={"cache-control": "private, max-age=300"})

    async def overlay(request: Request) -> Response:
        import numpy as np
        from PIL import Image

        from pneumoscreen.model.gradcam import from_bytes
        from pneumoscreen.worker.web.images import film_png, overlay_png

        await needs_user(request)
        image_id = request.path_params["image_id"]
        page = await db(lambda s: data.image_page(image_id, session=s))
        if page is None or page["heatmap"] is None:
            raise WebError(404, "no heatmap stored for this image")
        h, w, blob = page["heatmap"]
        try:
            png = await run_in_threadpool(film_png, page["path"], ingest_config)
            import io

            width, height = Image.open(io.BytesIO(png)).size
        except Exception:
            height = width = 512
        cam = np.asarray(from_bytes(blob, h, w))
        body = await run_in_threadpool(overlay_png, cam, height, width)
        return Response(body, media_type="image/png",
                        headers={"cache-control": "private, max-age=300"})

    async def colour_scale(request: Request) -> Response:
        from pneumoscreen.worker.web.images import colour_scale_png

        await needs_user(request)
        return Response(await run_in_threadpool(colour_scale_png), media_type="image/png",
                        headers={"cache-control": "private, max-age=3600"})

    async def submit_read(request: Request) -> Response:
        from pneumoscreen.worker.audit import audit

        user = await needs_user(request)
        form = await form_of(request)
        image_id = request.path_params["image_id"]
        verdict = form.get("verdict")
        if verdict not in ("agree", "disagree"):
            raise WebError(400, "verdict: agree or disagree")
        label = form.get("label") or None
        subtype = form.get("subtype") or None

        def save(session: Any) -> int | None:
            read = data.add_read(image_id, user.id, str(verdict), label and str(label),
                                 subtype and str(subtype), session=session)
            if read is None:
                return None
            audit(session, "read.add", image=image_id, read=read.id, user=user.name,
                  verdict=str(verdict), label=label, subtype=subtype)
            return read.id

        try:
            read_id = await db(save)
        except ValueError as exc:
            raise WebError(400, str(exc)) from None
        if read_id is None:
            raise WebError(404, f"Image {image_id} has no screening result to read.")
        reads_total.labels(str(verdict)).inc()
        collector.invalidate()
        return RedirectResponse(f"/image/{image_id}?saved=1", 303)

    async def monitor(request: Request) -> Response:
        from pneumoscreen.worker.web.monitor import figures

        user = await needs_user(request, admin=True)
        fig = await db(lambda s: figures(session=s, days=settings.monitor_days))
        return render(request, "monitor.html", {"user": user, "f": fig})

    async def monitor_plot(request: Request) -> Response:
        from pneumoscreen.worker.web.monitor import figures, rate_chart, score_chart

        await needs_user(request, admin=True)
        which = request.path_params["which"]
        if which not in ("flag-rate", "outside-rate", "scores"):
            raise WebError(404, "no such plot")
        fig = await db(lambda s: figures(session=s, days=settings.monitor_days))
        body = await run_in_threadpool(
            score_chart if which == "scores" else
            (lambda f: rate_chart(f, "flag" if which == "flag-rate" else "outside")), fig)
        return Response(body, media_type="image/svg+xml")

    async def metrics(request: Request) -> Response:
        if not settings.web_public_metrics:
            user = await run_in_threadpool(user_of, request)
            if user is None:
                return PlainTextResponse("sign in, or set SCREEN_WEB_PUBLIC_METRICS=true", 401)
        body = await run_in_threadpool(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> Response:
        from sqlalchemy import text

        if not settings.web_public_healthz:
            await needs_user(request)
        try:
            await db(lambda s: s.execute(text("SELECT 1")))
        except Exception:
            return PlainTextResponse("database unavailable", 503)
        return PlainTextResponse("ok")

    async def on_error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, _Redirect):
            if request.headers.get("hx-request"):  # a refresh after the session ended
                return Response(status_code=200, headers={"HX-Redirect": exc.target})
            return RedirectResponse(exc.target, 303)
        assert isinstance(exc, WebError)
        if request.headers.get("hx-request"):
            return PlainTextResponse(exc.message, exc.status)
        return render(request, "error.html", {"status": exc.status, "message": exc.message},
                      exc.status)

    routes = [
        Route("/", reading_list), Route("/rows", rows),
        Route("/login", login_page, methods=["GET"]), Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/image/{image_id:int}", image_page),
        Route("/image/{image_id:int}/film.png", film),
        Route("/image/{image_id:int}/overlay.png", overlay),
        Route("/image/{image_id:int}/read", submit_read, methods=["POST"]),
        Route("/colour-scale.png", colour_scale),
        Route("/monitor", monitor), Route("/monitor/{which}.svg", monitor_plot),
        Route("/metrics", metrics), Route("/healthz", healthz),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]
    middleware = [
        Middleware(SecurityHeaders),
        Middleware(SessionMiddleware, secret_key=auth.secret_key(settings.web_secret_key_file,
                                                                 settings.data_dir),
                   session_cookie=COOKIE, max_age=int(settings.web_session_hours * 3600),
                   same_site="strict", https_only=settings.web_secure_cookies),
    ]
    app = Starlette(routes=routes, middleware=middleware,
                    exception_handlers={WebError: on_error, _Redirect: on_error})
    app.state.registry = registry
    return app


class _Redirect(Exception):
    def __init__(self, target: str) -> None:
        super().__init__(target)
        self.target = target
