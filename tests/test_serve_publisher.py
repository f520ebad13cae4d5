"""Decisions reach Kafka; with the broker down they spill to disk and arrive later, none lost."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from kafka.partitioner.default import murmur2

from bandit.arms import Arm
from bandit.config import Config, KafkaConfig, ModelConfig, PolicyConfig, ServeConfig
from bandit.embedded.broker import EmbeddedBroker, create_topics
from bandit.events import DecisionEvent, decode_decision, encode_event
from bandit.serving.app import create_app
from bandit.serving.live import LiveServer
from bandit.serving.producers import make_producer
from bandit.serving.publisher import EventPublisher

DIM = 4
TOKEN = {"authorization": "Bearer dev-token"}


def _event(i: int) -> DecisionEvent:
    return DecisionEvent(
        event_id=f"e{i}", decision_id=f"d{i}", ts_ms=1, unit_id="u", conversation_id=f"c{i}",
        experiment_id="x", variant="v", arm_id="a", propensity=0.5, policy_version="p",
        context=(0.0,) * DIM,
    )


def _consume(bootstrap: str, topic: str, want: set[str], timeout_s: float = 30.0
             ) -> dict[str, DecisionEvent]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, group_id=None)
    got: dict[str, DecisionEvent] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while not want <= set(got) and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=200).items():
                for rec in records:
                    ev = decode_decision(rec.value)
                    assert rec.key == ev.conversation_id.encode()
                    # the Java client's (and kafka-python's) murmur2 placement, whichever
                    # client produced: the learner's joins rely on it
                    n = len(consumer.partitions_for_topic(topic) or ())
                    assert tp.partition == (murmur2(rec.key) & 0x7FFFFFFF) % n
                    got[ev.decision_id] = ev
    finally:
        consumer.close()
    return got


def _wait(cond: Any, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.05)


def test_publisher_wire_format_equals_encode_event() -> None:
    ev = _event(3)
    assert orjson.dumps(ev) == encode_event(ev)
    assert decode_decision(orjson.dumps(ev)) == ev


def test_publisher_spills_when_kafka_unreachable_and_adopts_orphans(tmp_path: Path) -> None:
    def unreachable() -> Any:
        raise ConnectionError("no broker")

    pub = EventPublisher("127.0.0.1:1", "t", tmp_path, buffer_size=4,
                            retry_interval_s=0.05, producer_factory=unreachable).start()
    for i in range(10):  # more than the buffer: overflow spills synchronously
        pub.publish(_event(i))
    _wait(lambda: pub.backlog == 10)
    pub.close()
    lines = b"".join(p.read_bytes() for p in tmp_path.glob("*.spill")).splitlines()
    spilled = sorted(orjson.loads(x)["decision_id"] for x in lines)
    assert spilled == sorted(f"d{i}" for i in range(10))
    # spilled events hold user ids and contexts: private whatever the umask
    assert {p.stat().st_mode & 0o777 for p in tmp_path.glob("*.spill")} == {0o600}
    again = EventPublisher("127.0.0.1:1", "t", tmp_path, producer_factory=unreachable)
    assert again.backlog == 10  # a restarted server counts what is still to be sent


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """A broker of our own: this module stops and restarts it."""
    b = EmbeddedBroker(log_path=tmp_path_factory.mktemp("serve-tansu") / "tansu.log").start()
    yield b
    b.stop()


@pytest.mark.integration
@pytest.mark.parametrize("kafka_client", ["confluent", "kafka-python"])
def test_decisions_reach_kafka_and_survive_a_broker_outage(
    own_broker: EmbeddedBroker, tmp_path: Path, topic_prefix: str,
    kafka_client: str,
) -> None:
    topic = f"{topic_prefix}.{kafka_client}.decisions"
    create_topics(own_broker.bootstrap_servers, [topic], partitions=2)
    cfg = Config(
        policy=PolicyConfig(dim=DIM),
        kafka=KafkaConfig(bootstrap_servers=own_broker.bootstrap_servers, decisions_topic=topic),
        model=ModelConfig(dir=str(tmp_path / "snap")),
        serve=ServeConfig(spill_dir=str(tmp_path / "spill"),
                          tokens=("dev-token",)),
    )
    arms = [Arm("gpt35", kind="baseline"), Arm("e1"), Arm("e2")]
    # a crashed server's spill file (unlocked): adopted and re-sent by this one
    orphans = {f"orphan-{i}" for i in range(3)}
    spill = Path(cfg.serve.spill_dir)
    spill.mkdir(parents=True)
    (spill / "active-dead-server.spill").write_bytes(b"".join(
        encode_event(dataclasses.replace(_event(i), decision_id=f"orphan-{i}")) + b"\n"
        for i in range(3)))
    bootstrap = own_broker.bootstrap_servers
    app = create_app(cfg, arms=arms, seed=7,
                     publisher_options={"delivery_timeout_ms": 3000, "retry_interval_s": 0.5,
                                        "producer_factory": lambda: make_producer(
                                            bootstrap, 3000, client=kafka_client)})
    sink = app.allocator.sink

    def allocate(client: httpx.Client, n: int, tag: str) -> dict[str, float]:
        out = {}
        for i in range(n):
            r = client.post("/v1/allocate", json={"unit_id": f"user-{i}", "conversation_id":
                                                  f"{tag}-{i}", "embedding": [0.3] * DIM})
            assert r.status_code == 200, r.text
            out[r.json()["decision_id"]] = r.json()["propensity"]
        return out

    with LiveServer(app) as server, httpx.Client(base_url=server.url, headers=TOKEN) as client:
        before = allocate(client, 20, "up")
        got = _consume(own_broker.bootstrap_servers, topic, set(before) | orphans)
        assert set(before) | orphans <= set(got)
        assert all(got[d].propensity == pytest.approx(p) for d, p in before.items())

        own_broker.stop()
        during = allocate(client, 30, "down")  # served while Kafka is down
        _wait(lambda: sink.backlog >= 30)
        assert list(Path(cfg.serve.spill_dir).glob("*.spill"))

        own_broker.start()
        create_topics(own_broker.bootstrap_servers, [topic], partitions=2)  # memory storage
        _wait(lambda: sink.backlog == 0, timeout_s=60)
        got = _consume(own_broker.bootstrap_servers, topic, set(during))
        assert set(during) <= set(got), f"lost {len(set(during) - set(got))} decisions"
        assert all(got[d].propensity == pytest.approx(p) for d, p in during.items())
        health = client.get("/healthz").json()
        assert health["publisher"]["spill_backlog"] == 0


def test_publisher_spills_at_once_when_librdkafka_finds_no_broker(tmp_path: Path) -> None:
    # the default producer (librdkafka) is created fine with no broker; its "all brokers
    # down" report must send events to disk, not leave them in memory for the 30 s
    # delivery timeout
    pub = EventPublisher("127.0.0.1:1", "t", tmp_path, retry_interval_s=0.2).start()
    try:
        for i in range(5):
            pub.publish(_event(i))
        _wait(lambda: pub.backlog == 5, timeout_s=20)
        assert not pub.healthy and pub.last_error
    finally:
        pub.close(timeout_s=0.5)
    lines = b"".join(p.read_bytes() for p in tmp_path.glob("*.spill")).splitlines()
    assert sorted(orjson.loads(x)["decision_id"] for x in lines) == [f"d{i}" for i in range(5)]
