"""Experiments carry their own design: the allocation servers publish it, the learner
records it, lift tests the sample ratio against it.

* the learner's engagement partitions decode design events from ``kafka.designs_topic``
  (dead-lettering bad ones with their bytes, as for every topic) and the store sink
  records a design period only when the weights change;
* end to end, on a real broker and a real store: a 90/10 experiment served on a
  simulated calendar is recorded with its weights from its first decision's time; a
  second server with the same design adds nothing; a restart with new weights opens a
  second period; ``switchboard lift --json`` with no config file tests the sample ratio
  per period and raises no alarm.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pytest

from bandit.arms import Arm
from bandit.cli import main
from bandit.config import (
    Config,
    ExperimentConfig,
    KafkaConfig,
    ModelConfig,
    PolicyConfig,
    ServeConfig,
    VariantConfig,
)
from bandit.embedded.broker import EmbeddedBroker
from bandit.events import DesignEvent, EngagementEvent, encode_event
from bandit.formats.state import StateDir
from bandit.serving.allocator import Allocator
from bandit.store import ClickHouseStore, open_store
from consumers.join import DESIGNS, ENGAGEMENT, EXPOSURES, EngagementPartition, Outbox
from consumers.sink import StoreSink
from tests.fixtures.kafka import kafka_toml
from tests.test_learner_kafka import start_learner, stop, wait_for
from tests.test_learner_sink import _dead_letters

DAY_MS = 86_400_000
#: the simulated calendar the decisions are on (2026-01-05), far from the wall clock
T0 = 1_767_571_200_000
EXP = "exp-designs"
TOKEN = "designs-test-token"


def _design(i: int, weights: dict[str, float], ts_ms: int, exp: str = EXP) -> DesignEvent:
    return DesignEvent.of(event_id=f"des-{i}", ts_ms=ts_ms, experiment_id=exp, weights=weights)


def test_engagement_partition_decodes_designs_and_dead_letters_bad_ones() -> None:
    part = EngagementPartition(0)
    good = [encode_event(_design(i, {"gpt35": 0.9, "bandit": 0.1}, T0 + i)) for i in range(3)]
    bad = orjson.dumps({**orjson.loads(good[0]), "event_id": "bad",
                        "weights": [["gpt35", 0.5], ["bandit", 0.5]]})  # version of 90/10
    part.ingest(DESIGNS, list(enumerate([good[0], bad, *good[1:]])))
    assert [e.event_id for e in part.outbox.designs] == ["des-0", "des-1", "des-2"]
    assert part.offsets == {ENGAGEMENT: 0, EXPOSURES: 0, DESIGNS: 4}
    [dead] = part.outbox.dead_letters
    assert "design_version" in dead.reason and dead.raw == bad and dead.offset == 1
    drained = part.outbox.drain()
    assert len(drained) == 4 and len(drained.designs) == 3 and not part.outbox.designs
    # replayed offsets are skipped; the offset is part of the partition's state
    part.ingest(DESIGNS, list(enumerate([good[0], bad, *good[1:]])))
    assert not part.outbox.designs
    again = EngagementPartition(0)
    again.load_state(part.to_state())
    assert again.offsets[DESIGNS] == 4
    # state saved before designs existed: they are read from the start
    again.load_state(dataclasses.replace(part.to_state(), offsets={ENGAGEMENT: 7,
                                                                   EXPOSURES: 2}))
    assert again.offsets == {ENGAGEMENT: 7, EXPOSURES: 2, DESIGNS: 0}


def test_store_sink_records_a_design_period_only_when_the_weights_change(
        store: ClickHouseStore) -> None:
    outbox = Outbox()
    outbox.designs = [
        _design(0, {"gpt35": 0.9, "bandit": 0.1}, T0),
        _design(1, {"gpt35": 9.0, "bandit": 1.0}, T0 + DAY_MS),  # a second server, same shares
        _design(2, {"gpt35": 0.5, "bandit": 0.5}, T0 + 10 * DAY_MS),  # new weights
        _design(3, {"a": 1.0}, T0, exp="exp-other"),
    ]
    sink = StoreSink(store)
    assert sink.write(outbox) == []
    assert sink.write(outbox) == []  # a replay adds nothing
    d = store.experiment_design(EXP)
    assert sorted(set(d["since_ms"])) == [T0, T0 + 10 * DAY_MS]
    first = d[d["since_ms"] == T0]
    assert dict(zip(first["variant"], first["weight"], strict=True)) == {"gpt35": 0.9,
                                                                         "bandit": 0.1}
    assert len(store.experiment_design("exp-other")) == 1


# ---------------------------------------------------------------------- end to end


def _config(bootstrap: str, prefix: str, tmp: Path, weights: dict[str, float]) -> Config:
    variants = (VariantConfig("gpt35", weights["gpt35"], "fixed", ("baseline",)),
                VariantConfig("bandit", weights["bandit"], "linucb", ("expert", "baseline")))
    return Config(
        policy=PolicyConfig(dim=8),
        experiment=ExperimentConfig(id=EXP, variants=variants),
        kafka=KafkaConfig(bootstrap_servers=bootstrap, decisions_topic=f"{prefix}.decisions",
                          feedback_topic=f"{prefix}.feedback",
                          engagement_topic=f"{prefix}.engagement",
                          exposures_topic=f"{prefix}.exposures",
                          designs_topic=f"{prefix}.designs", partitions=1),
        model=ModelConfig(dir=str(tmp / "srv-snap")),
        # a replay of a past calendar: the operator widens the decision-time bound for it
        serve=ServeConfig(spill_dir=str(tmp / "spill"), tokens=(TOKEN,),
                          max_decision_skew_s=10 * 365 * 86_400.0),
    )


def _serve(config: Config, units: list[str], start_ms: int, rng: np.random.Generator,
           seed: int) -> int:
    """One allocation server's run: a decision per unit (one every minute of the
    simulated calendar from ``start_ms``) and each unit's engagement two days later, all
    through the allocator into Kafka. Returns the events sent."""
    allocator = Allocator.from_config(
        config, arms=[Arm("gpt35", kind="baseline"), Arm("e1"), Arm("e2")], seed=seed).start()
    auth = f"Bearer {TOKEN}"
    try:
        for i, unit in enumerate(units):
            ts = start_ms + i * 60_000
            reply = allocator.allocate_now(auth, orjson.dumps(
                {"unit_id": unit, "conversation_id": f"c-{unit}", "ts_ms": ts,
                 "embedding": rng.normal(size=8).tolist()}))
            assert reply is not None and reply.status == 200, reply
            screen = float(rng.lognormal(4.0, 1.0)) if rng.random() < 0.6 else 0.0
            event = EngagementEvent(event_id=f"eng-{unit}", ts_ms=ts + 2 * DAY_MS,
                                    unit_id=unit, screen_time_s=min(screen, 86_400.0),
                                    messages=int(rng.integers(0, 20)))
            reply = allocator.post_now("/v1/engagement", auth, encode_event(event))
            assert reply is not None and reply.status == 202, reply
        assert allocator.design_since_ms == start_ms
    finally:
        allocator.close()  # drains every publisher into Kafka
    sinks = allocator.sinks
    sent = sum(getattr(sinks[k], "sent", 0) for k in ("decision", "engagement", "design"))
    assert sent == 2 * len(units) + 1, "not every event reached Kafka"
    return sent


def _learner_config(tmp: Path, bootstrap: str, prefix: str) -> Path:
    """The learner's configuration: no [experiment] section (it does not need one)."""
    path = tmp / "learner.toml"
    path.write_text(f"""
[policy]
dim = 8
{kafka_toml(bootstrap, prefix)}
[learner]
attribution_window_s = 10.0
commit_interval_s = 0.3
publish_interval_s = 1.0
state_dir = "{tmp / "state"}"
[model]
dir = "{tmp / "learner-model"}"
[store]
dsn = "chdb://{tmp / "chdb"}"
""")
    (tmp / "arms.json").write_text(json.dumps([{"arm_id": "gpt35", "kind": "baseline"},
                                               {"arm_id": "e1", "kind": "expert"},
                                               {"arm_id": "e2", "kind": "expert"}]))
    return path


@pytest.mark.integration
def test_designs_travel_from_servers_to_lift_through_broker_learner_and_store(
    broker: EmbeddedBroker, make_topics: Callable[..., None], topic_prefix: str,
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    names = ("decisions", "feedback", "engagement", "exposures", "designs", "dead-letter")
    make_topics(*(f"{topic_prefix}.{n}" for n in names), partitions=1)
    rng = np.random.default_rng(np.random.SeedSequence(1515).spawn(1)[0])
    b = broker.bootstrap_servers
    ninety = _config(b, topic_prefix, tmp_path / "a", {"gpt35": 0.9, "bandit": 0.1})
    even = _config(b, topic_prefix, tmp_path / "c", {"gpt35": 0.5, "bandit": 0.5})
    # server A, then server B with the same design a day later: one period
    sent = _serve(ninety, [f"a-{i}" for i in range(300)], T0, rng, seed=1)
    sent += _serve(dataclasses.replace(ninety, serve=dataclasses.replace(
        ninety.serve, spill_dir=str(tmp_path / "b-spill"))),
        [f"b-{i}" for i in range(100)], T0 + DAY_MS, rng, seed=2)
    # restarted with 50/50 on day 10 (new users only: a moved weight reassigns some old
    # ones, which then count as cross-exposed)
    sent += _serve(even, [f"c-{i}" for i in range(300)], T0 + 10 * DAY_MS, rng, seed=3)

    # and a bad one (its version is not that of its weights), produced straight to Kafka
    bad = orjson.dumps({**orjson.loads(encode_event(_design(9, {"gpt35": 1.0}, T0))),
                        "weights": [["gpt35", 0.2], ["bandit", 0.8]]})
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=b, acks="all")
    producer.send(f"{topic_prefix}.designs", bad, key=EXP.encode()).get(30)
    producer.close()

    cfg_path = _learner_config(tmp_path, b, topic_prefix)
    state = StateDir(tmp_path / "state")

    def all_read() -> bool:
        parts = state.load_all("engagement")
        return sum(p.offsets.get(DESIGNS, 0) + p.offsets.get(ENGAGEMENT, 0)
                   for p in parts.values()) >= 4 + 700 and bool(state.load_all("join"))

    def decisions_read() -> bool:
        parts = state.load_all("join")
        return sum(p.offsets.get("decisions", 0) for p in parts.values()) >= 700

    learner = start_learner(cfg_path, tmp_path)
    try:
        wait_for(lambda: all_read() and decisions_read(), 180, "events read by the learner",
                 [learner])
    finally:
        assert stop(learner) == 0
    assert sent == 2 * 700 + 3

    store = open_store(f"chdb://{tmp_path / 'chdb'}")
    try:
        design = store.experiment_design(EXP)
        assert store.count("exposures") == 700
    finally:
        store.close()
    periods = {int(s): dict(zip(g["variant"], g["weight"], strict=True))
               for s, g in design.groupby("since_ms")}
    # since_ms are the first decisions' times on the simulated calendar, not wall time
    assert periods == {T0: {"gpt35": 0.9, "bandit": 0.1},
                       T0 + 10 * DAY_MS: {"gpt35": 0.5, "bandit": 0.5}}
    # the bad design event went to the dead-letter topic with its bytes and the reason
    [dead] = _dead_letters(b, f"{topic_prefix}.dead-letter", 1)
    headers = dict(dead.headers)
    assert dead.value == bad and headers["source_topic"] == f"{topic_prefix}.designs".encode()
    assert b"design_version" in headers["reason"]

    # lift with no config file: the design comes from the store, tested per period
    monkeypatch.chdir(tmp_path)  # no switchboard.toml here
    monkeypatch.delenv("SWITCHBOARD_CONFIG", raising=False)
    rc = main(["lift", "--experiment", EXP, "--json", "--dsn", f"chdb://{tmp_path / 'chdb'}",
               "--as-of-ms", str(T0 + 45 * DAY_MS)])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0, out
    health = out["health"]
    assert health["design_source"] == "store"
    assert [p["since_ms"] for p in health["design"]] == [T0, T0 + 10 * DAY_MS]
    assert health["design"][0]["weights"] == {"gpt35": 0.9, "bandit": 0.1}
    assert not health["srm_flag"] and "2 weight periods" in health["srm_detail"], health
    assert health["units"]["gpt35"] > 2 * health["units"]["bandit"]  # really skewed
    assert health["cross_exposed"] == 0
    (row,) = out["lift"]
    assert not row["srm_flag"] and "mismatch" not in row["verdict"], row


@pytest.mark.integration
def test_topics_create_makes_the_designs_topic(broker: EmbeddedBroker, topic_prefix: str,
                                              tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "switchboard.toml"
    names = ("decisions", "feedback", "engagement", "exposures", "designs", "dead-letter")
    path.write_text(kafka_toml(broker.bootstrap_servers, topic_prefix))
    assert main(["--config", str(path), "topics", "--create", "--bootstrap-servers",
                 broker.bootstrap_servers]) == 0
    listed = dict(line.split("\t") for line in capsys.readouterr().out.splitlines())
    assert listed == {f"{topic_prefix}.{n}": "present" for n in names}
