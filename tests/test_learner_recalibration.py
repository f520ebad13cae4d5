"""Online re-calibration against a real tansu broker and a real chdb store: a reward
calibration version published mid-stream scores exactly the decisions from its effective
time on, the store keeps each reward's version and merged proxies, the published snapshot
(and so every server's ``policy_version``) names the version, and an unsigned file is
refused — logged, counted — while the learner keeps going on the α's in force."""

from __future__ import annotations

import logging
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from bandit.arms import Arm
from bandit.config import RewardConfig, load_config
from bandit.embedded.broker import free_port
from bandit.formats.calibration import append_version
from bandit.formats.paths import calibration_path
from bandit.formats.state import StateDir
from bandit.reward import reward_from_proxies
from bandit.serving.reloader import ModelHolder
from bandit.store import open_store
from consumers.cli import build_learner
from consumers.synthetic import ARMS, Stream, make_stream, produce
from tests.fixtures.kafka import kafka_settings, kafka_toml

pytestmark = pytest.mark.integration

WINDOW_MS = 2_000
KEY = b"recalibration-test-key-0123456789"
NEW = RewardConfig(alpha_retry=0.2, alpha_rating=0.1, alpha_length=0.7, length_cap=20,
                   default_reward=0.1)


def _split(stream: Stream, at_ms: int) -> tuple[Stream, Stream]:
    """The stream's events before ``at_ms`` and from it on (each topic stays in event-time
    order), so the second part can be produced after the calibration is published."""
    def ts(raw: bytes) -> int:
        return int(orjson.loads(raw)["ts_ms"])

    parts = []
    for keep in (lambda t: t < at_ms, lambda t: t >= at_ms):
        parts.append(Stream({p: [r for r in v if keep(ts(r))] for p, v in stream.decisions.items()},
                            {p: [r for r in v if keep(ts(r))] for p, v in stream.feedback.items()}))
    return parts[0], parts[1]


def _expected(stream: Stream) -> dict[str, tuple[int, bool | None, int | None, int | None]]:
    """Per decision: its time and the proxies the learner merges (feedback inside the
    window: retried if any retried, the latest rating, the longest length), computed here
    from the events themselves."""
    decisions = {d["decision_id"]: d for d in map(orjson.loads, stream.decisions[0])}
    merged: dict[str, list[Any]] = {k: [None, None, -1, None] for k in decisions}
    for f in map(orjson.loads, stream.feedback[0]):
        d = decisions[f["decision_id"]]
        if f["ts_ms"] > d["ts_ms"] + WINDOW_MS:
            continue  # late: stored, never merged into the reward
        m = merged[f["decision_id"]]
        if f.get("retried") is not None:
            m[0] = bool(m[0]) or f["retried"]
        if f.get("rating") is not None and f["ts_ms"] >= m[2]:
            m[1], m[2] = f["rating"], f["ts_ms"]
        if f.get("conversation_length") is not None:
            m[3] = max(m[3] or 0, f["conversation_length"])
    return {k: (decisions[k]["ts_ms"], m[0], m[1], m[3]) for k, m in merged.items()}


def _config(tmp: Path, bootstrap: str, prefix: str, metrics_port: int) -> Path:
    (tmp / "key").write_bytes(KEY)
    (tmp / "arms.json").write_text(orjson.dumps([{"arm_id": a, "kind": "expert"}
                                                 for a in ARMS]).decode())
    path = tmp / "switchboard.toml"
    path.write_text(f"""
[policy]
dim = 8
{kafka_toml(bootstrap, prefix)}
[learner]
attribution_window_s = {WINDOW_MS / 1000}
batch_size = 5000
commit_interval_s = 0.3
publish_interval_s = 0.5
state_dir = "{tmp / "state"}"
state_hmac_key_file = "{tmp / "key"}"
metrics_port = {metrics_port}
[model]
dir = "{tmp / "model"}"
[store]
dsn = "chdb://{tmp / "chdb"}"
""")
    return path


def _wait(cond: Any, what: str, thread: threading.Thread, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert thread.is_alive(), f"the learner stopped while waiting for {what}"
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(0.1)


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return str(r.read().decode())


def _consumed(state: StateDir, stream: Stream) -> bool:
    parts = state.load_all("join")
    return 0 in parts and (parts[0].offsets["decisions"] >= len(stream.decisions[0])
                           and parts[0].offsets["feedback"] >= len(stream.feedback[0]))


@pytest.mark.timeout(600)  # bounds on a busy machine, not a speed claim
def test_learner_applies_a_calibration_published_mid_stream_by_decision_time(
        broker, make_topics, topic_prefix, tmp_path, caplog):  # type: ignore[no-untyped-def]
    k = kafka_settings("", topic_prefix)
    make_topics(k.decisions_topic, k.feedback_topic, k.engagement_topic, k.exposures_topic,
                k.designs_topic, k.dead_letter_topic, partitions=1)
    stream = make_stream(18, 400, partitions=1, dim=8, window_ms=WINDOW_MS, close_windows=True)
    t0 = 1_700_000_000_000
    effective = t0 + 200 * 50  # between the two halves of the decisions (one every 50 ms)
    first, second = _split(stream, effective)
    port = free_port()
    config = load_config(_config(tmp_path, broker.bootstrap_servers, topic_prefix, port), env={})
    state = StateDir(config.learner.state_dir, key=KEY)
    cal_file = calibration_path(config.model.dir)
    # published without the key the learner verifies with: refused, the config's α's stay
    append_version(cal_file, NEW, effective_from_ms=effective, source={"note": "unsigned"},
                   key=None)

    learner = build_learner(config, arms_path=str(tmp_path / "arms.json"))
    thread = threading.Thread(target=learner.run, daemon=True)
    with caplog.at_level(logging.ERROR, logger="bandit.formats.calibration"):
        thread.start()
        try:
            produce(broker.bootstrap_servers, first, k.decisions_topic, k.feedback_topic)
            _wait(lambda: _consumed(state, first), "the first half", thread)
            refused = [r.getMessage() for r in caplog.records]
            # the same signed (the learner re-reads it when its size and mtime change)
            cal_file.unlink()
            version = append_version(cal_file, NEW, effective_from_ms=effective,
                                     source={"outcome": "day30_engagement", "n_units": 500},
                                     key=KEY)
            time.sleep(1.5)  # past the learner's once-a-second look at the file
            produce(broker.bootstrap_servers, second, k.decisions_topic, k.feedback_topic)
            _wait(lambda: _consumed(state, stream), "the whole stream", thread)
            applied = f'switchboard_learner_reward_calibration_info{{id="{version.id}"}} 1.0'
            _wait(lambda: applied in _metrics(port), "the version to be applied", thread)
            metrics = _metrics(port)
        finally:
            learner.stop_event.set()
            thread.join(120)
    assert not thread.is_alive() and learner.failure is None

    assert len(refused) == 1 and str(cal_file) in refused[0] and "hmac_sha256" in refused[0]
    assert "switchboard_learner_calibration_errors_total 1.0" in metrics
    assert "switchboard_learner_reward_calibration_version 1.0" in metrics

    store = open_store(config.store.dsn, config.store.database)
    try:
        rows = store._rows(
            "SELECT decision_id, ts_ms, toString(reward_version), reward, joined, retried, "
            "rating, conversation_length FROM rewards FINAL", {})
        spans = store.reward_versions("exp")
    finally:
        store.close()
    # the tail closes every earlier window; its own decisions stay pending
    expected = {k: v for k, v in _expected(stream).items() if "-tail-" not in k}
    assert len(rows) == len(expected)
    seen = {"config": 0, version.id: 0}
    for did, ts, rv, reward, joined, retried, rating, length in rows:
        want_ts, want_retried, want_rating, want_length = expected[did]
        assert ts == want_ts
        assert (None if retried is None else bool(retried), rating, length) == (
            want_retried, want_rating, want_length), did
        cfg = config.reward if ts < effective else NEW
        assert rv == ("config" if ts < effective else version.id), did
        proxies = {"retried": want_retried, "rating": want_rating,
                   "conversation_length": want_length}
        observed = any(v is not None for v in proxies.values())
        assert bool(joined) == observed
        want = reward_from_proxies(cfg, **proxies) if observed else cfg.default_reward
        assert reward == pytest.approx(want, abs=1e-12), did
        seen[rv] += 1
    assert seen["config"] > 50 and seen[version.id] > 50
    assert spans["reward_version"].tolist() == ["config", version.id]
    assert spans["decisions"].tolist() == [seen["config"], seen[version.id]]
    assert int(spans["until_ms"].iloc[0]) < effective <= int(spans["since_ms"].iloc[1])

    # the published snapshot names the version, and a server stamps it on its decisions
    holder = ModelHolder(config.policy, config.experiment, config.model.dir,
                         [Arm(a) for a in ARMS])
    assert holder.model.source == "snapshot"
    assert holder.model.policy_version.endswith(f"+{version.id}")
