"""A real ``switchboard learn`` process learns an arm registered after it started.

The arm reaches it only through the shared registry file (as when an allocation server
takes ``POST /v1/arms``); a never-registered arm is dead-lettered.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from bandit.arms import Arm
from bandit.config import load_config
from bandit.events import DecisionEvent, FeedbackEvent, encode_event
from bandit.formats.registry import RegistryFile
from bandit.formats.snapshot import load_policy_snapshot
from bandit.formats.state import StateDir
from consumers.join import WATERMARK_OUTLIERS
from tests.test_learner_kafka import start_learner, stop, topics, wait_for, write_config

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000
DIM = 8


def _decision(i: int, arm_id: str, ts_ms: int) -> bytes:
    return encode_event(DecisionEvent(
        event_id=f"ev-{i}", decision_id=f"dec-{i}", ts_ms=ts_ms, unit_id=f"u{i}",
        conversation_id=f"c{i}", experiment_id="e", variant="bandit", arm_id=arm_id,
        propensity=0.5, policy_version="v", context=tuple([0.1 * (1 + i % 3)] * DIM)))


def _feedback(i: int, ts_ms: int) -> bytes:
    return encode_event(FeedbackEvent(event_id=f"fb-{i}", decision_id=f"dec-{i}", ts_ms=ts_ms,
                                      unit_id=f"u{i}", conversation_id=f"c{i}", rating=5))


def _send(bootstrap: str, messages: list[tuple[str, bytes]]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for topic, raw in messages:
            producer.send(topic, raw, partition=0)
        producer.flush()
    finally:
        producer.close()


def _dead_letters(bootstrap: str, topic: str, want: int) -> list[Any]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             consumer_timeout_ms=3000)
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    dead: list[Any] = []
    deadline = time.monotonic() + 30
    while len(dead) < want and time.monotonic() < deadline:
        for recs in consumer.poll(timeout_ms=500).values():
            dead.extend(recs)
    consumer.close()
    return dead


def test_learner_learns_an_arm_registered_after_it_started(
    broker, make_topics, topic_prefix, tmp_path: Path
):  # type: ignore[no-untyped-def]
    make_topics(*topics(topic_prefix), partitions=1)
    cfg_path = write_config(tmp_path, broker.bootstrap_servers, topic_prefix, dim=DIM,
                            store=False)
    config = load_config(cfg_path, env={})
    dec_topic, fb_topic = f"{topic_prefix}.decisions", f"{topic_prefix}.feedback"
    learner = start_learner(cfg_path, tmp_path, "--no-store", "--max-idle-s", "60")
    try:
        # the learner is running and has consumed decisions of its start-up arms
        _send(broker.bootstrap_servers,
              [(dec_topic, _decision(i, "gpt35", T0 + i)) for i in range(5)])
        state = StateDir(config.learner.state_dir)
        wait_for(lambda: 0 in (parts := state.load_all("join"))
                 and parts[0].offsets.get("decisions", 0) >= 5, 90, "the warm-up decisions",
                 [learner])

        # a server registers a new expert (file first), then decisions name it
        RegistryFile(config.serve.snapshot_dir).register(
            Arm("late-expert", kind="expert", features=(0.3, 0.7)))
        late = list(range(100, 106))
        never = list(range(200, 203))
        t1 = T0 + 1_000
        msgs = [(dec_topic, _decision(i, "late-expert", t1 + i)) for i in late]
        msgs += [(dec_topic, _decision(i, "never-registered", t1 + i)) for i in never]
        msgs.append((fb_topic, _feedback(late[0], t1 + late[0] + 5)))
        # later decisions and feedback move the watermark past every window (it ignores
        # the WATERMARK_OUTLIERS newest event times of each topic)
        t2 = t1 + 10 * 60_000
        for i in range(300, 301 + WATERMARK_OUTLIERS):
            msgs += [(dec_topic, _decision(i, "gpt35", t2 + i)), (fb_topic, _feedback(i, t2 + i))]
        _send(broker.bootstrap_servers, msgs)

        snapshot = Path(config.serve.snapshot_dir) / "policy.snapshot"

        def learnt() -> bool:
            if not snapshot.exists():
                return False
            policy, _, _ = load_policy_snapshot(snapshot)
            st = policy.statistics
            return "late-expert" in st and st.n[st.slot("late-expert")] >= len(late)

        wait_for(learnt, 90, "the late arm's decisions in the published snapshot", [learner])
    finally:
        assert stop(learner) == 0

    policy, arms, _ = load_policy_snapshot(snapshot)
    st = policy.statistics
    assert st.n[st.slot("late-expert")] == len(late)
    assert arms.get("late-expert") == Arm("late-expert", kind="expert", features=(0.3, 0.7))
    assert "never-registered" not in arms and "never-registered" not in st

    dead = _dead_letters(broker.bootstrap_servers, f"{topic_prefix}.dead-letter", len(never))
    reasons = [dict(r.headers)["reason"] for r in dead]
    assert len(dead) == len(never)
    assert all(b"not a known arm" in r and b"never-registered" in r for r in reasons)


def test_learner_first_start_takes_arms_from_the_registry(tmp_path: Path) -> None:
    from bandit.errors import ConfigError
    from consumers.cli import build_learner

    cfg = write_config(tmp_path, "127.0.0.1:1", "t", dim=DIM)
    config = load_config(cfg, env={})
    with pytest.raises(ConfigError, match="arms registry"):
        build_learner(config, arms_path=None, use_store=False)
    registry = RegistryFile(config.serve.snapshot_dir)
    registry.register(Arm("gpt35", kind="baseline"))
    registry.register(Arm("roleplay-7b", kind="expert"))
    learner = build_learner(config, arms_path=None, use_store=False)
    policy, arms, _ = load_policy_snapshot(Path(config.learner.state_dir) / "prior.snapshot")
    assert arms.ids() == ["gpt35", "roleplay-7b"]
    assert arms.get("gpt35").kind == "baseline"
    assert learner.make_join(0).arm_ids == {"gpt35", "roleplay-7b"}
    del policy
