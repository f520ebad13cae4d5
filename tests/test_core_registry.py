"""The shared arm registry file (bandit.formats.registry): round trip, locking, corruption, retire."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bandit.arms import Arm
from bandit.errors import RegistryError, UnknownArmError
from bandit.formats.paths import REGISTRY_NAME
from bandit.formats.registry import (
    FORMAT_VERSION,
    RegistryFile,
    RegistryState,
    decode_registry,
    encode_registry,
)


def test_registry_round_trip_keeps_kind_features_and_active(tmp_path: Path) -> None:
    reg = RegistryFile(tmp_path)
    assert reg.read() == RegistryState()  # no file yet: empty, revision 0
    reg.register(Arm("gpt35", kind="baseline"))
    reg.register(Arm("roleplay-7b", features=(0.9, 0.1)))
    state = reg.retire("gpt35")
    assert state.revision == 3
    back = RegistryFile(tmp_path).read()
    assert back == state
    assert back.arms == (Arm("gpt35", kind="baseline", active=False),
                         Arm("roleplay-7b", features=(0.9, 0.1)))
    assert decode_registry(encode_registry(state), "x") == state
    assert json.loads((tmp_path / REGISTRY_NAME).read_text())["version"] == FORMAT_VERSION


_arms = st.lists(
    st.builds(Arm, st.text(min_size=1, max_size=20), st.sampled_from(["expert", "baseline"]),
              st.none() | st.tuples(st.floats(allow_nan=False, allow_infinity=False)),
              st.booleans()),
    unique_by=lambda a: a.arm_id, max_size=8)


@given(_arms, st.integers(min_value=0, max_value=2**53))
def test_registry_encode_decode_is_identity(arms: list[Arm], revision: int) -> None:
    state = RegistryState(revision, tuple(arms))
    assert decode_registry(encode_registry(state), "prop") == state


def test_registry_revision_only_grows_on_a_change(tmp_path: Path) -> None:
    reg = RegistryFile(tmp_path)
    assert reg.register(Arm("a")).revision == 1
    assert reg.register(Arm("a")).revision == 1  # same arm again: nothing to write
    assert reg.register(Arm("a", features=(1.0,))).revision == 2
    assert reg.register(Arm("b")).revision == 3


def test_registry_retire_keeps_the_arm_and_reregister_reactivates(tmp_path: Path) -> None:
    reg = RegistryFile(tmp_path)
    reg.register(Arm("e1", features=(0.5, 0.5)))
    state = reg.retire("e1")
    assert state.arm_ids() == ["e1"]
    assert state.get("e1") == Arm("e1", features=(0.5, 0.5), active=False)
    with pytest.raises(UnknownArmError):
        reg.retire("never")
    # an arm the caller knows but the file does not list yet (a server's start-up arm)
    assert reg.retire("boot", known=Arm("boot", kind="baseline")).get("boot").active is False
    assert reg.register(Arm("e1", features=(0.5, 0.5))).get("e1").active is True


def _register_many(directory: str, prefix: str, n: int) -> None:
    reg = RegistryFile(directory)
    for i in range(n):
        reg.register(Arm(f"{prefix}-{i}"))


def test_registry_concurrent_writers_in_two_processes_lose_nothing(tmp_path: Path) -> None:
    n = 40
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_register_many, args=(str(tmp_path), p, n)) for p in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    state = RegistryFile(tmp_path).read()
    assert sorted(state.arm_ids()) == sorted([f"a-{i}" for i in range(n)]
                                             + [f"b-{i}" for i in range(n)])
    assert state.revision == 2 * n  # every write saw the one before it


@pytest.mark.parametrize(("damage", "message"), [
    (lambda t: t.replace('"roleplay-7b"', '"roleplay-8b"'), "checksum mismatch"),
    (lambda t: t[: len(t) // 2], "not a valid arms registry"),
    (lambda t: t.replace('"version": 1', '"version": 99'), "format version 99"),
    (lambda t: json.dumps({"hello": 1}), "not a Switchboard arms registry"),
], ids=["checksum", "truncated", "version", "foreign"])
def test_registry_corrupt_file_is_refused_and_the_last_good_kept(
    tmp_path: Path, damage: object, message: str,
) -> None:
    writer = RegistryFile(tmp_path)
    writer.register(Arm("roleplay-7b"))
    follower = RegistryFile(tmp_path)
    good = follower.refresh()
    assert good is not None and good.arm_ids() == ["roleplay-7b"]
    assert follower.refresh() is None  # unchanged: nothing re-read
    path = tmp_path / REGISTRY_NAME
    path.write_text(damage(path.read_text()))  # type: ignore[operator]
    assert follower.refresh() is None
    assert follower.error is not None and message in follower.error and str(path) in follower.error
    assert follower.state == good  # the last good registry is kept
    with pytest.raises(RegistryError, match=message):
        follower.read()
    with pytest.raises(RegistryError, match=message):  # a writer never merges into it
        writer.register(Arm("other"))


def test_registry_unwritable_directory_is_a_registry_error(tmp_path: Path) -> None:
    # a path below a regular file cannot be created, whoever runs the test (root too)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(RegistryError, match="cannot open the registry lock"):
        RegistryFile(blocker / "snapshots").register(Arm("x"))
