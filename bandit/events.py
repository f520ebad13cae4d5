"""Versioned event schema shared by the allocation server, the learner and the store.

Every event is a frozen dataclass carried as one JSON object (UTF-8) on its
Kafka topic. Every event has:

* ``schema_version`` — integer, currently ``1``; an unknown version is refused;
* ``event_id`` — string, unique per event, used for idempotent inserts and dedup;
* ``ts_ms`` — integer milliseconds since the Unix epoch, UTC.

Decisions and feedback are keyed by ``conversation_id`` so they are co-partitioned;
engagement is keyed by ``unit_id``. Decoding raises :class:`EventDecodeError`
naming the field and the bad value; the original bytes travel with the error so
the consumer can dead-letter them. See ``docs/events.md`` for the full tables.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from itertools import chain, repeat
from operator import itemgetter
from typing import Any, ClassVar, Final

import numpy as np
import numpy.typing as npt
import orjson

from bandit.errors import EventDecodeError

__all__ = [
    "MAX_CONTEXT_ABS",
    "MAX_EVENT_BYTES",
    "MAX_TS_MS",
    "SCHEMA_VERSION",
    "DecisionEvent",
    "EngagementEvent",
    "Event",
    "ExposureEvent",
    "FeedbackEvent",
    "decode_decision",
    "decode_decision_batch",
    "decode_engagement",
    "decode_event",
    "decode_exposure",
    "decode_feedback",
    "decode_feedback_batch",
    "encode_event",
]

SCHEMA_VERSION: Final = 1
#: Events larger than this are refused before parsing (64 KiB is ~ 8000 floats of context).
MAX_EVENT_BYTES: Final = 64 * 1024
_MAX_ID_LEN: Final = 256
#: Latest accepted event time: the last millisecond a ClickHouse ``DateTime`` (the store's
#: partitioning and every day-N query) can represent, 2106-02-07 06:28:15.999 UTC; far
#: inside the ``Int64`` column that holds it.
MAX_TS_MS: Final = (2**32 - 1) * 1000 + 999
#: Largest context magnitude: the store keeps contexts as ``Float32``.
MAX_CONTEXT_ABS: Final = float(np.finfo(np.float32).max)
#: inclusive ranges of the feedback proxies
_RATING_RANGE: Final = (1, 5)
_LENGTH_RANGE: Final = (0, 1_000_000)


@dataclass(frozen=True, slots=True)
class DecisionEvent:
    """One allocation: which arm answered which conversation, with what probability.

    ``context`` is the policy-space context vector x_C (after projection); the learner
    checks its length against the model dimension. ``propensity`` is the probability the
    policy gave ``arm_id`` and is in (0, 1].
    """

    KIND: ClassVar[str] = "decision"

    event_id: str
    decision_id: str
    ts_ms: int
    unit_id: str
    conversation_id: str
    experiment_id: str
    variant: str
    arm_id: str
    propensity: float
    policy_version: str
    context: tuple[float, ...]
    eligible: tuple[str, ...] = ()
    schema_version: int = SCHEMA_VERSION

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

    event_id: str
    decision_id: str
    ts_ms: int
    unit_id: str
    conversation_id: str
    retried: bool | None = None
    rating: int | None = None
    conversation_length: int | None = None
    schema_version: int = SCHEMA_VERSION

    @property
    def key(self) -> bytes:
        return self.conversation_id.encode()


@dataclass(frozen=True, slots=True)
class EngagementEvent:
    """Per-user activity in one session: screen time in seconds and messages sent."""

    KIND: ClassVar[str] = "engagement"

    event_id: str
    ts_ms: int
    unit_id: str
    screen_time_s: float
    messages: int
    schema_version: int = SCHEMA_VERSION

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

    event_id: str
    ts_ms: int
    unit_id: str
    conversation_id: str
    experiment_id: str
    variant: str
    arm_id: str
    reason: str
    schema_version: int = SCHEMA_VERSION

    @property
    def key(self) -> bytes:
        return self.unit_id.encode()


Event = DecisionEvent | FeedbackEvent | EngagementEvent | ExposureEvent


def encode_event(event: Event) -> bytes:
    """Serialise an event to its JSON wire form (orjson, UTF-8)."""
    return orjson.dumps(asdict(event))


# --------------------------------------------------------------------------- decoding


def _fail(field_name: str, value: Any, reason: str, raw: bytes) -> EventDecodeError:
    return EventDecodeError(field_name, value, reason, raw=raw)


def _load(raw: bytes) -> dict[str, Any]:
    if len(raw) > MAX_EVENT_BYTES:
        raise _fail("event", f"<{len(raw)} bytes>", f"must be at most {MAX_EVENT_BYTES} bytes", raw)
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _fail("event", raw[:40], f"is not valid JSON ({exc.msg})", raw) from None
    if not isinstance(obj, dict):
        raise _fail("event", obj, "must be a JSON object", raw)
    version = obj.get("schema_version")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise _fail("schema_version", version, f"must be {SCHEMA_VERSION}", raw)
    return obj


def _str(obj: dict[str, Any], name: str, raw: bytes) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value or len(value) > _MAX_ID_LEN:
        raise _fail(name, value, f"must be a non-empty string of at most {_MAX_ID_LEN} chars", raw)
    return value


def _int(obj: dict[str, Any], name: str, raw: bytes, *, lo: int = 0, hi: int | None = None,
         optional: bool = False) -> int | None:
    value = obj.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < lo or (
        hi is not None and value > hi
    ):
        bound = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise _fail(name, value, f"must be an integer {bound}", raw)
    return value


def _float(obj: dict[str, Any], name: str, raw: bytes, *, lo: float, hi: float,
           lo_open: bool = False) -> float:
    value = obj.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(name, value, "must be a number", raw)
    value = float(value)
    if not math.isfinite(value) or value > hi or value < lo or (lo_open and value == lo):
        lo_b = "(" if lo_open else "["
        raise _fail(name, value, f"must be finite and in {lo_b}{lo}, {hi}]", raw)
    return value


def decode_decision(raw: bytes) -> DecisionEvent:
    obj = _load(raw)
    ctx = obj.get("context")
    if not isinstance(ctx, list) or not ctx:
        raise _fail("context", ctx, "must be a non-empty array of numbers", raw)
    # Fast path: orjson yields Python floats for JSON reals and refuses NaN/Infinity, so a
    # context of floats only needs one finiteness check; anything else is checked per item.
    if (
        not all(type(v) is float for v in ctx)
        or not math.isfinite(sum(ctx))
        or max(map(abs, ctx)) > MAX_CONTEXT_ABS
    ):
        for i, v in enumerate(ctx):
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise _fail(f"context[{i}]", v, "must be a finite number", raw)
            if abs(v) > MAX_CONTEXT_ABS:
                raise _fail(f"context[{i}]", v, f"must be within ±{MAX_CONTEXT_ABS:g} (Float32)",
                            raw)
    eligible = obj.get("eligible", [])
    if not isinstance(eligible, list) or not all(isinstance(a, str) and a for a in eligible):
        raise _fail("eligible", eligible, "must be an array of arm ids", raw)
    return DecisionEvent(
        event_id=_str(obj, "event_id", raw),
        decision_id=_str(obj, "decision_id", raw),
        ts_ms=_int(obj, "ts_ms", raw, hi=MAX_TS_MS),  # type: ignore[arg-type]
        unit_id=_str(obj, "unit_id", raw),
        conversation_id=_str(obj, "conversation_id", raw),
        experiment_id=_str(obj, "experiment_id", raw),
        variant=_str(obj, "variant", raw),
        arm_id=_str(obj, "arm_id", raw),
        propensity=_float(obj, "propensity", raw, lo=0.0, hi=1.0, lo_open=True),
        policy_version=_str(obj, "policy_version", raw),
        context=tuple(ctx) if all(type(v) is float for v in ctx) else tuple(float(v) for v in ctx),
        eligible=tuple(eligible),
    )


def decode_feedback(raw: bytes) -> FeedbackEvent:
    obj = _load(raw)
    retried = obj.get("retried")
    if retried is not None and not isinstance(retried, bool):
        raise _fail("retried", retried, "must be true, false or null", raw)
    rating = _int(obj, "rating", raw, lo=_RATING_RANGE[0], hi=_RATING_RANGE[1], optional=True)
    length = _int(obj, "conversation_length", raw, lo=_LENGTH_RANGE[0], hi=_LENGTH_RANGE[1],
                  optional=True)
    return FeedbackEvent(
        event_id=_str(obj, "event_id", raw),
        decision_id=_str(obj, "decision_id", raw),
        ts_ms=_int(obj, "ts_ms", raw, hi=MAX_TS_MS),  # type: ignore[arg-type]
        unit_id=_str(obj, "unit_id", raw),
        conversation_id=_str(obj, "conversation_id", raw),
        retried=retried,
        rating=rating,
        conversation_length=length,
    )


def decode_engagement(raw: bytes) -> EngagementEvent:
    obj = _load(raw)
    return EngagementEvent(
        event_id=_str(obj, "event_id", raw),
        ts_ms=_int(obj, "ts_ms", raw, hi=MAX_TS_MS),  # type: ignore[arg-type]
        unit_id=_str(obj, "unit_id", raw),
        screen_time_s=_float(obj, "screen_time_s", raw, lo=0.0, hi=86_400.0),
        messages=_int(obj, "messages", raw, lo=0, hi=100_000),  # type: ignore[arg-type]
    )


def decode_exposure(raw: bytes) -> ExposureEvent:
    obj = _load(raw)
    return ExposureEvent(
        event_id=_str(obj, "event_id", raw),
        ts_ms=_int(obj, "ts_ms", raw, hi=MAX_TS_MS),  # type: ignore[arg-type]
        unit_id=_str(obj, "unit_id", raw),
        conversation_id=_str(obj, "conversation_id", raw),
        experiment_id=_str(obj, "experiment_id", raw),
        variant=_str(obj, "variant", raw),
        arm_id=_str(obj, "arm_id", raw),
        reason=_str(obj, "reason", raw),
    )


# --------------------------------------------------------------------------- batch decoding
#
# The learner decodes whole fetched batches column by column: every check below is one
# C-level pass (``map``/``set``/``min``/``max``) over a column instead of Python code per
# event. A batch decoder accepts a batch only when *every* event in it is in the common,
# unambiguous valid form, and returns exactly the events the per-event decoder returns for
# it; otherwise it returns None and the caller decodes the batch event by event (which
# produces the dead letters and their reasons). The fast form is a strict subset of what
# the per-event decoder accepts: schema_version the integer 1, ids non-empty strings of at
# most 256 chars, ts_ms an integer in [0, MAX_TS_MS], propensity a float in (0, 1], context a
# list of floats within Float32 range (JSON reals; orjson refuses NaN, Infinity and
# overflowing doubles),
# eligible absent or a list of non-empty strings; rating and conversation_length integers
# in range or null, retried a bool or null. Anything else (an integer context entry, a
# propensity written as ``1``, ...) takes the per-event path, which may still accept it.

_ABSENT: Final = object()
_DECISION_KEYS: Final = (
    "event_id",
    "decision_id",
    "ts_ms",
    "unit_id",
    "conversation_id",
    "experiment_id",
    "variant",
    "arm_id",
    "propensity",
    "policy_version",
    "context",
    "schema_version",
)
_DECISION_STR_COLS: Final = (0, 1, 3, 4, 5, 6, 7, 9)
_FEEDBACK_KEYS: Final = (
    "event_id",
    "decision_id",
    "ts_ms",
    "unit_id",
    "conversation_id",
    "schema_version",
)
_get_decision: Final = itemgetter(*_DECISION_KEYS)
_get_feedback: Final = itemgetter(*_FEEDBACK_KEYS)
_STR: Final = frozenset({str})
_INT: Final = frozenset({int})
_FLOAT: Final = frozenset({float})
_LIST: Final = frozenset({list})


def _types(column: Iterable[Any]) -> set[type]:
    return set(map(type, column))


def _valid_strings(column: Sequence[Any]) -> bool:
    return (
        _types(column) <= _STR
        and min(map(len, column)) >= 1
        and max(map(len, column)) <= _MAX_ID_LEN
    )


def _load_objects(raws: Sequence[bytes | None]) -> list[dict[str, Any]] | None:
    if None in raws or max(map(len, raws)) > MAX_EVENT_BYTES:  # type: ignore[arg-type]
        return None
    try:
        objs = list(map(orjson.loads, raws))  # type: ignore[arg-type]
    except orjson.JSONDecodeError:
        return None
    if set(map(type, objs)) != {dict}:
        return None
    return objs


def _optional_ints(column: Sequence[Any], lo: int, hi: int) -> bool:
    present = [v for v in column if v is not None]
    return not present or (
        _types(present) <= _INT and min(present) >= lo and max(present) <= hi
    )


#: Events decoded per chunk: the decoded JSON objects of one chunk are freed before the
#: next is parsed, so the cyclic GC never has to walk a whole fetched batch of them.
_CHUNK: Final = 512


def decode_decision_batch(
    raws: Sequence[bytes | None],
) -> tuple[list[DecisionEvent], npt.NDArray[np.float64]] | None:
    """Decode a batch of decisions at once, or None to decode them one by one.

    Returns the events (equal to ``[decode_decision(r) for r in raws]``) and their
    contexts stacked into one ``(n, dim)`` float64 array (exactly ``np.asarray(ev.context)``
    row by row). None when the batch is empty, when any event is not in the fast form
    described above, or when the context lengths differ within the batch.
    """
    if not raws:
        return None
    events: list[DecisionEvent] = []
    blocks: list[npt.NDArray[np.float64]] = []
    for lo in range(0, len(raws), _CHUNK):
        got = _decode_decision_chunk(raws[lo : lo + _CHUNK])
        if got is None or (blocks and got[1].shape[1] != blocks[0].shape[1]):
            return None
        events += got[0]
        blocks.append(got[1])
    return events, blocks[0] if len(blocks) == 1 else np.concatenate(blocks)


def _decode_decision_chunk(
    raws: Sequence[bytes | None],
) -> tuple[list[DecisionEvent], npt.NDArray[np.float64]] | None:
    objs = _load_objects(raws)
    if objs is None:
        return None
    try:
        rows = list(map(_get_decision, objs))
    except KeyError:
        return None
    cols = list(zip(*rows, strict=True))
    version = cols[11]
    if _types(version) != _INT or set(version) != {SCHEMA_VERSION}:
        return None
    if not all(_valid_strings(cols[i]) for i in _DECISION_STR_COLS):
        return None
    ts, prop, ctx = cols[2], cols[8], cols[10]
    if _types(ts) != _INT or min(ts) < 0 or max(ts) > MAX_TS_MS:
        return None
    if _types(prop) != _FLOAT or min(prop) <= 0.0 or max(prop) > 1.0:
        return None
    if _types(ctx) != _LIST or len(set(map(len, ctx))) != 1 or not ctx[0]:
        return None
    if _types(chain.from_iterable(ctx)) != _FLOAT:
        return None
    eligible = list(map(dict.get, objs, repeat("eligible"), repeat(_ABSENT)))
    if any(e is not _ABSENT for e in eligible):
        given = [e for e in eligible if e is not _ABSENT]
        if _types(given) != _LIST:
            return None
        names = list(chain.from_iterable(given))
        if names and (_types(names) != _STR or min(map(len, names)) < 1):
            return None
        elig = [() if e is _ABSENT else tuple(e) for e in eligible]
    else:
        elig = [()] * len(objs)
    X = np.array(ctx, dtype=np.float64)
    if not np.isfinite(X).all() or np.abs(X).max() > MAX_CONTEXT_ABS:
        return None
    events = list(
        map(
            DecisionEvent,
            *cols[:10],
            map(tuple, ctx),
            elig,
        )
    )
    return events, X


def decode_feedback_batch(raws: Sequence[bytes | None]) -> list[FeedbackEvent] | None:
    """Decode a batch of feedback at once (equal to ``[decode_feedback(r) for r in raws]``),
    or None to decode it event by event (see the fast form above)."""
    if not raws:
        return None
    events: list[FeedbackEvent] = []
    for lo in range(0, len(raws), _CHUNK):
        got = _decode_feedback_chunk(raws[lo : lo + _CHUNK])
        if got is None:
            return None
        events += got
    return events


def _decode_feedback_chunk(raws: Sequence[bytes | None]) -> list[FeedbackEvent] | None:
    objs = _load_objects(raws)
    if objs is None:
        return None
    try:
        rows = list(map(_get_feedback, objs))
    except KeyError:
        return None
    cols = list(zip(*rows, strict=True))
    version = cols[5]
    if _types(version) != _INT or set(version) != {SCHEMA_VERSION}:
        return None
    if not all(_valid_strings(cols[i]) for i in (0, 1, 3, 4)):
        return None
    ts = cols[2]
    if _types(ts) != _INT or min(ts) < 0 or max(ts) > MAX_TS_MS:
        return None
    retried = list(map(dict.get, objs, repeat("retried")))
    rating = list(map(dict.get, objs, repeat("rating")))
    length = list(map(dict.get, objs, repeat("conversation_length")))
    if not _types(retried) <= {bool, type(None)}:
        return None
    if not (_optional_ints(rating, *_RATING_RANGE) and _optional_ints(length, *_LENGTH_RANGE)):
        return None
    return list(map(FeedbackEvent, *cols[:5], retried, rating, length))


_DECODERS: dict[str, Callable[[bytes], Event]] = {
    DecisionEvent.KIND: decode_decision,
    FeedbackEvent.KIND: decode_feedback,
    EngagementEvent.KIND: decode_engagement,
    ExposureEvent.KIND: decode_exposure,
}


def decode_event(kind: str, raw: bytes) -> Event:
    """Decode ``raw`` as an event of ``kind`` (``decision``, ``feedback``, ``engagement``,
    ``exposure``)."""
    try:
        decoder = _DECODERS[kind]
    except KeyError:
        raise EventDecodeError("kind", kind, f"must be one of {sorted(_DECODERS)}", raw) from None
    return decoder(raw)


# Keep ``field`` imported for subclasses that declare defaults with factories.
_ = field
