"""Feedback and engagement over HTTP against a real tansu broker and a real learner:
learnt exactly like feedback produced to Kafka, and never lost through a broker outage."""

from __future__ import annotations

import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from kafka.partitioner.default import murmur2

from bandit.arms import Arm
from bandit.config import Config, KafkaConfig, ModelConfig, PolicyConfig, ServeConfig, load_config
from bandit.embedded.broker import EmbeddedBroker, create_topics
from bandit.events import FeedbackEvent
from bandit.formats.state import StateDir
from bandit.serving.app import create_app
from bandit.serving.live import LiveServer
from bandit.serving.producers import make_producer
from consumers.synthetic import Stream, make_stream, reference
from tests.test_learner_kafka import (
    WINDOW_S,
    assert_same_statistics,
    make_join_for,
    merged,
    offsets_reached,
    start_learner,
    stop,
    topics,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.integration

TOKEN = "feedback-test-token"
PARTITIONS = 4


def _keyed(stream: Stream) -> Stream:
    """The stream laid out as keyed producers place it (murmur2 of the conversation id,
    as the server's publisher and kafka-python do), each partition in the original order."""
    def bucket(per: dict[int, list[bytes]]) -> dict[int, list[bytes]]:
        out: dict[int, list[bytes]] = {p: [] for p in range(PARTITIONS)}
        for p in sorted(per):
            for raw in per[p]:
                key = orjson.loads(raw)["conversation_id"].encode()
                out[(murmur2(key) & 0x7FFFFFFF) % PARTITIONS].append(raw)
        return out

    fb = bucket(stream.feedback)
    # feedback in event-time order per partition (how producers write it)
    return Stream(bucket(stream.decisions),
                  {p: sorted(v, key=lambda r: orjson.loads(r)["ts_ms"]) for p, v in fb.items()})


def _server_config(bootstrap: str, prefix: str, tmp: Path) -> Config:
    return Config(
        policy=PolicyConfig(dim=8),
        kafka=KafkaConfig(bootstrap_servers=bootstrap, decisions_topic=f"{prefix}.decisions",
                          feedback_topic=f"{prefix}.feedback",
                          engagement_topic=f"{prefix}.engagement",
                          exposures_topic=f"{prefix}.exposures",
                          designs_topic=f"{prefix}.designs", partitions=PARTITIONS),
        model=ModelConfig(dir=str(tmp / "srv-snap")),
        serve=ServeConfig(spill_dir=str(tmp / "spill"),
                          tokens=(TOKEN,)),
    )


def _post_batches(client: httpx.Client, path: str, raws: list[bytes], size: int) -> None:
    for lo in range(0, len(raws), size):
        chunk = raws[lo:lo + size]
        body = chunk[0] if len(chunk) == 1 else b"[" + b",".join(chunk) + b"]"
        r = client.post(path, content=body)
        assert r.status_code == 202, r.text
        assert r.json() == {"accepted": len(chunk)}


def test_feedback_over_http_is_learnt_exactly_like_feedback_produced_to_kafka(
    broker: EmbeddedBroker, make_topics: Callable[..., None], topic_prefix: str, tmp_path: Path,
) -> None:
    make_topics(*topics(topic_prefix), f"{topic_prefix}.exposures", partitions=PARTITIONS)
    stream = _keyed(make_stream(91, 2_000, partitions=PARTITIONS, dim=8,
                                window_ms=int(WINDOW_S * 1000), step_ms=20))
    # decisions straight to Kafka, keyed; their feedback only over HTTP
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all",
                             linger_ms=20)
    for p in sorted(stream.decisions):
        for raw in stream.decisions[p]:
            producer.send(f"{topic_prefix}.decisions", raw,
                          key=orjson.loads(raw)["conversation_id"].encode())
    producer.flush()
    producer.close()
    feedback = sorted((raw for v in stream.feedback.values() for raw in v),
                      key=lambda r: orjson.loads(r)["ts_ms"])
    app = create_app(_server_config(broker.bootstrap_servers, topic_prefix, tmp_path),
                     arms=[Arm("gpt35", kind="baseline"), Arm("e1")])
    with LiveServer(app) as server, httpx.Client(
            base_url=server.url, headers={"authorization": f"Bearer {TOKEN}",
                                          "content-type": "application/json"}) as client:
        _post_batches(client, "/v1/feedback", feedback[:50], 1)  # single events
        _post_batches(client, "/v1/feedback", feedback[50:], 250)  # batches
        sinks = app.allocator.sinks
        wait_for(lambda: sinks["feedback"].sent == len(feedback), 60, "feedback delivered")
        assert sinks["feedback"].backlog == 0

    cfg_path = write_config(tmp_path, broker.bootstrap_servers, topic_prefix, dim=8,
                            store=False)
    config = load_config(cfg_path, env={})
    state = StateDir(config.learner.state_dir)
    learner = start_learner(cfg_path, tmp_path, "--no-store")
    try:
        wait_for(lambda: offsets_reached(state, stream), 120, "all offsets", [learner])
    finally:
        assert stop(learner) == 0
    want = reference(stream, make_join_for(config))
    got = state.load_all("join")
    assert_same_statistics(merged(got), merged({p: r.to_state() for p, r in want.items()}))
    # (as the learner's own tests: how much late feedback is still held when the learner
    # stops depends on its watermark, not on how the feedback arrived)
    assert sum(s.counters["closed"] for s in got.values()) == sum(
        r.counters.closed for r in want.values())


@pytest.fixture
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """A broker of our own: this test stops and restarts it."""
    b = EmbeddedBroker(log_path=tmp_path_factory.mktemp("fb-tansu") / "tansu.log").start()
    yield b
    b.stop()


def _consume(bootstrap: str, topic: str, want: set[str], timeout_s: float = 60.0
             ) -> Counter[str]:
    """Event ids on ``topic`` (counted) once every id of ``want`` arrived, or on timeout."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, group_id=None)
    seen: Counter[str] = Counter()
    deadline = time.monotonic() + timeout_s
    idle_until = None
    try:
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=300)
            for records in batch.values():
                for rec in records:
                    seen[orjson.loads(rec.value)["event_id"]] += 1
            if want <= set(seen):
                # keep reading a little: a duplicate would arrive right behind
                idle_until = idle_until or time.monotonic() + 2.0
                if time.monotonic() > idle_until:
                    break
    finally:
        consumer.close()
    return seen


def test_posts_are_answered_spilled_and_delivered_once_through_a_broker_outage(
    own_broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path,
) -> None:
    names = [f"{topic_prefix}.{t}" for t in ("decisions", "feedback", "engagement",
                                              "exposures")]
    create_topics(own_broker.bootstrap_servers, names, partitions=2)
    bootstrap = own_broker.bootstrap_servers
    config = _server_config(bootstrap, topic_prefix, tmp_path)
    app = create_app(config, arms=[Arm("gpt35", kind="baseline"), Arm("e1")],
                     publisher_options={"delivery_timeout_ms": 3000, "retry_interval_s": 0.5,
                                        "producer_factory": lambda: make_producer(
                                            bootstrap, 3000)})
    sinks = app.allocator.sinks

    def feedback(tag: str, n: int) -> list[bytes]:
        return [orjson.dumps(FeedbackEvent(
            event_id=f"{tag}-fb-{i}", decision_id=f"{tag}-d-{i}", ts_ms=1_767_571_200_000 + i,
            unit_id=f"user-{i}", conversation_id=f"{tag}-c-{i}", rating=1 + i % 5))
            for i in range(n)]

    def engagement(tag: str, n: int) -> list[bytes]:
        return [orjson.dumps({"schema_version": 1, "event_id": f"{tag}-eng-{i}",
                              "ts_ms": 1_767_571_200_000 + i, "unit_id": f"user-{i}",
                              "screen_time_s": float(i), "messages": i}) for i in range(n)]

    with LiveServer(app) as server, httpx.Client(
            base_url=server.url, headers={"authorization": f"Bearer {TOKEN}",
                                          "content-type": "application/json"}) as client:
        up = feedback("up", 40)
        _post_batches(client, "/v1/feedback", up, 10)
        got = _consume(bootstrap, names[1], {f"up-fb-{i}" for i in range(40)})
        assert all(got[f"up-fb-{i}"] == 1 for i in range(40)), got

        own_broker.stop()
        down_fb, down_eng = feedback("down", 120), engagement("down", 30)
        # answered (202) while the broker is down: queued, then spilled to disk
        _post_batches(client, "/v1/feedback", down_fb[:20], 1)
        _post_batches(client, "/v1/feedback", down_fb[20:], 50)
        _post_batches(client, "/v1/engagement", down_eng, 7)
        wait_for(lambda: sinks["feedback"].backlog >= 120 and sinks["engagement"].backlog >= 30,
                 60, "posts spilled while the broker is down")
        assert list((Path(config.serve.spill_dir) / "feedback").glob("*.spill"))
        health = client.get("/healthz").json()["publisher"]
        assert health["spill_backlog"] >= 150

        own_broker.start()
        create_topics(own_broker.bootstrap_servers, names, partitions=2)  # memory storage
        wait_for(lambda: sinks["feedback"].backlog == 0 and sinks["engagement"].backlog == 0,
                 90, "spilled events re-sent")
        fb_ids = {orjson.loads(r)["event_id"] for r in down_fb}
        eng_ids = {orjson.loads(r)["event_id"] for r in down_eng}
        got_fb = _consume(own_broker.bootstrap_servers, names[1], fb_ids)
        got_eng = _consume(own_broker.bootstrap_servers, names[2], eng_ids)
    assert {i for i in fb_ids if got_fb[i] != 1} == set(), "feedback lost or duplicated"
    assert {i for i in eng_ids if got_eng[i] != 1} == set(), "engagement lost or duplicated"


def test_fallback_exposures_reach_the_store_through_server_broker_and_learner(
    broker: EmbeddedBroker, make_topics: Callable[..., None], topic_prefix: str,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bandit.client import SwitchboardClient
    from bandit.serving.assignment import VariantAssigner
    from bandit.store import open_store

    exposures_topic = f"{topic_prefix}.exposures"
    make_topics(*topics(topic_prefix), exposures_topic, partitions=PARTITIONS)
    config = _server_config(broker.bootstrap_servers, topic_prefix, tmp_path)
    app = create_app(config, arms=[Arm("gpt35", kind="baseline"), Arm("e1")])
    units = [f"user-{i}" for i in range(12)]
    with socket.socket() as refused:  # bound, not listening: the server is "down"
        refused.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{refused.getsockname()[1]}"
        with LiveServer(app) as server, SwitchboardClient(down, TOKEN, timeout_s=5,
                                                          retries=0) as client:
            for u in units:
                assert client.allocate(u, f"c-{u}", embedding=[0.1] * 8).fallback
            client._http.base_url = httpx.URL(server.url)  # the server answers again
            assert not client.allocate("user-live", "c-live", embedding=[0.1] * 8).fallback
            assert client.pending_exposures == 0 and client.sent_exposures == len(units)
            sink = app.allocator.sinks["exposure"]
            wait_for(lambda: sink.sent == len(units), 60, "exposures delivered")

    cfg_path = write_config(tmp_path, broker.bootstrap_servers, topic_prefix, dim=8)
    monkeypatch.setenv("SWITCHBOARD_KAFKA__EXPOSURES_TOPIC", exposures_topic)
    learner_config = load_config(cfg_path)
    state = StateDir(learner_config.learner.state_dir)

    def all_read() -> bool:
        parts = state.load_all("engagement")
        return sum(p.offsets.get("exposures", 0) for p in parts.values()) >= len(units)

    learner = start_learner(cfg_path, tmp_path)
    try:
        wait_for(all_read, 120, "exposures read by the learner", [learner])
    finally:
        assert stop(learner) == 0
    store = open_store(learner_config.store.dsn, learner_config.store.database)
    try:
        cohort = store.unit_metrics(config.experiment.id)
        sources = store.exposure_sources(config.experiment.id)  # marked as fallbacks
    finally:
        store.close()
    assert int(sources["fallbacks"].sum()) == len(units)
    assigner = VariantAssigner(config.experiment)
    got = dict(zip(cohort["unit_id"], cohort["variant"], strict=True))
    # every fallback unit is in the cohort of its assigned variant (the live one too,
    # through its decision)
    assert {u: got.get(u) for u in units} == {u: assigner.assign(u).name for u in units}
