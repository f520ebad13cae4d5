"""Python clients of the allocation server, for the serving tier: :class:`SwitchboardClient`
(``httpx.Client``) and :class:`AsyncSwitchboardClient` (``httpx.AsyncClient``), with the
same methods and the same behaviour.

**Allocation never raises because the server is slow, down or broken.** On a timeout, a
connection error or a 5xx (503 included: no active arm) ``allocate`` returns
``fallback_arm`` with ``fallback=True``, so the chat keeps answering with the baseline.
The fallback is an *exposure* the cohorts must still count: the client queues it (unit,
conversation, arm, reason, time) and posts the queue to ``POST /v1/exposures`` as soon as
the server answers again (after the next successful call, or on :meth:`flush_exposures` /
``close``); the server adds the unit's assigned variant and publishes it, marked as a
fallback and never learnt from. A 4xx means the call itself is wrong (bad token, bad
input) and raises :class:`AllocationRejected` naming the field — a bug to fix, not an
outage.

**Feedback and engagement** (:meth:`~SwitchboardClient.feedback`,
:meth:`~SwitchboardClient.engagement`, :meth:`~SwitchboardClient.send` for batches)
build the event id, timestamp and schema version, validate the event locally with the
topics' own decoder (:mod:`bandit.events`) before anything is sent, and post it.

**Retries** (``retries`` times, exponential backoff from ``backoff_s``) are for
transient failures only: a connection that could not be made, and for event posts also
a timeout, a 5xx or a 429 (event ids make a re-sent event count once). An allocation
whose request may have reached the server is never re-sent (that could log two
decisions): it falls back instead. A 4xx is never retried.

>>> with SwitchboardClient("http://127.0.0.1:9", "t", timeout_s=0.05,
...                        fallback_arm="gpt35", retries=0) as c:
...     r = c.allocate("user-1", "conv-1", embedding=[0.0] * 4)
...     r.arm_id, r.fallback, c.pending_exposures
('gpt35', True, 1)
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx
import orjson

from bandit.errors import InvalidInputError, SwitchboardError
from bandit.events import (
    EngagementEvent,
    FeedbackEvent,
    decode_engagement,
    decode_feedback,
    encode_event,
)

__all__ = [
    "Allocation",
    "AllocationRejected",
    "AsyncSwitchboardClient",
    "DeliveryFailed",
    "SwitchboardClient",
    "make_engagement",
    "make_feedback",
]


class AllocationRejected(InvalidInputError):
    """The server refused the request (4xx): the call is wrong, not the server."""

    def __init__(self, status: int, field: str, reason: str) -> None:
        super().__init__(field, status, reason)
        self.status = status


class DeliveryFailed(SwitchboardError):
    """Events could not be delivered to the server (down, failing or timing out) after
    the configured retries; nothing of them is known to have been accepted."""


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


# ----------------------------------------------------------------------------- sans-IO core
#
# Each operation is a generator that yields what it needs done — an HTTP request
# (``_Post``) or a pause (``_Sleep``) — and receives the outcome (``(response, None)`` or
# ``(None, exception)``). The sync and async clients only run these generators, so both
# behave identically by construction.


@dataclass(frozen=True, slots=True)
class _Post:
    path: str
    body: bytes


@dataclass(frozen=True, slots=True)
class _Sleep:
    seconds: float


Outcome = tuple[httpx.Response | None, Exception | None]
Step = Generator[_Post | _Sleep, Outcome, Any]

#: errors raised before the request could reach the server: safe to retry even for
#: allocations
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout)
_TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def _rejected(resp: httpx.Response) -> AllocationRejected:
    field, reason = "request", resp.text[:200]
    try:
        data = orjson.loads(resp.content)
    except orjson.JSONDecodeError:
        return AllocationRejected(resp.status_code, field, reason)
    detail = data.get("detail") if isinstance(data, dict) else None
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        field, reason = str(detail[0].get("field")), str(detail[0].get("msg"))
    elif isinstance(detail, str):
        reason = detail
    return AllocationRejected(resp.status_code, field, reason)


class _Core:
    """Configuration, the fallback-exposure queue and the operations (as generators)."""

    def __init__(self, *, timeout_s: float, fallback_arm: str, retries: int, backoff_s: float,
                 max_pending_exposures: int) -> None:
        if not timeout_s > 0:
            raise InvalidInputError("timeout_s", timeout_s, "must be > 0")
        if not fallback_arm:
            raise InvalidInputError("fallback_arm", fallback_arm, "must be a non-empty arm id")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise InvalidInputError("retries", retries, "must be an integer >= 0")
        if not backoff_s >= 0:
            raise InvalidInputError("backoff_s", backoff_s, "must be >= 0")
        if max_pending_exposures < 1:
            raise InvalidInputError("max_pending_exposures", max_pending_exposures,
                                    "must be >= 1")
        self.fallback_arm = fallback_arm
        self.retries = retries
        self.backoff_s = backoff_s
        self._exposures: deque[dict[str, Any]] = deque(maxlen=max_pending_exposures)
        self._lock = threading.Lock()
        #: fallback exposures dropped because the queue was full (oldest first)
        self.dropped_exposures = 0
        #: fallback exposures the server accepted
        self.sent_exposures = 0
        #: why the last exposure flush failed (None after a successful one)
        self.exposure_error: str | None = None
        self._next_flush = 0.0

    @property
    def pending_exposures(self) -> int:
        """Fallback exposures queued, not yet accepted by the server."""
        return len(self._exposures)

    # ------------------------------------------------------------------ allocate
    def _allocate(self, unit_id: str, conversation_id: str, *, text: str | None,
                  embedding: Sequence[float] | None, eligible: Sequence[str] | None,
                  experiment_id: str | None, return_scores: bool, ts_ms: int | None) -> Step:
        if (text is None) == (embedding is None):
            raise InvalidInputError("text", None, "exactly one of text or embedding is required")
        for name, value in (("unit_id", unit_id), ("conversation_id", conversation_id)):
            if not isinstance(value, str) or not value:
                raise InvalidInputError(name, value, "must be a non-empty string")
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
        if ts_ms is not None:
            body["ts_ms"] = ts_ms
        raw = orjson.dumps(body)
        attempt = 0
        while True:
            resp, exc = yield _Post("/v1/allocate", raw)
            if exc is None or not isinstance(exc, _NOT_SENT) or attempt >= self.retries:
                break
            yield _Sleep(self.backoff_s * 2 ** attempt)
            attempt += 1
        if exc is not None:
            kind = "timeout" if isinstance(exc, httpx.TimeoutException) else "connection"
            return self._fallback(unit_id, conversation_id, ts_ms, f"{kind}: {exc}")
        assert resp is not None
        if resp.status_code >= 500:
            return self._fallback(unit_id, conversation_id, ts_ms,
                                  f"server error {resp.status_code}")
        if resp.status_code >= 400:
            raise _rejected(resp)
        try:
            data = orjson.loads(resp.content)
            allocation = Allocation(
                arm_id=str(data["arm_id"]), propensity=float(data["propensity"]),
                decision_id=str(data["decision_id"]), experiment_id=str(data["experiment_id"]),
                variant=str(data["variant"]), policy_version=str(data["policy_version"]),
                fallback=False, scores=data.get("scores"),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            return self._fallback(unit_id, conversation_id, ts_ms,
                                  f"malformed response: {err}")
        if self._exposures and time.monotonic() >= self._next_flush:
            # the server answers again: hand it what it missed
            yield from self._flush(raise_errors=False)
        return allocation

    def _fallback(self, unit_id: str, conversation_id: str, ts_ms: int | None,
                  error: str) -> Allocation:
        with self._lock:
            if len(self._exposures) == self._exposures.maxlen:
                self.dropped_exposures += 1
            self._exposures.append({
                "event_id": _new_id("exp"), "ts_ms": ts_ms if ts_ms is not None else _now_ms(),
                "unit_id": unit_id, "conversation_id": conversation_id,
                "arm_id": self.fallback_arm, "reason": error.split(":", 1)[0][:256]})
        return Allocation(self.fallback_arm, 1.0, None, None, None, None, True, None, error)

    # ------------------------------------------------------------------ events
    def _flush(self, *, raise_errors: bool) -> Step:
        """Post the queued fallback exposures (in batches); returns how many were accepted.

        A batch is taken off the queue while it is posted (so concurrent flushes never
        send one twice) and put back in front if the server cannot take it now."""
        sent = 0
        while True:
            with self._lock:
                batch = [self._exposures.popleft()
                         for _ in range(min(_BATCH, len(self._exposures)))]
            if not batch:
                self.exposure_error = None
                return sent
            try:
                yield from self._post_events("/v1/exposures", orjson.dumps(batch))
            except AllocationRejected as exc:
                # a 4xx will not get better by retrying: the batch is dropped, and said so
                self.dropped_exposures += len(batch)
                self.exposure_error = str(exc)
                if raise_errors:
                    raise
                return sent
            except DeliveryFailed as exc:
                with self._lock:
                    room = self._exposures.maxlen or len(batch)
                    keep = batch[:max(0, room - len(self._exposures))]
                    self.dropped_exposures += len(batch) - len(keep)
                    self._exposures.extendleft(reversed(keep))
                self.exposure_error = str(exc)
                self._next_flush = time.monotonic() + _FLUSH_PAUSE_S
                if raise_errors:
                    raise
                return sent
            self.sent_exposures += len(batch)
            sent += len(batch)

    def _post_events(self, path: str, raw: bytes) -> Step:
        """POST ``raw`` with retries on transient failures; 4xx raise, exhaustion raises
        :class:`DeliveryFailed`."""
        attempt = 0
        while True:
            resp, exc = yield _Post(path, raw)
            if exc is None and resp is not None:
                if resp.status_code < 400:
                    return orjson.loads(resp.content)
                if resp.status_code not in _TRANSIENT_STATUS:
                    raise _rejected(resp)
                reason = f"server error {resp.status_code}"
            else:
                reason = f"{type(exc).__name__}: {exc}"
            if attempt >= self.retries:
                raise DeliveryFailed(f"POST {path} failed after {attempt + 1} attempt(s): "
                                     f"{reason}")
            yield _Sleep(self.backoff_s * 2 ** attempt)
            attempt += 1

    def _send(self, events: Sequence[FeedbackEvent | EngagementEvent]) -> Step:
        """Post events (feedback and engagement, in batches per kind); returns their ids."""
        groups: dict[str, list[bytes]] = {"/v1/feedback": [], "/v1/engagement": []}
        for i, event in enumerate(events):
            raw = encode_event(event)
            if isinstance(event, FeedbackEvent):
                _validate(decode_feedback, raw, i if len(events) > 1 else None)
                groups["/v1/feedback"].append(raw)
            elif isinstance(event, EngagementEvent):
                _validate(decode_engagement, raw, i if len(events) > 1 else None)
                groups["/v1/engagement"].append(raw)
            else:
                raise InvalidInputError(f"events[{i}]", type(event).__name__,
                                        "must be a FeedbackEvent or an EngagementEvent")
        for path, raws in groups.items():
            for lo in range(0, len(raws), _BATCH):
                chunk = raws[lo:lo + _BATCH]
                body = chunk[0] if len(chunk) == 1 else b"[" + b",".join(chunk) + b"]"
                yield from self._post_events(path, body)
        return [e.event_id for e in events]


#: events per POST (well inside serve.max_body_bytes for events of ordinary size)
_BATCH = 500
#: after a failed flush of fallback exposures, successful allocations wait this long (s)
#: before trying again, so a failing exposures endpoint does not slow every allocation
_FLUSH_PAUSE_S = 1.0


def _validate(decode: Any, raw: bytes, index: int | None) -> None:
    """The topics' own rules, before anything is sent."""
    try:
        decode(raw)
    except InvalidInputError as exc:
        if index is None:
            raise
        raise InvalidInputError(f"events[{index}].{exc.field}", exc.value, exc.reason) from None


def make_feedback(decision_id: str, unit_id: str, conversation_id: str, *,
                  retried: bool | None = None, rating: int | None = None,
                  conversation_length: int | None = None, ts_ms: int | None = None,
                  event_id: str | None = None) -> FeedbackEvent:
    """A validated :class:`~bandit.events.FeedbackEvent` (new event id, time now unless
    given)."""
    event = FeedbackEvent(
        event_id=event_id or _new_id("fb"), decision_id=decision_id,
        ts_ms=_now_ms() if ts_ms is None else ts_ms, unit_id=unit_id,
        conversation_id=conversation_id, retried=retried, rating=rating,
        conversation_length=conversation_length)
    decode_feedback(encode_event(event))
    return event


def make_engagement(unit_id: str, *, screen_time_s: float, messages: int,
                    ts_ms: int | None = None, event_id: str | None = None) -> EngagementEvent:
    """A validated :class:`~bandit.events.EngagementEvent` (new event id, time now unless
    given)."""
    event = EngagementEvent(
        event_id=event_id or _new_id("eng"), ts_ms=_now_ms() if ts_ms is None else ts_ms,
        unit_id=unit_id, screen_time_s=screen_time_s, messages=messages)
    decode_engagement(encode_event(event))
    return event


def _http_options(base_url: str, token: str, timeout_s: float) -> dict[str, Any]:
    return {"base_url": base_url.rstrip("/"), "timeout": httpx.Timeout(timeout_s),
            "headers": {"authorization": f"Bearer {token}",
                        "content-type": "application/json"},
            "limits": httpx.Limits(max_keepalive_connections=16, keepalive_expiry=60.0)}


class SwitchboardClient(_Core):
    """Allocation, feedback, engagement and fallback-exposure logging against ``base_url``
    with a bearer ``token`` (one keep-alive ``httpx.Client``; thread-safe)."""

    def __init__(self, base_url: str, token: str, *, timeout_s: float = 0.05,
                 fallback_arm: str = "gpt35", retries: int = 2, backoff_s: float = 0.02,
                 max_pending_exposures: int = 100_000,
                 transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(timeout_s=timeout_s, fallback_arm=fallback_arm, retries=retries,
                         backoff_s=backoff_s, max_pending_exposures=max_pending_exposures)
        self._http = httpx.Client(**_http_options(base_url, token, timeout_s),
                                  transport=transport)

    def _run(self, step: Step) -> Any:
        outcome: Outcome | None = None
        try:
            while True:
                need = step.send(outcome) if outcome is not None else next(step)
                if isinstance(need, _Sleep):
                    time.sleep(need.seconds)
                    outcome = (None, None)
                    continue
                try:
                    outcome = (self._http.post(need.path, content=need.body), None)
                except httpx.TransportError as exc:
                    outcome = (None, exc)
        except StopIteration as stop:
            return stop.value

    def allocate(self, unit_id: str, conversation_id: str, *, text: str | None = None,
                 embedding: Sequence[float] | None = None,
                 eligible: Sequence[str] | None = None, experiment_id: str | None = None,
                 return_scores: bool = False, ts_ms: int | None = None) -> Allocation:
        """An arm for the conversation; ``fallback_arm`` (logged as an exposure) when the
        server times out, cannot be reached or fails."""
        return self._run(self._allocate(  # type: ignore[no-any-return]
            unit_id, conversation_id, text=text, embedding=embedding, eligible=eligible,
            experiment_id=experiment_id, return_scores=return_scores, ts_ms=ts_ms))

    def feedback(self, decision_id: str, unit_id: str, conversation_id: str, *,
                 retried: bool | None = None, rating: int | None = None,
                 conversation_length: int | None = None, ts_ms: int | None = None,
                 event_id: str | None = None) -> str:
        """Send feedback on a decision; returns its event id. Raises
        :class:`~bandit.errors.InvalidInputError` (before sending) for an invalid event,
        :class:`AllocationRejected` on a 4xx, :class:`DeliveryFailed` after the retries."""
        event = make_feedback(decision_id, unit_id, conversation_id, retried=retried,
                              rating=rating, conversation_length=conversation_length,
                              ts_ms=ts_ms, event_id=event_id)
        return self._run(self._send([event]))[0]  # type: ignore[no-any-return]

    def engagement(self, unit_id: str, *, screen_time_s: float, messages: int,
                   ts_ms: int | None = None, event_id: str | None = None) -> str:
        """Send a unit's session activity; returns its event id (errors as :meth:`feedback`)."""
        event = make_engagement(unit_id, screen_time_s=screen_time_s, messages=messages,
                                ts_ms=ts_ms, event_id=event_id)
        return self._run(self._send([event]))[0]  # type: ignore[no-any-return]

    def send(self, events: Sequence[FeedbackEvent | EngagementEvent]) -> list[str]:
        """Send many events (batched per kind); returns their event ids."""
        return self._run(self._send(list(events)))  # type: ignore[no-any-return]

    def flush_exposures(self) -> int:
        """Post the queued fallback exposures now; returns how many the server accepted
        (raises :class:`DeliveryFailed` if it still cannot be reached)."""
        return self._run(self._flush(raise_errors=True))  # type: ignore[no-any-return]

    def close(self) -> None:
        """Post what is still queued (best effort), then close the connections."""
        if self._exposures:
            self._run(self._flush(raise_errors=False))
        self._http.close()

    def __enter__(self) -> SwitchboardClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class AsyncSwitchboardClient(_Core):
    """:class:`SwitchboardClient` for asyncio (one ``httpx.AsyncClient``): the same
    methods as coroutines, the same behaviour."""

    def __init__(self, base_url: str, token: str, *, timeout_s: float = 0.05,
                 fallback_arm: str = "gpt35", retries: int = 2, backoff_s: float = 0.02,
                 max_pending_exposures: int = 100_000,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(timeout_s=timeout_s, fallback_arm=fallback_arm, retries=retries,
                         backoff_s=backoff_s, max_pending_exposures=max_pending_exposures)
        self._http = httpx.AsyncClient(**_http_options(base_url, token, timeout_s),
                                       transport=transport)

    async def _run(self, step: Step) -> Any:
        outcome: Outcome | None = None
        try:
            while True:
                need = step.send(outcome) if outcome is not None else next(step)
                if isinstance(need, _Sleep):
                    await asyncio.sleep(need.seconds)
                    outcome = (None, None)
                    continue
                try:
                    outcome = (await self._http.post(need.path, content=need.body), None)
                except httpx.TransportError as exc:
                    outcome = (None, exc)
        except StopIteration as stop:
            return stop.value

    async def allocate(self, unit_id: str, conversation_id: str, *, text: str | None = None,
                       embedding: Sequence[float] | None = None,
                       eligible: Sequence[str] | None = None,
                       experiment_id: str | None = None, return_scores: bool = False,
                       ts_ms: int | None = None) -> Allocation:
        """See :meth:`SwitchboardClient.allocate`."""
        return await self._run(self._allocate(  # type: ignore[no-any-return]
            unit_id, conversation_id, text=text, embedding=embedding, eligible=eligible,
            experiment_id=experiment_id, return_scores=return_scores, ts_ms=ts_ms))

    async def feedback(self, decision_id: str, unit_id: str, conversation_id: str, *,
                       retried: bool | None = None, rating: int | None = None,
                       conversation_length: int | None = None, ts_ms: int | None = None,
                       event_id: str | None = None) -> str:
        """See :meth:`SwitchboardClient.feedback`."""
        event = make_feedback(decision_id, unit_id, conversation_id, retried=retried,
                              rating=rating, conversation_length=conversation_length,
                              ts_ms=ts_ms, event_id=event_id)
        return (await self._run(self._send([event])))[0]  # type: ignore[no-any-return]

    async def engagement(self, unit_id: str, *, screen_time_s: float, messages: int,
                         ts_ms: int | None = None, event_id: str | None = None) -> str:
        """See :meth:`SwitchboardClient.engagement`."""
        event = make_engagement(unit_id, screen_time_s=screen_time_s, messages=messages,
                                ts_ms=ts_ms, event_id=event_id)
        return (await self._run(self._send([event])))[0]  # type: ignore[no-any-return]

    async def send(self, events: Sequence[FeedbackEvent | EngagementEvent]) -> list[str]:
        """See :meth:`SwitchboardClient.send`."""
        return await self._run(self._send(list(events)))  # type: ignore[no-any-return]

    async def flush_exposures(self) -> int:
        """See :meth:`SwitchboardClient.flush_exposures`."""
        return await self._run(self._flush(raise_errors=True))  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        """Post what is still queued (best effort), then close the connections."""
        if self._exposures:
            await self._run(self._flush(raise_errors=False))
        await self._http.aclose()

    async def __aenter__(self) -> AsyncSwitchboardClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()
