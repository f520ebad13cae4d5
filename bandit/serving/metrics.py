"""Metrics of one allocation server, exported in the Prometheus text format.

The request path only bumps plain Python counters (a dict entry, a list slot found by
``bisect``: well under a microsecond); they are turned into Prometheus metric families
when ``/metrics`` is scraped. ``prometheus_client``'s own ``Counter.labels(...).inc()``
and ``Histogram.observe`` take a lock and walk label tuples on every call — five of them
per allocation cost more than the whole HTTP parse. The hot-path counters are updated
only from the event-loop thread (plain ``+=`` would race between threads); counters
kept by other threads (snapshot reloads, the publisher's buffer) are read through
callables at scrape time.

Each app has its own Prometheus collector registry (``collectors``), so apps in one process don't collide.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

__all__ = ["FastCounter", "FastHistogram", "ServeMetrics"]

LATENCY_BUCKETS = (
    0.000025, 0.00005, 0.0001, 0.00015, 0.0002, 0.00025, 0.0003, 0.0004, 0.0005, 0.00075,
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)


class FastHistogram:
    """Bucket counts and a sum; ``observe`` is one ``bisect`` and two additions.

    >>> h = FastHistogram((0.1, 1.0))
    >>> h.observe(0.05); h.observe(0.1); h.observe(3.0)
    >>> h.cumulative()
    [('0.1', 2.0), ('1.0', 2.0), ('+Inf', 3.0)]
    """

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last slot is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        # Prometheus buckets are "less than or equal": the first bound >= value
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        acc = 0
        for bound, n in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            acc += n
            out.append((bound, float(acc)))
        return out


class FastCounter:
    """Counts per label tuple.

    >>> c = FastCounter(); c.inc(("a", "1")); c.inc(("a", "1")); c.values[("a", "1")]
    2
    """

    __slots__ = ("values",)

    def __init__(self) -> None:
        self.values: dict[tuple[str, ...], int] = {}

    def inc(self, labels: tuple[str, ...] = (), n: int = 1) -> None:
        values = self.values
        values[labels] = values.get(labels, 0) + n


class _HotPathCollector(Collector):
    """Exports the fast counters and histograms at scrape time."""

    def __init__(self, metrics: ServeMetrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.m
        yield _counter("switchboard_requests", "HTTP requests", ["route", "status"],
                       m.requests)
        latency = HistogramMetricFamily("switchboard_request_seconds",
                                        "Request handling time inside the app",
                                        labels=["route"])
        for route, h in sorted(m.latency.items()):
            latency.add_metric([route], h.cumulative(), h.total)
        yield latency
        yield _histogram("switchboard_allocate_compute_seconds",
                         "Server-side compute of one allocation (validate, assign, choose, "
                         "enqueue), excluding HTTP", m.compute)
        yield _histogram("switchboard_allocate_cpu_seconds",
                         "CPU time of the request thread for one allocation (same span as "
                         "compute; excludes time the process was not scheduled)", m.cpu)
        yield _counter("switchboard_decisions", "Decisions per arm", ["variant", "arm"],
                       m.decisions)
        yield _counter("switchboard_policy_fallback",
                       "Decisions made by the prior/uniform policy", [], m.fallbacks)
        yield _counter("switchboard_allocate_unavailable",
                       "Allocations answered 503: no active arm for the unit's variant", [],
                       m.unavailable)
        yield _counter("switchboard_events_accepted",
                       "Events accepted over HTTP and queued for Kafka (feedback, engagement, "
                       "exposure)", ["kind"], m.events)
        reloads = CounterMetricFamily("switchboard_snapshot_reloads", "Snapshot reloads",
                                      labels=["outcome"])
        for outcome, n in sorted(m.reload_counts().items()):
            reloads.add_metric([outcome], float(n))
        yield reloads


def _counter(name: str, doc: str, labels: list[str], c: FastCounter) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, value in sorted(c.values.items()):
        family.add_metric(list(key), float(value))
    if not labels and not c.values:
        family.add_metric([], 0.0)
    return family


def _histogram(name: str, doc: str, h: FastHistogram) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, doc, buckets=h.cumulative(), sum_value=h.total)


class ServeMetrics:
    """Request counts, latency histograms (whole request and server-side compute),
    decisions per arm, snapshot age and the spill backlog.

    ``requests``, ``latency``, ``compute``, ``cpu``, ``decisions``, ``fallbacks``,
    ``unavailable`` and ``events`` are updated on the event-loop thread only (see the module docstring).
    """

    def __init__(self, snapshot_age: Callable[[], float], spill_backlog: Callable[[], float],
                 buffer_depth: Callable[[], float], *,
                 reload_counts: Callable[[], dict[str, int]] = dict) -> None:
        self.requests = FastCounter()
        self.latency: dict[str, FastHistogram] = {}
        self.compute = FastHistogram(LATENCY_BUCKETS)
        self.cpu = FastHistogram(LATENCY_BUCKETS)
        self.decisions = FastCounter()
        self.fallbacks = FastCounter()
        self.unavailable = FastCounter()
        self.events = FastCounter()
        self.reload_counts = reload_counts
        self.collectors = CollectorRegistry()
        r = self.collectors
        r.register(_HotPathCollector(self))
        age = Gauge("switchboard_snapshot_age_seconds",
                    "Age of the loaded model snapshot (-1 = none loaded)", registry=r)
        age.set_function(snapshot_age)
        spill = Gauge("switchboard_spill_backlog",
                      "Events (decisions, feedback, engagement, exposures) spilled to disk, "
                      "not yet re-sent", registry=r)
        spill.set_function(spill_backlog)
        depth = Gauge("switchboard_publish_buffer", "Events waiting in the publish buffers",
                      registry=r)
        depth.set_function(buffer_depth)
        self.started = time.time()

    def request(self, route: str, status: int, seconds: float) -> None:
        """One finished HTTP request (any route)."""
        self.requests.inc((route, str(status)))
        h = self.latency.get(route)
        if h is None:
            h = self.latency[route] = FastHistogram(LATENCY_BUCKETS)
        h.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.collectors)
