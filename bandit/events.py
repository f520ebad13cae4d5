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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Final

import orjson

from bandit.errors import EventDecodeError

__all__ = [
    "MAX_EVENT_BYTES",
    "SCHEMA_VERSION",
    "DecisionEvent",
    "EngagementEvent",
    "Event",
    "FeedbackEvent",
    "decode_decision",
    "decode_engagement",
    "decode_event",
    "decode_feedback",
    "encode_event",
]

SCHEMA_VERSION: Final = 1
#: Events larger than this are refused before parsing (64 KiB is ~ 8000 floats of context).
MAX_EVENT_BYTES: Final = 64 * 1024
_MAX_ID_LEN: Final = 256


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


Event = DecisionEvent | FeedbackEvent | EngagementEvent


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
    if not all(type(v) is float for v in ctx) or not math.isfinite(sum(ctx)):
        for i, v in enumerate(ctx):
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise _fail(f"context[{i}]", v, "must be a finite number", raw)
    eligible = obj.get("eligible", [])
    if not isinstance(eligible, list) or not all(isinstance(a, str) and a for a in eligible):
        raise _fail("eligible", eligible, "must be an array of arm ids", raw)
    return DecisionEvent(
        event_id=_str(obj, "event_id", raw),
        decision_id=_str(obj, "decision_id", raw),
        ts_ms=_int(obj, "ts_ms", raw),  # type: ignore[arg-type]
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
    rating = _int(obj, "rating", raw, lo=1, hi=5, optional=True)
    length = _int(obj, "conversation_length", raw, lo=0, hi=1_000_000, optional=True)
    return FeedbackEvent(
        event_id=_str(obj, "event_id", raw),
        decision_id=_str(obj, "decision_id", raw),
        ts_ms=_int(obj, "ts_ms", raw),  # type: ignore[arg-type]
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
        ts_ms=_int(obj, "ts_ms", raw),  # type: ignore[arg-type]
        unit_id=_str(obj, "unit_id", raw),
        screen_time_s=_float(obj, "screen_time_s", raw, lo=0.0, hi=86_400.0),
        messages=_int(obj, "messages", raw, lo=0, hi=100_000),  # type: ignore[arg-type]
    )


_DECODERS: dict[str, Callable[[bytes], Event]] = {
    DecisionEvent.KIND: decode_decision,
    FeedbackEvent.KIND: decode_feedback,
    EngagementEvent.KIND: decode_engagement,
}


def decode_event(kind: str, raw: bytes) -> Event:
    """Decode ``raw`` as an event of ``kind`` (``decision``, ``feedback``, ``engagement``)."""
    try:
        decoder = _DECODERS[kind]
    except KeyError:
        raise EventDecodeError("kind", kind, f"must be one of {sorted(_DECODERS)}", raw) from None
    return decoder(raw)


# Keep ``field`` imported for subclasses that declare defaults with factories.
_ = field
