"""Vowpal Wabbit learnt by the partitioned learner, end to end (issue 17).

Real ``switchboard learn`` processes with ``[policy] name = "vw"`` read two partitions of
an embedded tansu broker; the first is SIGKILLed while the second half of the stream
arrives and a second one replays from the partition state files. The published snapshot
must equal what Vowpal Wabbit itself gives for the same examples: one workspace per
partition learnt from the prior on that partition's closed decisions (in closing order,
cost ``-reward``, the logged propensity), the per-partition deltas merged with
``merge_deltas`` and applied to the prior — built here from ``vowpal_wabbit_next``
directly, not through the adapter. The join rules that decide which decisions close with
which reward are the pure core's (:func:`consumers.synthetic.reference`, tested on their
own in tests/test_learner_join.py).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

vw = pytest.importorskip("vowpal_wabbit_next")

from bandit.adapters.vw import PartitionedVWPolicy, vw_args  # noqa: E402
from bandit.arms import Arm, ArmRegistry  # noqa: E402
from bandit.config import PolicyConfig, RewardConfig, VWParams, load_config  # noqa: E402
from bandit.formats.snapshot import load_policy_snapshot  # noqa: E402
from bandit.formats.state import StateDir, VWDeltaState  # noqa: E402
from bandit.policies import make_policy  # noqa: E402
from bandit.serving.reloader import ModelHolder  # noqa: E402
from consumers.join import JoinPartition  # noqa: E402
from consumers.synthetic import ARMS, Stream, make_stream, produce, reference  # noqa: E402
from tests.fixtures.kafka import kafka_toml  # noqa: E402
from tests.test_learner_kafka import (  # noqa: E402
    offsets_reached,
    start_learner,
    stop,
    topics,
    wait_for,
)

pytestmark = pytest.mark.integration

DIM = 4
WINDOW_S = 10.0
PARAMS = VWParams(dim=DIM, vw_exploration="epsilon", epsilon=0.1)


def _write_config(tmp: Path, bootstrap: str, prefix: str) -> Path:
    cfg = f"""
[policy]
name = "vw"
dim = {DIM}
vw_exploration = "{PARAMS.vw_exploration}"
epsilon = {PARAMS.epsilon}
{kafka_toml(bootstrap, prefix)}
[learner]
attribution_window_s = {WINDOW_S}
commit_interval_s = 0.3
# one publish, on the clean stop: a VW publish merges whole models (docs/learner.md)
publish_interval_s = 3600
state_dir = "{tmp / "state"}"
[model]
dir = "{tmp / "model"}"
[[experiment.variants]]
name = "gpt35"
weight = 0.5
policy = "fixed"
arm_kinds = ["baseline"]
[[experiment.variants]]
name = "bandit"
weight = 0.5
policy = "vw"
"""
    path = tmp / "switchboard.toml"
    path.write_text(cfg)
    (tmp / "arms.json").write_text(json.dumps(
        [{"arm_id": a, "kind": "baseline" if a == "gpt35" else "expert"} for a in ARMS]))
    return path


def _half(stream: Stream, first: bool) -> Stream:
    def cut(rows: list[bytes]) -> list[bytes]:
        return rows[: len(rows) // 2] if first else rows[len(rows) // 2 :]

    return Stream({p: cut(v) for p, v in stream.decisions.items()},
                  {p: cut(v) for p, v in stream.feedback.items()})


def _feature(arm_id: str) -> str:
    """The adapter's VW feature of an arm (a hash, alike in every process)."""
    return "arm_" + hashlib.blake2b(arm_id.encode(), digest_size=8).hexdigest()


def _shared(x: Any) -> str:
    return "shared |x " + " ".join(f"{i}:{v:.9g}" for i, v in enumerate(x))


def _vw_reference(stream: Stream, reward: RewardConfig) -> tuple[Any, dict[int, int]]:
    """VW's own model for the stream: per-partition workspaces from the untrained prior,
    their deltas merged by ``merge_deltas`` and applied to the prior; and each
    partition's number of closed decisions."""
    args = vw_args(PARAMS)
    prior = vw.Workspace(args)
    # which decisions close, in which order, with which reward: the join's rules
    ridge = make_policy(PolicyConfig(name="linucb", dim=DIM), ArmRegistry([Arm(a) for a in ARMS]))

    def join(p: int) -> JoinPartition:
        return JoinPartition(p, ridge, arm_ids=ARMS, dim=DIM, window_s=WINDOW_S, reward=reward)

    deltas, closed = [], {}
    for p, part in sorted(reference(stream, join).items()):
        ws = vw.Workspace(args, model_data=prior.serialize())
        parser = vw.TextFormatParser(ws)
        for done in part.outbox.rewards:
            d = done.decision
            lines = [_shared(d.context)]
            for a in ARMS:  # no logged eligible set: the active arms, in registry order
                label = f"0:{-done.reward!r}:{d.propensity!r} " if a == d.arm_id else ""
                lines.append(f"{label}|a {_feature(a)}")
            ws.learn_one([parser.parse_line(line) for line in lines])
        deltas.append(vw.calculate_delta(prior, ws))
        closed[p] = len(part.outbox.rewards)
    return vw.apply_delta(prior, vw.merge_deltas(deltas)), closed


def _slots(ws: Any) -> np.ndarray:
    """Every weight with its adaptive and normalised accumulators."""
    return np.asarray(ws.weights())[:, 0, :3].astype(np.float64)


@pytest.mark.timeout(900)  # bounds on a busy machine, not a speed claim
def test_learner_vw_partitions_merge_to_vw_model_and_replay_after_kill(
    broker, make_topics, topic_prefix, tmp_path
):  # type: ignore[no-untyped-def]
    make_topics(*topics(topic_prefix), partitions=2)
    stream = make_stream(20261202, 600, partitions=2, dim=DIM, feedback_rate=0.9,
                         window_ms=int(WINDOW_S * 1000), step_ms=50, close_windows=True)
    cfg_path = _write_config(tmp_path, broker.bootstrap_servers, topic_prefix)
    config = load_config(cfg_path, env={})
    state = StateDir(config.learner.state_dir)
    dec, fb = f"{topic_prefix}.decisions", f"{topic_prefix}.feedback"

    produce(broker.bootstrap_servers, _half(stream, True), dec, fb)
    first = start_learner(cfg_path, tmp_path, "--no-store", name="first")
    try:
        wait_for(lambda: offsets_reached(state, _half(stream, True)), 180,
                 "the first half", [first])
        # the second half arrives while the first learner runs: it is killed at a seeded
        # moment once it has snapshotted some of it (maybe with more learnt, unsaved)
        produce(broker.bootstrap_servers, _half(stream, False), dec, fb)
        n_first = sum(map(len, _half(stream, True).decisions.values()))
        wait_for(lambda: sum(s.offsets["decisions"] for s in state.load_all("join").values())
                 > n_first, 120, "progress on the second half", [first])
        time.sleep(float(np.random.default_rng(np.random.SeedSequence(17)).uniform(0, 0.3)))
    finally:
        first.kill()
        first.wait(30)
    killed = state.load_all("join")
    assert all(isinstance(s.delta, VWDeltaState) for s in killed.values())

    # (the killed one may have saved everything: the second must still join, replay
    # nothing twice and publish — so it is stopped once it owns both partitions)
    second = start_learner(cfg_path, tmp_path, "--no-store", "--log-level", "info",
                           name="second")
    log = tmp_path / "second.log"
    try:
        wait_for(lambda: "('join', 0), ('join', 1)]" in log.read_text(), 180,
                 "the second learner's assignment", [second])
        wait_for(lambda: offsets_reached(state, stream), 300, "all offsets", [second])
    finally:
        assert stop(second) == 0  # the clean stop snapshots and publishes

    want, closed = _vw_reference(stream, config.reward)
    saved = state.load_all("join")
    assert {p: s.delta.events for p, s in saved.items()} == closed  # type: ignore[union-attr]
    assert all(n > 200 for n in closed.values())
    policy, _, _ = load_policy_snapshot(Path(config.model.dir) / "policy.snapshot")
    assert isinstance(policy, PartitionedVWPolicy)
    assert policy.version == f"vw:{sum(closed.values())}"
    got = vw.Workspace(policy._args, model_data=bytes(policy.snapshot_arrays()["vw_model"]))
    np.testing.assert_allclose(_slots(got), _slots(want), rtol=0, atol=1e-6)
    assert np.abs(_slots(want)[:, 0]).max() > 0.05  # the merged model did learn

    # the allocation server hot-loads the snapshot and serves VW's distribution
    holder = ModelHolder(config.policy, config.experiment, config.model.dir,
                         [Arm(a) for a in ARMS], reload_interval_s=3600)
    served = holder.model.policies["bandit"]
    assert holder.model.source == "snapshot" and not holder.model.fallbacks
    assert isinstance(served, PartitionedVWPolicy)
    parser = vw.TextFormatParser(want)
    for x in np.random.default_rng(np.random.SeedSequence(5)).normal(size=(20, DIM)):
        lines = [_shared(x), *(f"|a {_feature(a)}" for a in ARMS)]
        pmf = np.zeros(len(ARMS))
        for j, p in want.predict_one([parser.parse_line(line) for line in lines]):
            pmf[j] = p
        choice = served.choose(x, np.random.default_rng(0), eligible=list(ARMS))
        np.testing.assert_allclose(choice.scores, pmf / pmf.sum(), rtol=0, atol=1e-6)


def test_learner_vw_refuses_another_policys_partition_state(
    broker, make_topics, topic_prefix, tmp_path
):  # type: ignore[no-untyped-def]
    """A VW learner given a linear policy's partition file stops with one line saying so
    (exit 1), instead of learning past it or idling to exit 0."""
    import subprocess
    import sys

    from bandit.formats.snapshot import save_policy_snapshot
    from tests.test_learner_state import _busy_partition

    make_topics(*topics(topic_prefix), partitions=1)
    cfg_path = _write_config(tmp_path, broker.bootstrap_servers, topic_prefix)
    config = load_config(cfg_path, env={})
    arms = ArmRegistry([Arm(a) for a in ARMS])
    save_policy_snapshot(Path(config.learner.state_dir) / "prior.snapshot",
                         make_policy(config.policy, arms), arms, extra={"role": "learner-prior"})
    StateDir(config.learner.state_dir).save(_busy_partition().to_state())  # a ridge delta
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "switchboard"), "--config", str(cfg_path), "learn",
         "--no-store", "--max-idle-s", "5"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("switchboard learn: cannot resume join partition 0"), last
    assert "belongs to another policy" in last and "Traceback" not in proc.stderr
