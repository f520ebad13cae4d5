"""Python client of the allocation server, for the serving tier.

It never raises because the allocation server is slow, down or broken: on a timeout,
a connection error or a 5xx it returns ``fallback_arm`` with ``fallback=True``, so
the chat keeps answering (with the baseline) while Switchboard is unavailable. A 4xx
means the call itself is wrong (bad token, bad input) and raises
:class:`AllocationRejected` naming the field — that is a bug to fix, not an outage.
Uses one keep-alive ``httpx.Client``.

>>> with SwitchboardClient("http://127.0.0.1:9", "t", timeout_s=0.05,
...                        fallback_arm="gpt35") as c:
...     r = c.allocate("user-1", "conv-1", embedding=[0.0] * 4)
>>> r.arm_id, r.fallback
('gpt35', True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx
import orjson

from bandit.errors import InvalidInputError

__all__ = ["Allocation", "AllocationRejected", "SwitchboardClient"]


class AllocationRejected(InvalidInputError):
    """The server refused the request (4xx): the call is wrong, not the server."""

    def __init__(self, status: int, field: str, reason: str) -> None:
        super().__init__(field, status, reason)
        self.status = status


@dataclass(frozen=True, slots=True)
class Allocation:
    """The arm to use for a conversation. ``fallback`` is True when the server was not
    reached (or failed) and ``arm_id`` is the client's ``fallback_arm``."""

    arm_id: str
    propensity: float
    decision_id: str | None
    experiment_id: str | None
    variant: str | None
    policy_version: str | None
    fallback: bool
    scores: dict[str, float] | None = None
    error: str | None = None


class SwitchboardClient:
    """``allocate`` against ``base_url`` with a bearer ``token``."""

    def __init__(self, base_url: str, token: str, *, timeout_s: float = 0.05,
                 fallback_arm: str = "gpt35", transport: httpx.BaseTransport | None = None) -> None:
        if not timeout_s > 0:
            raise InvalidInputError("timeout_s", timeout_s, "must be > 0")
        if not fallback_arm:
            raise InvalidInputError("fallback_arm", fallback_arm, "must be a non-empty arm id")
        self.fallback_arm = fallback_arm
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"), timeout=httpx.Timeout(timeout_s),
            headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
            limits=httpx.Limits(max_keepalive_connections=16, keepalive_expiry=60.0),
            transport=transport,
        )

    def _fallback(self, error: str) -> Allocation:
        return Allocation(self.fallback_arm, 1.0, None, None, None, None, True, None, error)

    def allocate(
        self,
        unit_id: str,
        conversation_id: str,
        *,
        text: str | None = None,
        embedding: Sequence[float] | None = None,
        eligible: Sequence[str] | None = None,
        experiment_id: str | None = None,
        return_scores: bool = False,
    ) -> Allocation:
        """Allocate an arm; falls back to ``fallback_arm`` on timeout/connection error/5xx."""
        if (text is None) == (embedding is None):
            raise InvalidInputError("text", None, "exactly one of text or embedding is required")
        body: dict[str, Any] = {"unit_id": unit_id, "conversation_id": conversation_id}
        if text is not None:
            body["text"] = text
        if embedding is not None:
            values = [float(v) for v in embedding]
            bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
            if bad is not None:
                raise InvalidInputError(f"embedding[{bad}]", values[bad], "must be finite")
            body["embedding"] = values
        if eligible is not None:
            body["eligible"] = list(eligible)
        if experiment_id is not None:
            body["experiment_id"] = experiment_id
        if return_scores:
            body["return_scores"] = True
        try:
            resp = self._http.post("/v1/allocate", content=orjson.dumps(body))
        except httpx.TimeoutException as exc:
            return self._fallback(f"timeout: {exc}")
        except httpx.TransportError as exc:
            return self._fallback(f"connection: {exc}")
        if resp.status_code >= 500:
            return self._fallback(f"server error {resp.status_code}")
        try:
            data = orjson.loads(resp.content)
        except orjson.JSONDecodeError:
            return self._fallback(f"unreadable response ({resp.status_code})")
        if resp.status_code >= 400:
            field, reason = "request", str(data)
            detail = data.get("detail") if isinstance(data, dict) else None
            if isinstance(detail, list) and detail and isinstance(detail[0], dict):
                field, reason = str(detail[0].get("field")), str(detail[0].get("msg"))
            elif isinstance(detail, str):
                reason = detail
            raise AllocationRejected(resp.status_code, field, reason)
        try:
            return Allocation(
                arm_id=str(data["arm_id"]), propensity=float(data["propensity"]),
                decision_id=str(data["decision_id"]), experiment_id=str(data["experiment_id"]),
                variant=str(data["variant"]), policy_version=str(data["policy_version"]),
                fallback=bool(data.get("fallback", False)), scores=data.get("scores"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            return self._fallback(f"malformed response: {exc}")

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SwitchboardClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
