"""Versioned event schema shared by the allocation server, the learner and the store.

Every event is a frozen dataclass carried as one JSON object (UTF-8) on its
Kafka topic. Every event has:

* ``schema_version`` — integer, currently ``1``; an unknown version is refused;
* ``event_id`` — string, unique per event, used for idempotent inserts and dedup;
* ``ts_ms`` — integer milliseconds since the Unix epoch, UTC.

Decisions and feedback are keyed by ``conversation_id`` so they are co-partitioned;
engagement is keyed by ``unit_id``; an experiment's design by ``experiment_id``. See
``docs/events.md`` for the full tables.

Each event's fields are spelled once, in its dataclass: every field carries the rule that
reads it from JSON (``metadata["rule"]``), and the encoder (orjson serialises the
dataclass in field order), the decoder and every derived column list
(:func:`field_names`) come from :func:`dataclasses.fields`. There is one decoder,
:func:`decode_batch`: it decodes a whole fetched batch column by column and returns, for
every input, either the event or the :class:`EventDecodeError` naming the field and the
bad value (the original bytes travel with the error, so the consumer can dead-letter
them). :func:`decode_event` and the one-kind helpers (:func:`decode_decision`, ...) are
that decoder applied to one message, raising the error.

>>> ev = FeedbackEvent(event_id="f-1", decision_id="d-1", ts_ms=5, unit_id="u",
...                    conversation_id="c", rating=4)
>>> decode_batch(FeedbackEvent, [encode_event(ev), b"{}"])[0] == ev
True
>>> str(decode_batch(FeedbackEvent, [encode_event(ev), b"{}"])[1])
'schema_version must be 1, got None'
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from itertools import chain, repeat
from typing import Any, ClassVar, Final, TypeVar

import orjson

from bandit.errors import EventDecodeError, InvalidInputError

__all__ = [
    "MAX_CONTEXT_ABS",
    "MAX_EVENT_BYTES",
    "MAX_TS_MS",
    "SCHEMA_VERSION",
    "DecisionEvent",
    "DesignEvent",
    "EngagementEvent",
    "Event",
    "ExposureEvent",
    "FeedbackEvent",
    "decode_batch",
    "decode_decision",
    "decode_design",
    "decode_engagement",
    "decode_event",
    "decode_exposure",
    "decode_feedback",
    "decode_objects",
    "design_version",
    "encode_event",
    "field_names",
]

SCHEMA_VERSION: Final = 1
#: Events larger than this are refused before parsing (64 KiB is ~ 8000 floats of context).
MAX_EVENT_BYTES: Final = 64 * 1024
_MAX_ID_LEN: Final = 256
#: Latest accepted event time: the last millisecond a ClickHouse ``DateTime`` (the store's
#: partitioning and every day-N query) can represent, 2106-02-07 06:28:15.999 UTC; far
#: inside the ``Int64`` column that holds it.
MAX_TS_MS: Final = (2**32 - 1) * 1000 + 999
#: Largest context magnitude, here and in every policy (``bandit.linear.as_context``).
#: Contexts are features (scale them): one event of magnitude B adds B² to the ridge
#: system, so beyond this its condition number (≈ d·B²/λ) leaves float64 Cholesky
#: nothing to work with, and the float32 scoring product (x_i·x_j) would overflow long
#: before float32's own limit, where the store's ``Float32`` column ends.
MAX_CONTEXT_ABS: Final = 1e6
#: Events decoded per chunk: the decoded JSON objects of one chunk are freed before the
#: next is parsed, so the cyclic GC never has to walk a whole fetched batch of them.
_CHUNK: Final = 512


# --------------------------------------------------------------------------- field rules
#
# A rule reads one field. ``column`` takes the field's values for a whole chunk and, in a
# few C-level passes (``set(map(type, ...))``, ``min``/``max``), returns them as field
# values when every one is in the common, unambiguous form (a strict subset of what
# ``read`` accepts), else None; ``read`` checks and converts one value, raising
# :class:`EventDecodeError` (naming the field and the value) for a bad one. The decoder
# uses ``read`` only for the values of a column that ``column`` did not accept, so a chunk
# of valid events costs the column passes alone. ``tests/test_learner_decode.py`` checks
# that ``column`` never accepts what ``read`` would refuse or convert differently.

_ABSENT: Final = object()


class _Rule:
    #: the field value when the key is absent (None: read the absent value as null)
    absent: Any = None

    def column(self, values: list[Any]) -> list[Any] | None:
        raise NotImplementedError

    def read(self, value: Any, name: str, raw: bytes) -> Any:
        raise NotImplementedError


def _types(values: Iterable[Any]) -> set[type]:
    return set(map(type, values))


def _bad(name: str, value: Any, reason: str, raw: bytes) -> EventDecodeError:
    return EventDecodeError(name, None if value is _ABSENT else value, reason, raw=raw)


class _Text(_Rule):
    """A non-empty string of at most 256 characters (ids, names)."""

    def column(self, values: list[Any]) -> list[Any] | None:
        if _types(values) == {str} and min(map(len, values)) >= 1 and max(
            map(len, values)
        ) <= _MAX_ID_LEN:
            return values
        return None

    def read(self, value: Any, name: str, raw: bytes) -> Any:
        if not isinstance(value, str) or not value or len(value) > _MAX_ID_LEN:
            raise _bad(name, value, f"must be a non-empty string of at most {_MAX_ID_LEN} chars",
                       raw)
        return value


class _Integer(_Rule):
    """An integer in ``[lo, hi]`` (``optional``: or null / absent)."""

    def __init__(self, lo: int, hi: int, *, optional: bool = False) -> None:
        self.lo, self.hi, self.optional = lo, hi, optional

    def column(self, values: list[Any]) -> list[Any] | None:
        present = [v for v in values if v is not None] if self.optional else values
        if not present:
            return values
        if _types(present) == {int} and min(present) >= self.lo and max(present) <= self.hi:
            return values
        return None

    def read(self, value: Any, name: str, raw: bytes) -> Any:
        if value is None and self.optional:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or not (
            self.lo <= value <= self.hi
        ):
            raise _bad(name, value, f"must be an integer in [{self.lo}, {self.hi}]", raw)
        return value


class _Number(_Rule):
    """A finite number in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``), kept as a float."""

    def __init__(self, lo: float, hi: float, *, lo_open: bool = False) -> None:
        self.lo, self.hi, self.lo_open = lo, hi, lo_open

    def column(self, values: list[Any]) -> list[Any] | None:
        # orjson yields Python floats for JSON reals and refuses NaN/Infinity
        if _types(values) != {float} or max(values) > self.hi:
            return None
        low = min(values)
        return values if low > self.lo or (low == self.lo and not self.lo_open) else None

    def read(self, value: Any, name: str, raw: bytes) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _bad(name, value, "must be a number", raw)
        value = float(value)
        if not math.isfinite(value) or value > self.hi or value < self.lo or (
            self.lo_open and value == self.lo
        ):
            lo_b = "(" if self.lo_open else "["
            raise _bad(name, value, f"must be finite and in {lo_b}{self.lo}, {self.hi}]", raw)
        return value


class _Flag(_Rule):
    """true, false or null / absent."""

    def column(self, values: list[Any]) -> list[Any] | None:
        return values if _types(values) <= {bool, type(None)} else None

    def read(self, value: Any, name: str, raw: bytes) -> Any:
        if value is not None and not isinstance(value, bool):
            raise _bad(name, value, "must be true, false or null", raw)
        return value


class _Vector(_Rule):
    """A non-empty array of finite numbers within Float32 range, kept as a float tuple."""

    def column(self, values: list[Any]) -> list[Any] | None:
        if _types(values) != {list} or min(map(len, values)) < 1:
            return None
        items = list(chain.from_iterable(values))
        if _types(items) != {float} or max(map(abs, items)) > MAX_CONTEXT_ABS:
            return None
        return list(map(tuple, values))

    def read(self, value: Any, name: str, raw: bytes) -> Any:
        if not isinstance(value, list) or not value:
            raise _bad(name, value, "must be a non-empty array of numbers", raw)
        for i, v in enumerate(value):
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise _bad(f"{name}[{i}]", v, "must be a finite number", raw)
            if abs(v) > MAX_CONTEXT_ABS:
                raise _bad(f"{name}[{i}]", v,
                           f"must be within ±{MAX_CONTEXT_ABS:g} (scale the features)", raw)
        return tuple(map(float, value))


class _Names(_Rule):
    """An array of non-empty strings (arm ids); absent means none."""

    absent = ()

    def column(self, values: list[Any]) -> list[Any] | None:
        if _types(values) == {list}:
            names = list(chain.from_iterable(values))
            if not names or (_types(names) == {str} and min(map(len, names)) >= 1):
                return list(map(tuple, values))
        return None

    def read(self, value: Any, name: str, raw: bytes) -> Any:
        if value is _ABSENT:
            return ()
        if not isinstance(value, list) or not all(isinstance(a, str) and a for a in value):
            raise _bad(name, value, "must be an array of arm ids", raw)
        return tuple(value)


class _Version(_Rule):
    """``schema_version``: the integer this module reads (1.0 reads as 1; true does not)."""

    def column(self, values: list[Any]) -> list[Any] | None:
        return values if _types(values) == {int} and set(values) == {SCHEMA_VERSION} else None

    def read(self, value: Any, name: str, raw: bytes) -> Any:
        if value != SCHEMA_VERSION or isinstance(value, bool):
            raise _bad(name, value, f"must be {SCHEMA_VERSION}", raw)
        return SCHEMA_VERSION


class _Weights(_Rule):
    """Variant weights: a non-empty array of ``[variant, weight]`` pairs, variant names
    unique non-empty strings, weights finite numbers >= 0 with a positive sum; kept as a
    tuple of ``(str, float)`` pairs in the order given."""

    def column(self, values: list[Any]) -> list[Any] | None:
        return None  # design events are rare: every value goes through read

    def read(self, value: Any, name: str, raw: bytes) -> Any:
        if not isinstance(value, list) or not value:
            raise _bad(name, value, "must be a non-empty array of [variant, weight] pairs", raw)
        pairs: list[tuple[str, float]] = []
        for i, pair in enumerate(value):
            if not isinstance(pair, list) or len(pair) != 2:
                raise _bad(f"{name}[{i}]", pair, "must be a [variant, weight] pair", raw)
            variant, weight = pair
            if not isinstance(variant, str) or not variant or len(variant) > _MAX_ID_LEN:
                raise _bad(f"{name}[{i}][0]", variant,
                           f"must be a non-empty string of at most {_MAX_ID_LEN} chars", raw)
            if isinstance(weight, bool) or not isinstance(weight, int | float) or not (
                math.isfinite(weight) and weight >= 0
            ):
                raise _bad(f"{name}[{i}][1]", weight, "must be a finite number >= 0", raw)
            pairs.append((variant, float(weight)))
        names = [v for v, _ in pairs]
        if len(set(names)) != len(names):
            raise _bad(name, names, "must name each variant once", raw)
        if sum(w for _, w in pairs) <= 0:
            raise _bad(name, value, "must sum to > 0", raw)
        return tuple(pairs)


def _rule(rule: _Rule) -> dict[str, _Rule]:
    return {"rule": rule}


_ID: Final = _rule(_Text())
_TS: Final = _rule(_Integer(0, MAX_TS_MS))
_VERSION: Final = _rule(_Version())


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class DecisionEvent:
    """One allocation: which arm answered which conversation, with what probability.

    ``context`` is the policy-space context vector x_C (after projection); the learner
    checks its length against the model dimension. ``propensity`` is the probability the
    policy gave ``arm_id`` and is in (0, 1].
    """

    KIND: ClassVar[str] = "decision"

    event_id: str = field(metadata=_ID)
    decision_id: str = field(metadata=_ID)
    ts_ms: int = field(metadata=_TS)
    unit_id: str = field(metadata=_ID)
    conversation_id: str = field(metadata=_ID)
    experiment_id: str = field(metadata=_ID)
    variant: str = field(metadata=_ID)
    arm_id: str = field(metadata=_ID)
    propensity: float = field(metadata=_rule(_Number(0.0, 1.0, lo_open=True)))
    policy_version: str = field(metadata=_ID)
    context: tuple[float, ...] = field(metadata=_rule(_Vector()))
    eligible: tuple[str, ...] = field(default=(), metadata=_rule(_Names()))
    schema_version: int = field(default=SCHEMA_VERSION, metadata=_VERSION)

    @property
    def key(self) -> bytes:
        return self.conversation_id.encode()


@dataclass(frozen=True, slots=True)
class FeedbackEvent:
    """Message-level proxies for one decision from the chat app.

    Each proxy is optional (``None`` = not observed): ``retried`` — the user asked for
    another answer; ``rating`` — star rating 1..5; ``conversation_length`` — number of
    messages in the conversation after the decided message.
    """

    KIND: ClassVar[str] = "feedback"

    event_id: str = field(metadata=_ID)
    decision_id: str = field(metadata=_ID)
    ts_ms: int = field(metadata=_TS)
    unit_id: str = field(metadata=_ID)
    conversation_id: str = field(metadata=_ID)
    retried: bool | None = field(default=None, metadata=_rule(_Flag()))
    rating: int | None = field(default=None, metadata=_rule(_Integer(1, 5, optional=True)))
    conversation_length: int | None = field(
        default=None, metadata=_rule(_Integer(0, 1_000_000, optional=True))
    )
    schema_version: int = field(default=SCHEMA_VERSION, metadata=_VERSION)

    @property
    def key(self) -> bytes:
        return self.conversation_id.encode()


@dataclass(frozen=True, slots=True)
class EngagementEvent:
    """Per-user activity in one session: screen time in seconds and messages sent."""

    KIND: ClassVar[str] = "engagement"

    event_id: str = field(metadata=_ID)
    ts_ms: int = field(metadata=_TS)
    unit_id: str = field(metadata=_ID)
    screen_time_s: float = field(metadata=_rule(_Number(0.0, 86_400.0)))
    messages: int = field(metadata=_rule(_Integer(0, 100_000)))
    schema_version: int = field(default=SCHEMA_VERSION, metadata=_VERSION)

    @property
    def key(self) -> bytes:
        return self.unit_id.encode()


@dataclass(frozen=True, slots=True)
class ExposureEvent:
    """A unit exposed to the experiment with no decision logged: the serving tier fell
    back (allocation server down, timing out or failing) and answered with ``arm_id``.

    ``variant`` is the variant the unit's sticky assignment gives it, so its cohort stays
    complete (intent to treat); ``reason`` says why the client fell back. An exposure is
    stored for cohorts and never learnt from (there is no propensity or context).
    """

    KIND: ClassVar[str] = "exposure"

    event_id: str = field(metadata=_ID)
    ts_ms: int = field(metadata=_TS)
    unit_id: str = field(metadata=_ID)
    conversation_id: str = field(metadata=_ID)
    experiment_id: str = field(metadata=_ID)
    variant: str = field(metadata=_ID)
    arm_id: str = field(metadata=_ID)
    reason: str = field(metadata=_ID)
    schema_version: int = field(default=SCHEMA_VERSION, metadata=_VERSION)

    @property
    def key(self) -> bytes:
        return self.unit_id.encode()


def design_version(experiment_id: str, weights: Iterable[tuple[str, float]]) -> str:
    """The version of a design: 16 hex digits of the SHA-256 of the experiment id and its
    weights normalised to sum to 1 (rounded to 12 digits), by variant name. Two servers
    configured with the same shares (``0.9/0.1`` or ``9/1``) give the same version.

    >>> nine_to_one = design_version("e", [("a", 9.0), ("b", 1.0)])
    >>> nine_to_one == design_version("e", [("b", 0.1), ("a", 0.9)])
    True
    """
    pairs = sorted((str(v), float(w)) for v, w in weights)
    total = sum(w for _, w in pairs)
    if not pairs or not math.isfinite(total) or total <= 0:
        raise InvalidInputError("weights", dict(pairs), "must be non-empty with a positive sum")
    canonical = orjson.dumps([experiment_id, [[v, round(w / total, 12)] for v, w in pairs]])
    return hashlib.sha256(canonical).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class DesignEvent:
    """An experiment's design as an allocation server assigns units with it: the variants
    and their weights, and since when.

    A server publishes one (on ``kafka.designs_topic``, keyed by ``experiment_id``) before
    its first decision under the design, with ``ts_ms`` that decision's time (the
    decisions' clock, not the server's wall clock: a replay or the demo's calendar may be
    far from it). ``weights`` are ``(variant, weight)`` pairs, every configured variant
    (a weight of 0 included); ``design_version`` is :func:`design_version` of them, which
    the decoder checks. The learner records a new period of the experiment's design only
    when the weights change (:func:`bandit.analysis.lift.record_design_change`).
    """

    KIND: ClassVar[str] = "design"

    event_id: str = field(metadata=_ID)
    ts_ms: int = field(metadata=_TS)
    experiment_id: str = field(metadata=_ID)
    design_version: str = field(metadata=_ID)
    weights: tuple[tuple[str, float], ...] = field(metadata=_rule(_Weights()))
    schema_version: int = field(default=SCHEMA_VERSION, metadata=_VERSION)

    @classmethod
    def of(cls, *, event_id: str, ts_ms: int, experiment_id: str,
           weights: Mapping[str, float]) -> DesignEvent:
        """The design event of ``weights`` (its version computed)."""
        pairs = tuple((str(v), float(w)) for v, w in weights.items())
        return cls(event_id=event_id, ts_ms=ts_ms, experiment_id=experiment_id,
                   design_version=design_version(experiment_id, pairs), weights=pairs)

    @property
    def key(self) -> bytes:
        return self.experiment_id.encode()


def _check_design(event: DesignEvent, raw: bytes) -> EventDecodeError | None:
    want = design_version(event.experiment_id, event.weights)
    if event.design_version != want:
        return EventDecodeError("design_version", event.design_version,
                                f"does not match the weights (their version is {want})", raw=raw)
    return None


Event = DecisionEvent | FeedbackEvent | EngagementEvent | ExposureEvent | DesignEvent
_E = TypeVar("_E", DecisionEvent, FeedbackEvent, EngagementEvent, ExposureEvent, DesignEvent)
_KINDS: Final[dict[str, type[Event]]] = {
    cls.KIND: cls
    for cls in (DecisionEvent, FeedbackEvent, EngagementEvent, ExposureEvent, DesignEvent)
}
#: checks across fields, applied to each event once its fields are read
_CROSS_CHECKS: Final[dict[type, Callable[[Any, bytes], EventDecodeError | None]]] = {
    DesignEvent: _check_design,
}


def field_names(cls: type[Event]) -> tuple[str, ...]:
    """The event's fields in wire and constructor order.

    >>> field_names(EngagementEvent)
    ('event_id', 'ts_ms', 'unit_id', 'screen_time_s', 'messages', 'schema_version')
    """
    return _specs(cls)[0]


def encode_event(event: Event) -> bytes:
    """Serialise an event to its JSON wire form: every field, in field order (orjson
    serialises the dataclass directly)."""
    return orjson.dumps(event)


# --------------------------------------------------------------------------- decoding

_SPECS: dict[type, tuple[tuple[str, ...], tuple[tuple[int, str, _Rule], ...]]] = {}


def _specs(cls: type) -> tuple[tuple[str, ...], tuple[tuple[int, str, _Rule], ...]]:
    """Field names, and (position, name, rule) in check order: the schema version
    first (a message of another version is refused whatever else it holds)."""
    got = _SPECS.get(cls)
    if got is None:
        fs = fields(cls)
        checks = sorted(
            ((i, f.name, f.metadata["rule"]) for i, f in enumerate(fs)),
            key=lambda c: (not isinstance(c[2], _Version), c[0]),
        )
        got = _SPECS[cls] = (tuple(f.name for f in fs), tuple(checks))
    return got


def _parse(raws: Sequence[bytes | None]) -> list[Any]:
    """Each message's JSON object, or the error that refuses it (size, JSON, type)."""
    if None not in raws and max(map(len, raws)) <= MAX_EVENT_BYTES:  # type: ignore[arg-type]
        try:
            objs = list(map(orjson.loads, raws))  # type: ignore[arg-type]
        except orjson.JSONDecodeError:
            pass
        else:
            if _types(objs) == {dict}:
                return objs
    return [_parse_one(b"" if raw is None else raw) for raw in raws]


def _parse_one(raw: bytes) -> Any:
    if len(raw) > MAX_EVENT_BYTES:
        return _bad("event", f"<{len(raw)} bytes>", f"must be at most {MAX_EVENT_BYTES} bytes",
                    raw)
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return _bad("event", raw[:40], f"is not valid JSON ({exc.msg})", raw)
    if not isinstance(obj, dict):
        return _bad("event", obj, "must be a JSON object", raw)
    return obj


def decode_batch(cls: type[_E], raws: Sequence[bytes | None]) -> list[_E | EventDecodeError]:
    """Decode messages of one kind: for each, the event or the error refusing it.

    A missing value (``None``) reads as empty bytes. Errors name the field and the value
    and carry the message's bytes (``raw``). Unknown extra fields are ignored.
    """
    out: list[_E | EventDecodeError] = []
    for lo in range(0, len(raws), _CHUNK):
        chunk = raws[lo : lo + _CHUNK]
        out += _decode(cls, _parse(chunk), [b"" if r is None else r for r in chunk])
    return out


def decode_objects(
    cls: type[_E], objs: Sequence[Mapping[str, Any]], *, what: str = "event"
) -> list[_E]:
    """Events from already-parsed JSON objects (e.g. a state file's rows), every field
    checked by the same rules; raises the first :class:`EventDecodeError`."""
    got: list[_E] = []
    for lo in range(0, len(objs), _CHUNK):
        chunk = [o if type(o) is dict else dict(o) for o in objs[lo : lo + _CHUNK]]
        for item in _decode(cls, chunk, [what.encode()] * len(chunk)):
            if isinstance(item, EventDecodeError):
                raise item
            got.append(item)
    return got


def _decode(cls: type[_E], objs: list[Any], raws: list[bytes]) -> list[_E | EventDecodeError]:
    names, checks = _specs(cls)
    errors: dict[int, EventDecodeError] = {
        i: o for i, o in enumerate(objs) if type(o) is not dict
    }
    rows = objs if not errors else [o for o in objs if type(o) is dict]
    where = range(len(objs)) if not errors else [i for i, o in enumerate(objs) if type(o) is dict]
    columns: list[list[Any]] = [[]] * len(names)
    if rows:
        for pos, name, rule in checks:
            if rule.absent is None:
                values = list(map(dict.get, rows, repeat(name)))
            else:
                values = list(map(dict.get, rows, repeat(name), repeat(_ABSENT)))
            got: list[Any] | None = rule.column(values)
            if got is None:
                got = []
                for i, v in zip(where, values, strict=True):
                    if i in errors:
                        got.append(None)
                        continue
                    try:
                        got.append(rule.read(v, name, raws[i]))
                    except EventDecodeError as exc:
                        errors[i] = exc
                        got.append(None)
            columns[pos] = got
    make: Any = cls  # the columns are in field order, each value read by its field's rule
    check = _CROSS_CHECKS.get(cls)
    if not errors and check is None:
        return list(map(make, *columns))
    out: list[Any] = [errors.get(i) for i in range(len(objs))]
    for i, row in zip(where, zip(*columns, strict=True), strict=True):
        if i not in errors:
            out[i] = make(*row)
            refused = None if check is None else check(out[i], raws[i])
            if refused is not None:
                out[i] = refused
    return out


def _one(cls: type[_E], raw: bytes) -> _E:
    item = decode_batch(cls, [raw])[0]
    if isinstance(item, EventDecodeError):
        raise item
    return item


def decode_decision(raw: bytes) -> DecisionEvent:
    """One decision (:func:`decode_batch` of one message); raises :class:`EventDecodeError`."""
    return _one(DecisionEvent, raw)


def decode_feedback(raw: bytes) -> FeedbackEvent:
    """One feedback event; raises :class:`EventDecodeError`."""
    return _one(FeedbackEvent, raw)


def decode_engagement(raw: bytes) -> EngagementEvent:
    """One engagement event; raises :class:`EventDecodeError`."""
    return _one(EngagementEvent, raw)


def decode_exposure(raw: bytes) -> ExposureEvent:
    """One exposure event; raises :class:`EventDecodeError`."""
    return _one(ExposureEvent, raw)


def decode_design(raw: bytes) -> DesignEvent:
    """One design event; raises :class:`EventDecodeError`."""
    return _one(DesignEvent, raw)


def decode_event(kind: str, raw: bytes) -> Event:
    """Decode ``raw`` as an event of ``kind`` (``decision``, ``feedback``, ``engagement``,
    ``exposure``, ``design``)."""
    cls = _KINDS.get(kind)
    if cls is None:
        raise EventDecodeError("kind", kind, f"must be one of {sorted(_KINDS)}", raw)
    return _one(cls, raw)  # type: ignore[type-var]
