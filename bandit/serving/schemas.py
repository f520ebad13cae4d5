"""Request/response models of the allocation API (strict pydantic: no coercion, no NaN).

Bodies are parsed with orjson, which refuses the ``NaN``/``Infinity`` literals and
numbers that overflow a double, then validated by these models in strict mode
(``"1"`` is not an integer, ``true`` is not a number, unknown fields are refused).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "AllocateRequest",
    "AllocateResponse",
    "ArmOut",
    "ArmRequest",
    "EngagementIn",
    "ErrorResponse",
    "EventsAccepted",
    "ExposureIn",
    "FeedbackIn",
    "HealthResponse",
    "ReadyResponse",
    "ValidationError",
    "error_fields",
]

_STRICT = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)

Id = Annotated[str, Field(min_length=1, max_length=256)]
ArmId = Annotated[str, Field(min_length=1, max_length=128)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
#: ms since the Unix epoch (UTC), up to the year 3000
TsMs = Annotated[int, Field(ge=0, le=32_503_680_000_000)]


class AllocateRequest(BaseModel):
    """One allocation: who (unit), which conversation, and its context.

    Exactly one of ``text`` (the last few messages) or ``embedding`` (a precomputed
    context of the policy dimension) is required.
    """

    model_config = _STRICT

    unit_id: Id
    conversation_id: Id
    text: Annotated[str, Field(min_length=1)] | None = None
    embedding: Annotated[list[Finite], Field(min_length=1, max_length=4096)] | None = None
    eligible: Annotated[list[ArmId], Field(min_length=1, max_length=4096)] | None = None
    experiment_id: Id | None = None
    return_scores: bool = False
    #: event time of the decision (ms since the Unix epoch, UTC); default: the server's clock.
    #: For replays, backfills and simulated clocks; logged on the decision event.
    ts_ms: Annotated[int, Field(ge=0, le=32_503_680_000_000)] | None = None

    @model_validator(mode="after")
    def _one_context(self) -> AllocateRequest:
        if (self.text is None) == (self.embedding is None):
            raise ValueError("exactly one of text or embedding is required")
        return self


class AllocateResponse(BaseModel):
    decision_id: str
    experiment_id: str
    variant: str
    arm_id: str
    propensity: float
    policy_version: str
    scores: dict[str, float] | None = None
    probabilities: dict[str, float] | None = None
    degraded: bool = False


class ArmRequest(BaseModel):
    """Register (or update / re-activate) an arm; ``features`` feed the hybrid model."""

    model_config = _STRICT

    arm_id: ArmId
    kind: Literal["expert", "baseline"] = "expert"
    features: Annotated[list[Finite], Field(min_length=1, max_length=1024)] | None = None


class FeedbackIn(BaseModel):
    """A ``FeedbackEvent`` exactly as on the feedback topic (see docs/events.md).

    Documentation of ``POST /v1/feedback``: the body (one event, or an array of them) is
    validated by the topic's own decoder, :func:`bandit.events.decode_feedback`.
    """

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "schema_version": 1, "event_id": "fb-7f3a9c", "decision_id": "4Jt2x9Qb7sLm0001",
        "ts_ms": 1767571260000, "unit_id": "user-42", "conversation_id": "conv-42-7",
        "retried": False, "rating": 5, "conversation_length": 12}]})

    schema_version: Literal[1]
    event_id: Id
    decision_id: Id
    ts_ms: Annotated[int, Field(ge=0)]
    unit_id: Id
    conversation_id: Id
    retried: bool | None = None
    rating: Annotated[int, Field(ge=1, le=5)] | None = None
    conversation_length: Annotated[int, Field(ge=0, le=1_000_000)] | None = None


class EngagementIn(BaseModel):
    """An ``EngagementEvent`` exactly as on the engagement topic (see docs/events.md);
    validated by :func:`bandit.events.decode_engagement`."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "schema_version": 1, "event_id": "eng-user-42-20260105", "ts_ms": 1767614400000,
        "unit_id": "user-42", "screen_time_s": 754.5, "messages": 31}]})

    schema_version: Literal[1]
    event_id: Id
    ts_ms: Annotated[int, Field(ge=0)]
    unit_id: Id
    screen_time_s: Annotated[float, Field(ge=0.0, le=86_400.0)]
    messages: Annotated[int, Field(ge=0, le=100_000)]


class ExposureIn(BaseModel):
    """A fallback allocation: the serving tier answered ``arm_id`` without this server
    (it was down, slow or failing). The server adds the unit's variant and publishes an
    ``ExposureEvent``, so the unit stays in its cohort; it is never learnt from."""

    model_config = ConfigDict(strict=True, extra="forbid", json_schema_extra={"examples": [{
        "event_id": "exp-1d4c2b", "ts_ms": 1767571200000, "unit_id": "user-42",
        "conversation_id": "conv-42-7", "arm_id": "gpt35", "reason": "timeout"}]})

    event_id: Id
    ts_ms: TsMs
    unit_id: Id
    conversation_id: Id
    arm_id: ArmId
    #: why the client fell back (``timeout``, ``connection``, ``server error 503`` ...)
    reason: Id
    experiment_id: Id | None = None


class EventsAccepted(BaseModel):
    """Events validated and queued for Kafka (delivered even through a broker outage)."""

    accepted: int


class ReadyResponse(BaseModel):
    status: Literal["ready", "not ready"]
    reasons: list[str]


class ArmOut(BaseModel):
    arm_id: str
    kind: str
    features: list[float] | None
    active: bool


class HealthResponse(BaseModel):
    status: str
    model: dict[str, Any]
    publisher: dict[str, Any]
    design: dict[str, Any]


class ErrorItem(BaseModel):
    field: str
    msg: str


class ErrorResponse(BaseModel):
    detail: list[ErrorItem] | str


def _loc_to_field(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "body"


def error_fields(exc: ValidationError) -> list[dict[str, str]]:
    """Pydantic errors as ``{"field": "embedding[3]", "msg": ...}`` items."""
    return [
        {"field": _loc_to_field(tuple(e["loc"])), "msg": str(e["msg"])}
        for e in exc.errors(include_url=False, include_context=False, include_input=False)
    ]
