"""The learner's one ingest path: one batch decoder at the edge, one join.

``bandit.events.decode_batch`` decodes a fetched batch column by column and returns, for
every message, the event or the error refusing it; ``JoinPartition.ingest`` applies the
result in offset order. These tests feed valid streams mixed with ~50 kinds of malformed,
duplicate and replayed messages, in random chunkings, and check

* that a message's outcome does not depend on its batch: the same deliveries fed whole
  and one message at a time give identical statistics (bit for bit), outboxes, dead
  letters (reason and original bytes), counters, offsets and snapshot state;
* the outcome against an explicit expectation: which messages are dead-lettered and why,
  the counters, the offsets, and the statistics against ``accumulate`` over the closed
  decisions of the outbox.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import fields
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
    DecisionEvent,
    FeedbackEvent,
    decode_batch,
    encode_event,
)
from bandit.formats.state import JoinState
from bandit.linear import RidgeStatistics
from bandit.policies import make_policy
from consumers.join import DECISIONS, FEEDBACK, JoinPartition, Outbox
from consumers.synthetic import ARMS, make_stream

DIM = 8
WINDOW_S = 10.0
STREAM = make_stream(11, 300, partitions=1, dim=DIM, window_ms=int(WINDOW_S * 1000), step_ms=200)
GOOD_D = STREAM.decisions[0]
GOOD_F = STREAM.feedback[0]
#: each event id's predecessor in its topic: a reused id is one still remembered
_PREV_EVENT = {
    orjson.loads(good[k])["event_id"]: orjson.loads(good[k - 1])["event_id"]
    for good in (GOOD_D, GOOD_F)
    for k in range(1, len(good))
}
#: broker timestamps: each record stamped 1 s after its good event's time
STAMPS_D = [orjson.loads(r)["ts_ms"] + 1000 for r in GOOD_D]
STAMPS_F = [orjson.loads(r)["ts_ms"] + 1000 for r in GOOD_F]

Mutation = Callable[[dict[str, Any]], Any]
#: outcome that depends on other messages (a reused id is a duplicate unless the message
#: that first used it was refused)
MAYBE = "?"


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


# (mutation, description, field the decoder refuses (None: it accepts), what the partition
# says: a fragment of the dead letter's reason, None for an applied event, MAYBE)
DECISION_MUTATIONS: list[tuple[Mutation, str, str | None, str | None]] = [
    (_set("arm_id", "nope"), "unknown arm", None, "arm_id is not a known arm"),
    (_ctx(lambda c: c[:-1]), "short context", None, f"context must have length {DIM}"),
    (_ctx(lambda c: []), "empty context", "context", "context"),
    (_ctx(lambda c: [True, *c[1:]]), "bool in context", "context[0]", "context[0]"),
    (_ctx(lambda c: ["1.0", *c[1:]]), "string in context", "context[0]", "context[0]"),
    (_ctx(lambda c: [None, *c[1:]]), "null in context", "context[0]", "context[0]"),
    (_ctx(lambda c: [1, *c[1:]]), "integer in context (valid)", None, None),
    (_ctx(lambda c: [[1.0], *c[1:]]), "nested context", "context[0]", "context[0]"),
    (_set("context", "x"), "context not an array", "context", "context"),
    (_set("schema_version", 2), "unknown schema version", "schema_version", "schema_version"),
    (_set("schema_version", 1.0), "schema version 1.0 (valid)", None, None),
    (_set("schema_version", True), "schema version true", "schema_version", "schema_version"),
    (_drop("schema_version"), "no schema version", "schema_version", "schema_version"),
    (_drop("decision_id"), "missing decision id", "decision_id", "decision_id"),
    (_set("decision_id", ""), "empty decision id", "decision_id", "decision_id"),
    (_set("unit_id", "u" * 257), "overlong unit id", "unit_id", "unit_id"),
    (_set("variant", 3), "non-string variant", "variant", "variant"),
    (_set("ts_ms", -1), "negative ts", "ts_ms", "ts_ms"),
    (_set("ts_ms", 1.5e12), "float ts", "ts_ms", "ts_ms"),
    (_set("ts_ms", False), "bool ts", "ts_ms", "ts_ms"),
    (_set("propensity", 0.0), "zero propensity", "propensity", "propensity"),
    (_set("propensity", 1.5), "propensity above 1", "propensity", "propensity"),
    (_set("propensity", 1), "integer propensity (valid)", None, None),
    (_set("propensity", "0.5"), "string propensity", "propensity", "propensity"),
    (_set("eligible", ["gpt35", "roleplay-7b"]), "eligible arms (valid)", None, None),
    (_set("eligible", [""]), "empty eligible arm", "eligible", "eligible"),
    (_set("eligible", None), "null eligible", "eligible", "eligible"),
    (_set("eligible", "gpt35"), "eligible not an array", "eligible", "eligible"),
    (lambda o: [o], "not an object", "event", "event"),
    (_set("ts_ms", MAX_TS_MS + 1), "ts beyond the store's DateTime", "ts_ms", "ts_ms"),
    (_set("ts_ms", 2**63), "ts beyond Int64", "ts_ms", "ts_ms"),
    (lambda o: {**o, "ts_ms": o["ts_ms"] + 10**9}, "ts far after the broker timestamp", None,
     "after the record's broker timestamp"),
    (lambda o: {**o, "ts_ms": o["ts_ms"] - 10**10}, "ts far before the broker timestamp", None,
     "before the record's broker timestamp"),
    (_ctx(lambda c: [1e39, *c[1:]]), "context beyond Float32", "context[0]", "context[0]"),
    (lambda o: {**o, "event_id": _PREV_EVENT[o["event_id"]], "decision_id": o["decision_id"] + "-x"},
     "reused event id, another decision", None, MAYBE),
]

FEEDBACK_MUTATIONS: list[tuple[Mutation, str, str | None, str | None]] = [
    (_set("ts_ms", 2**64 - 1), "ts beyond UInt64", "ts_ms", "ts_ms"),
    (lambda o: {**o, "ts_ms": o["ts_ms"] + 10**9}, "ts far after the broker timestamp", None,
     "after the record's broker timestamp"),
    (lambda o: {**o, "event_id": _PREV_EVENT[o["event_id"]], "rating": 1},
     "reused event id, another rating", None, MAYBE),
    (_set("decision_id", "dec-unknown"), "unknown decision", None, "feedback for unknown decision"),
    (_set("rating", 6), "rating above 5", "rating", "rating"),
    (_set("rating", 0), "rating below 1", "rating", "rating"),
    (_set("rating", True), "bool rating", "rating", "rating"),
    (_set("rating", 4.0), "float rating", "rating", "rating"),
    (_set("rating", 3), "rating (valid)", None, None),
    (_set("retried", "yes"), "string retried", "retried", "retried"),
    (_set("retried", 1), "integer retried", "retried", "retried"),
    (_drop("retried"), "no retried (valid)", None, None),
    (_set("conversation_length", -1), "negative length", "conversation_length",
     "conversation_length"),
    (_set("conversation_length", 2_000_000), "overlong length", "conversation_length",
     "conversation_length"),
    (_set("conversation_length", 1.5), "float length", "conversation_length",
     "conversation_length"),
    (_set("ts_ms", None), "null ts", "ts_ms", "ts_ms"),
    (_set("event_id", ""), "empty event id", "event_id", "event_id"),
    (_set("schema_version", 0), "old schema version", "schema_version", "schema_version"),
    (_drop("unit_id"), "missing unit id", "unit_id", "unit_id"),
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
    b"{}",
]


def _mutate(raw: bytes, mutation: Mutation) -> bytes:
    return orjson.dumps(mutation(orjson.loads(raw)))


def _partition(closed_capacity: int = 1000) -> JoinPartition:
    # a real policy, so the statistics are accumulated as in production. The closed ids
    # are forgotten by the horizon alone (late feedback comes well inside it): a capacity
    # reached mid-batch would make a late feedback's fate depend on when windows closed
    policy = make_policy(PolicyConfig(dim=DIM), ArmRegistry([Arm(a) for a in ARMS]))
    return JoinPartition(
        0, policy, arm_ids=ARMS, dim=DIM, window_s=WINDOW_S, reward=RewardConfig(),
        closed_capacity=closed_capacity, max_future_ms=300_000, max_past_ms=86_400_000,
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


def _same_state(a: JoinState, b: JoinState, *, exact: bool = True) -> None:
    """Equal snapshot states; with ``exact`` False the statistics only to rounding (sums
    taken in other groupings) and the rows as sets (windows closed at other moments)."""
    if exact:
        assert _same_stats(a.delta, b.delta)
    else:
        assert a.delta.allclose(b.delta, rtol=1e-12, atol=1e-12)
    for f in fields(JoinState):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if f.name == "delta":
            continue
        if f.name == "heap" or (not exact and isinstance(x, tuple) and f.name != "wm_decisions"
                                and f.name != "wm_feedback" and f.name != "feedback_ids"):
            assert sorted(map(repr, x)) == sorted(map(repr, y)), f.name
        else:
            assert x == y, f.name


def _same_outbox(a: Outbox, b: Outbox) -> None:
    """The same rows, in any order within a table but decisions (in offset order):
    windows may close at other moments. Late feedback is the same either way, but whether
    its decision had closed when it came (``LateFeedback.closed``, the credited reward
    row's ``late`` flag) depends on that moment; the decisions flagged late are the same."""
    assert a.decisions == b.decisions
    for name in ("feedback", "dead_letters", "engagement", "exposures"):
        assert sorted(map(repr, getattr(a, name))) == sorted(map(repr, getattr(b, name))), name
    assert sorted(repr(lf.feedback) for lf in a.late) == sorted(repr(lf.feedback) for lf in b.late)

    def credited(o: Outbox) -> tuple[list[str], set[str]]:
        rows = sorted(repr((r.decision, r.reward, r.joined, r.n_feedback)) for r in o.rewards)
        late = {r.decision.decision_id for r in o.rewards if r.late}
        late |= {lf.feedback.decision_id for lf in o.late}
        return rows, late

    assert credited(a) == credited(b)
    assert a.raw == b.raw


def _same_items(got: list[Any], want: list[Any]) -> None:
    """Events equal; errors equal by field, message and original bytes."""
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        if isinstance(w, EventDecodeError):
            assert isinstance(g, EventDecodeError)
            assert (g.field, str(g), g.raw) == (w.field, str(w), w.raw)
        else:
            assert g == w


# --------------------------------------------------------------------------- decoder


def test_decode_batch_round_trips_the_wire_form() -> None:
    events = decode_batch(DecisionEvent, GOOD_D)
    assert [encode_event(e) for e in events] == GOOD_D  # type: ignore[arg-type]
    feedback = decode_batch(FeedbackEvent, GOOD_F)
    assert [encode_event(e) for e in feedback] == GOOD_F  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("mutation", "what", "bad_field", "_reason"), DECISION_MUTATIONS,
    ids=[m[1] for m in DECISION_MUTATIONS],
)
def test_decode_batch_refuses_exactly_the_bad_decision(
    mutation: Mutation, what: str, bad_field: str | None, _reason: str | None
) -> None:
    raw = _mutate(GOOD_D[3], mutation)
    raws = [*GOOD_D[:3], raw, *GOOD_D[4:6]]
    got = decode_batch(DecisionEvent, raws)
    assert got[:3] + got[4:] == decode_batch(DecisionEvent, GOOD_D[:3] + GOOD_D[4:6])
    item = got[3]
    if bad_field is None:
        assert isinstance(item, DecisionEvent), what
    else:
        assert isinstance(item, EventDecodeError), what
        assert item.field == bad_field and item.raw == raw
        assert str(item).startswith(f"{bad_field} ")
    # the outcome does not depend on the batch the message came in
    _same_items([item], decode_batch(DecisionEvent, [raw]))


@pytest.mark.parametrize(
    ("mutation", "what", "bad_field", "_reason"), FEEDBACK_MUTATIONS,
    ids=[m[1] for m in FEEDBACK_MUTATIONS],
)
def test_decode_batch_refuses_exactly_the_bad_feedback(
    mutation: Mutation, what: str, bad_field: str | None, _reason: str | None
) -> None:
    raw = _mutate(GOOD_F[3], mutation)
    got = decode_batch(FeedbackEvent, [*GOOD_F[:3], raw, *GOOD_F[4:6]])
    assert got[:3] + got[4:] == decode_batch(FeedbackEvent, GOOD_F[:3] + GOOD_F[4:6])
    if bad_field is None:
        assert isinstance(got[3], FeedbackEvent), what
    else:
        assert isinstance(got[3], EventDecodeError), what
        assert got[3].field == bad_field and got[3].raw == raw
    _same_items([got[3]], decode_batch(FeedbackEvent, [raw]))


@pytest.mark.parametrize("raw", RAW_GARBAGE)
def test_decode_batch_refuses_undecodable_bytes_keeping_them(raw: bytes | None) -> None:
    for cls, good in ((DecisionEvent, GOOD_D[0]), (FeedbackEvent, GOOD_F[0])):
        ok, bad = decode_batch(cls, [good, raw])  # type: ignore[type-var]
        assert not isinstance(ok, EventDecodeError)
        assert isinstance(bad, EventDecodeError)
        assert bad.field in ("event", "schema_version") and bad.raw == (raw or b"")


@settings(max_examples=120, deadline=None)
@given(
    picks=st.lists(
        # from the second event on: a "reused event id" mutation takes its predecessor's
        st.tuples(st.integers(1, len(GOOD_D) - 1),
                  st.integers(-1, len(DECISION_MUTATIONS) + len(RAW_GARBAGE) - 1)),
        min_size=1,
        max_size=12,
    )
)
def test_decode_batch_equals_decoding_each_message_alone(picks: list[tuple[int, int]]) -> None:
    # in a batch, a column with one uncommon value is read value by value; alone, the
    # other messages' columns are read in one pass: both must give the same answer
    def one(i: int, m: int) -> bytes | None:
        if m < 0:
            return GOOD_D[i]
        if m < len(DECISION_MUTATIONS):
            return _mutate(GOOD_D[i], DECISION_MUTATIONS[m][0])
        return RAW_GARBAGE[m - len(DECISION_MUTATIONS)]

    raws = [one(i, m) for i, m in picks]
    _same_items(decode_batch(DecisionEvent, raws),
                [decode_batch(DecisionEvent, [r])[0] for r in raws])
    fb_at = [1 + (i - 1) % (len(GOOD_F) - 1) for i, _ in picks]
    fb = [GOOD_F[j] if m < 0 else
          _mutate(GOOD_F[j], FEEDBACK_MUTATIONS[m % len(FEEDBACK_MUTATIONS)][0])
          for j, (_, m) in zip(fb_at, picks, strict=True)]
    _same_items(decode_batch(FeedbackEvent, fb), [decode_batch(FeedbackEvent, [r])[0] for r in fb])


# --------------------------------------------------------------------------- partitions

#: what a position of a corrupted topic holds: None (good), ("mut", index),
#: ("garbage", index) or ("dup", position copied)
Slot = tuple[str, int] | None


def _corrupt(
    good: list[bytes], mutations: list[tuple[Mutation, str, str | None, str | None]],
    picks: list[tuple[int, int]],
) -> tuple[list[bytes | None], list[Slot]]:
    out: list[bytes | None] = list(good)
    slots: list[Slot] = [None] * len(good)
    for pos, m in picks:
        if m < len(mutations):
            out[pos], slots[pos] = _mutate(good[pos], mutations[m][0]), ("mut", m)
        else:
            g = (m - len(mutations)) % len(RAW_GARBAGE)
            out[pos], slots[pos] = RAW_GARBAGE[g], ("garbage", g)
    return out, slots


def _deliveries(
    d: list[bytes | None], f: list[bytes | None], cuts: list[int], order: list[bool],
    replay: int,
) -> list[tuple[str, list[tuple[int, bytes | None]], list[int]]]:
    """Both topics in chunks (cut at ``cuts``, interleaved by ``order``); each chunk also
    re-delivers up to ``replay`` already-applied messages before it."""
    out = []
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
        records = list(zip(range(start, end), data[src][start:end], strict=True))
        out.append((src, records, stamps[src][start:end]))
        pos[src] = end
        step += 1
    return out


def _feed(p: JoinPartition, deliveries: Any, *, one_by_one: bool) -> Outbox:
    out = Outbox()
    for src, records, stamps in deliveries:
        if one_by_one:
            for rec, ts in zip(records, stamps, strict=True):
                p.ingest(src, [rec], [ts])
        else:
            p.ingest(src, records, stamps)
        out.extend(p.outbox.drain())
    p.flush_all()
    out.extend(p.outbox.drain())
    return out



def _id_seen_before(raws: list[bytes | None], pos: int) -> bool:
    """Whether the event id of message ``pos`` stands in an earlier message."""
    def event_id(raw: bytes | None) -> object:
        try:
            obj = orjson.loads(raw) if raw is not None else None
        except orjson.JSONDecodeError:
            return None
        return obj.get("event_id") if isinstance(obj, dict) else None

    mine = event_id(raws[pos])
    return mine is not None and any(event_id(r) == mine for r in raws[:pos])

def _check_dead_letters(
    source: str, slots: list[Slot], raws: list[bytes | None],
    mutations: list[tuple[Mutation, str, str | None, str | None]], dead: dict[int, str],
) -> None:
    """Each position's dead letter (or none) as its content says; returns nothing, and
    leaves the positions whose outcome depends on others to the caller."""
    for pos, slot in enumerate(slots):
        if slot is None or slot[0] == "dup":
            continue
        kind, k = slot
        if kind == "garbage":
            assert pos in dead, (source, pos, RAW_GARBAGE[k])
            continue
        _, what, bad_field, reason = mutations[k]
        if reason == MAYBE:
            continue
        if bad_field is not None:
            assert dead.get(pos, "").startswith(f"{bad_field} "), (source, what, dead.get(pos))
            continue
        got = dead.get(pos, "")
        # an event whose id an earlier message already carried (e.g. another position's
        # "reused event id" mutation) may be refused as a duplicate: that reason is as
        # right as the mutation's own, for a valid event too
        if got.startswith("event_id is a duplicate") and _id_seen_before(raws, pos):
            continue
        if reason is not None:
            assert reason in got, (source, what, dead.get(pos))
        elif source == DECISIONS:
            assert pos not in dead, (source, what, dead[pos])


@settings(max_examples=50, deadline=None)
@given(
    bad_d=st.lists(
        st.tuples(st.integers(1, len(GOOD_D) - 1),
                  st.integers(0, len(DECISION_MUTATIONS) + len(RAW_GARBAGE) - 1)),
        max_size=6,
    ),
    bad_f=st.lists(
        st.tuples(st.integers(1, len(GOOD_F) - 1),
                  st.integers(0, len(FEEDBACK_MUTATIONS) + len(RAW_GARBAGE) - 1)),
        max_size=6,
    ),
    # a producer retry a few decisions later (within the remembered ids)
    dup=st.none() | st.tuples(st.integers(0, len(GOOD_D) - 21), st.integers(-20, 20)),
    cuts=st.lists(st.integers(1, 250), max_size=6),
    order=st.lists(st.booleans(), min_size=1, max_size=6),
    replay=st.integers(0, 5),
)
def test_join_partition_one_path_outcome(  # type: ignore[no-untyped-def]
    bad_d, bad_f, dup, cuts, order, replay
):
    d, d_slots = _corrupt(GOOD_D, DECISION_MUTATIONS, bad_d)
    f, f_slots = _corrupt(GOOD_F, FEEDBACK_MUTATIONS, bad_f)
    if dup is not None and dup[1] and 0 <= dup[0] + dup[1] < len(GOOD_D):
        a, b = dup[0], dup[0] + dup[1]  # the same decision twice
        d[b], d_slots[b] = GOOD_D[a], ("dup", a)
        if d_slots[a] is None:
            d_slots[a] = ("dup", b)
    deliveries = _deliveries(d, f, cuts, order, replay)

    # 1. batching does not matter: whole deliveries and one message at a time agree (each
    # ingest call closes the windows its messages allow, so the statistics are summed in
    # other groupings and the rows come out in another order)
    whole, single = _partition(), _partition()
    out = _feed(whole, deliveries, one_by_one=False)
    _same_outbox(out, _feed(single, deliveries, one_by_one=True))
    _same_state(whole.to_state(), single.to_state(), exact=False)

    # 2. the dead letters are the ones the messages call for, with their original bytes
    dead = {DECISIONS: {}, FEEDBACK: {}}  # type: dict[str, dict[int, str]]
    for dl in out.dead_letters:
        assert dl.offset not in dead[dl.source], "one dead letter per message"
        dead[dl.source][dl.offset] = dl.reason
        assert dl.raw == ({DECISIONS: d, FEEDBACK: f}[dl.source][dl.offset] or b"")
    _check_dead_letters(DECISIONS, d_slots, d, DECISION_MUTATIONS, dead[DECISIONS])
    _check_dead_letters(FEEDBACK, f_slots, f, FEEDBACK_MUTATIONS, dead[FEEDBACK])
    for pos in dead[DECISIONS]:
        assert d_slots[pos] is not None, ("a good decision was dead-lettered", pos)
    accepted = {ev.decision_id for ev in out.decisions}
    for pos, slot in enumerate(f_slots):
        if slot is not None and (slot[0] == "garbage" or FEEDBACK_MUTATIONS[slot[1]][3] is not None
                                 or FEEDBACK_MUTATIONS[slot[1]][2] is not None):
            continue
        did = orjson.loads(GOOD_F[pos])["decision_id"]
        if did not in accepted:  # its decision never applied: unknown
            assert "feedback for unknown decision" in dead[FEEDBACK].get(pos, ""), pos
        elif pos in dead[FEEDBACK]:  # only late feedback whose decision was forgotten
            assert "feedback for unknown decision" in dead[FEEDBACK][pos], dead[FEEDBACK][pos]

    # 3. counters and offsets
    c = whole.counters
    assert whole.offsets == {DECISIONS: len(d), FEEDBACK: len(f)}
    assert c.consumed == len(d) + len(f)
    assert c.dead_lettered == len(out.dead_letters)
    assert c.decisions == len(out.decisions) == len(out.rewards) == c.closed
    assert c.joined == len(out.feedback) and c.late == len(out.late)
    unknown = sum("feedback for unknown decision" in r for r in dead[FEEDBACK].values())
    assert c.feedback == c.joined + c.late + unknown
    assert c.defaulted == sum(not r.joined for r in out.rewards)
    assert c.closed > 0

    # 4. the join and the statistics: every closed decision carries the feedback joined to
    # it, and the delta is accumulate() over the closed decisions and their rewards
    joined = Counter(fb.decision_id for fb in out.feedback)
    for r in out.rewards:
        assert r.n_feedback == joined[r.decision.decision_id]
        if not r.joined:
            assert r.reward == RewardConfig().default_reward
    model = whole.model
    expect = model.accumulate(
        model.empty_statistics(),
        [r.decision.arm_id for r in out.rewards],
        np.array([r.decision.context for r in out.rewards], dtype=np.float64),
        np.array([r.reward for r in out.rewards], dtype=np.float64),
    )
    assert whole.delta.allclose(expect)


def test_join_partition_skips_offsets_below_the_next_one() -> None:
    p = _partition()
    p.ingest(DECISIONS, list(zip([0, 2, 1, 3], GOOD_D[:4], strict=True)))
    # offset 1 arrives after 2: below the next offset, so applied already (a redelivery)
    assert [ev.event_id for ev in p.outbox.decisions] == [
        orjson.loads(GOOD_D[k])["event_id"] for k in (0, 1, 3)
    ]
    assert p.offsets[DECISIONS] == 4 and p.counters.consumed == 3


def test_decode_refuses_contexts_beyond_max_context_abs() -> None:
    """A context entry finite and within Float32 but beyond MAX_CONTEXT_ABS (its square
    swamps the ridge; one such event made every later choose fail) is refused by name —
    a dead letter, not learnt; one at the bound is accepted."""
    from bandit.events import MAX_CONTEXT_ABS

    base = orjson.loads(GOOD_D[0])
    for value, ok in ((1e30, False), (-MAX_CONTEXT_ABS * 1.5, False), (MAX_CONTEXT_ABS, True)):
        raw = orjson.dumps({**base, "context": [*base["context"][:-1], value]})
        got = decode_batch(DecisionEvent, [raw])[0]
        if ok:
            assert isinstance(got, DecisionEvent) and got.context[-1] == value
        else:
            assert isinstance(got, EventDecodeError)
            assert f"context[{DIM - 1}]" in str(got) and "within" in str(got), str(got)
