"""Learner metrics: Prometheus counters when ``learner.metrics_port`` > 0, no-ops otherwise."""

from __future__ import annotations

from typing import Any

__all__ = ["LearnerMetrics"]


class _Noop:
    def inc(self, *_: Any, **__: Any) -> None: ...

    def observe(self, *_: Any, **__: Any) -> None: ...

    def set(self, *_: Any, **__: Any) -> None: ...


class LearnerMetrics:
    """consumed / joined / late / dead-lettered counts, batch latency, last snapshot time."""

    def __init__(self, port: int | None) -> None:
        if port:
            from prometheus_client import (
                CollectorRegistry,
                Counter,
                Gauge,
                Histogram,
                start_http_server,
            )

            reg = CollectorRegistry()
            self.consumed: Any = Counter(
                "switchboard_learner_consumed_total", "messages consumed", registry=reg
            )
            self.joined: Any = Counter(
                "switchboard_learner_joined_total",
                "feedback joined to a pending decision",
                registry=reg,
            )
            self.late: Any = Counter(
                "switchboard_learner_late_total", "late feedback", registry=reg
            )
            self.closed: Any = Counter(
                "switchboard_learner_closed_total",
                "decisions whose window closed (applied)",
                registry=reg,
            )
            self.dead_lettered: Any = Counter(
                "switchboard_learner_dead_lettered_total",
                "messages sent to the dead-letter topic",
                registry=reg,
            )
            self.batch_latency: Any = Histogram(
                "switchboard_learner_batch_seconds", "time to apply one polled batch", registry=reg
            )
            self.snapshot_time: Any = Gauge(
                "switchboard_learner_last_snapshot_timestamp_seconds",
                "unix time of the last state snapshot",
                registry=reg,
            )
            start_http_server(port, registry=reg)
        else:
            noop = _Noop()
            self.consumed = self.joined = self.late = self.closed = noop
            self.dead_lettered = self.batch_latency = self.snapshot_time = noop

    @staticmethod
    def snapshot_counts(unit: Any) -> tuple[int, int, int, int]:
        c = unit.counters
        return (c.consumed, c.joined, c.late, c.closed)

    def record(self, unit: Any, before: tuple[int, int, int, int]) -> None:
        c = unit.counters
        self.consumed.inc(c.consumed - before[0])
        self.joined.inc(c.joined - before[1])
        self.late.inc(c.late - before[2])
        self.closed.inc(c.closed - before[3])
