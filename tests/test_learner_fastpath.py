"""The learner's column-wise fast path gives exactly what the per-event path gives.

``JoinPartition.ingest_batch`` decodes a fetched batch column by column when every event
in it is in the common valid form, and falls back to the per-event ``ingest`` otherwise.
These tests feed the same messages — valid ones mixed with every kind of malformed
message — through both paths and require identical statistics (bit for bit), outboxes,
dead letters (reason and original bytes), counters, offsets and snapshot state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bandit.arms import Arm, ArmRegistry
from bandit.config import PolicyConfig, RewardConfig
from bandit.errors import EventDecodeError
from bandit.events import (
    MAX_EVENT_BYTES,
    MAX_TS_MS,
    decode_decision,
    decode_decision_batch,
    decode_feedback,
    decode_feedback_batch,
)
from bandit.linear import RidgeStatistics
from bandit.policies import make_policy
from consumers.join import DECISIONS, FEEDBACK, JoinPartition, Outbox
from consumers.synthetic import ARMS, make_stream

DIM = 8
WINDOW_S = 10.0
STREAM = make_stream(11, 300, partitions=1, dim=DIM, window_ms=int(WINDOW_S * 1000), step_ms=200)
GOOD_D = STREAM.decisions[0]
GOOD_F = STREAM.feedback[0]
_FIRST_D_EVENT = orjson.loads(GOOD_D[0])["event_id"]
_FIRST_F_EVENT = orjson.loads(GOOD_F[0])["event_id"]
#: broker timestamps: each record stamped 1 s after its good event's time
STAMPS_D = [orjson.loads(r)["ts_ms"] + 1000 for r in GOOD_D]
STAMPS_F = [orjson.loads(r)["ts_ms"] + 1000 for r in GOOD_F]

Mutation = Callable[[dict[str, Any]], Any]


def _set(key: str, value: Any) -> Mutation:
    def f(o: dict[str, Any]) -> dict[str, Any]:
        return {**o, key: value}

    return f


def _drop(key: str) -> Mutation:
    def f(o: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in o.items() if k != key}

    return f


def _ctx(fn: Callable[[list[Any]], list[Any]]) -> Mutation:
    def f(o: dict[str, Any]) -> dict[str, Any]:
        return {**o, "context": fn(list(o["context"]))}

    return f


# (mutation, description): some stay valid for the per-event decoder (int context entry,
# propensity 1, schema_version 1.0, eligible arms) but are outside the fast form.
DECISION_MUTATIONS: list[tuple[Mutation, str]] = [
    (_set("arm_id", "nope"), "unknown arm"),
    (_ctx(lambda c: c[:-1]), "short context"),
    (_ctx(lambda c: []), "empty context"),
    (_ctx(lambda c: [True, *c[1:]]), "bool in context"),
    (_ctx(lambda c: ["1.0", *c[1:]]), "string in context"),
    (_ctx(lambda c: [None, *c[1:]]), "null in context"),
    (_ctx(lambda c: [1, *c[1:]]), "integer in context (valid)"),
    (_ctx(lambda c: [[1.0], *c[1:]]), "nested context"),
    (_set("context", "x"), "context not an array"),
    (_set("schema_version", 2), "unknown schema version"),
    (_set("schema_version", 1.0), "schema version 1.0 (valid)"),
    (_set("schema_version", True), "schema version true"),
    (_drop("schema_version"), "no schema version"),
    (_drop("decision_id"), "missing decision id"),
    (_set("decision_id", ""), "empty decision id"),
    (_set("unit_id", "u" * 257), "overlong unit id"),
    (_set("variant", 3), "non-string variant"),
    (_set("ts_ms", -1), "negative ts"),
    (_set("ts_ms", 1.5e12), "float ts"),
    (_set("ts_ms", False), "bool ts"),
    (_set("propensity", 0.0), "zero propensity"),
    (_set("propensity", 1.5), "propensity above 1"),
    (_set("propensity", 1), "integer propensity (valid)"),
    (_set("propensity", "0.5"), "string propensity"),
    (_set("eligible", ["gpt35", "roleplay-7b"]), "eligible arms (valid)"),
    (_set("eligible", [""]), "empty eligible arm"),
    (_set("eligible", None), "null eligible"),
    (_set("eligible", "gpt35"), "eligible not an array"),
    (lambda o: [o], "not an object"),
    (_set("ts_ms", MAX_TS_MS + 1), "ts beyond the store's DateTime"),
    (_set("ts_ms", 2**63), "ts beyond Int64"),
    (lambda o: {**o, "ts_ms": o["ts_ms"] + 10**9}, "ts far after the broker timestamp"),
    (lambda o: {**o, "ts_ms": o["ts_ms"] - 10**10}, "ts far before the broker timestamp"),
    (_ctx(lambda c: [1e39, *c[1:]]), "context beyond Float32"),
    (lambda o: {**o, "event_id": _FIRST_D_EVENT, "decision_id": o["decision_id"] + "-x"},
     "reused event id, another decision"),
]

FEEDBACK_MUTATIONS: list[tuple[Mutation, str]] = [
    (_set("ts_ms", 2**64 - 1), "ts beyond UInt64"),
    (lambda o: {**o, "ts_ms": o["ts_ms"] + 10**9}, "ts far after the broker timestamp"),
    (lambda o: {**o, "event_id": _FIRST_F_EVENT, "rating": 1}, "reused event id, another rating"),
    (_set("decision_id", "dec-unknown"), "unknown decision"),
    (_set("rating", 6), "rating above 5"),
    (_set("rating", 0), "rating below 1"),
    (_set("rating", True), "bool rating"),
    (_set("rating", 4.0), "float rating"),
    (_set("rating", 3), "rating (valid)"),
    (_set("retried", "yes"), "string retried"),
    (_set("retried", 1), "integer retried"),
    (_drop("retried"), "no retried (valid)"),
    (_set("conversation_length", -1), "negative length"),
    (_set("conversation_length", 2_000_000), "overlong length"),
    (_set("conversation_length", 1.5), "float length"),
    (_set("ts_ms", None), "null ts"),
    (_set("event_id", ""), "empty event id"),
    (_set("schema_version", 0), "old schema version"),
    (_drop("unit_id"), "missing unit id"),
]

RAW_GARBAGE: list[bytes | None] = [
    b"",
    b"{not json",
    b'{"a": NaN}',
    b"\xff\xfe",
    b"[1, 2]",
    b"null",
    b'{"x": 1e400}',
    None,
    b" " * (MAX_EVENT_BYTES + 1),
]


def _mutate(raw: bytes, mutation: Mutation) -> bytes:
    return orjson.dumps(mutation(orjson.loads(raw)))


def _partition() -> JoinPartition:
    # a real policy, so the statistics are accumulated as in production
    policy = make_policy(PolicyConfig(dim=DIM), ArmRegistry([Arm(a) for a in ARMS]))
    return JoinPartition(
        0, policy, arm_ids=ARMS, dim=DIM, window_s=WINDOW_S, reward=RewardConfig(),
        closed_capacity=150, max_future_ms=300_000, max_past_ms=86_400_000,
    )


def _same_stats(a: Any, b: Any) -> bool:
    assert isinstance(a, RidgeStatistics) and isinstance(b, RidgeStatistics)
    return (
        list(a.arm_ids) == list(b.arm_ids)
        and np.array_equal(a.S, b.S)
        and np.array_equal(a.b, b.b)
        and np.array_equal(a.n, b.n)
        and a.events == b.events
    )


def _same_state(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert _same_stats(a["delta"], b["delta"])
    assert sorted(a["heap"]) == sorted(b["heap"])
    assert np.array_equal(a["pending_x"], b["pending_x"])
    for key in a:
        if key not in ("delta", "heap", "pending_x"):
            assert a[key] == b[key], key


def _same_outbox(a: Outbox, b: Outbox) -> None:
    assert a.decisions == b.decisions
    assert a.feedback == b.feedback
    assert a.late == b.late
    assert a.rewards == b.rewards
    assert a.dead_letters == b.dead_letters
    assert a.raw == b.raw


# --------------------------------------------------------------------------- decoders


def test_decode_decision_batch_equals_per_event_decoding() -> None:
    got = decode_decision_batch(GOOD_D)
    assert got is not None
    events, X = got
    assert events == [decode_decision(r) for r in GOOD_D]
    assert X.dtype == np.float64 and X.shape == (len(GOOD_D), DIM)
    assert np.array_equal(X, np.array([np.asarray(e.context, dtype=np.float64) for e in events]))


def test_decode_feedback_batch_equals_per_event_decoding() -> None:
    assert decode_feedback_batch(GOOD_F) == [decode_feedback(r) for r in GOOD_F]


@pytest.mark.parametrize(("mutation", "what"), DECISION_MUTATIONS, ids=[w for _, w in DECISION_MUTATIONS])
def test_decode_decision_batch_never_accepts_what_the_event_decoder_would_not(
    mutation: Mutation, what: str
) -> None:
    raws = [*GOOD_D[:3], _mutate(GOOD_D[3], mutation), *GOOD_D[4:6]]
    got = decode_decision_batch(raws)
    if got is not None:  # then every event decodes, to the same values
        assert got[0] == [decode_decision(r) for r in raws]


@pytest.mark.parametrize("raw", RAW_GARBAGE)
def test_batch_decoders_fall_back_on_undecodable_bytes(raw: bytes | None) -> None:
    assert decode_decision_batch([GOOD_D[0], raw]) is None
    assert decode_feedback_batch([GOOD_F[0], raw]) is None


@settings(max_examples=150, deadline=None)
@given(
    picks=st.lists(
        st.tuples(st.integers(0, len(GOOD_F) - 1), st.integers(-1, len(FEEDBACK_MUTATIONS) - 1)),
        min_size=1,
        max_size=12,
    )
)
def test_decode_feedback_batch_is_none_or_exact(picks: list[tuple[int, int]]) -> None:
    raws = [
        GOOD_F[i] if m < 0 else _mutate(GOOD_F[i], FEEDBACK_MUTATIONS[m][0]) for i, m in picks
    ]
    got = decode_feedback_batch(raws)
    if got is None:
        return
    assert got == [decode_feedback(r) for r in raws]


@settings(max_examples=150, deadline=None)
@given(
    picks=st.lists(
        st.tuples(st.integers(0, len(GOOD_D) - 1), st.integers(-1, len(DECISION_MUTATIONS) - 1)),
        min_size=1,
        max_size=12,
    )
)
def test_decode_decision_batch_is_none_or_exact(picks: list[tuple[int, int]]) -> None:
    raws = [
        GOOD_D[i] if m < 0 else _mutate(GOOD_D[i], DECISION_MUTATIONS[m][0]) for i, m in picks
    ]
    got = decode_decision_batch(raws)
    if got is None:
        return
    events, X = got
    expect = []
    for r in raws:
        try:
            expect.append(decode_decision(r))
        except EventDecodeError:  # pragma: no cover - the assertion below reports it
            pytest.fail(f"fast path accepted an event the decoder rejects: {r!r}")
    assert events == expect
    assert np.array_equal(X, np.array([e.context for e in expect], dtype=np.float64))


# --------------------------------------------------------------------------- partitions


def _corrupt(
    good: list[bytes], mutations: list[tuple[Mutation, str]], picks: list[tuple[int, int]]
) -> list[bytes | None]:
    out: list[bytes | None] = list(good)
    for pos, m in picks:
        if m < len(mutations):
            out[pos] = _mutate(good[pos], mutations[m][0])
        else:
            out[pos] = RAW_GARBAGE[(m - len(mutations)) % len(RAW_GARBAGE)]
    return out


def _feed(
    p: JoinPartition,
    d: list[bytes | None],
    f: list[bytes | None],
    cuts: list[int],
    order: list[bool],
    *,
    fast: bool,
    replay: int,
) -> Outbox:
    """Feed both topics in chunks (cut at ``cuts``, interleaved by ``order``); each chunk
    also re-delivers up to ``replay`` already-applied messages before it."""
    out = Outbox()
    bounds = sorted({0, *cuts})
    chunks = [(bounds[k], bounds[k + 1] if k + 1 < len(bounds) else None) for k in range(len(bounds))]
    pos = {DECISIONS: 0, FEEDBACK: 0}
    data = {DECISIONS: d, FEEDBACK: f}
    stamps = {DECISIONS: STAMPS_D, FEEDBACK: STAMPS_F}
    step = 0
    while pos[DECISIONS] < len(d) or pos[FEEDBACK] < len(f):
        src = DECISIONS if order[step % len(order)] else FEEDBACK
        if pos[src] >= len(data[src]):
            src = FEEDBACK if src == DECISIONS else DECISIONS
        lo, hi = chunks[step % len(chunks)]
        size = max(1, (hi or lo + 37) - lo)
        start = max(0, pos[src] - replay)
        end = min(len(data[src]), pos[src] + size)
        offsets = list(range(start, end))
        values = data[src][start:end]
        ts = stamps[src][start:end]
        if fast:
            p.ingest_batch(src, offsets, values, ts)
        else:
            p.ingest(src, list(zip(offsets, values, strict=True)), ts)
        pos[src] = end
        out.extend(p.outbox.drain())
        step += 1
    return out


@settings(max_examples=60, deadline=None)
@given(
    bad_d=st.lists(
        st.tuples(st.integers(0, len(GOOD_D) - 1), st.integers(0, len(DECISION_MUTATIONS) + 8)),
        max_size=6,
    ),
    bad_f=st.lists(
        st.tuples(st.integers(0, len(GOOD_F) - 1), st.integers(0, len(FEEDBACK_MUTATIONS) + 8)),
        max_size=6,
    ),
    dup=st.none() | st.tuples(st.integers(0, len(GOOD_D) - 1), st.integers(0, len(GOOD_D) - 1)),
    cuts=st.lists(st.integers(1, 250), max_size=6),
    order=st.lists(st.booleans(), min_size=1, max_size=6),
    replay=st.integers(0, 5),
)
def test_join_partition_fast_path_equals_per_event_path(  # type: ignore[no-untyped-def]
    bad_d, bad_f, dup, cuts, order, replay
):
    d = _corrupt(GOOD_D, DECISION_MUTATIONS, bad_d)
    f = _corrupt(GOOD_F, FEEDBACK_MUTATIONS, bad_f)
    if dup is not None:  # a producer retry: the same decision twice
        d[dup[1]] = GOOD_D[dup[0]]
    slow, fast = _partition(), _partition()
    out_slow = _feed(slow, d, f, cuts, order, fast=False, replay=replay)
    out_fast = _feed(fast, d, f, cuts, order, fast=True, replay=replay)
    _same_outbox(out_slow, out_fast)
    _same_state(slow.to_state(), fast.to_state())
    slow.flush_all()
    fast.flush_all()
    _same_outbox(slow.outbox.drain(), fast.outbox.drain())
    _same_state(slow.to_state(), fast.to_state())
    assert slow.counters.closed > 0


def test_join_partition_fast_path_handles_non_increasing_offsets() -> None:
    slow, fast = _partition(), _partition()
    offsets = [0, 2, 1, 3]
    slow.ingest(DECISIONS, list(zip(offsets, GOOD_D[:4], strict=True)))
    fast.ingest_batch(DECISIONS, offsets, GOOD_D[:4])
    _same_outbox(slow.outbox.drain(), fast.outbox.drain())
    _same_state(slow.to_state(), fast.to_state())
