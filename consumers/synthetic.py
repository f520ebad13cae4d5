"""Synthetic decision/feedback streams with known layout (learner tests, bench, demos)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from bandit.events import DecisionEvent, FeedbackEvent, encode_event
from consumers.join import DECISIONS, FEEDBACK, WATERMARK_OUTLIERS, JoinPartition

__all__ = ["ARMS", "Stream", "make_stream", "produce", "reference"]

ARMS = ("gpt35", "roleplay-7b", "creative-7b", "informative-13b")


@dataclass(frozen=True)
class Stream:
    """Per-partition encoded decisions and feedback, in event-time order."""

    decisions: dict[int, list[bytes]]
    feedback: dict[int, list[bytes]]

    @property
    def n_events(self) -> int:
        return sum(map(len, self.decisions.values())) + sum(map(len, self.feedback.values()))


def make_stream(
    seed: int,
    n_decisions: int,
    *,
    partitions: int = 4,
    dim: int = 8,
    feedback_rate: float = 0.8,
    window_ms: int = 10_000,
    late_rate: float = 0.05,
    step_ms: int = 50,
    close_windows: bool = False,
) -> Stream:
    """A synthetic stream: decisions every ``step_ms``; feedback for most of them.

    Feedback lags its decision by a random delay inside the window, or beyond it with
    probability ``late_rate``. Partition = conversation index mod ``partitions``, so the
    same layout holds on a broker with keyed partitioning replaced by explicit partitions.

    ``close_windows`` appends to every partition a tail of decisions with feedback far
    enough after the stream (and numerous enough for the robust watermark) that every
    earlier window closes and every held feedback resolves: the point at which a
    learner's store contents are final ("drained", see docs/learner.md).
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    decisions: dict[int, list[tuple[int, bytes]]] = {p: [] for p in range(partitions)}
    feedback: dict[int, list[tuple[int, bytes]]] = {p: [] for p in range(partitions)}
    t0 = 1_700_000_000_000
    for i in range(n_decisions):
        conv = int(rng.integers(0, 4 * n_decisions))
        p = conv % partitions
        ts = t0 + i * step_ms
        ctx = rng.normal(size=dim).round(6)
        arm = ARMS[int(rng.integers(0, len(ARMS)))]
        d = DecisionEvent(
            event_id=f"d-{seed}-{i}",
            decision_id=f"dec-{seed}-{i}",
            ts_ms=ts,
            unit_id=f"u{conv % 997}",
            conversation_id=f"c{conv}",
            experiment_id="exp",
            variant="bandit",
            arm_id=arm,
            propensity=float(rng.uniform(0.05, 1.0)),
            policy_version="v0",
            context=tuple(float(v) for v in ctx),
        )
        decisions[p].append((ts, encode_event(d)))
        if rng.random() < feedback_rate:
            late = rng.random() < late_rate
            delay = (
                int(rng.integers(window_ms + 1, 3 * window_ms))
                if late
                else int(rng.integers(0, window_ms))
            )
            f = FeedbackEvent(
                event_id=f"f-{seed}-{i}",
                decision_id=d.decision_id,
                ts_ms=ts + delay,
                unit_id=d.unit_id,
                conversation_id=d.conversation_id,
                retried=bool(rng.random() < 0.3),
                rating=int(rng.integers(1, 6)) if rng.random() < 0.4 else None,
                conversation_length=int(rng.integers(0, 40)),
            )
            feedback[p].append((ts + delay, encode_event(f)))
    if close_windows:
        # past every late feedback (3 windows) and the closed-id horizon (4 windows)
        t_end = t0 + n_decisions * step_ms + 10 * window_ms
        for p in range(partitions):
            for k in range(WATERMARK_OUTLIERS + 2):
                ts = t_end + k
                d = DecisionEvent(
                    event_id=f"d-{seed}-tail-{p}-{k}", decision_id=f"dec-{seed}-tail-{p}-{k}",
                    ts_ms=ts, unit_id=f"tail-{p}", conversation_id=f"tail-{p}-{k}",
                    experiment_id="exp", variant="bandit", arm_id=ARMS[0], propensity=1.0,
                    policy_version="v0", context=(0.0,) * dim,
                )
                decisions[p].append((ts, encode_event(d)))
                f = FeedbackEvent(
                    event_id=f"f-{seed}-tail-{p}-{k}", decision_id=d.decision_id, ts_ms=ts,
                    unit_id=d.unit_id, conversation_id=d.conversation_id, retried=False,
                )
                feedback[p].append((ts, encode_event(f)))
    return Stream(
        {p: [raw for _, raw in v] for p, v in decisions.items()},
        {p: [raw for _, raw in sorted(v, key=lambda t: t[0])] for p, v in feedback.items()},
    )


def produce(
    bootstrap_servers: str,
    stream: Stream,
    decisions_topic: str,
    feedback_topic: str,
    extra: Sequence[tuple[str, int, bytes]] = (),
) -> None:
    """Write ``stream`` to the broker, partition by partition (explicit partitions).

    ``extra`` holds additional ``(topic, partition, value)`` messages written after it.
    """
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=bootstrap_servers,
        linger_ms=20,
        batch_size=1 << 20,
        max_request_size=8 << 20,
        acks="all",
    )
    try:
        for p in sorted(stream.decisions):
            for raw in stream.decisions[p]:
                producer.send(decisions_topic, raw, partition=p)
            for raw in stream.feedback[p]:
                producer.send(feedback_topic, raw, partition=p)
        for topic, p, raw in extra:
            producer.send(topic, raw, partition=p)
        producer.flush()
    finally:
        producer.close()


def reference(
    stream: Stream, make_join: Callable[[int], JoinPartition]
) -> dict[int, JoinPartition]:
    """The uninterrupted in-memory result: each partition's decisions, then its feedback."""
    out = {}
    for p in sorted(stream.decisions):
        part = make_join(p)
        part.ingest(DECISIONS, list(enumerate(stream.decisions[p])))
        part.ingest(FEEDBACK, list(enumerate(stream.feedback[p])))
        out[p] = part
    return out
