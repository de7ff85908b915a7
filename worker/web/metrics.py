"""Prometheus metrics of the screen, read from the database at scrape time.

Every process that serves ``/metrics`` (``screen web``, ``screen worker``, ``screen listen``)
exports the same ``pneumoscreen_*`` series, because they come from the shared database rather
than from one process's counters; a scrape of any of them tells the state of the whole screen.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

CACHE_SECONDS = 2.0  # scrapes closer together than this share one set of queries


class ScreenCollector(Collector):
    """The database's figures as gauges (see :func:`pneumoscreen.worker.web.monitor.figures`)."""

    def __init__(self, session_factory: Callable[[], Any], days: int = 30) -> None:
        self.session_factory = session_factory
        self.days = days
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, Any]] | None = None

    def invalidate(self) -> None:
        with self._lock:
            self._cached = None

    def _figures(self) -> dict[str, Any]:
        from pneumoscreen.worker.web.monitor import figures

        with self._lock:
            if self._cached and time.monotonic() - self._cached[0] < CACHE_SECONDS:
                return self._cached[1]
            with self.session_factory() as session:
                data = figures(session=session, days=self.days)
            self._cached = (time.monotonic(), data)
            return data

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            data = self._figures()
        except Exception:  # a database outage must not break the scrape: up says it
            up = GaugeMetricFamily("pneumoscreen_database_up",
                                   "1 when the database answered this scrape")
            up.add_metric([], 0)
            yield up
            return
        up = GaugeMetricFamily("pneumoscreen_database_up", "1 when the database answered this "
                               "scrape")
        up.add_metric([], 1)
        yield up
        images = GaugeMetricFamily("pneumoscreen_images", "Images by status", labels=["status"])
        for status, n in data["counts"].items():
            images.add_metric([status], n)
        yield images
        yield _gauge("pneumoscreen_queue_depth", "Images queued or being screened",
                     data["queue_depth"])
        yield _gauge("pneumoscreen_images_finished_last_hour",
                     "Images that reached a final status in the last hour (throughput)",
                     data["finished_last_hour"])
        a2r = GaugeMetricFamily("pneumoscreen_arrival_to_result_seconds",
                                "Seconds from registration to a final status, images finished "
                                "in the last 24 hours", labels=["quantile"])
        for q, key in (("0.5", "p50"), ("0.95", "p95"), ("1", "max")):
            if data["arrival_to_result"][key] is not None:
                a2r.add_metric([q], data["arrival_to_result"][key])
        yield a2r
        bad = GaugeMetricFamily("pneumoscreen_images_not_screened",
                                "Rejected and failed images by reason class",
                                labels=["status", "reason"])
        for row in data["reasons"][:30]:
            bad.add_metric([row["status"], row["reason"]], row["n"])
        yield bad
        today = data["today"]  # None on a day with no prediction yet: no stale rate
        ref = data["reference"]
        for name, key, ref_key, help_ in (
                ("flag_rate", "flag_rate", "flag_rate",
                 "Share of today's images flagged by the watched model"),
                ("out_of_scope_rate", "outside_rate", "out_of_scope_rate",
                 "Share of today's images of the watched model outside the validated scope")):
            if today is not None:
                yield _gauge(f"pneumoscreen_{name}", help_ + " (UTC day)", today[key])
                limits = today.get("flag_limits" if key == "flag_rate" else "outside_limits")
                if limits is not None:
                    lim = GaugeMetricFamily(f"pneumoscreen_{name}_control_limit",
                                            f"3-sigma p-chart limits of {name} for today's n",
                                            labels=["side"])
                    lim.add_metric(["lower"], limits[0])
                    lim.add_metric(["upper"], limits[1])
                    yield lim
            if ref[ref_key] is not None:
                yield _gauge(f"pneumoscreen_{name}_reference",
                             f"{name} on the validation split", ref[ref_key])
        yield _gauge("pneumoscreen_images_today",
                     "Predictions the watched model made today (UTC day)",
                     0 if today is None else today["n"])
        if data["drift"] and data["drift"]["n"]:
            yield _gauge("pneumoscreen_score_psi", "PSI of the scores against the validation "
                         "histogram", data["drift"]["psi"])
            yield _gauge("pneumoscreen_score_ks", "KS distance of the scores against the "
                         "validation histogram", data["drift"]["ks"])
            yield _gauge("pneumoscreen_score_drift_n", "Scores behind pneumoscreen_score_psi",
                         data["drift"]["n"])
        agree = data["agreement"]
        for name, key in (("ppv", "ppv"), ("sensitivity", "sensitivity")):
            if agree[key] is not None:
                yield _gauge(f"pneumoscreen_reader_{name}", f"{name} of flags by the readers' "
                             "newest read of each image", agree[key])
            yield _gauge(f"pneumoscreen_reader_{name}_n", f"Images behind reader_{name}",
                         agree[f"{key}_n"])
        reads = GaugeMetricFamily("pneumoscreen_reads", "Reads by verdict",
                                  labels=["verdict", "role"])
        for (verdict, role), n in data["reads"].items():
            reads.add_metric([verdict, role], n)
        yield reads
        exports = GaugeMetricFamily("pneumoscreen_exports", "Exports by status",
                                    labels=["status"])
        for status, n in data["exports"].items():
            exports.add_metric([status], n)
        yield exports


def _gauge(name: str, help_: str, value: float) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, help_)
    g.add_metric([], float(value))
    return g


def screen_registry(session_factory: Callable[[], Any], days: int = 30) -> CollectorRegistry:
    """A registry holding the screen's database figures (one per process or app)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ScreenCollector(session_factory, days))
    return registry


def serve_metrics(settings: Any, *, port: int | None = None) -> int | None:
    """Serve ``/metrics`` on ``settings.metrics_port`` (or ``port``) in a daemon thread, for
    ``screen worker`` and ``screen listen``; returns the port, or None when it is 0."""
    from prometheus_client import start_http_server

    port = settings.metrics_port if port is None else port
    if not port:
        return None
    start_http_server(port, addr=settings.metrics_host,
                      registry=screen_registry(settings.session, settings.monitor_days))
    return port
