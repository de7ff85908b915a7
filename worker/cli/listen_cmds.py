"""``screen listen``: receive studies over DICOM (C-STORE, C-ECHO) into the spool."""

from __future__ import annotations

from typing import Annotated

import typer

from pneumoscreen.worker.cli.output import console, fail, plain


def listen(
    port: Annotated[int | None, typer.Option(
        min=1, max=65535, help="TCP port (default SCREEN_LISTEN_PORT, 11112).")] = None,
    ae_title: Annotated[str | None, typer.Option(
        "--ae-title", help="Our AE title, the one senders call (default SCREEN_LISTEN_AE_TITLE, "
        "PNEUMOSCREEN).")] = None,
    host: Annotated[str | None, typer.Option(
        help="Address to bind (default SCREEN_LISTEN_HOST, 127.0.0.1; 0.0.0.0 for all).")] = None,
) -> None:
    """Receive CR/DX images over DICOM and screen each study once it is stable.

    A C-STORE and C-ECHO service: only the calling AE titles in SCREEN_CALLING_AE_TITLES may
    associate (empty refuses everyone); only the CR and DX storage SOP classes are accepted.
    Each instance is written to DATA_DIR/spool before Success is answered, then registered like
    `screen submit` once its study has had no new instance for SCREEN_STUDY_STABLE_SECONDS.
    With SCREEN_LISTEN_TLS_CERT and _KEY it speaks TLS (and with _CA requires client
    certificates). Stop it with Ctrl-C or SIGTERM; what is in the spool is registered at the
    next start.
    """
    import signal
    import ssl
    import threading

    from pydantic import ValidationError

    from pneumoscreen.worker.logs import log_to_stderr
    from pneumoscreen.worker.settings import Settings, get_settings
    from pneumoscreen.worker.settings import ae_title as valid_ae_title

    try:
        settings: Settings = get_settings()
        if ae_title is not None:
            ae_title = valid_ae_title(ae_title)
    except ValidationError as exc:
        first = exc.errors()[0]
        fail(f"bad setting SCREEN_{str(first['loc'][0]).upper()}: {first['msg']}")
    except ValueError as exc:
        fail(f"bad --ae-title: {exc}")
    from pneumoscreen.worker.receive.service import listen_config, serve

    try:
        config = listen_config(settings, host=host, port=port, ae_title=ae_title)
    except (OSError, ssl.SSLError, ValueError) as exc:
        fail(f"cannot set up TLS: {exc}")
    log_to_stderr()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())

    def ready(receiver: object, registrar: object) -> None:
        allowed = ", ".join(config.calling_ae_titles) or "nobody (SCREEN_CALLING_AE_TITLES empty)"
        console.print(plain(
            f"Listening on {config.host}:{receiver.port} as {config.ae_title}"  # type: ignore[attr-defined]
            f"{' over TLS' if config.ssl_context else ''}; accepting {allowed}; spool "
            f"{settings.data_dir / 'spool'}; studies stable after "
            f"{settings.study_stable_seconds:g} s."))

    try:
        serve(settings, config, stop, on_ready=ready)
    except OSError as exc:
        fail(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}")


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Add this module's commands to ``screen``."""
    paragraphs = (listen.__doc__ or "").strip().split("\n\n")
    app.command("listen", help="\n\n".join(" ".join(p.split()) for p in paragraphs))(listen)
