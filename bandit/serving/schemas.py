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
    "ErrorResponse",
    "HealthResponse",
    "ValidationError",
    "error_fields",
]

_STRICT = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)

Id = Annotated[str, Field(min_length=1, max_length=256)]
ArmId = Annotated[str, Field(min_length=1, max_length=128)]
Finite = Annotated[float, Field(allow_inf_nan=False)]


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


class ArmOut(BaseModel):
    arm_id: str
    kind: str
    features: list[float] | None
    active: bool


class HealthResponse(BaseModel):
    status: str
    model: dict[str, Any]
    publisher: dict[str, Any]


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
