"""``screen listen`` as one call: the spool, the registrar's loop and the DICOM service together."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from pneumoscreen.worker.receive.registrar import Registrar, ScreeningThread
from pneumoscreen.worker.receive.scp import ListenConfig, Receiver, tls_context
from pneumoscreen.worker.receive.spool import Spool
from pneumoscreen.worker.settings import Settings, private_dir

log = logging.getLogger(__name__)


def listen_config(settings: Settings, *, host: str | None = None, port: int | None = None,
                  ae_title: str | None = None) -> ListenConfig:
    """The service's bounds from the settings (options override). TLS files that cannot be read
    raise OSError / ssl.SSLError; a key without a certificate, ValueError."""
    context = None
    if settings.listen_tls_cert or settings.listen_tls_key:
        if not (settings.listen_tls_cert and settings.listen_tls_key):
            raise ValueError("TLS needs both SCREEN_LISTEN_TLS_CERT and SCREEN_LISTEN_TLS_KEY")
        context = tls_context(settings.listen_tls_cert, settings.listen_tls_key,
                              settings.listen_tls_ca)
    elif settings.listen_tls_ca:
        raise ValueError("SCREEN_LISTEN_TLS_CA needs SCREEN_LISTEN_TLS_CERT and _KEY as well")
    return ListenConfig(
        host=host or settings.listen_host, port=settings.listen_port if port is None else port,
        ae_title=ae_title or settings.listen_ae_title,
        calling_ae_titles=tuple(settings.calling_ae_titles),
        max_associations=settings.listen_max_associations, max_pdu=settings.listen_max_pdu,
        timeout=settings.listen_timeout,
        max_instance_bytes=settings.ingest_config().file_limit,  # the intake's file-size limit
        ssl_context=context, sop_classes=tuple(settings.listen_sop_classes),
        max_per_address=settings.listen_max_per_address,
        request_deadline=settings.listen_request_deadline)


def serve(settings: Settings, config: ListenConfig, stop: threading.Event,
          on_ready: Callable[[Receiver, Registrar], None] | None = None) -> None:
    """Receive until ``stop`` is set. The port is bound before anything touches the database,
    so a database that is down delays registration, never a receipt. With no broker, screening
    runs in its own thread (registration never waits for it); ``screen listen`` runs the export
    outbox beside it."""
    spool = Spool(private_dir(settings.data_dir) / "spool",
                  max_bytes=int(settings.spool_max_gb * 1e9),
                  min_free_bytes=int(settings.spool_min_free_gb * 1e9))
    screening = ScreeningThread(settings).start() if settings.eager else None
    registrar = Registrar(settings, spool, stable_seconds=settings.study_stable_seconds,
                          dispatch=screening.dispatch if screening else None)
    receiver = Receiver(config, spool, registrar.notify)
    # Unfinished writes of an earlier run: removed before this run can start writes of its own.
    removed = spool.remove_stale_temp_files(older_than_s=0)
    if removed:
        log.info("spool: %d unfinished writes of an earlier run removed", removed)
    receiver.start()
    try:
        if on_ready is not None:
            on_ready(receiver, registrar)
        registrar.run(stop)
    finally:
        receiver.stop()
        if screening is not None:
            screening.stop(timeout=2.0)
        log.info("stopped: %d instances stored in this run, %d waiting in the spool for a "
                 "stable study", receiver.n_stored, len(registrar.pending))
