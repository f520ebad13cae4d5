"""Prometheus metrics of one allocation server (own registry, so apps in one process
don't collide)."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["ServeMetrics"]

_LATENCY_BUCKETS = (
    0.000025, 0.00005, 0.0001, 0.00015, 0.0002, 0.00025, 0.0003, 0.0004, 0.0005, 0.00075,
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)


class ServeMetrics:
    """Request counts, latency histograms (whole request and server-side compute),
    decisions per arm, snapshot age and the spill backlog."""

    def __init__(self, snapshot_age: Callable[[], float], spill_backlog: Callable[[], float],
                 buffer_depth: Callable[[], float]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("switchboard_requests_total", "HTTP requests",
                                ["route", "status"], registry=r)
        self.latency = Histogram("switchboard_request_seconds",
                                 "Request handling time inside the app", ["route"],
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.compute = Histogram("switchboard_allocate_compute_seconds",
                                 "Server-side compute of one allocation (validate, assign, "
                                 "choose, enqueue), excluding HTTP", buckets=_LATENCY_BUCKETS,
                                 registry=r)
        self.cpu = Histogram("switchboard_allocate_cpu_seconds",
                             "CPU time of the request thread for one allocation (same span as "
                             "compute; excludes time the process was not scheduled)",
                             buckets=_LATENCY_BUCKETS, registry=r)
        self.decisions = Counter("switchboard_decisions_total", "Decisions per arm",
                                 ["variant", "arm"], registry=r)
        self.fallbacks = Counter("switchboard_policy_fallback_total",
                                 "Decisions made by the prior/uniform policy", registry=r)
        self.reloads = Counter("switchboard_snapshot_reloads_total", "Snapshot reloads",
                               ["outcome"], registry=r)
        age = Gauge("switchboard_snapshot_age_seconds",
                    "Age of the loaded model snapshot (-1 = none loaded)", registry=r)
        age.set_function(snapshot_age)
        spill = Gauge("switchboard_spill_backlog", "Decisions spilled to disk, not yet re-sent",
                      registry=r)
        spill.set_function(spill_backlog)
        depth = Gauge("switchboard_publish_buffer", "Decisions waiting in the publish buffer",
                      registry=r)
        depth.set_function(buffer_depth)
        self.started = time.time()

    def render(self) -> bytes:
        return generate_latest(self.registry)
