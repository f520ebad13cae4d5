"""Learner ingest throughput: broker → decoded, joined, updated statistics → committed offsets.

Prints one JSON object:

* ``raw_consume_events_per_s`` — kafka-python alone reading the same topics (the ceiling);
* ``learner_events_per_s`` / ``learner_feedback_per_s`` — one learner (this process) with
  64-d contexts, no store, from the first fetched message to the last snapshot+commit;
* the same with the chdb store sink (``*_chdb``).

Decisions and feedback are counted as events; ``*_feedback_per_s`` counts feedback only.
Run: ``.venv/bin/python bench/ingest.py [--decisions N]`` (under two minutes by default).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bandit.arms import Arm, ArmRegistry
from bandit.config import load_config
from bandit.policies import make_policy
from consumers.embedded import EmbeddedBroker, create_topics
from consumers.join import JoinPartition
from consumers.kafka_adapter import KafkaLearner, _crc32c_is_native
from consumers.sink import StoreSink
from consumers.state import StateDir
from consumers.synthetic import ARMS, make_stream, produce

DIM = 64
PARTITIONS = 4


def raw_consume(bootstrap: str, topic_names: list[str], total: int) -> float:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        max_poll_records=5000,
        fetch_max_bytes=64 << 20,
        max_partition_fetch_bytes=16 << 20,
        check_crcs=_crc32c_is_native(),  # same setting as the learner
    )
    tps = [TopicPartition(t, p) for t in topic_names for p in range(PARTITIONS)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    n = 0
    t0 = None
    while n < total:
        for recs in consumer.poll(timeout_ms=500).values():
            if t0 is None:
                t0 = time.perf_counter()
            n += len(recs)
    elapsed = time.perf_counter() - (t0 or time.perf_counter())
    consumer.close()
    return n / elapsed


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
    first: list[float] = []
    orig_apply = learner._apply

    def timed_apply(batch: Any) -> None:
        if not first:
            first.append(time.perf_counter())
        orig_apply(batch)

    learner._apply = timed_apply  # type: ignore[method-assign]
    thread = threading.Thread(target=learner.run, daemon=True)
    thread.start()
    want = {p: (len(stream.decisions[p]), len(stream.feedback[p])) for p in stream.decisions}

    def done() -> bool:
        parts = (
            state.load_all("join")
            if len(list(state.root.glob("join-*.state"))) == PARTITIONS
            else {}
        )
        return bool(parts) and all(
            parts[p]["offsets"]["decisions"] >= d and parts[p]["offsets"]["feedback"] >= f
            for p, (d, f) in want.items()
        )

    # checkpoints happen every commit_interval_s; force one as soon as all is applied
    while not first:
        time.sleep(0.01)
    while True:
        applied = sum(
            u.offsets.get("decisions", 0) + u.offsets.get("feedback", 0)
            for key, u in list(learner.units.items())
            if key[0] == "join"
        )
        if applied >= stream.n_events:
            break
        time.sleep(0.02)
    while not done():
        time.sleep(0.05)
    elapsed = time.perf_counter() - first[0]
    learner.stop_event.set()
    thread.join(60)
    n_fb = sum(map(len, stream.feedback.values()))
    return {
        "events_per_s": stream.n_events / elapsed,
        "feedback_per_s": n_fb / elapsed,
        "seconds": elapsed,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--decisions", type=int, default=40_000)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from consumers.cli import _single_threaded_blas

    with _single_threaded_blas():
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
        raw = raw_consume(broker.bootstrap_servers, names[:2], stream.n_events)
        plain = run_learner(broker.bootstrap_servers, prefix, tmp, stream, store=False)
        chdb = run_learner(broker.bootstrap_servers, prefix, tmp, stream, store=True)
    print(
        json.dumps(
            {
                "events": stream.n_events,
                "feedback_events": sum(map(len, stream.feedback.values())),
                "context_dim": DIM,
                "partitions": PARTITIONS,
                "produce_events_per_s": round(stream.n_events / produce_s),
                "raw_consume_events_per_s": round(raw),
                "learner_events_per_s": round(plain["events_per_s"]),
                "learner_feedback_per_s": round(plain["feedback_per_s"]),
                "learner_events_per_s_chdb": round(chdb["events_per_s"]),
                "learner_feedback_per_s_chdb": round(chdb["feedback_per_s"]),
                "python": platform.python_version(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
