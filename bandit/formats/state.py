"""Per-partition learner state files: data, not code.

Each file holds one partition's statistics delta, pending joins, held feedback (with its
original bytes), recently closed decisions, watermarks, applied event ids, counters and
next offsets — written together, atomically (:func:`bandit.formats.snapshot.write_atomic`: a
0600 temporary file, fsync, rename), so a crash leaves either the old or the new state.
The directory is shared by every consumer of the group: a partition's state moves with
the partition.

In memory a partition's state is typed data: :class:`JoinState` (a co-partitioned
decisions/feedback pair) or :class:`EngagementState` (engagement and exposures: offsets
and counters), frozen dataclasses carrying their ``version``; the learner's partitions
produce and restore them (``consumers.join``), this module writes and reads them.

Format: the model snapshot's (:mod:`bandit.formats.snapshot`: magic, version, SHA-256, JSON
header, npz arrays — no pickle anywhere), optionally authenticated with HMAC-SHA256
under the key in ``learner.state_hmac_key_file``. The header says
``{"kind": "learner-state", "state_version": 3, "stream": ..., "partition": ...,
"delta": ...}`` (``stream``: ``join`` or ``engagement``, the partition's kind; version 2
files called it ``unit``); the arrays are the delta's (``delta.S``, ``delta.b``, ...), the pending
contexts (``pending_x``) and ``body``, the rest as UTF-8 JSON.

A join partition's delta is a tagged union (:data:`StateDelta`), named by the header's
``delta``: ``ridge`` — the linear policies' :class:`~bandit.linear.RidgeStatistics`
(arrays ``delta.arm_ids``, ``delta.S``, ``delta.b``, ``delta.n``, ``delta.events``) — or
``vw`` — a Vowpal Wabbit model delta (:class:`VWDeltaState`: ``delta.vw_delta``, the bytes
``vowpal_wabbit_next`` serialises, and ``delta.events``). Version 2 files (before the tag)
hold ridge deltas in the same arrays and are read as such. :func:`decode_state` checks every
field's type and shape and refuses anything else with :class:`SnapshotError`, so a file
someone else wrote can at worst be refused, never run. Files of the previous release
(``SBLS1``, pickled) are refused with what to do, never unpickled.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Any, ClassVar, Final

import numpy as np
import orjson

from bandit.errors import EventDecodeError, InvalidInputError, SnapshotError
from bandit.events import SCHEMA_VERSION, DecisionEvent, FeedbackEvent, decode_objects, field_names
from bandit.formats.snapshot import load_snapshot, save_snapshot
from bandit.linear import RidgeStatistics

__all__ = [
    "STATE_VERSION",
    "WATERMARK_WINDOW",
    "ClosedRow",
    "EngagementState",
    "HeldRow",
    "JoinState",
    "PartitionState",
    "PendingRow",
    "StateDelta",
    "StateDir",
    "VWDeltaState",
    "decode_state",
    "encode_state",
    "read_key",
    "state_delta",
]

log = logging.getLogger(__name__)

STATE_VERSION: Final = 3
#: older state versions still read (2: ridge deltas only, no ``delta`` tag in the header)
_READABLE_VERSIONS: Final = frozenset({2, STATE_VERSION})
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


#: a pending decision: the event, its merged proxies (retried, rating, conversation length),
#: how many feedback events joined it, the time of the rating kept, late feedback seen
PendingRow = tuple[DecisionEvent, bool | None, int | None, int | None, int, int, int]
#: feedback waiting for its decision: (ts_ms, offset, event, original bytes)
HeldRow = tuple[int, int, FeedbackEvent, bytes]
#: a recently closed decision: the event (its context is not written: read back as ``()``),
#: the credited reward, whether feedback joined, how many, whether late feedback came, the
#: reward version that scored it and its merged proxies (retried, rating, length) — rows
#: written before the last four existed read ("config", None, None, None)
ClosedRow = tuple[DecisionEvent, float, bool, int, bool, str, bool | None, int | None, int | None]


@dataclass(frozen=True, slots=True)
class VWDeltaState:
    """A Vowpal Wabbit partition delta as a state file holds it: the bytes of a
    ``vowpal_wabbit_next.ModelDelta`` and how many events were learnt into it.

    The bytes are opaque here (this module does not import Vowpal Wabbit); the policy
    parses them (``PartitionedVWPolicy.statistics_from_arrays``) and refuses a delta that
    is not one of its own models'.
    """

    KIND: ClassVar[str] = "vw"

    vw_delta: bytes
    events: int

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The arrays ``VWDelta.to_arrays`` writes (``vw_delta``, ``events``)."""
        return {
            "vw_delta": np.frombuffer(self.vw_delta, dtype=np.uint8).copy(),
            "events": np.array(self.events, dtype=np.int64),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, Any]) -> VWDeltaState:
        """Check and wrap ``vw_delta`` (a non-empty uint8 vector) and ``events`` (an
        integer >= 0); raises :class:`InvalidInputError` naming the array."""
        if set(arrays) != {"vw_delta", "events"}:
            raise InvalidInputError("delta arrays", sorted(arrays),
                                    "must be exactly ['events', 'vw_delta']")
        data, events = np.asarray(arrays["vw_delta"]), np.asarray(arrays["events"])
        if data.dtype != np.uint8 or data.ndim != 1 or data.size == 0:
            raise InvalidInputError("vw_delta", f"{data.dtype}{list(data.shape)}",
                                    "must be a non-empty uint8 vector")
        if events.ndim != 0 or events.dtype.kind not in "iu" or int(events) < 0:
            raise InvalidInputError("events", events.tolist(), "must be an integer >= 0")
        return cls(data.tobytes(), int(events))


#: a join partition's statistics as a state file holds them (the header's ``delta`` tag)
StateDelta = RidgeStatistics | VWDeltaState
_DELTA_KINDS: Final[dict[str, type[RidgeStatistics] | type[VWDeltaState]]] = {
    "ridge": RidgeStatistics, VWDeltaState.KIND: VWDeltaState,
}


def state_delta(stats: Any) -> StateDelta:
    """The saveable form of a policy's partition statistics: :class:`RidgeStatistics` as
    they are, other statistics (a Vowpal Wabbit ``VWDelta``) by their ``to_arrays``,
    which must be a :class:`VWDeltaState`'s. Raises :class:`SnapshotError` otherwise."""
    if isinstance(stats, RidgeStatistics | VWDeltaState):
        return stats
    to_arrays = getattr(stats, "to_arrays", None)
    if to_arrays is None:
        raise SnapshotError(f"a partition delta must be statistics, got {type(stats).__name__}")
    try:
        return VWDeltaState.from_arrays(to_arrays())
    except InvalidInputError as exc:
        raise SnapshotError(
            f"a partition delta of type {type(stats).__name__} cannot be saved: it is neither "
            f"ridge statistics nor a Vowpal Wabbit delta ({exc})"
        ) from None


@dataclass(frozen=True, slots=True)
class JoinState:
    """Everything a co-partitioned (decisions, feedback) partition resumes from.

    ``delta`` is its additive statistics as saved (:data:`StateDelta`); ``offsets`` the
    next offset of each topic; ``wm_decisions`` / ``wm_feedback`` each topic's watermark
    followed by its window of ``WATERMARK_WINDOW - 1`` recent event times;
    ``feedback_ids`` the remembered feedback event ids in arrival order with their times;
    ``heap`` the window-closing order
    ``(ts_ms, seq, decision_id)`` and ``seq`` the next sequence number.
    """

    KIND: ClassVar[str] = "join"

    partition: int
    delta: StateDelta
    offsets: dict[str, int]
    wm_decisions: tuple[int, ...]
    wm_feedback: tuple[int, ...]
    feedback_ids: tuple[tuple[int, str], ...]
    pending: tuple[PendingRow, ...]
    heap: tuple[tuple[int, int, str], ...]
    seq: int
    held: tuple[HeldRow, ...]
    closed: tuple[ClosedRow, ...]
    counters: dict[str, int] = field(default_factory=dict)
    version: int = STATE_VERSION


@dataclass(frozen=True, slots=True)
class EngagementState:
    """An engagement partition's state (with the same partition of exposures): offsets
    and counters; its events go to the store and are never learnt."""

    KIND: ClassVar[str] = "engagement"

    partition: int
    offsets: dict[str, int]
    counters: dict[str, int] = field(default_factory=dict)
    version: int = STATE_VERSION


PartitionState = JoinState | EngagementState
_STATES: Final[dict[str, type[JoinState] | type[EngagementState]]] = {
    JoinState.KIND: JoinState, EngagementState.KIND: EngagementState,
}


class StateDir:
    """Per-partition state files ``<kind>-<partition>.state`` under ``root``."""

    def __init__(self, root: str | os.PathLike[str], *, key: bytes | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.key = key

    def path(self, kind: str, partition: int) -> Path:
        return self.root / f"{kind}-{partition:05d}.state"

    def save(self, state: PartitionState) -> None:
        """Write ``state`` atomically (:func:`bandit.formats.snapshot.write_atomic`)."""
        arrays, meta = encode_state(state)
        save_snapshot(self.path(state.KIND, state.partition), arrays, meta, key=self.key)

    def load(self, kind: str, partition: int) -> PartitionState | None:
        """The saved state, or None for a partition never snapshotted."""
        p = self.path(kind, partition)
        if not p.exists():
            return None
        state: PartitionState = self._read(p, kind, partition)
        return state

    def load_deltas(self, kind: str = "join") -> dict[int, StateDelta]:
        """Only the statistics delta of every partition (the rest is not parsed)."""
        return {
            part: self._read(p, kind, part, delta_only=True)
            for part, p in self._files(kind).items()
        }

    def load_all(self, kind: str) -> dict[int, PartitionState]:
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
    ) -> Any:
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


#: a decision's fields in a state row, in field order: all but the context (stored as one
#: array beside the rows, or not at all for closed decisions) and the schema version (the
#: state file has its own)
_DECISION_FIELDS: Final = tuple(
    n for n in field_names(DecisionEvent) if n not in ("context", "schema_version")
)
_N_DECISION: Final = len(_DECISION_FIELDS)
_decision_row: Final = attrgetter(*_DECISION_FIELDS)
#: a feedback event's fields in a state row: all of them, in field order
_FEEDBACK_FIELDS: Final = field_names(FeedbackEvent)
_feedback_row: Final = attrgetter(*_FEEDBACK_FIELDS)


def encode_state(state: PartitionState) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Arrays and header of a partition state file."""
    kind, partition = state.KIND, state.partition
    arrays: dict[str, np.ndarray] = {}
    body: dict[str, Any] = {
        "kind": kind, "partition": partition, "offsets": dict(state.offsets),
        "counters": dict(state.counters),
    }
    meta = {"kind": _KIND, "state_version": state.version, "stream": kind, "partition": partition}
    if isinstance(state, JoinState):
        delta = state.delta
        tag = next((t for t, cls in _DELTA_KINDS.items() if isinstance(delta, cls)), None)
        if tag is None:
            raise SnapshotError(
                f"state of {kind} partition {partition}: delta must be RidgeStatistics or "
                f"VWDeltaState, got {type(delta).__name__}"
            )
        meta["delta"] = tag
        arrays.update({f"delta.{k}": np.asarray(v) for k, v in delta.to_arrays().items()})
        arrays["pending_x"] = (
            np.array([row[0].context for row in state.pending], dtype=np.float64)
            if state.pending
            else np.zeros((0, 0), dtype=np.float64)
        )
        body.update(
            wm_decisions=list(state.wm_decisions),
            wm_feedback=list(state.wm_feedback),
            feedback_ids=[list(f) for f in state.feedback_ids],
            pending=[(*_decision_row(ev), *rest) for ev, *rest in state.pending],
            heap=[list(h) for h in state.heap],
            seq=state.seq,
            held=[
                (ts, off, _feedback_row(fb), base64.b64encode(raw).decode())
                for ts, off, fb, raw in state.held
            ],
            closed=[(*_decision_row(ev), *rest) for ev, *rest in state.closed],
        )
    arrays["body"] = np.frombuffer(orjson.dumps(body), dtype=np.uint8)
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


#: what follows the decision's fields in a pending row, and in a closed row
_PENDING_REST: Final = (_opt(_is_bool), _opt(_is_int), _opt(_is_int), _is_int, _is_int, _is_int)
_CLOSED_REST: Final = (_is_float, _is_bool, _is_int, _is_bool)
_CLOSED_SCORED: Final = (*_CLOSED_REST, _is_str, _opt(_is_bool), _opt(_is_int), _opt(_is_int))
_CLOSED_UNSCORED: Final = ("config", None, None, None)


def _events(cls: Any, rows: list[Any], what: str, **given: Any) -> list[Any]:
    """Events from state rows (field values in ``field_names`` order, ``given`` for the
    fields a row does not hold), every field checked by the event's own rules."""
    names = _DECISION_FIELDS if cls is DecisionEvent else _FEEDBACK_FIELDS
    objs = []
    for i, row in enumerate(rows):
        obj = dict(zip(names, row, strict=True))
        obj.setdefault("schema_version", SCHEMA_VERSION)
        for name, values in given.items():
            obj[name] = values[i]
        objs.append(obj)
    try:
        return decode_objects(cls, objs)
    except EventDecodeError as exc:
        raise _Refused(f"{what}: {exc}") from None


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
) -> PartitionState | StateDelta:
    """The state in a file's arrays and header (only its delta with ``delta_only``);
    raises :class:`SnapshotError` for anything else."""
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
) -> PartitionState | StateDelta:
    if meta.get("kind") != _KIND:
        raise _Refused(f"header kind must be {_KIND!r}, got {meta.get('kind')!r}")
    version = meta.get("state_version")
    if type(version) is not int or version not in _READABLE_VERSIONS:
        raise _Refused(
            f"state_version must be one of {sorted(_READABLE_VERSIONS)}, got {version!r}"
        )
    if kind not in _STATES:
        raise _Refused(f"kind must be one of {sorted(_STATES)}, got {kind!r}")
    # the header names the partition's kind "stream" (version 2 files: "unit")
    stream = meta.get("unit" if version == 2 else "stream")
    if stream != kind or meta.get("partition") != partition:
        raise _Refused(
            f"must hold {kind} partition {partition}, holds {stream!r} "
            f"partition {meta.get('partition')!r}"
        )
    delta: StateDelta | None = None
    if kind == JoinState.KIND:
        # version 2 predates the tag: its deltas are ridge statistics
        tag = meta.get("delta", "ridge" if version == 2 else None)
        cls = _DELTA_KINDS.get(tag) if type(tag) is str else None
        if cls is None or (version == 2 and "delta" in meta):
            raise _Refused(f"header delta must be one of {sorted(_DELTA_KINDS)}, got {tag!r}")
        delta_arrays = {k[6:]: v for k, v in arrays.items() if k.startswith("delta.")}
        try:
            delta = cls.from_arrays(delta_arrays)
        except (InvalidInputError, ValueError, TypeError) as exc:
            raise _Refused(f"{tag} delta: {exc}") from None
        if delta_only:
            return delta
    body_arr = arrays.get("body")
    if body_arr is None or body_arr.dtype != np.uint8 or body_arr.ndim != 1:
        raise _Refused("body must be a byte array")
    try:
        body = orjson.loads(body_arr.tobytes())
    except orjson.JSONDecodeError as exc:
        raise _Refused(f"body is not JSON ({exc.msg})") from None
    keys = _JOIN_KEYS if kind == JoinState.KIND else _ENGAGEMENT_KEYS
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
    if delta is None:
        return EngagementState(partition, offsets, counters)
    wms = []
    for name in ("wm_decisions", "wm_feedback"):
        wm = body[name]
        if type(wm) is not list or len(wm) != WATERMARK_WINDOW or not all(map(_is_int, wm)):
            raise _Refused(f"{name} must be a list of {WATERMARK_WINDOW} integers")
        wms.append(tuple(wm))
    if not _is_int(body["seq"]):
        raise _Refused("seq must be an integer")
    n = _N_DECISION
    pending = _rows(body["pending"], (lambda v: True,) * n + _PENDING_REST, "pending")
    x = arrays.get("pending_x")
    if x is None or x.dtype != np.float64 or x.ndim != 2 or len(x) != len(pending):
        raise _Refused("pending_x must be a float64 (pending, dim) array")
    events = _events(DecisionEvent, [r[:n] for r in pending], "pending",
                     context=x.tolist())
    if type(body["closed"]) is not list:
        raise _Refused("closed must be a list")
    closed = [
        _row(r, (lambda v: True,) * n + (
            _CLOSED_REST if type(r) is list and len(r) == n + len(_CLOSED_REST)
            else _CLOSED_SCORED), "closed")
        for r in body["closed"]
    ]
    # a closed decision's context is not kept: checked as a placeholder, restored empty
    gone = _events(DecisionEvent, [r[:n] for r in closed], "closed",
                   context=[[0.0]] * len(closed))
    held = []
    rows = _rows(body["held"], (_is_int, _is_int, lambda v: type(v) is list, _is_str), "held")
    feedback = _events(FeedbackEvent, [r[2] for r in rows], "held feedback")
    for item, fb in zip(rows, feedback, strict=True):
        try:
            raw = base64.b64decode(item[3], validate=True)
        except binascii.Error:
            raise _Refused("held feedback bytes must be base64") from None
        held.append((item[0], item[1], fb, raw))
    return JoinState(
        partition=partition,
        delta=delta,
        offsets=offsets,
        wm_decisions=wms[0],
        wm_feedback=wms[1],
        feedback_ids=tuple(_rows(body["feedback_ids"], (_is_int, _is_str), "feedback_ids")),
        pending=tuple((ev, *r[n:]) for ev, r in zip(events, pending, strict=True)),
        heap=tuple(_rows(body["heap"], (_is_int, _is_int, _is_str), "heap")),
        seq=body["seq"],
        held=tuple(held),
        closed=tuple(
            (_no_context(ev), *r[n:], *(_CLOSED_UNSCORED if len(r) == n + len(_CLOSED_REST)
                                       else ()))
            for ev, r in zip(gone, closed, strict=True)
        ),
        counters=counters,
    )


def _no_context(ev: DecisionEvent) -> DecisionEvent:
    return dataclasses.replace(ev, context=())
