"""Learner metrics and health: Prometheus metrics, liveness and readiness on one endpoint.

With ``learner.metrics_port`` > 0 the learner serves, on ``learner.metrics_host``
(loopback by default; a cluster-internal address in Kubernetes):

* ``/metrics`` — Prometheus text format;
* ``/livez`` — 200 while the consuming loop is turning, 503 once it is stuck or has
  given up (a liveness probe restarts it);
* ``/readyz`` — 200 while it can commit: connected, the last checkpoint succeeded;
  503 with the reason otherwise (e.g. the store is down).

Without a port every metric is a no-op (the learner still logs its counters).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Health", "LearnerMetrics"]

#: ``() -> (live, ready, detail)``: the learner's own view of its health.
Health = Callable[[], tuple[bool, bool, dict[str, Any]]]


class _Noop:
    def inc(self, *_: Any, **__: Any) -> None: ...

    def observe(self, *_: Any, **__: Any) -> None: ...

    def set(self, *_: Any, **__: Any) -> None: ...

    def set_function(self, *_: Any, **__: Any) -> None: ...

    def info(self, *_: Any, **__: Any) -> None: ...


class LearnerMetrics:
    """Counts (consumed, joined, late, closed, dead-lettered, duplicates, out-of-time
    events, store-refused rows, checkpoint failures, refused reward calibration files),
    batch latency, the last snapshot time, the age of the last successful commit, the
    newest reward calibration applied, and the health endpoints."""

    def __init__(self, port: int | None, host: str = "127.0.0.1") -> None:
        self.port = port
        self.host = host
        self._health: Health = lambda: (True, True, {})
        self._server: ThreadingHTTPServer | None = None
        if port:
            from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

            reg = CollectorRegistry()
            self.collectors: Any = reg

            def counter(name: str, doc: str) -> Any:
                return Counter(f"switchboard_learner_{name}_total", doc, registry=reg)

            self.consumed: Any = counter("consumed", "messages consumed")
            self.joined: Any = counter("joined", "feedback joined to a pending decision")
            self.late: Any = counter("late", "late feedback")
            self.closed: Any = counter("closed", "decisions whose window closed (applied)")
            self.dead_lettered: Any = counter(
                "dead_lettered", "messages sent to the dead-letter topic"
            )
            self.duplicates: Any = counter(
                "duplicates", "events whose event_id or decision_id was already applied"
            )
            self.out_of_time: Any = counter(
                "out_of_time", "events whose ts_ms is outside the bound around broker time"
            )
            self.store_rejected: Any = counter(
                "store_rejected", "rows the store refused permanently (dead-lettered)"
            )
            self.checkpoint_failures: Any = counter(
                "checkpoint_failures", "checkpoints that failed (store or dead-letter topic)"
            )
            self.batch_latency: Any = Histogram(
                "switchboard_learner_batch_seconds", "time to apply one polled batch", registry=reg
            )
            self.snapshot_time: Any = Gauge(
                "switchboard_learner_last_snapshot_timestamp_seconds",
                "unix time of the last state snapshot",
                registry=reg,
            )
            self.commit_age: Any = Gauge(
                "switchboard_learner_last_commit_age_seconds",
                "seconds since the last successful checkpoint (store, snapshot, commit)",
                registry=reg,
            )
            self.ready: Any = Gauge(
                "switchboard_learner_ready", "1 while the learner can commit", registry=reg
            )
            self.calibration_errors: Any = counter(
                "calibration_errors",
                "published reward calibration files refused (unreadable, unverified, bad field)",
            )
            self.calibration_version: Any = Gauge(
                "switchboard_learner_reward_calibration_version",
                "number of the newest published reward calibration version applied (0: the "
                "config's [reward])",
                registry=reg,
            )
            self.calibration_info: Any = Info(
                "switchboard_learner_reward_calibration",
                "id of the newest published reward calibration version applied",
                registry=reg,
            )
            self.calibration_info.info({"id": "config"})
        else:
            noop = _Noop()
            self.consumed = self.joined = self.late = self.closed = noop
            self.dead_lettered = self.batch_latency = self.snapshot_time = noop
            self.duplicates = self.out_of_time = self.store_rejected = noop
            self.checkpoint_failures = self.commit_age = self.ready = noop
            self.calibration_errors = self.calibration_version = self.calibration_info = noop

    def serve(self, health: Health) -> None:
        """Start the endpoint (no-op without a port); ``health`` answers the probes."""
        self._health = health
        if not self.port or self._server is not None:
            return
        self.ready.set_function(lambda: float(self._health()[1]))
        self._server = ThreadingHTTPServer((self.host, self.port), _handler(self))
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, name="learner-metrics", daemon=True
        ).start()

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def reward_calibration(self, number: int, version_id: str) -> None:
        """The newest published reward calibration version applied: its number and id."""
        self.calibration_version.set(number)
        self.calibration_info.info({"id": version_id})

    @staticmethod
    def snapshot_counts(partition: Any) -> tuple[int, ...]:
        c = partition.counters
        return (c.consumed, c.joined, c.late, c.closed, c.duplicates, c.out_of_time)

    def record(self, partition: Any, before: tuple[int, ...]) -> None:
        c = partition.counters
        self.consumed.inc(c.consumed - before[0])
        self.joined.inc(c.joined - before[1])
        self.late.inc(c.late - before[2])
        self.closed.inc(c.closed - before[3])
        self.duplicates.inc(c.duplicates - before[4])
        self.out_of_time.inc(c.out_of_time - before[5])


def _handler(metrics: LearnerMetrics) -> type[BaseHTTPRequestHandler]:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(metrics.collectors), CONTENT_TYPE_LATEST)
                return
            if path not in ("/livez", "/readyz"):
                self._send(404, b"not found\n", "text/plain")
                return
            live, ready, detail = metrics._health()
            ok = live if path == "/livez" else ready
            body = json.dumps({"live": live, "ready": ready, **detail}).encode()
            self._send(200 if ok else 503, body, "application/json")

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:  # probes every few seconds: keep logs quiet
            return None

    return Handler
