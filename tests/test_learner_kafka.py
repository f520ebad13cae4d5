"""The learner against a real tansu broker: crash recovery, consumer groups, bad input.

The learner runs as real ``switchboard learn`` processes (SIGKILLed and restarted in the
crash test); the expected statistics come from the same pure core fed the same events
in memory without interruption (:func:`consumers.synthetic.reference`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from bandit.arms import Arm, ArmRegistry
from bandit.config import Config, load_config
from bandit.embedded.broker import free_port
from bandit.events import DecisionEvent, EngagementEvent, FeedbackEvent, encode_event
from bandit.formats.state import StateDir
from bandit.policies import make_policy
from consumers.join import JoinPartition, Outbox
from consumers.kafka_adapter import KafkaLearner
from consumers.sink import MemorySink
from consumers.synthetic import ARMS, Stream, make_stream, produce, reference
from tests.fixtures.kafka import kafka_settings, kafka_toml

pytestmark = pytest.mark.integration

SWITCHBOARD = str(Path(sys.executable).parent / "switchboard")
WINDOW_S = 10.0


def write_config(
    tmp: Path, bootstrap: str, prefix: str, *, dim: int, store: bool = True, group: str = "learners"
) -> Path:
    cfg = f"""
[policy]
dim = {dim}
{kafka_toml(bootstrap, prefix, group=group)}
[learner]
attribution_window_s = {WINDOW_S}
batch_size = 5000
commit_interval_s = 0.3
publish_interval_s = 1.0
state_dir = "{tmp / "state"}"
[serve]
snapshot_dir = "{tmp / "snapshots"}"
[store]
dsn = "chdb://{tmp / "chdb"}"
"""
    path = tmp / "switchboard.toml"
    path.write_text(cfg)
    (tmp / "arms.json").write_text(json.dumps([{"arm_id": a, "kind": "expert"} for a in ARMS]))
    return path


def topics(prefix: str) -> list[str]:
    """The topics the learner tests produce to and read from, as :func:`write_config` names them."""
    k = kafka_settings("", prefix)
    return [k.decisions_topic, k.feedback_topic, k.engagement_topic, k.dead_letter_topic]


def make_join_for(config: Config) -> Any:
    arms = ArmRegistry([Arm(a) for a in ARMS])
    policy = make_policy(config.policy, arms)

    def make(p: int) -> JoinPartition:
        return JoinPartition(
            p,
            policy,
            arm_ids=ARMS,
            dim=config.policy.dim,
            window_s=config.learner.attribution_window_s,
            reward=config.reward,
        )

    return make


def start_learner(
    cfg_path: Path, tmp: Path, *extra: str, name: str = "learner", metrics_port: int = 0
) -> subprocess.Popen[bytes]:
    log = open(tmp / f"{name}.log", "ab")
    env = dict(os.environ)
    if metrics_port:
        env["SWITCHBOARD_LEARNER__METRICS_PORT"] = str(metrics_port)
    return subprocess.Popen(
        [
            SWITCHBOARD,
            "--config",
            str(cfg_path),
            "learn",
            "--arms",
            str(tmp / "arms.json"),
            "--log-level",
            "warning",
            *extra,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )


def metrics_answer(port: int) -> bool:
    """The learner's metrics endpoint answers (its start-up is done, signals handled)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def offsets_reached(state: StateDir, stream: Stream) -> bool:
    parts = state.load_all("join")
    return len(parts) == len(stream.decisions) and all(
        parts[p].offsets["decisions"] >= len(stream.decisions[p])
        and parts[p].offsets["feedback"] >= len(stream.feedback[p])
        for p in stream.decisions
    )


def wait_for(
    cond: Any, timeout_s: float, what: str, procs: list[subprocess.Popen[bytes]] = ()
) -> None:  # type: ignore[assignment]
    deadline = time.monotonic() + timeout_s
    while not cond():
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"learner exited with {p.returncode} while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(60)


def merged(states: dict[int, Any]) -> Any:
    parts = [states[p].delta for p in sorted(states)]
    total = parts[0]
    for d in parts[1:]:
        total = total.merge(d)
    return total


def assert_same_statistics(got: Any, want: Any) -> None:
    """Equal per-arm sums (arms aligned by id) within 1e-9."""
    g, w = got.to_arrays(), want.to_arrays()
    g_ids, w_ids = [str(a) for a in g["arm_ids"]], [str(a) for a in w["arm_ids"]]
    assert sorted(g_ids) == sorted(w_ids)
    order = [g_ids.index(a) for a in w_ids]
    for key in ("S", "b", "n"):
        diff = float(np.max(np.abs(np.asarray(g[key])[order] - np.asarray(w[key]))))
        assert diff <= 1e-9, f"{key} differs by {diff}"


@pytest.mark.timeout(1200)  # bounds on a busy machine, not a speed claim
def test_learner_process_kill9_replays_to_exact_statistics(
    broker, make_topics, topic_prefix, tmp_path
):  # type: ignore[no-untyped-def]
    make_topics(*topics(topic_prefix), partitions=4)
    stream = make_stream(
        20240601,
        27_000,
        partitions=4,
        dim=16,
        feedback_rate=0.9,
        window_ms=int(WINDOW_S * 1000),
        step_ms=20,
        close_windows=True,  # drained: every window closes, every held feedback resolves
    )
    assert stream.n_events >= 50_000
    produce(
        broker.bootstrap_servers, stream, f"{topic_prefix}.decisions", f"{topic_prefix}.feedback"
    )
    cfg_path = write_config(tmp_path, broker.bootstrap_servers, topic_prefix, dim=16)
    config = load_config(cfg_path, env={})
    state = StateDir(config.learner.state_dir)
    rng = np.random.default_rng(np.random.SeedSequence(31337))

    def progress() -> int:
        return sum(
            s.offsets["decisions"] + s.offsets["feedback"]
            for s in state.load_all("join").values()
        )

    killed_at = []
    for k in range(3):
        before = progress()
        proc = start_learner(cfg_path, tmp_path, name=f"run{k}")
        try:
            # kill -9 at a seeded random moment once this run has snapshotted progress
            wait_for(
                lambda: progress() > before or offsets_reached(state, stream),  # noqa: B023
                180,  # a killed member's session must expire before the group rebalances
                "progress",
                [proc],
            )
            time.sleep(float(rng.uniform(0.0, 0.4)))
        finally:
            proc.kill()
            proc.wait(30)
        killed_at.append(progress())
    # the killed runs may already have applied everything: the final run must still
    # start, find nothing left to do and stop cleanly — so it is stopped once it runs
    port = free_port()
    final = start_learner(cfg_path, tmp_path, name="final", metrics_port=port)
    try:
        wait_for(lambda: metrics_answer(port), 180, "the final learner's start", [final])
        wait_for(lambda: offsets_reached(state, stream), 300, "all offsets", [final])
    finally:
        assert stop(final) == 0

    ref = reference(stream, make_join_for(config))
    states = state.load_all("join")
    assert_same_statistics(merged(states), merged({p: r.to_state() for p, r in ref.items()}))
    for p, r in ref.items():
        # drained: every counter equals the clean run's, joined and late feedback included
        assert states[p].counters == r.counters.as_dict()
        assert sorted(row[0].decision_id for row in states[p].pending) == sorted(r.pending)
        assert not states[p].held and not r.held
    assert 0 < killed_at[0] < stream.n_events  # the first kill landed mid-stream
    assert (tmp_path / "snapshots" / "policy.snapshot").exists()

    from bandit.store import open_store

    # exact store contents: once drained, every table holds the clean run's rows
    clean = Outbox()
    for r in ref.values():
        clean.extend(r.outbox)
    store = open_store(config.store.dsn)
    try:
        assert store.count("decisions") == len({d.event_id for d in clean.decisions})
        assert store.count("feedback") == len(
            {f.event_id for f in [*clean.feedback, *(lf.feedback for lf in clean.late)]}
        )
        assert store.count("rewards") == len({c.decision.decision_id for c in clean.rewards})
        assert store.count("exposures") == len(
            {(d.experiment_id, d.unit_id, d.ts_ms) for d in clean.decisions}
        )
    finally:
        store.close()


def test_learner_two_consumers_in_group_match_one(broker, make_topics, topic_prefix, tmp_path):  # type: ignore[no-untyped-def]
    make_topics(*topics(topic_prefix), partitions=4)
    stream = make_stream(77, 8_000, partitions=4, dim=8, window_ms=int(WINDOW_S * 1000), step_ms=20)
    produce(
        broker.bootstrap_servers, stream, f"{topic_prefix}.decisions", f"{topic_prefix}.feedback"
    )
    cfg_path = write_config(tmp_path, broker.bootstrap_servers, topic_prefix, dim=8, store=False)
    config = load_config(cfg_path, env={})
    state = StateDir(config.learner.state_dir)
    a = start_learner(cfg_path, tmp_path, "--no-store", name="a")
    b = start_learner(cfg_path, tmp_path, "--no-store", name="b")
    try:
        wait_for(lambda: offsets_reached(state, stream), 120, "all offsets", [a, b])
    finally:
        assert stop(a) == 0
        assert stop(b) == 0
    ref = reference(stream, make_join_for(config))
    states = state.load_all("join")
    assert_same_statistics(merged(states), merged({p: r.to_state() for p, r in ref.items()}))
    assert sum(s.counters["closed"] for s in states.values()) == sum(
        r.counters.closed for r in ref.values()
    )
    # the last learner to stop published prior (empty) + every partition's final delta
    from bandit.formats.snapshot import load_policy_snapshot

    published, arms, _ = load_policy_snapshot(tmp_path / "snapshots" / "policy.snapshot")
    assert sorted(arms.ids()) == sorted(ARMS)
    assert_same_statistics(published.statistics, merged(states))


def _decision(i: int, **over: Any) -> dict[str, Any]:
    d = encode_event(
        DecisionEvent(
            event_id=f"bad-{i}",
            decision_id=f"bad-dec-{i}",
            ts_ms=1_700_000_000_000,
            unit_id="u",
            conversation_id="c",
            experiment_id="e",
            variant="bandit",
            arm_id="gpt35",
            propensity=0.5,
            policy_version="v",
            context=tuple([0.1] * 8),
        )
    )
    obj = orjson.loads(d)
    obj.update(over)
    return obj


def _bad_messages() -> list[tuple[str, str, bytes]]:
    """(kind, topic role, raw) — one per distinct way an event can be malformed."""

    def j(o: Any) -> bytes:
        return orjson.dumps(o)

    missing = _decision(3)
    del missing["decision_id"]
    fb_unknown = encode_event(
        FeedbackEvent(
            event_id="fb-x",
            decision_id="never-decided",
            ts_ms=1_700_000_000_000,
            unit_id="u",
            conversation_id="c",
            retried=True,
        )
    )
    eng = orjson.loads(
        encode_event(
            EngagementEvent(event_id="en1", ts_ms=1, unit_id="u", screen_time_s=10.0, messages=3)
        )
    )
    return [
        ("invalid json", "decisions", b"{this is not json"),
        ("empty payload", "decisions", b""),
        ("not an object", "decisions", b"[1, 2, 3]"),
        ("missing field", "decisions", j(missing)),
        ("mistyped field", "decisions", j(_decision(4, ts_ms="yesterday"))),
        ("NaN in context", "decisions", j(_decision(5)).replace(b"0.1,", b"NaN,", 1)),
        (
            "infinite propensity",
            "decisions",
            j(_decision(6)).replace(b'"propensity":0.5', b'"propensity":1e999'),
        ),
        ("propensity out of range", "decisions", j(_decision(7, propensity=0.0))),
        ("unknown arm", "decisions", j(_decision(8, arm_id="no-such-expert"))),
        ("wrong context length", "decisions", j(_decision(9, context=[0.1] * 3))),
        ("oversized payload", "decisions", j(_decision(10, context=[0.1] * 20_000))),
        ("unknown schema version", "decisions", j(_decision(11, schema_version=2))),
        ("invalid utf-8", "decisions", b'{"schema_version":1,"event_id":"\xff\xfe"}'),
        (
            "feedback rating out of range",
            "feedback",
            j({**orjson.loads(fb_unknown), "event_id": "fb-r", "rating": 9}),
        ),
        ("feedback for unknown decision", "feedback", fb_unknown),
        ("engagement negative screen time", "engagement", j({**eng, "screen_time_s": -5})),
        ("engagement boolean messages", "engagement", j({**eng, "messages": True})),
    ]


def test_learner_bad_events_go_to_dead_letter_and_good_ones_apply(
    broker, make_topics, topic_prefix, tmp_path
):  # type: ignore[no-untyped-def]
    from kafka import KafkaConsumer, TopicPartition

    make_topics(*topics(topic_prefix), partitions=2)
    stream = make_stream(5, 3_000, partitions=2, dim=8, window_ms=int(WINDOW_S * 1000), step_ms=20)
    bad = _bad_messages()
    assert len({kind for kind, _, _ in bad}) >= 12
    # bad messages go to partition 0, interleaved after the good ones of that partition
    extra = [(f"{topic_prefix}.{role}", 0, raw) for _, role, raw in bad]
    good_eng = [
        (
            f"{topic_prefix}.engagement",
            i % 2,
            encode_event(
                EngagementEvent(
                    event_id=f"en-{i}",
                    ts_ms=1_700_000_000_000 + i,
                    unit_id=f"u{i}",
                    screen_time_s=1.5,
                    messages=i,
                )
            ),
        )
        for i in range(50)
    ]
    produce(
        broker.bootstrap_servers,
        stream,
        f"{topic_prefix}.decisions",
        f"{topic_prefix}.feedback",
        extra=extra + good_eng,
    )
    cfg_path = write_config(tmp_path, broker.bootstrap_servers, topic_prefix, dim=8)
    config = load_config(cfg_path, env={})
    sink = MemorySink()
    learner = KafkaLearner(config, make_join_for(config), sink=sink)
    thread = threading.Thread(target=learner.run, kwargs={"max_idle_s": 3.0}, daemon=True)
    thread.start()
    thread.join(120)
    assert not thread.is_alive()

    # every good event applied: the statistics equal the good-only reference
    good = stream
    ref = reference(good, make_join_for(config))
    states = StateDir(config.learner.state_dir).load_all("join")
    assert_same_statistics(merged(states), merged({p: r.to_state() for p, r in ref.items()}))
    assert len(sink.written.engagement) == 50
    assert len(sink.written.decisions) == sum(map(len, good.decisions.values()))

    # every bad event is on the dead-letter topic with a reason and its original bytes
    consumer = KafkaConsumer(
        bootstrap_servers=broker.bootstrap_servers,
        enable_auto_commit=False,
        consumer_timeout_ms=3000,
    )
    tps = [TopicPartition(f"{topic_prefix}.dead-letter", p) for p in range(2)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    dead = []
    deadline = time.monotonic() + 30
    while len(dead) < len(bad) and time.monotonic() < deadline:
        for recs in consumer.poll(timeout_ms=500).values():
            dead.extend(recs)
    consumer.close()
    assert len(dead) == len(bad)
    by_raw = {r.value: dict(r.headers) for r in dead}
    for kind, role, raw in bad:
        assert raw in by_raw, f"{kind} not dead-lettered"
        headers = by_raw[raw]
        assert headers["reason"], kind
        assert headers["source_topic"] == f"{topic_prefix}.{role}".encode()
    unknown = by_raw[bad[-3][2]]
    assert b"feedback for unknown decision" in unknown["reason"]


def test_learner_sigterm_snapshots_and_exits_cleanly(broker, make_topics, topic_prefix, tmp_path):  # type: ignore[no-untyped-def]
    make_topics(*topics(topic_prefix), partitions=1)
    stream = make_stream(9, 500, partitions=1, dim=8, window_ms=int(WINDOW_S * 1000))
    produce(
        broker.bootstrap_servers, stream, f"{topic_prefix}.decisions", f"{topic_prefix}.feedback"
    )
    cfg_path = write_config(tmp_path, broker.bootstrap_servers, topic_prefix, dim=8)
    env = {**os.environ, "SWITCHBOARD_LEARNER__COMMIT_INTERVAL_S": "3600"}
    log = open(tmp_path / "sigterm.log", "ab")
    proc = subprocess.Popen(
        [
            SWITCHBOARD,
            "--config",
            str(cfg_path),
            "learn",
            "--arms",
            str(tmp_path / "arms.json"),
            "--no-store",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    state = StateDir(load_config(cfg_path, env={}).learner.state_dir)
    try:
        # nothing is snapshotted until shutdown (commit interval of an hour)...
        wait_for(
            lambda: "learner: assigned" in (tmp_path / "sigterm.log").read_text(),
            60,
            "assignment",
            [proc],
        )
        time.sleep(1.0)
    finally:
        assert stop(proc) == 0
    # ...and SIGTERM flushed everything it had applied
    assert offsets_reached(state, stream)


class FlakySink(MemorySink):
    """A store that is down for its first ``failures`` writes."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.attempts = 0

    def write(self, outbox: Any) -> list[Any]:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise ConnectionError("store unavailable")
        return super().write(outbox)


def test_learner_store_outage_pauses_and_loses_nothing(broker, make_topics, topic_prefix, tmp_path):  # type: ignore[no-untyped-def]
    make_topics(*topics(topic_prefix), partitions=2)
    stream = make_stream(13, 2_000, partitions=2, dim=8, window_ms=int(WINDOW_S * 1000))
    produce(
        broker.bootstrap_servers, stream, f"{topic_prefix}.decisions", f"{topic_prefix}.feedback"
    )
    config = load_config(
        write_config(tmp_path, broker.bootstrap_servers, topic_prefix, dim=8), env={}
    )
    sink = FlakySink(failures=3)
    learner = KafkaLearner(config, make_join_for(config), sink=sink)
    thread = threading.Thread(target=learner.run, kwargs={"max_idle_s": 4.0}, daemon=True)
    thread.start()
    thread.join(120)
    assert not thread.is_alive()
    assert sink.attempts > 3
    ref = reference(stream, make_join_for(config))
    assert len(sink.written.decisions) == sum(map(len, stream.decisions.values()))
    assert len(sink.written.rewards) == sum(r.counters.closed for r in ref.values())
    states = StateDir(config.learner.state_dir).load_all("join")
    assert_same_statistics(merged(states), merged({p: r.to_state() for p, r in ref.items()}))
