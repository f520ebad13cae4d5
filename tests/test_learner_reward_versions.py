"""The join scores each closing decision with the reward α's in force at its own event time
(pure: no broker, no store), keeps the version and merged proxies through a state file,
and reads state files written before they were kept."""

from __future__ import annotations

import dataclasses

import pytest

from bandit.config import RewardConfig
from bandit.formats.calibration import CalibrationHistory, CalibrationVersion, version_id
from bandit.formats.state import decode_state, encode_state
from bandit.reward import reward_from_proxies
from consumers.join import DECISIONS, FEEDBACK, JoinPartition
from consumers.synthetic import ARMS
from tests.test_learner_join import DIM, T0, WINDOW_S, RidgeModel, dec, fb, feed

NEW = RewardConfig(alpha_retry=0.1, alpha_rating=0.1, alpha_length=0.8, default_reward=0.4)
EFFECTIVE = T0 + 5_000


def _version(n: int, at: int, reward: RewardConfig) -> CalibrationVersion:
    draft = CalibrationVersion(n, "", at, at, reward, {})
    return dataclasses.replace(draft, id=version_id(n, draft.content()))


class Source:
    """A fixed history, and what the join reported applying."""

    def __init__(self, *versions: CalibrationVersion) -> None:
        self.history = CalibrationHistory(versions)
        self.reported: list[str] = []

    def in_force(self) -> CalibrationHistory:
        return self.history

    def applied(self, version: CalibrationVersion) -> None:
        self.reported.append(version.id)


def _part(source: Source | None) -> JoinPartition:
    return JoinPartition(0, RidgeModel(DIM), arm_ids=ARMS, dim=DIM, window_s=WINDOW_S,
                         reward=RewardConfig(), watermark_outliers=0, calibration=source)


def test_join_scores_each_decision_with_the_version_in_force_at_its_time() -> None:
    v1 = _version(1, EFFECTIVE, NEW)
    source = Source(v1)
    p = _part(source)
    proxies = {"retried": False, "rating": 2, "conversation_length": 9}
    # the same proxies either side of the effective time: the memo must not mix versions
    feed(p, DECISIONS, [dec(1, T0), dec(2, EFFECTIVE - 1), dec(3, EFFECTIVE), dec(4, T0 + 6_000)])
    feed(p, FEEDBACK, [fb(1, T0 + 10, **proxies), fb(2, EFFECTIVE, **proxies),
                       fb(3, EFFECTIVE + 10, **proxies)])
    feed(p, DECISIONS, [dec(5, T0 + 60_000)])
    feed(p, FEEDBACK, [fb(5, T0 + 60_000, retried=True)])
    out = {c.decision.decision_id: c for c in p.outbox.drain().rewards}
    assert sorted(out) == ["d1", "d2", "d3", "d4"]
    old, new = (reward_from_proxies(cfg, **proxies) for cfg in (RewardConfig(), NEW))
    assert old != new
    assert [(out[d].reward_version, out[d].reward) for d in ("d1", "d2", "d3")] == [
        ("config", old), ("config", old), (v1.id, new)]
    # no feedback: the version's own default reward
    assert (out["d4"].reward_version, out["d4"].reward, out["d4"].joined) == (v1.id, 0.4, False)
    assert (out["d3"].retried, out["d3"].rating, out["d3"].conversation_length) == (False, 2, 9)
    assert (out["d4"].retried, out["d4"].rating, out["d4"].conversation_length) == (
        None, None, None)
    assert set(source.reported) == {v1.id}
    # without a calibration source, or before its first version: today's rewards
    plain = _part(None)
    feed(plain, DECISIONS, [dec(1, T0), dec(5, T0 + 60_000)])
    feed(plain, FEEDBACK, [fb(1, T0 + 10, **proxies), fb(5, T0 + 60_000, retried=True)])
    (only,) = plain.outbox.drain().rewards
    assert (only.reward_version, only.reward) == ("config", old)


def test_join_state_keeps_version_and_proxies_for_a_late_rewrite_after_restart() -> None:
    v1 = _version(1, T0 - 1, NEW)
    p = _part(Source(v1))
    feed(p, DECISIONS, [dec(1, T0)])
    feed(p, FEEDBACK, [fb(1, T0 + 10, retried=False, conversation_length=4)])
    feed(p, DECISIONS, [dec(2, T0 + 20_000)])
    feed(p, FEEDBACK, [fb(2, T0 + 20_000)])
    (closed,) = p.outbox.drain().rewards
    arrays, meta = encode_state(p.to_state())
    restored = _part(Source())  # the file is gone since: what was credited stays
    restored.load_state(decode_state(arrays, meta, "join", 0, "test"))
    feed(restored, FEEDBACK, [fb(1, T0 + 15_000, rating=5)])  # late for d1
    (late,) = restored.outbox.drain().late
    assert late.closed is not None and late.closed.late
    assert dataclasses.replace(late.closed, late=False) == dataclasses.replace(
        closed, decision=late.closed.decision)
    assert (late.closed.reward_version, late.closed.retried, late.closed.conversation_length) == (
        v1.id, False, 4)


def test_join_state_written_before_reward_versions_reads_config() -> None:
    p = _part(None)
    feed(p, DECISIONS, [dec(1, T0), dec(2, T0 + 20_000)])
    feed(p, FEEDBACK, [fb(1, T0 + 10, retried=True), fb(2, T0 + 20_000)])
    state = p.to_state()
    old_rows = dataclasses.replace(state, closed=tuple(row[:5] for row in state.closed))
    arrays, meta = encode_state(old_rows)  # closed rows as the previous release wrote them
    back = decode_state(arrays, meta, "join", 0, "test")
    assert [row[5:] for row in back.closed] == [("config", None, None, None)]  # type: ignore[union-attr]
    with pytest.raises(Exception, match="closed must be a row"):
        bad = dataclasses.replace(state, closed=tuple(row[:7] for row in state.closed))
        decode_state(*encode_state(bad), "join", 0, "test")
