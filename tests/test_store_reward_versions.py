"""The rewards table's reward version and proxies (schema migration 5): what the learner's
sink writes, what rows written before the migration read, and the per-version query the
dashboard shows a re-calibration with."""

from __future__ import annotations

import pytest

from bandit.config import RewardConfig
from bandit.store import ClickHouseStore, RewardRow, open_store
from bandit.store.schema import MIGRATIONS
from consumers.join import ClosedDecision, Outbox
from consumers.sink import StoreSink
from tests.test_store_contract import EXP, T0, _decision


def _stored(store: ClickHouseStore) -> dict[str, tuple[object, ...]]:
    rows = store._rows(
        "SELECT decision_id, toString(reward_version), retried, rating, conversation_length, "
        "reward FROM rewards FINAL ORDER BY decision_id", {})
    return {r[0]: tuple(r[1:]) for r in rows}


def test_sink_writes_reward_version_and_merged_proxies(store: ClickHouseStore) -> None:
    closed = [
        ClosedDecision(_decision(1), 0.75, True, 2, reward_version="cal-1-0123abcd",
                       retried=False, rating=3, conversation_length=7),
        ClosedDecision(_decision(2, unit="u2", ts=T0 + 5), RewardConfig().default_reward,
                       False, 0),
    ]
    assert StoreSink(store).write(Outbox(rewards=closed)) == []
    got = _stored(store)
    assert got["d1"] == ("cal-1-0123abcd", 0, 3, 7, 0.75)
    assert got["d2"] == ("config", None, None, None, RewardConfig().default_reward)


def test_store_reward_versions_spans_in_decision_time(store: ClickHouseStore) -> None:
    def row(i: int, ts: int, version: str) -> RewardRow:
        return RewardRow(decision_id=f"d{i}", experiment_id=EXP, variant="bandit", arm_id="a",
                         unit_id="u1", reward=0.5, propensity=0.5, joined=True, late=False,
                         ts_ms=ts, policy_version="v1", reward_version=version, retried=True)

    rows = [row(i, T0 + i, "config") for i in range(3)]
    rows += [row(10 + i, T0 + 100 + i, "cal-1-aaaaaaaa") for i in range(4)]
    store.insert_rewards(rows)
    store.insert_rewards(rows[:2])  # a replay counts once
    got = store.reward_versions(EXP)
    assert got.columns.tolist() == ["reward_version", "since_ms", "until_ms", "decisions"]
    assert got.values.tolist() == [["config", T0, T0 + 2, 3],
                                   ["cal-1-aaaaaaaa", T0 + 100, T0 + 103, 4]]
    empty = store.reward_versions("no-such-exp")
    assert empty.empty and str(empty["decisions"].dtype) == "int64"


def test_store_migration_5_old_rewards_read_config_and_null_proxies(
        store_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import bandit.store.clickhouse as ch

    monkeypatch.setattr(ch, "MIGRATIONS", tuple(m for m in MIGRATIONS if m[0] < 5))
    old = open_store(store_dsn)
    assert old.schema_version() == 4
    old._insert("rewards", {
        "decision_id": ["d0"], "experiment_id": [EXP], "variant": ["bandit"], "arm_id": ["a"],
        "unit_id": ["u1"], "reward": [0.25], "propensity": [0.5], "joined": [1], "late": [0],
        "ts_ms": [T0], "policy_version": ["v1"]})
    old.close()
    monkeypatch.setattr(ch, "MIGRATIONS", MIGRATIONS)
    store = open_store(store_dsn)
    try:
        assert store.schema_version() == 5
        assert _stored(store)["d0"] == ("config", None, None, None, 0.25)
        assert store.reward_versions(EXP)["reward_version"].tolist() == ["config"]
    finally:
        store.close()
