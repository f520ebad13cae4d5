"""Snapshots: exact round trips, atomic replacement, and refusal of damaged files."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis.extra import numpy as hnp

from bandit.arms import Arm, ArmRegistry
from bandit.config import PolicyConfig
from bandit.errors import InvalidInputError, SnapshotError
from bandit.formats.snapshot import (
    FORMAT_VERSION,
    load_policy_snapshot,
    load_snapshot,
    save_policy_snapshot,
    save_snapshot,
)
from bandit.policies import make_policy

ARRAYS = {
    "S": np.arange(12.0).reshape(2, 2, 3),
    "ids": np.array(["a", "ß-expert"]),
    "n": np.array([1, 2], dtype=np.int64),
}


def _write(tmp_path: Path) -> Path:
    path = tmp_path / "snap.swb"
    save_snapshot(path, ARRAYS, {"policy": "linucb", "offsets": [1, 2]})
    return path


@settings(max_examples=30, deadline=None)
@given(hnp.arrays(hnp.floating_dtypes() | hnp.integer_dtypes(), hnp.array_shapes(max_dims=3)))
def test_snapshot_round_trip_is_bitwise_exact(tmp_path_factory: pytest.TempPathFactory,
                                              arr: np.ndarray) -> None:
    path = tmp_path_factory.mktemp("rt") / "x.swb"
    save_snapshot(path, {"arr": arr}, {"k": 1})
    back, meta = load_snapshot(path)
    assert back["arr"].dtype == arr.dtype and back["arr"].shape == arr.shape
    assert back["arr"].tobytes() == arr.tobytes() and meta == {"k": 1}


def test_snapshot_overwrite_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = _write(tmp_path)
    with pytest.raises(InvalidInputError, match="meta"):
        save_snapshot(path, ARRAYS, {"bad": object()})
    arrays, meta = load_snapshot(path)  # the previous snapshot is intact
    assert meta["offsets"] == [1, 2] and np.array_equal(arrays["S"], ARRAYS["S"])
    save_snapshot(path, {"S": np.zeros(1)}, {"v": 2})
    assert load_snapshot(path)[1] == {"v": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snap.swb"]


def _damage(data: bytes, how: str) -> bytes:
    if how == "truncated":
        return data[: len(data) - 7]
    if how == "padded":
        return data + b"\0"
    if how == "bit flip in payload":
        i = len(data) - 20
        return data[:i] + bytes([data[i] ^ 1]) + data[i + 1:]
    if how == "bit flip in header":
        return data[:70] + bytes([data[70] ^ 1]) + data[71:]
    if how == "wrong magic":
        return b"NOTASNAP" + data[8:]
    if how == "wrong version":
        return data[:8] + struct.pack("<I", FORMAT_VERSION + 1) + data[12:]
    if how == "empty":
        return b""
    raise AssertionError(how)


DAMAGE = [
    ("truncated", "truncated"),
    ("padded", "padded"),
    ("bit flip in payload", "checksum"),
    ("bit flip in header", "checksum"),
    ("wrong magic", "magic"),
    ("wrong version", "version"),
    ("empty", "truncated"),
]


@pytest.mark.parametrize(("how", "message"), DAMAGE, ids=[d[0] for d in DAMAGE])
def test_snapshot_refuses_damaged_file(tmp_path: Path, how: str, message: str) -> None:
    path = _write(tmp_path)
    path.write_bytes(_damage(path.read_bytes(), how))
    with pytest.raises(SnapshotError, match=message):
        load_snapshot(path)


def test_snapshot_missing_file_is_snapshot_error(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="cannot read"):
        load_snapshot(tmp_path / "absent.swb")


def test_snapshot_refuses_object_arrays(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="arrays"):
        save_snapshot(tmp_path / "o.swb", {"o": np.array([object()])}, {})


def test_policy_snapshot_refuses_plain_snapshot(tmp_path: Path) -> None:
    path = _write(tmp_path)
    with pytest.raises(SnapshotError, match="not a policy snapshot"):
        load_policy_snapshot(path)


def test_policy_snapshot_refuses_inconsistent_content(tmp_path: Path) -> None:
    reg = ArmRegistry([Arm("a"), Arm("b")])
    pol = make_policy(PolicyConfig(dim=3), reg)
    pol.update("a", np.ones(3), 1.0)
    path = tmp_path / "p.swb"
    save_policy_snapshot(path, pol, reg)
    arrays, meta = load_snapshot(path)
    meta["config"]["dim"] = 4  # arrays no longer match the config
    save_snapshot(path, arrays, meta)
    with pytest.raises(SnapshotError, match="inconsistent"):
        load_policy_snapshot(path)
