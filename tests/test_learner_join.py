"""Pure tests of the join/window core (no broker): a fake additive model is enough here."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bandit.config import RewardConfig
from bandit.events import DecisionEvent, FeedbackEvent, encode_event
from bandit.linear import RidgeStatistics
from bandit.reward import reward_from_proxies
from consumers.join import DECISIONS, FEEDBACK, EngagementPartition, JoinPartition
from consumers.synthetic import ARMS, make_stream

DIM = 4
WINDOW_S = 10.0
T0 = 1_700_000_000_000


class RidgeModel:
    """The additive part of a linear policy: Σxxᵀ, Σrx, n per arm."""

    def __init__(self, dim: int, arm_ids: Sequence[str] = ARMS) -> None:
        self.dim = dim
        self.arm_ids = list(arm_ids)

    def empty_statistics(self) -> RidgeStatistics:
        return RidgeStatistics.empty(self.dim, self.arm_ids)

    def accumulate(self, stats, arm_ids, contexts, rewards, **logged):  # type: ignore[no-untyped-def]
        out = stats.copy()
        out.update_batch(
            list(arm_ids),
            np.asarray(contexts, dtype=np.float64),
            np.asarray(rewards, dtype=np.float64),
        )
        return out


def part(dim: int = DIM, window_s: float = WINDOW_S, **kw) -> JoinPartition:  # type: ignore[no-untyped-def]
    # These tests pin the join rules one event at a time, so the watermark is the plain
    # running maximum here; its robustness to outliers is tested in test_learner_poison.
    kw.setdefault("watermark_outliers", 0)
    return JoinPartition(
        0, RidgeModel(dim), arm_ids=ARMS, dim=dim, window_s=window_s, reward=RewardConfig(), **kw
    )


def dec(i: int, ts: int, arm: str = "gpt35", ctx: tuple[float, ...] | None = None) -> bytes:
    return encode_event(
        DecisionEvent(
            event_id=f"de{i}",
            decision_id=f"d{i}",
            ts_ms=ts,
            unit_id="u",
            conversation_id=f"c{i}",
            experiment_id="e",
            variant="bandit",
            arm_id=arm,
            propensity=0.5,
            policy_version="v",
            context=ctx or tuple(float(i + k) for k in range(DIM)),
        )
    )


def fb(i: int, ts: int, *, eid: str | None = None, **proxies) -> bytes:  # type: ignore[no-untyped-def]
    return encode_event(
        FeedbackEvent(
            event_id=eid or f"fe{i}-{ts}",
            decision_id=f"d{i}",
            ts_ms=ts,
            unit_id="u",
            conversation_id=f"c{i}",
            **proxies,
        )
    )


def feed(p: JoinPartition, source: str, raws: list[bytes]) -> None:
    start = p.offsets[source]
    p.ingest(source, list(enumerate(raws, start=start)))


def test_join_partition_feedback_in_window_sets_reward() -> None:
    p = part()
    feed(p, DECISIONS, [dec(1, T0)])
    feed(p, FEEDBACK, [fb(1, T0 + 1000, retried=False, rating=5)])
    feed(p, DECISIONS, [dec(2, T0 + 20_000)])
    feed(p, FEEDBACK, [fb(2, T0 + 20_500, retried=True)])
    out = p.outbox.drain()
    assert [c.decision.decision_id for c in out.rewards] == ["d1"]
    want = reward_from_proxies(RewardConfig(), retried=False, rating=5)
    assert out.rewards[0].reward == want and out.rewards[0].joined
    x = np.arange(1, 1 + DIM, dtype=float)
    slot = p.delta.slot("gpt35")
    np.testing.assert_allclose(p.delta.S[slot], np.outer(x, x))
    np.testing.assert_allclose(p.delta.b[slot], want * x)
    assert p.counters.joined == 2 and p.counters.closed == 1


def test_join_partition_no_feedback_gets_default_reward() -> None:
    p = JoinPartition(
        0,
        RidgeModel(DIM),
        arm_ids=ARMS,
        dim=DIM,
        window_s=WINDOW_S,
        reward=RewardConfig(default_reward=0.25),
        watermark_outliers=0,
    )
    feed(p, DECISIONS, [dec(1, T0), dec(2, T0 + 30_000)])
    feed(p, FEEDBACK, [fb(2, T0 + 30_001, retried=False)])
    out = p.outbox.drain()
    assert [(c.decision.decision_id, c.reward, c.joined) for c in out.rewards] == [
        ("d1", 0.25, False)
    ]


def test_join_partition_late_feedback_is_stored_not_applied() -> None:
    p = part()
    feed(p, DECISIONS, [dec(1, T0), dec(2, T0 + 5_000), dec(3, T0 + 40_000)])
    # d1's feedback beyond the window while d1 is still pending; d2 closed before its late feedback
    feed(p, FEEDBACK, [fb(1, T0 + 12_000, retried=False), fb(3, T0 + 40_000, retried=True)])
    feed(p, FEEDBACK, [fb(2, T0 + 39_000, retried=False)])
    out = p.outbox.drain()
    assert {c.decision.decision_id: c.joined for c in out.rewards} == {"d1": False, "d2": False}
    assert sorted(lf.feedback.decision_id for lf in out.late) == ["d1", "d2"]
    assert not out.dead_letters
    assert p.counters.late == 2


def test_join_partition_unknown_decision_feedback_is_dead_lettered() -> None:
    p = part()
    feed(p, FEEDBACK, [fb(99, T0 + 100, retried=False)])
    assert not p.outbox.dead_letters  # held: the decisions stream has not reached it yet
    feed(p, DECISIONS, [dec(1, T0 + 200)])
    out = p.outbox.drain()
    assert len(out.dead_letters) == 1
    assert "feedback for unknown decision" in out.dead_letters[0].reason
    assert out.dead_letters[0].source == FEEDBACK and out.dead_letters[0].offset == 0


def test_join_partition_feedback_before_decision_is_joined() -> None:
    p = part()
    feed(p, FEEDBACK, [fb(1, T0 + 100, rating=5)])
    feed(p, DECISIONS, [dec(1, T0)])
    feed(p, DECISIONS, [dec(2, T0 + 60_000)])
    feed(p, FEEDBACK, [fb(2, T0 + 60_000)])
    out = p.outbox.drain()
    assert out.rewards[0].joined and out.rewards[0].reward == 1.0


def test_join_partition_held_feedback_joins_when_its_decision_arrives() -> None:
    # the tail of a stream: feedback ahead of its decision, and no later decision to push
    # the decisions watermark past it — it joins (and is stored) as soon as d1 arrives
    p = part()
    feed(p, FEEDBACK, [fb(1, T0 + 900, rating=5)])
    assert p.held and not p.outbox.feedback
    feed(p, DECISIONS, [dec(1, T0)])
    assert not p.held
    assert p.counters.joined == 1
    assert [f.decision_id for f in p.outbox.feedback] == ["d1"]
    # same reward as the held-until-watermark route once the window closes
    feed(p, DECISIONS, [dec(2, T0 + 60_000)])
    feed(p, FEEDBACK, [fb(2, T0 + 60_000)])
    out = p.outbox.drain()
    assert out.rewards[0].joined and out.rewards[0].reward == 1.0
    # feedback outside its decision's window stays held and ends late, as before
    q = part()
    feed(q, FEEDBACK, [fb(1, T0 + 15_000, rating=5)])
    feed(q, DECISIONS, [dec(1, T0)])
    assert len(q.held) == 1 and q.counters.joined == 0
    feed(q, DECISIONS, [dec(2, T0 + 16_000)])
    assert not q.held and q.counters.late == 1


BAD_DECISIONS = [
    (dec(1, T0, arm="nope"), "arm_id"),
    (dec(2, T0, ctx=(1.0, 2.0)), "context must have length"),
    (b"{not json", "not valid JSON"),
    (b"", "not valid JSON"),
]


@pytest.mark.parametrize(("raw", "reason"), BAD_DECISIONS)
def test_join_partition_bad_decision_is_dead_lettered(raw: bytes, reason: str) -> None:
    p = part()
    feed(p, DECISIONS, [raw, dec(5, T0)])
    out = p.outbox.drain()
    assert len(out.dead_letters) == 1 and reason in out.dead_letters[0].reason
    assert out.dead_letters[0].raw == raw
    assert [d.decision_id for d in out.decisions] == ["d5"]


def test_join_partition_duplicate_decision_counts_once() -> None:
    p = part()
    feed(p, DECISIONS, [dec(1, T0), dec(1, T0)])
    out = p.outbox.drain()
    assert len(out.decisions) == 1 and "duplicate" in out.dead_letters[0].reason


def test_join_partition_redelivered_offsets_are_skipped() -> None:
    p = part()
    p.ingest(DECISIONS, [(0, dec(1, T0)), (1, dec(2, T0 + 1))])
    p.ingest(DECISIONS, [(0, dec(1, T0)), (1, dec(2, T0 + 1)), (2, dec(3, T0 + 2))])
    assert p.counters.decisions == 3 and p.offsets[DECISIONS] == 3


def test_engagement_partition_dead_letters_bad_rows() -> None:
    e = EngagementPartition(2)
    good = (
        b'{"schema_version":1,"event_id":"e1","ts_ms":1,"unit_id":"u",'
        b'"screen_time_s":3.5,"messages":2}'
    )
    e.ingest("engagement", [(0, good), (1, good.replace(b"3.5", b"-1"))])
    assert len(e.outbox.engagement) == 1 and len(e.outbox.dead_letters) == 1
    assert e.offsets["engagement"] == 2


def _run(
    stream_d: list[bytes],
    stream_f: list[bytes],
    cuts_d: list[int],
    cuts_f: list[int],
    order: list[bool],
    restore_at: int | None = None,
) -> JoinPartition:
    """Feed both streams in chunks, interleaved by ``order``; optionally snapshot+restore."""
    p = JoinPartition(
        0, RidgeModel(8), arm_ids=ARMS, dim=8, window_s=WINDOW_S, reward=RewardConfig()
    )
    chunks_d = np.split(np.arange(len(stream_d)), sorted(set(cuts_d)))
    chunks_f = np.split(np.arange(len(stream_f)), sorted(set(cuts_f)))
    i = j = step = 0
    while i < len(chunks_d) or j < len(chunks_f):
        take_d = j >= len(chunks_f) or (i < len(chunks_d) and order[step % len(order)])
        if take_d:
            p.ingest(DECISIONS, [(int(k), stream_d[k]) for k in chunks_d[i]])
            i += 1
        else:
            p.ingest(FEEDBACK, [(int(k), stream_f[k]) for k in chunks_f[j]])
            j += 1
        step += 1
        if restore_at is not None and step == restore_at:
            state = p.to_state()
            p = JoinPartition(
                0, RidgeModel(8), arm_ids=ARMS, dim=8, window_s=WINDOW_S, reward=RewardConfig()
            )
            p.load_state(state)
    return p


STREAM = make_stream(7, 400, partitions=1, dim=8, window_ms=int(WINDOW_S * 1000), step_ms=200)


@settings(max_examples=25, deadline=None)
@given(
    cuts_d=st.lists(st.integers(0, 400), max_size=8),
    cuts_f=st.lists(st.integers(0, 330), max_size=8),
    order=st.lists(st.booleans(), min_size=1, max_size=8),
    restore_at=st.none() | st.integers(1, 12),
)
def test_join_partition_result_independent_of_interleaving(cuts_d, cuts_f, order, restore_at):  # type: ignore[no-untyped-def]
    d, f = STREAM.decisions[0], STREAM.feedback[0]
    ref = _run(d, f, [], [], [True])
    got = _run(d, f, cuts_d, cuts_f, order, restore_at)
    assert got.delta.allclose(ref.delta, rtol=0, atol=1e-9)
    assert got.counters.closed == ref.counters.closed > 0
    assert sorted(got.pending) == sorted(ref.pending)
    # feedback still held (ahead of the decisions stream) is in flight; drain both and compare
    got.flush_all()
    ref.flush_all()
    assert got.delta.allclose(ref.delta, rtol=0, atol=1e-9)
    assert got.counters == ref.counters
    assert got.counters.dead_lettered == 0


def test_state_dir_round_trips_and_detects_corruption(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from bandit.errors import SnapshotError
    from bandit.formats.state import StateDir

    p = part()
    feed(p, DECISIONS, [dec(1, T0), dec(2, T0 + 30_000)])
    feed(p, FEEDBACK, [fb(1, T0 + 10, rating=4), fb(2, T0 + 30_001, retried=True)])
    state = StateDir(tmp_path)
    state.save(p.to_state())
    q = part()
    q.load_state(state.load("join", 0))  # type: ignore[arg-type]
    assert q.offsets == p.offsets and sorted(q.pending) == sorted(p.pending)
    assert q.delta.allclose(p.delta) and state.load_deltas()[0].allclose(p.delta)
    assert state.load("join", 7) is None
    path = state.path("join", 0)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match="checksum"):
        state.load("join", 0)


def test_join_learns_an_arm_the_registry_knows_and_dead_letters_the_rest() -> None:
    asked: list[str] = []
    registry = {"late-expert"}

    def arm_known(arm_id: str) -> bool:
        asked.append(arm_id)
        return arm_id in registry

    p = part(arm_known=arm_known)
    # a decision naming an arm outside arm_ids makes the partition ask the registry
    p.ingest(DECISIONS, [(0, dec(0, T0, "late-expert")), (1, dec(1, T0 + 1, "gpt35")),
                         (2, dec(2, T0 + 2, "never"))])
    assert "late-expert" in p.arm_ids and "never" not in p.arm_ids
    assert [d.reason for d in p.outbox.dead_letters] == ["arm_id is not a known arm, got 'never'"]
    # once learnt, the arm is not asked about again
    p.ingest(DECISIONS, [(3, dec(3, T0 + 3, "late-expert"))])
    assert asked == ["late-expert", "never"]
    # a restored partition relearns the arms of its pending decisions
    restored = part(arm_known=arm_known)
    restored.load_state(p.to_state())
    assert "late-expert" in restored.arm_ids
    restored.ingest(FEEDBACK, [(0, fb(9, T0 + 10 * 60_000, rating=5))])
    restored.ingest(DECISIONS, [(4, dec(4, T0 + 10 * 60_000))])
    assert restored.counters.closed == 3  # d0, d1, d3; d4 is still in its window
    assert restored.delta.n[restored.delta.slot("late-expert")] == 2
