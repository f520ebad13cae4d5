"""Partition state files are data, not code (issue 14): round trip, refusal, HMAC, 0600,
stale temporary files, and the previous release's pickled state never unpickled."""

from __future__ import annotations

import hashlib
import os
import pickle
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest

from bandit.errors import SnapshotError
from bandit.formats.snapshot import save_snapshot
from bandit.formats.state import (
    STATE_VERSION,
    EngagementState,
    JoinState,
    StateDir,
    encode_state,
)
from consumers.join import DECISIONS, FEEDBACK, EngagementPartition
from consumers.synthetic import make_stream
from tests.test_learner_join import part

KEY = b"k" * 32


def _busy_partition():  # type: ignore[no-untyped-def]
    stream = make_stream(2, 300, partitions=1, dim=4, window_ms=10_000, step_ms=200)
    p = part()
    p.ingest(DECISIONS, list(enumerate(stream.decisions[0])))
    # feedback ahead of its decisions is held (with its original bytes)
    p.ingest(FEEDBACK, [(0, b' {"schema_version":1,"event_id":"h","decision_id":"later",'
                            b'"ts_ms":1700000099000,"unit_id":"u","conversation_id":"c"}')])
    p.ingest(FEEDBACK, list(enumerate(stream.feedback[0], start=1)))
    assert p.pending and p.closed and p.held
    return p


def test_learner_state_round_trips_without_pickle(tmp_path: Path) -> None:
    p = _busy_partition()
    d = StateDir(tmp_path)
    d.save(p.to_state())
    assert b"pickle" not in d.path("join", 0).read_bytes()[:64]
    loaded = d.load("join", 0)
    assert isinstance(loaded, JoinState) and loaded.version == STATE_VERSION
    q = part()
    q.load_state(loaded)
    a, b = p.to_state(), q.to_state()
    assert a.delta.allclose(b.delta, rtol=0, atol=0)
    # equal as written (a closed decision's context is not kept), pending ones in full
    (arrays_a, meta_a), (arrays_b, meta_b) = encode_state(a), encode_state(b)
    assert meta_a == meta_b and arrays_a.keys() == arrays_b.keys()
    for k in arrays_a:
        np.testing.assert_array_equal(arrays_a[k], arrays_b[k])
    assert a.pending == b.pending and a.held == b.held
    assert q.held[0][3] == p.held[0][3]
    assert stat.S_IMODE(os.stat(d.path("join", 0)).st_mode) == 0o600
    assert d.load_deltas("join")[0].allclose(p.delta, rtol=0, atol=0)
    e = EngagementPartition(3)
    d.save(e.to_state())
    assert d.load("engagement", 3) == e.to_state() == EngagementState(3, e.offsets, e.counters.as_dict())


def test_learner_state_refuses_unexpected_content(tmp_path: Path) -> None:
    p = _busy_partition()
    d = StateDir(tmp_path)
    arrays, meta = encode_state(p.to_state())
    body = orjson.loads(arrays["body"].tobytes())
    bad_bodies = {
        "extra field": {**body, "code": "os.system('x')"},
        "missing field": {k: v for k, v in body.items() if k != "held"},
        "mistyped row": {**body, "pending": [[*body["pending"][0][:2], "not-an-int",
                                              *body["pending"][0][3:]]]},
        "wrong partition": {**body, "partition": 7},
        # rows are checked by the events' own field rules (bandit.events), ranges included
        "propensity out of range": {**body, "pending": [[*body["pending"][0][:8], 2.0,
                                                         *body["pending"][0][9:]],
                                                        *body["pending"][1:]]},
        "rating out of range": {**body, "held": [[*body["held"][0][:2],
                                                  [*body["held"][0][2][:6], 9,
                                                   *body["held"][0][2][7:]],
                                                  body["held"][0][3]], *body["held"][1:]]},
    }
    for what, bad in bad_bodies.items():
        save_snapshot(d.path("join", 0), {**arrays, "body": np.frombuffer(orjson.dumps(bad),
                                                                          dtype=np.uint8)}, meta)
        with pytest.raises(SnapshotError, match="not a valid learner state") as info:
            d.load("join", 0)
        if what.endswith("out of range"):
            assert what.split()[0] in str(info.value), str(info.value)
    save_snapshot(d.path("join", 0), arrays, {**meta, "state_version": 1})
    with pytest.raises(SnapshotError, match="state_version"):
        d.load("join", 0)
    d.save(p.to_state())
    data = bytearray(d.path("join", 0).read_bytes())
    data[-10] ^= 0xFF
    d.path("join", 0).write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match="checksum"):
        d.load("join", 0)


def test_learner_state_hmac(tmp_path: Path) -> None:
    p = _busy_partition()
    StateDir(tmp_path).save(p.to_state())  # written without the key
    with pytest.raises(SnapshotError, match="not authenticated"):
        StateDir(tmp_path, key=KEY).load("join", 0)
    StateDir(tmp_path, key=b"x" * 32).save(p.to_state())
    with pytest.raises(SnapshotError, match="HMAC mismatch"):
        StateDir(tmp_path, key=KEY).load("join", 0)
    StateDir(tmp_path, key=KEY).save(p.to_state())
    assert StateDir(tmp_path, key=KEY).load("join", 0) is not None


def test_learner_state_stale_temp_files_removed(tmp_path: Path) -> None:
    d = StateDir(tmp_path)
    mine = tmp_path / ".join-00002.state.abc123.tmp"
    old = tmp_path / ".join-00005.state.def456.tmp"
    fresh = tmp_path / ".join-00006.state.ghi789.tmp"
    for f in (mine, old, fresh):
        f.write_bytes(b"partial")
    os.utime(old, (1, 1))
    assert d.remove_stale_temp("join", 2) == 1 and not mine.exists()
    assert d.remove_stale_temp() == 1 and not old.exists() and fresh.exists()


class _Boom:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.marker,))


def _legacy_file(path: Path, marker: Path) -> None:
    """A state file as the previous release wrote it (SBLS1 + SHA-256 + pickle)."""
    payload = pickle.dumps((pickle.dumps(None), pickle.dumps({"x": _Boom(marker)})))
    path.write_bytes(b"SBLS1\n" + hashlib.sha256(payload).digest() + payload)


def test_learner_restart_from_previous_release_state_is_refused_never_unpickled(
    tmp_path: Path,
) -> None:
    from tests.test_learner_kafka import write_config

    cfg = write_config(tmp_path, "127.0.0.1:1", "t", dim=8)
    state = tmp_path / "state"
    state.mkdir()
    marker = tmp_path / "unpickled"
    _legacy_file(state / "join-00000.state", marker)
    with pytest.raises(SnapshotError, match="previous release"):
        StateDir(state).load("join", 0)
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "switchboard"), "--config", str(cfg), "learn",
         "--arms", str(tmp_path / "arms.json"), "--no-store", "--max-idle-s", "1"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    assert "previous release" in proc.stderr and "never unpickles" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not marker.exists()


# ------------------------------------------------------------- Vowpal Wabbit deltas


def _vw_partition(exploration: str = "epsilon", dim: int = 4):  # type: ignore[no-untyped-def]
    pytest.importorskip("vowpal_wabbit_next")
    from bandit.arms import Arm, ArmRegistry
    from bandit.config import RewardConfig, VWParams
    from bandit.policies import make_policy
    from consumers.join import JoinPartition
    from consumers.synthetic import ARMS

    policy = make_policy(VWParams(dim=dim, vw_exploration=exploration),
                         ArmRegistry([Arm(a) for a in ARMS]))
    return JoinPartition(0, policy, arm_ids=ARMS, dim=dim, window_s=10.0,  # type: ignore[arg-type]
                         reward=RewardConfig(), watermark_outliers=0)


def _vw_weights(policy, delta) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The (weight, adaptive, normalised) slots of ``policy``'s model after ``delta``."""
    import copy

    import vowpal_wabbit_next as vw

    model = copy.copy(policy)
    model.apply(delta)
    ws = vw.Workspace(policy._args, model_data=bytes(model.snapshot_arrays()["vw_model"]))
    return np.asarray(ws.weights())[:, 0, :3].astype(np.float64)


def test_learner_state_vw_delta_round_trips_and_resumes(tmp_path: Path) -> None:
    from bandit.formats.state import VWDeltaState

    stream = make_stream(3, 240, partitions=1, dim=4, window_ms=10_000, step_ms=200)
    half_d, half_f = len(stream.decisions[0]) // 2, len(stream.feedback[0]) // 2
    p = _vw_partition()
    p.ingest(DECISIONS, list(enumerate(stream.decisions[0][:half_d])))
    p.ingest(FEEDBACK, list(enumerate(stream.feedback[0][:half_f])))
    assert p.counters.closed > 20 and p.pending
    d = StateDir(tmp_path, key=KEY)
    state = p.to_state()
    assert isinstance(state.delta, VWDeltaState) and state.delta.events == p.counters.closed
    d.save(state)
    arrays, meta = encode_state(state)
    assert meta["delta"] == "vw" and meta["state_version"] == STATE_VERSION == 3
    assert {k for k in arrays if k.startswith("delta.")} == {"delta.vw_delta", "delta.events"}
    loaded = d.load("join", 0)
    assert isinstance(loaded, JoinState) and loaded.delta == state.delta
    assert d.load_deltas("join")[0] == state.delta
    # a partition restored from the file learns the rest exactly as the one that went on
    q = _vw_partition()
    q.load_state(loaded)
    for part_ in (p, q):
        part_.ingest(DECISIONS, list(enumerate(stream.decisions[0][half_d:], start=half_d)))
        part_.ingest(FEEDBACK, list(enumerate(stream.feedback[0][half_f:], start=half_f)))
    assert q.counters == p.counters and q.delta.events == p.delta.events > state.delta.events
    np.testing.assert_allclose(_vw_weights(q.model, q.delta), _vw_weights(p.model, p.delta),
                               rtol=0, atol=1e-6)
    assert np.abs(_vw_weights(p.model, p.delta)[:, 0]).max() > 0.01  # it did learn


def test_learner_state_refuses_another_policys_or_a_corrupted_vw_delta(tmp_path: Path) -> None:
    vw_part, ridge_part = _vw_partition(), _busy_partition()
    vw_part.ingest(DECISIONS, list(enumerate(
        make_stream(4, 40, partitions=1, dim=4).decisions[0])))
    vw_state, ridge_state = vw_part.to_state(), ridge_part.to_state()
    d = StateDir(tmp_path)
    # a state file of one policy's kind is refused by a learner of the other
    with pytest.raises(SnapshotError, match="another policy"):
        part().load_state(vw_state)
    with pytest.raises(SnapshotError, match="another policy"):
        _vw_partition().load_state(ridge_state)
    # a VW delta of another model (another exploration: other learners), or bytes that
    # are no delta at all, is refused when it is restored, naming the delta and VW's reason
    with pytest.raises(SnapshotError, match=r"vw_delta must be a delta of this Vowpal Wabbit "
                                            r"model \(Enabled learners are not identical"):
        _vw_partition("bag").load_state(vw_state)
    garbage = JoinState(**{**{f: getattr(vw_state, f) for f in JoinState.__slots__},
                           "delta": type(vw_state.delta)(b"\x06not a delta", 3)})
    d.save(garbage)
    with pytest.raises(SnapshotError, match="vw_delta"):
        _vw_partition().load_state(d.load("join", 0))
    # the header's tag must name the arrays' kind
    arrays, meta = encode_state(vw_state)
    for bad_meta in ({**meta, "delta": "ridge"}, {**meta, "delta": "torch"},
                     {k: v for k, v in meta.items() if k != "delta"},
                     {**meta, "state_version": 2}):
        save_snapshot(d.path("join", 0), arrays, bad_meta)
        with pytest.raises(SnapshotError, match="not a valid learner state"):
            d.load("join", 0)
    save_snapshot(d.path("join", 0), {**arrays, "delta.vw_delta": np.zeros((2, 2), np.uint8)},
                  meta)
    with pytest.raises(SnapshotError, match="vw_delta must be a non-empty uint8 vector"):
        d.load("join", 0)
    # a flipped byte is caught by the file's checksum before anything is parsed
    d.save(vw_state)
    data = bytearray(d.path("join", 0).read_bytes())
    data[len(data) // 2] ^= 0xFF
    d.path("join", 0).write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match="checksum"):
        d.load("join", 0)


def test_learner_state_version_2_ridge_files_are_still_read(tmp_path: Path) -> None:
    p = _busy_partition()
    arrays, meta = encode_state(p.to_state())
    assert meta.pop("delta") == "ridge"  # version 3 adds the tag: same arrays
    meta["unit"] = meta.pop("stream")  # and renames the partition's kind, "unit" in version 2
    d = StateDir(tmp_path)
    save_snapshot(d.path("join", 0), arrays, {**meta, "state_version": 2})
    loaded = d.load("join", 0)
    assert isinstance(loaded, JoinState)
    assert loaded.delta.allclose(p.delta, rtol=0, atol=0)  # type: ignore[union-attr]
    q = part()
    q.load_state(loaded)
    assert q.to_state().pending == p.to_state().pending
