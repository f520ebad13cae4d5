"""Per-partition learner state files: data, not code.

Each file holds one partition's statistics delta, pending joins, held feedback (with its
original bytes), recently closed decisions, watermarks, applied event ids, counters and
next offsets — written together, atomically (:func:`bandit.formats.snapshot.write_atomic`: a
0600 temporary file, fsync, rename), so a crash leaves either the old or the new state.
The directory is shared by every consumer of the group: a partition's state moves with
the partition.

Format: the model snapshot's (:mod:`bandit.formats.snapshot`: magic, version, SHA-256, JSON
header, npz arrays — no pickle anywhere), optionally authenticated with HMAC-SHA256
under the key in ``learner.state_hmac_key_file``. The header says
``{"kind": "learner-state", "state_version": 2, "unit": ..., "partition": ...}``; the
arrays are the delta's (``delta.S``, ``delta.b``, ...), the pending contexts
(``pending_x``) and ``body``, the rest as UTF-8 JSON. :func:`decode_state` checks every
field's type and shape and refuses anything else with :class:`SnapshotError`, so a file
someone else wrote can at worst be refused, never run. Files of the previous release
(``SBLS1``, pickled) are refused with what to do, never unpickled.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson

from bandit.errors import InvalidInputError, SnapshotError
from bandit.formats.snapshot import load_snapshot, save_snapshot
from bandit.linear import RidgeStatistics

__all__ = ["STATE_VERSION", "WATERMARK_WINDOW", "StateDir", "decode_state", "encode_state", "read_key"]

log = logging.getLogger(__name__)

STATE_VERSION: Final = 2
#: Accepted events of one topic in the sliding window the learner's watermark is read from
#: (``consumers.join``); a state file stores each window as this many integers.
WATERMARK_WINDOW: Final = 64
_KIND: Final = "learner-state"
#: magic of the previous release's pickled state files
_LEGACY_MAGIC: Final = b"SBLS1\n"
#: temporary files of this directory older than this (s) are a crashed writer's
_STALE_TMP_S: Final = 300.0


def read_key(path: str) -> bytes | None:
    """The HMAC key in file ``path`` (surrounding whitespace stripped), or None for ''."""
    if not path:
        return None
    try:
        key = Path(path).read_bytes().strip()
    except OSError as exc:
        raise InvalidInputError("learner.state_hmac_key_file", path,
                                f"cannot be read ({exc.strerror or exc})") from None
    if len(key) < 16:
        raise InvalidInputError("learner.state_hmac_key_file", path,
                                f"must hold a key of at least 16 bytes, got {len(key)}")
    return key


class StateDir:
    """Per-partition state files ``<kind>-<partition>.state`` under ``root``."""

    def __init__(self, root: str | os.PathLike[str], *, key: bytes | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.key = key

    def path(self, kind: str, partition: int) -> Path:
        return self.root / f"{kind}-{partition:05d}.state"

    def save(self, kind: str, partition: int, state: dict[str, Any]) -> None:
        arrays, meta = encode_state(kind, partition, state)
        save_snapshot(self.path(kind, partition), arrays, meta, key=self.key)

    def load(self, kind: str, partition: int) -> dict[str, Any] | None:
        """The saved state, or None for a partition never snapshotted."""
        p = self.path(kind, partition)
        if not p.exists():
            return None
        return self._read(p, kind, partition)

    def load_deltas(self, kind: str = "join") -> dict[int, Any]:
        """Only the statistics delta of every partition (the rest is not parsed)."""
        return {
            part: self._read(p, kind, part, delta_only=True)["delta"]
            for part, p in self._files(kind).items()
        }

    def load_all(self, kind: str) -> dict[int, dict[str, Any]]:
        return {part: self._read(p, kind, part) for part, p in self._files(kind).items()}

    def check(self) -> None:
        """Refuse a directory holding state of an older release (before anything runs)."""
        for p in sorted(self.root.glob("*.state")):
            with open(p, "rb") as fh:
                if fh.read(len(_LEGACY_MAGIC)) == _LEGACY_MAGIC:
                    raise SnapshotError(_legacy_message(p))

    def remove_stale_temp(self, kind: str | None = None, partition: int | None = None) -> int:
        """Remove temporary files a killed writer left: those of ``kind``/``partition``
        (its owner is the caller, so none is being written), else any older than
        ``_STALE_TMP_S``. Returns how many were removed."""
        removed = 0
        now = time.time()
        pattern = (
            f".{self.path(kind, partition).name}.*.tmp"
            if kind is not None and partition is not None
            else ".*.tmp"
        )
        for p in self.root.glob(pattern):
            try:
                if partition is None and now - p.stat().st_mtime < _STALE_TMP_S:
                    continue
                p.unlink()
                removed += 1
            except FileNotFoundError:
                continue
        if removed:
            log.info("removed %d stale temporary files in %s", removed, self.root)
        return removed

    def _files(self, kind: str) -> dict[int, Path]:
        out: dict[int, Path] = {}
        for p in sorted(self.root.glob(f"{kind}-*.state")):
            try:
                out[int(p.stem.split("-")[-1])] = p
            except ValueError:
                continue
        return out

    def _read(
        self, path: Path, kind: str, partition: int, *, delta_only: bool = False
    ) -> dict[str, Any]:
        try:
            with open(path, "rb") as fh:
                if fh.read(len(_LEGACY_MAGIC)) == _LEGACY_MAGIC:
                    raise SnapshotError(_legacy_message(path))
        except FileNotFoundError:
            raise SnapshotError(f"{path}: vanished while being read") from None
        arrays, meta = load_snapshot(path, key=self.key)
        return decode_state(arrays, meta, kind, partition, str(path), delta_only=delta_only)


def _legacy_message(path: Path) -> str:
    return (
        f"{path} is a learner state file of the previous release (pickle format SBLS1); "
        "this release never unpickles state. Stop every learner, move the state directory "
        "aside and start again: the learners replay the topics from their first offset "
        "(or keep the old release running until its state is no longer needed)"
    )


# --------------------------------------------------------------------------- encoding


def encode_state(
    kind: str, partition: int, state: Mapping[str, Any]
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Arrays and header of a partition state (``JoinPartition.to_state`` or
    ``EngagementPartition.to_state``)."""
    arrays: dict[str, np.ndarray] = {}
    body = {k: v for k, v in state.items() if k not in ("delta", "pending_x")}
    if kind == "join":
        delta = state["delta"]
        if not isinstance(delta, RidgeStatistics):
            raise SnapshotError(
                f"state of {kind} partition {partition}: delta must be RidgeStatistics, "
                f"got {type(delta).__name__}"
            )
        arrays.update({f"delta.{k}": np.asarray(v) for k, v in delta.to_arrays().items()})
        arrays["pending_x"] = np.asarray(state["pending_x"], dtype=np.float64)
        body["held"] = [
            (ts, off, row, base64.b64encode(raw).decode()) for ts, off, row, raw in state["held"]
        ]
    arrays["body"] = np.frombuffer(orjson.dumps(body), dtype=np.uint8)
    meta = {"kind": _KIND, "state_version": STATE_VERSION, "unit": kind, "partition": partition}
    return arrays, meta


# --------------------------------------------------------------------------- decoding

_Check = Callable[[Any], bool]


def _is_int(v: Any) -> bool:
    return type(v) is int


def _is_str(v: Any) -> bool:
    return type(v) is str


def _is_float(v: Any) -> bool:
    return type(v) is float


def _is_bool(v: Any) -> bool:
    return type(v) is bool


def _opt(check: _Check) -> _Check:
    return lambda v: v is None or check(v)


def _str_list(v: Any) -> bool:
    return type(v) is list and all(type(a) is str for a in v)


_DECISION_ROW: Final[tuple[_Check, ...]] = (
    _is_str, _is_str, _is_int, _is_str, _is_str, _is_str, _is_str, _is_str, _is_float,
    _is_str, _str_list,
)
_PENDING_ROW: Final = (
    *_DECISION_ROW, _opt(_is_bool), _opt(_is_int), _opt(_is_int), _is_int, _is_int, _is_int,
)
_CLOSED_ROW: Final = (*_DECISION_ROW, _is_float, _is_bool, _is_int, _is_bool)
_FEEDBACK_ROW: Final = (
    _is_str, _is_str, _is_int, _is_str, _is_str, _opt(_is_bool), _opt(_is_int), _opt(_is_int),
    _is_int,
)
_JOIN_KEYS: Final = frozenset({
    "kind", "partition", "offsets", "wm_decisions", "wm_feedback", "feedback_ids", "pending",
    "heap", "seq", "held", "closed", "counters",
})
_ENGAGEMENT_KEYS: Final = frozenset({"kind", "partition", "offsets", "counters"})
_COUNTERS: Final = frozenset({
    "consumed", "decisions", "feedback", "joined", "late", "closed", "defaulted",
    "dead_lettered", "duplicates", "out_of_time",
})


class _Refused(Exception):
    pass


def _row(v: Any, checks: tuple[_Check, ...], what: str) -> tuple[Any, ...]:
    if (
        type(v) is not list
        or len(v) != len(checks)
        or not all(c(x) for c, x in zip(checks, v, strict=True))
    ):
        raise _Refused(f"{what} must be a row of {len(checks)} typed fields, got {str(v)[:80]}")
    return tuple(v)


def _rows(v: Any, checks: tuple[_Check, ...], what: str) -> list[tuple[Any, ...]]:
    if type(v) is not list:
        raise _Refused(f"{what} must be a list")
    return [_row(r, checks, what) for r in v]


def decode_state(
    arrays: Mapping[str, np.ndarray],
    meta: Mapping[str, Any],
    kind: str,
    partition: int,
    source: str,
    *,
    delta_only: bool = False,
) -> dict[str, Any]:
    """The state dict for ``JoinPartition.load_state`` / ``EngagementPartition.load_state``
    from a file's arrays and header; raises :class:`SnapshotError` for anything else."""
    try:
        return _decode(arrays, meta, kind, partition, delta_only)
    except _Refused as exc:
        raise SnapshotError(f"{source}: not a valid learner state ({exc})") from None


def _decode(
    arrays: Mapping[str, np.ndarray],
    meta: Mapping[str, Any],
    kind: str,
    partition: int,
    delta_only: bool,
) -> dict[str, Any]:
    if meta.get("kind") != _KIND:
        raise _Refused(f"header kind must be {_KIND!r}, got {meta.get('kind')!r}")
    if meta.get("state_version") != STATE_VERSION:
        raise _Refused(
            f"state_version must be {STATE_VERSION}, got {meta.get('state_version')!r}"
        )
    if meta.get("unit") != kind or meta.get("partition") != partition:
        raise _Refused(
            f"must hold {kind} partition {partition}, holds {meta.get('unit')!r} "
            f"partition {meta.get('partition')!r}"
        )
    state: dict[str, Any] = {}
    if kind == "join":
        delta_arrays = {k[6:]: v for k, v in arrays.items() if k.startswith("delta.")}
        try:
            state["delta"] = RidgeStatistics.from_arrays(delta_arrays)
        except (InvalidInputError, ValueError, TypeError) as exc:
            raise _Refused(f"delta: {exc}") from None
        if delta_only:
            return state
    body_arr = arrays.get("body")
    if body_arr is None or body_arr.dtype != np.uint8 or body_arr.ndim != 1:
        raise _Refused("body must be a byte array")
    try:
        body = orjson.loads(body_arr.tobytes())
    except orjson.JSONDecodeError as exc:
        raise _Refused(f"body is not JSON ({exc.msg})") from None
    keys = _JOIN_KEYS if kind == "join" else _ENGAGEMENT_KEYS
    if type(body) is not dict or set(body) != keys:
        got = sorted(body) if type(body) is dict else type(body).__name__
        raise _Refused(f"body must have the fields {sorted(keys)}, got {got}")
    if body["kind"] != kind or body["partition"] != partition:
        raise _Refused("body names another partition")
    offsets, counters = body["offsets"], body["counters"]
    if type(offsets) is not dict or not all(_is_str(k) and _is_int(v) and v >= 0
                                            for k, v in offsets.items()):
        raise _Refused("offsets must map topics to offsets >= 0")
    if type(counters) is not dict or not set(counters) <= _COUNTERS or not all(
        _is_int(v) for v in counters.values()
    ):
        raise _Refused(f"counters must map names in {sorted(_COUNTERS)} to integers")
    state.update(kind=kind, partition=partition, offsets=offsets, counters=counters)
    if kind != "join":
        return state
    for name in ("wm_decisions", "wm_feedback"):
        wm = body[name]
        if type(wm) is not list or len(wm) != WATERMARK_WINDOW or not all(map(_is_int, wm)):
            raise _Refused(f"{name} must be a list of {WATERMARK_WINDOW} integers")
        state[name] = wm
    if not _is_int(body["seq"]):
        raise _Refused("seq must be an integer")
    state["seq"] = body["seq"]
    state["feedback_ids"] = _rows(body["feedback_ids"], (_is_int, _is_str), "feedback_ids")
    state["heap"] = _rows(body["heap"], (_is_int, _is_int, _is_str), "heap")
    state["pending"] = _rows(body["pending"], _PENDING_ROW, "pending")
    state["closed"] = _rows(body["closed"], _CLOSED_ROW, "closed")
    held = []
    for item in _rows(body["held"], (_is_int, _is_int, lambda v: type(v) is list, _is_str),
                      "held"):
        try:
            raw = base64.b64decode(item[3], validate=True)
        except binascii.Error:
            raise _Refused("held feedback bytes must be base64") from None
        held.append((item[0], item[1], _row(item[2], _FEEDBACK_ROW, "held feedback"), raw))
    state["held"] = held
    x = arrays.get("pending_x")
    if x is None or x.dtype != np.float64 or x.ndim != 2 or len(x) != len(state["pending"]):
        raise _Refused("pending_x must be a float64 (pending, dim) array")
    state["pending_x"] = x
    return state
