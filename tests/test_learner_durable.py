"""Broker restart with durable storage: tansu on ``s3://`` backed by SeaweedFS.

The learner keeps running while the broker is stopped and restarted on the same port;
nothing produced before the restart is lost and the statistics equal the reference.
Skips only when SeaweedFS itself cannot start here.
"""

from __future__ import annotations

import threading
import time

import pytest

from bandit.config import load_config
from bandit.embedded.broker import EmbeddedBroker, create_topics, embedded_s3
from bandit.formats.state import StateDir
from consumers.kafka_adapter import KafkaLearner
from consumers.sink import MemorySink
from consumers.synthetic import Stream, make_stream, produce, reference
from tests.test_learner_kafka import (
    WINDOW_S,
    assert_same_statistics,
    make_join_for,
    merged,
    offsets_reached,
    topics,
    wait_for,
    write_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.durable]


def test_learner_survives_durable_broker_restart(tmp_path, topic_prefix):  # type: ignore[no-untyped-def]
    try:
        s3 = embedded_s3(tmp_path / "s3")
        env = s3.__enter__()
    except (OSError, RuntimeError, TimeoutError) as exc:
        pytest.skip(f"SeaweedFS (weed mini) did not start here: {exc}")
    broker = EmbeddedBroker(storage="s3://tansu/", env=env, log_path=tmp_path / "tansu.log")
    try:
        broker.start(timeout_s=60)
        create_topics(broker.bootstrap_servers, topics(topic_prefix), partitions=2)
        full = make_stream(11, 4_000, partitions=2, dim=8, window_ms=int(WINDOW_S * 1000))
        first = Stream(
            {p: v[: len(v) // 2] for p, v in full.decisions.items()},
            {p: v[: len(v) // 2] for p, v in full.feedback.items()},
        )
        rest = Stream(
            {p: v[len(v) // 2 :] for p, v in full.decisions.items()},
            {p: v[len(v) // 2 :] for p, v in full.feedback.items()},
        )
        produce(
            broker.bootstrap_servers, first, f"{topic_prefix}.decisions", f"{topic_prefix}.feedback"
        )
        cfg_path = write_config(tmp_path, broker.bootstrap_servers, topic_prefix, dim=8)
        config = load_config(cfg_path, env={})
        state = StateDir(config.learner.state_dir)
        learner = KafkaLearner(config, make_join_for(config), sink=MemorySink())
        thread = threading.Thread(target=learner.run, daemon=True)
        thread.start()
        wait_for(lambda: offsets_reached(state, first), 90, "first half consumed")

        # the broker goes away under the running learner, then comes back on the same port
        broker.stop()
        time.sleep(1.0)
        broker = EmbeddedBroker(
            broker.port, storage="s3://tansu/", env=env, log_path=tmp_path / "tansu2.log"
        ).start(timeout_s=60)
        # the second half of the streams, produced after the restart, continues the topics
        produce(
            broker.bootstrap_servers, rest, f"{topic_prefix}.decisions", f"{topic_prefix}.feedback"
        )
        wait_for(lambda: offsets_reached(state, full), 120, "everything consumed after restart")
        learner.stop_event.set()
        thread.join(60)
        assert not thread.is_alive()
        ref = reference(full, make_join_for(config))
        assert_same_statistics(
            merged(state.load_all("join")), merged({p: r.to_state() for p, r in ref.items()})
        )
    finally:
        broker.stop()
        s3.__exit__(None, None, None)
