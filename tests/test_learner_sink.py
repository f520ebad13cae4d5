"""Sink faults against the real embedded components (tansu broker, chdb store).

* the store refuses one row for good (a CHECK constraint): that row is dead-lettered with
  its original bytes and the reason, every other row is stored, the learner carries on;
* the store goes away for a while: consumption pauses, readiness turns 503 with the
  reason and the failure counter and commit age are exported; when it is back nothing is
  lost;
* oversized events (1 MiB + 1, 5 MB) are dead-lettered, truncated with their size and
  SHA-256, without stalling the checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from bandit.config import load_config
from bandit.embedded.broker import free_port
from bandit.events import DecisionEvent, encode_event
from bandit.store import open_store
from consumers.kafka_adapter import DEAD_LETTER_MAX_VALUE, KafkaLearner
from consumers.metrics import LearnerMetrics
from consumers.sink import StoreSink
from consumers.synthetic import ARMS, make_stream, produce
from tests.test_learner_kafka import make_join_for, topics, wait_for, write_config

WINDOW_S = 10.0


def _dead_letters(bootstrap: str, topic: str, n: int, timeout_s: float = 60) -> list[Any]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             fetch_max_bytes=16 << 20, max_partition_fetch_bytes=16 << 20)
    tps = [TopicPartition(topic, 0)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    got: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(got) < n and time.monotonic() < deadline:
            for recs in consumer.poll(timeout_ms=500).values():
                got.extend(recs)
    finally:
        consumer.close()
    return got


def _probe(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


def test_learner_sink_poison_row_and_store_outage(broker, make_topics, topic_prefix, tmp_path: Path):  # type: ignore[no-untyped-def]
    make_topics(*topics(topic_prefix), partitions=1)
    config = load_config(write_config(tmp_path, broker.bootstrap_servers, topic_prefix, dim=8),
                         env={})
    dsn = config.store.dsn
    store = open_store(dsn)
    # a real, permanent refusal by the real engine for one row's content
    store._command("ALTER TABLE decisions ADD CONSTRAINT no_poison CHECK unit_id != 'poison'")
    stream = make_stream(21, 600, partitions=1, dim=8, window_ms=int(WINDOW_S * 1000))
    poison = encode_event(DecisionEvent(
        event_id="poison-event", decision_id="poison-decision", ts_ms=1_700_000_000_100,
        unit_id="poison", conversation_id="pc", experiment_id="exp", variant="bandit",
        arm_id=ARMS[0], propensity=0.5, policy_version="v0", context=(0.5,) * 8))
    huge = [b"{" + b" " * (1024 * 1024 - 1) + b"}", b"x" * (5 * 1024 * 1024)]
    port = free_port()
    sink = StoreSink(store)
    learner = KafkaLearner(config, make_join_for(config), sink=sink,
                           metrics=LearnerMetrics(port))
    errors: list[BaseException] = []

    def run() -> None:
        try:
            learner.run(max_idle_s=4.0)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: bool(learner.partitions), 60, "assignment", [])
        assert _probe(port, "/livez")[0] == 200
        store.close()  # the store goes away
        produce(broker.bootstrap_servers, stream, f"{topic_prefix}.decisions",
                f"{topic_prefix}.feedback",
                extra=[(f"{topic_prefix}.decisions", 0, poison),
                       *[(f"{topic_prefix}.decisions", 0, raw) for raw in huge]])
        wait_for(lambda: learner.health()[2]["checkpoint_failures"] >= 2, 60,
                 "failing checkpoints", [])
        code, body = _probe(port, "/readyz")
        assert code == 503 and "store is closed" in body["error"]
        assert _probe(port, "/livez")[0] == 200  # alive: a restart would not help
        assert _metric(port, "switchboard_learner_checkpoint_failures_total") >= 2
        assert _metric(port, "switchboard_learner_ready") == 0
        assert _metric(port, "switchboard_learner_last_commit_age_seconds") > 0
        sink.store = open_store(dsn)  # ...and comes back
        wait_for(lambda: _probe(port, "/readyz")[0] == 200, 60, "ready again", [])
    finally:
        thread.join(120)
    assert not thread.is_alive() and not errors, errors
    store = open_store(dsn)  # the learner closed its sink on the way out
    try:
        n_good = len(stream.decisions[0])
        assert store.count("decisions") == n_good  # every row but the refused one
        assert store.count("exposures") > 0
        assert store.count("feedback") > 0.9 * len(stream.feedback[0])
    finally:
        store.close()
    dead = _dead_letters(broker.bootstrap_servers, f"{topic_prefix}.dead-letter", 3)
    by_sha = {dict(r.headers)["original_sha256"].decode(): r for r in dead}
    assert len(dead) == 3
    refused = by_sha[hashlib.sha256(poison).hexdigest()]
    assert refused.value == poison
    assert b"store refused the row permanently" in dict(refused.headers)["reason"]
    assert b"VIOLATED_CONSTRAINT" in dict(refused.headers)["reason"]
    for raw in huge:
        rec = by_sha[hashlib.sha256(raw).hexdigest()]
        headers = dict(rec.headers)
        assert headers["original_size"] == str(len(raw)).encode()
        assert headers["truncated"] == b"1"
        assert rec.value == raw[:DEAD_LETTER_MAX_VALUE]


@pytest.mark.parametrize("bootstrap", ["127.0.0.1:1"])
def test_learner_max_idle_ends_non_zero_when_the_broker_never_answers(tmp_path: Path, bootstrap: str) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    cfg = write_config(tmp_path, bootstrap, "t", dim=8)
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "switchboard"), "--config", str(cfg), "learn",
         "--arms", str(tmp_path / "arms.json"), "--no-store", "--max-idle-s", "2"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("switchboard learn: kafka at 127.0.0.1:1 did not answer")
    assert "Traceback" not in proc.stderr


def test_learner_store_keys_decisions_and_feedback_on_event_id_alone(store) -> None:  # type: ignore[no-untyped-def]
    from bandit.events import FeedbackEvent

    def dec(unit: str, exp: str, ts: int) -> DecisionEvent:
        return DecisionEvent(
            event_id="same-id", decision_id=f"d-{unit}", ts_ms=ts, unit_id=unit,
            conversation_id="c", experiment_id=exp, variant="bandit", arm_id=ARMS[0],
            propensity=0.5, policy_version="v", context=(0.1,) * 4)

    store.insert_decisions([dec("u1", "e1", 1_700_000_000_000)])
    store.insert_decisions([dec("u2", "e2", 1_720_000_000_000)])  # another month
    fb = [FeedbackEvent(event_id="fb-id", decision_id=f"d{i}", ts_ms=1_700_000_000_000 + i * 10**10,
                        unit_id=f"u{i}", conversation_id="c") for i in range(2)]
    store.insert_feedback(fb[:1])
    store.insert_feedback(fb[1:])
    assert store.count("decisions") == 1
    assert store.count("feedback") == 1


def test_learner_exits_non_zero_when_checkpoints_keep_failing(  # type: ignore[no-untyped-def]
    broker, make_topics, topic_prefix, tmp_path: Path
):
    """A store that stays down: --max-idle-s does not end it as idle (rc 0); after
    learner.max_checkpoint_failure_s the learner gives up with LearnerStalledError."""
    import dataclasses

    from consumers.kafka_adapter import LearnerStalledError

    make_topics(*topics(topic_prefix), partitions=1)
    config = load_config(write_config(tmp_path, broker.bootstrap_servers, topic_prefix, dim=8),
                         env={})
    config = dataclasses.replace(
        config, learner=dataclasses.replace(config.learner, max_checkpoint_failure_s=3.0))
    stream = make_stream(23, 50, partitions=1, dim=8, window_ms=int(WINDOW_S * 1000))
    produce(broker.bootstrap_servers, stream, f"{topic_prefix}.decisions",
            f"{topic_prefix}.feedback")
    store = open_store(config.store.dsn)
    store.close()  # down for good
    learner = KafkaLearner(config, make_join_for(config), sink=StoreSink(store))
    with pytest.raises(LearnerStalledError, match="checkpoints failed for"):
        learner.run(max_idle_s=1.0)
    assert learner.health()[0] is False  # not live: it gave up
