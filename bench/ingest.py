"""Learner ingest throughput: broker → decoded, joined, updated statistics → committed offsets.

Prints one JSON object:

* ``raw_consume_events_per_s`` — kafka-python alone reading the same topics (the ceiling);
  ``raw_consume_lean_*`` — the same through the adapter's lean record parsing, which
  the learner uses; ``raw_consume_confluent_*`` — confluent-kafka (librdkafka) reading
  them (the alternative client, measured against tansu);
* ``learner_events_per_s`` / ``learner_feedback_per_s`` — one learner (this process) with
  64-d contexts, no store, from its first applied batch to the end of the checkpoint
  (snapshot + commit) after the last one;
* the same with the chdb store sink (``*_chdb``);
* ``*_cpu_us_per_event`` — CPU time of this process (every thread) per event over the
  same window, and ``*_cpu_events_per_s`` / ``*_cpu_feedback_per_s`` — the rates that
  cost allows on one core: steadier than wall time on a shared machine
  (``load_average_1m`` says how shared it was).

Decisions and feedback are counted as events; ``*_feedback_per_s`` counts feedback only.
Run: ``.venv/bin/python bench/ingest.py [--decisions N]`` (under two minutes by default).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bandit.arms import Arm, ArmRegistry
from bandit.config import load_config
from bandit.embedded.broker import EmbeddedBroker, create_topics
from bandit.formats.state import StateDir
from bandit.policies import make_policy
from consumers.join import JoinPartition
from consumers.kafka_adapter import KafkaLearner
from consumers.kafka_records import crc32c_is_native, use_lean_records
from consumers.sink import StoreSink
from consumers.synthetic import ARMS, make_stream, produce

DIM = 64
PARTITIONS = 4


def raw_consume(
    bootstrap: str, topic_names: list[str], total: int, *, lean: bool = False
) -> tuple[float, float]:
    """kafka-python alone: (events/s wall, CPU seconds of this process per event); with
    ``lean``, through the learner's lean record parsing (its own ceiling)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        max_poll_records=5000,
        fetch_max_bytes=64 << 20,
        max_partition_fetch_bytes=16 << 20,
        check_crcs=crc32c_is_native(),  # same setting as the learner
    )
    if lean and not use_lean_records(consumer):
        raise RuntimeError("lean record parsing is not available with this kafka-python")
    tps = [TopicPartition(t, p) for t in topic_names for p in range(PARTITIONS)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    n = 0
    t0 = c0 = None
    while n < total:
        for recs in consumer.poll(timeout_ms=500).values():
            if t0 is None:
                t0, c0 = time.perf_counter(), time.process_time()
            n += len(recs)
    elapsed = time.perf_counter() - (t0 or time.perf_counter())
    cpu = time.process_time() - (c0 or time.process_time())
    consumer.close()
    return n / elapsed, cpu / n


def raw_consume_confluent(bootstrap: str, topic_names: list[str], total: int) -> tuple[float, float]:
    """confluent-kafka (librdkafka) alone reading the same topics, values and offsets
    taken as the learner would need them: (events/s wall, CPU seconds per event)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "bench-raw-confluent",
        "enable.auto.commit": False,
        "fetch.max.bytes": 64 << 20,
        "max.partition.fetch.bytes": 16 << 20,
        "check.crcs": crc32c_is_native(),
    })
    consumer.assign([TopicPartition(t, p, 0) for t in topic_names for p in range(PARTITIONS)])
    n = 0
    t0 = c0 = None
    while n < total:
        msgs = consumer.consume(num_messages=5000, timeout=0.5)
        if msgs and t0 is None:
            t0, c0 = time.perf_counter(), time.process_time()
        for m in msgs:
            if m.error() is None:
                m.offset(), m.value(), m.timestamp()
                n += 1
    elapsed = time.perf_counter() - (t0 or time.perf_counter())
    cpu = time.process_time() - (c0 or time.process_time())
    consumer.close()
    return n / elapsed, cpu / n


def run_learner(
    bootstrap: str, prefix: str, tmp: Path, stream: Any, *, store: bool
) -> dict[str, float]:
    env = {
        "SWITCHBOARD_KAFKA__BOOTSTRAP_SERVERS": f'"{bootstrap}"',
        "SWITCHBOARD_KAFKA__DECISIONS_TOPIC": f'"{prefix}.decisions"',
        "SWITCHBOARD_KAFKA__FEEDBACK_TOPIC": f'"{prefix}.feedback"',
        "SWITCHBOARD_KAFKA__ENGAGEMENT_TOPIC": f'"{prefix}.engagement"',
        "SWITCHBOARD_KAFKA__DEAD_LETTER_TOPIC": f'"{prefix}.dead-letter"',
        "SWITCHBOARD_KAFKA__GROUP_ID": f'"{prefix}-{store}"',
        "SWITCHBOARD_KAFKA__SESSION_TIMEOUT_MS": "6000",
        "SWITCHBOARD_LEARNER__STATE_DIR": f'"{tmp / f"state-{store}"}"',
        "SWITCHBOARD_LEARNER__BATCH_SIZE": "10000",
        "SWITCHBOARD_LEARNER__COMMIT_INTERVAL_S": "1.0",
        "SWITCHBOARD_LEARNER__ATTRIBUTION_WINDOW_S": "10",
        "SWITCHBOARD_POLICY__DIM": str(DIM),
    }
    config = load_config(None, env)
    policy = make_policy(config.policy, ArmRegistry([Arm(a) for a in ARMS]))

    def make_join(p: int) -> JoinPartition:
        return JoinPartition(p, policy, arm_ids=ARMS, dim=DIM, window_s=10.0, reward=config.reward)

    sink = StoreSink.open(f"chdb://{tmp / 'chdb'}") if store else None
    learner = KafkaLearner(config, make_join, sink=sink)
    state = StateDir(config.learner.state_dir)
    # Timed from the start of the first applied batch to the end of the checkpoint
    # (sink, snapshot, commit) that follows the last one. The periodic commit timer is
    # not waited for: the bench asks for that checkpoint as soon as everything is applied
    # and leaves out the idle gap until the learner's poll returns (<= 200 ms), which a
    # continuous stream would fill with work.
    marks: dict[str, float] = {}
    final: list[tuple[float, float]] = []
    orig_apply, orig_checkpoint = learner._apply, learner.checkpoint

    def applied() -> int:
        return sum(
            u.offsets.get("decisions", 0) + u.offsets.get("feedback", 0)
            for key, u in list(learner.partitions.items())
            if key[0] == "join"
        )

    def timed_apply(batch: Any) -> None:
        if "first" not in marks:
            marks["first"], marks["first_cpu"] = time.perf_counter(), time.process_time()
        orig_apply(batch)
        marks["last"] = time.perf_counter()

    def timed_checkpoint(**kw: Any) -> bool:
        t0 = time.perf_counter()
        all_in = applied() >= stream.n_events
        ok = orig_checkpoint(**kw)
        if ok and all_in and not final:
            final.append((t0, time.perf_counter()))
            marks["cpu"] = time.process_time()
        return ok

    learner._apply = timed_apply  # type: ignore[method-assign]
    learner.checkpoint = timed_checkpoint  # type: ignore[method-assign]
    thread = threading.Thread(target=learner.run, daemon=True)
    thread.start()
    while applied() < stream.n_events:
        time.sleep(0.02)
    learner.request_checkpoint()
    while not final:
        time.sleep(0.01)
    start, end = final[0]
    idle = max(0.0, start - marks["last"])
    elapsed = end - marks["first"] - idle
    cpu = marks["cpu"] - marks["first_cpu"]
    learner.stop_event.set()
    thread.join(60)
    want = {p: (len(stream.decisions[p]), len(stream.feedback[p])) for p in stream.decisions}
    parts = state.load_all("join")
    if not all(
        parts[p].offsets["decisions"] >= d and parts[p].offsets["feedback"] >= f
        for p, (d, f) in want.items()
    ):
        raise RuntimeError("the learner's snapshots do not cover every event")
    n_fb = sum(map(len, stream.feedback.values()))
    return {
        "events_per_s": stream.n_events / elapsed,
        "feedback_per_s": n_fb / elapsed,
        "seconds": elapsed,
        "cpu_us_per_event": cpu / stream.n_events * 1e6,
        "cpu_s": cpu,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--decisions", type=int, default=40_000)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from consumers.cli import _batch_friendly_gc, _single_threaded_blas

    with _single_threaded_blas(), _batch_friendly_gc():  # as `switchboard learn` runs
        _bench(args)


def _bench(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as d, EmbeddedBroker() as broker:
        tmp = Path(d)
        stream = make_stream(
            2024,
            args.decisions,
            partitions=PARTITIONS,
            dim=DIM,
            feedback_rate=1.0,
            window_ms=10_000,
            step_ms=5,
        )
        prefix = "bench"
        names = [f"{prefix}.{t}" for t in ("decisions", "feedback", "engagement", "dead-letter")]
        create_topics(broker.bootstrap_servers, names, partitions=PARTITIONS)
        t0 = time.perf_counter()
        produce(broker.bootstrap_servers, stream, names[0], names[1])
        produce_s = time.perf_counter() - t0
        raw, raw_cpu = raw_consume(broker.bootstrap_servers, names[:2], stream.n_events)
        lean, lean_cpu = raw_consume(
            broker.bootstrap_servers, names[:2], stream.n_events, lean=True
        )
        confluent, confluent_cpu = raw_consume_confluent(
            broker.bootstrap_servers, names[:2], stream.n_events
        )
        plain = run_learner(broker.bootstrap_servers, prefix, tmp, stream, store=False)
        chdb = run_learner(broker.bootstrap_servers, prefix, tmp, stream, store=True)
    n_fb = sum(map(len, stream.feedback.values()))
    print(
        json.dumps(
            {
                "events": stream.n_events,
                "feedback_events": n_fb,
                "context_dim": DIM,
                "partitions": PARTITIONS,
                "produce_events_per_s": round(stream.n_events / produce_s),
                "raw_consume_events_per_s": round(raw),
                "learner_events_per_s": round(plain["events_per_s"]),
                "learner_feedback_per_s": round(plain["feedback_per_s"]),
                "learner_events_per_s_chdb": round(chdb["events_per_s"]),
                "learner_feedback_per_s_chdb": round(chdb["feedback_per_s"]),
                # CPU time of this process (all threads) per event, and the events/s that
                # CPU cost allows on one core: steadier than wall time on a shared machine
                "raw_consume_cpu_us_per_event": round(raw_cpu * 1e6, 2),
                # the same through the learner's lean record parsing (its own ceiling)
                "raw_consume_lean_events_per_s": round(lean),
                "raw_consume_lean_cpu_us_per_event": round(lean_cpu * 1e6, 2),
                # confluent-kafka (librdkafka), the alternative client measured against it
                "raw_consume_confluent_events_per_s": round(confluent),
                "raw_consume_confluent_cpu_us_per_event": round(confluent_cpu * 1e6, 2),
                "learner_cpu_us_per_event": round(plain["cpu_us_per_event"], 2),
                "learner_cpu_events_per_s": round(1e6 / plain["cpu_us_per_event"]),
                "learner_cpu_feedback_per_s": round(n_fb / plain["cpu_s"]),
                "learner_cpu_us_per_event_chdb": round(chdb["cpu_us_per_event"], 2),
                "learner_cpu_events_per_s_chdb": round(1e6 / chdb["cpu_us_per_event"]),
                "learner_cpu_feedback_per_s_chdb": round(n_fb / chdb["cpu_s"]),
                "load_average_1m": round(os.getloadavg()[0], 2),
                "python": platform.python_version(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
