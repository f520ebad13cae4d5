"""The allocation server (FastAPI): ``/v1/allocate``, ``/v1/feedback``, ``/v1/engagement``,
``/v1/exposures``, ``/v1/arms``, ``/healthz`` (liveness), ``/readyz`` (readiness),
``/metrics`` and the API docs at ``/docs`` (Swagger UI served from the installed
``swagger-ui-bundle`` package: no CDN, works offline).

The request path is kept lean: under ``switchboard serve`` a plain ``POST /v1/allocate``
is answered by the HTTP protocol itself (:mod:`bandit.serving.http`) through
:meth:`_Server.allocate_now`; on the ASGI path :class:`Edge` serves it before FastAPI's
middleware stack. Either way the body is parsed with orjson and validated by a strict
pydantic model, the variant comes from a salted hash, the variant's policy chooses, the
decision is queued for Kafka without waiting, and the response is serialised with
orjson. Feedback, engagement and fallback exposures posted over HTTP are validated by the
same decoders as the Kafka topics (:mod:`bandit.events`) and published through the same
non-blocking spill-to-disk path as decisions. See ``docs/serving.md``.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, Response
from pydantic import TypeAdapter
from starlette.concurrency import run_in_threadpool
from starlette.staticfiles import StaticFiles

from bandit.adapters.encoders import BatchingEncoder, Encoder, HashingEncoder
from bandit.arms import Arm
from bandit.config import Config
from bandit.errors import EventDecodeError, InvalidInputError, RegistryError, UnknownArmError
from bandit.events import (
    MAX_EVENT_BYTES,
    DecisionEvent,
    EngagementEvent,
    Event,
    ExposureEvent,
    FeedbackEvent,
    decode_engagement,
    decode_feedback,
)
from bandit.serving.assignment import VariantAssigner
from bandit.serving.ids import DecisionIds
from bandit.serving.metrics import ServeMetrics
from bandit.serving.reloader import ModelHolder, ServedModel
from bandit.serving.schemas import (
    AllocateRequest,
    AllocateResponse,
    ArmOut,
    ArmRequest,
    EngagementIn,
    ErrorResponse,
    EventsAccepted,
    ExposureIn,
    FeedbackIn,
    HealthResponse,
    ReadyResponse,
    ValidationError,
    error_fields,
)

__all__ = ["AllocationAPI", "Edge", "EventSink", "create_app"]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class EventSink(Protocol):
    """Where events go (:class:`~bandit.serving.publisher.EventPublisher`, one per topic)."""

    def publish(self, event: Event) -> None: ...

    @property
    def depth(self) -> int: ...

    @property
    def backlog(self) -> int: ...

    @property
    def healthy(self) -> bool: ...

    def start(self) -> Any: ...

    def close(self, timeout_s: float = 5.0) -> None: ...


_JSON = "application/json"


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status,
                    media_type=_JSON, headers=headers)


def _unprocessable(items: list[dict[str, str]]) -> Response:
    return _json({"detail": items}, 422)


#: (status, JSON body, extra headers) of one answer
Reply = tuple[int, bytes, dict[str, str] | None]


def _error(status: int, field: str, msg: str) -> Reply:
    return status, orjson.dumps({"detail": [{"field": field, "msg": msg}]}), None


def _invalid(exc: InvalidInputError) -> Response:
    return _unprocessable([{"field": exc.field, "msg": str(exc)}])


#: seconds a client should wait before retrying a change the registry file refused
REGISTRY_RETRY_AFTER_S = 5


def _registry_unavailable(exc: RegistryError) -> Response:
    """503: the shared registry file could not be updated, so nothing changed anywhere."""
    return _json({"detail": [{"field": "registry", "msg": f"arm change not applied: {exc}"}]},
                 503, {"Retry-After": str(REGISTRY_RETRY_AFTER_S)})


#: POST paths :class:`Edge` serves itself, with the event kind of the event endpoints
_DIRECT: dict[str, str] = {"/v1/allocate": DecisionEvent.KIND,
                           "/v1/feedback": FeedbackEvent.KIND,
                           "/v1/engagement": EngagementEvent.KIND,
                           "/v1/exposures": ExposureEvent.KIND}


class Edge:
    """Pure-ASGI edge of the app, in front of FastAPI's middleware stack and router.

    * 413 when ``Content-Length`` or the streamed (chunked) body exceeds the limit — the
      body is counted while it is read, so a missing or lying header does not help;
    * counts requests and times them per route for ``/metrics``;
    * serves ``POST /v1/allocate`` (:meth:`_Server.allocate`) and the event endpoints
      (:meth:`_Server.ingest`, :meth:`_Server.exposures`) itself: no routing, no
      dependency resolution, no Starlette request object, no middleware chain. The
      FastAPI routes of the same paths document them (OpenAPI) and answer identically.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, metrics: ServeMetrics,
                 server: _Server | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.metrics = metrics
        self.server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
        elif self.server is not None and scope["method"] == "POST" \
                and scope["path"] in _DIRECT:
            await self._direct(self.server, scope, receive, send)
        else:
            await self._other(scope, receive, send)

    async def _direct(self, server: _Server, scope: Scope, receive: Receive,
                      send: Send) -> None:
        """A POST the server answers itself: allocation, or events (the FastAPI routes of
        the same paths document them and answer identically if reached)."""
        path = scope["path"]
        t0 = time.perf_counter()
        status = 0
        try:
            declared: int | None = None
            authorization: str | None = None
            for name, value in scope["headers"]:
                if name == b"content-length" and declared is None:
                    try:
                        declared = int(value)
                    except ValueError:
                        declared = -1
                elif name == b"authorization" and authorization is None:
                    authorization = value.decode("latin-1")
            if declared is not None and (declared < 0 or declared > self.max_bytes):
                status = await self._too_large(send, declared)
                return
            body = await self._read_body(receive, send)
            if isinstance(body, int):
                status = body
                return
            if path == "/v1/allocate":
                status, content, extra = await server.allocate(authorization, body)
            else:
                status, content, extra = server.events_now(path, authorization, body)
            headers = [(b"content-type", b"application/json"),
                       (b"content-length", str(len(content)).encode())]
            if extra:
                headers.extend((k.lower().encode(), v.encode()) for k, v in extra.items())
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": content})
        finally:
            self.metrics.request(path, status, time.perf_counter() - t0)

    async def _read_body(self, receive: Receive, send: Send) -> bytes | int:
        """The whole body, or the status already answered (413; 0 on disconnect)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return 0
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await self._too_large(send, size)
            if not message.get("more_body", False):
                if not chunks:
                    return bytes(chunk)
                chunks.append(chunk)
                return b"".join(chunks)
            chunks.append(chunk)

    async def _other(self, scope: Scope, receive: Receive, send: Send) -> None:
        t0 = time.perf_counter()
        route = _route_label(scope.get("path", ""))
        status_box = [0]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_box[0] = int(message["status"])
            await send(message)

        try:
            declared = None
            for name, value in scope.get("headers", ()):
                if name == b"content-length":
                    try:
                        declared = int(value)
                    except ValueError:
                        declared = -1
                    break
            if declared is not None and (declared < 0 or declared > self.max_bytes):
                status_box[0] = await self._too_large(send, declared)
                return
            if scope.get("method") in ("POST", "PUT", "PATCH", "DELETE"):
                body = await self._read_body(receive, send)
                if isinstance(body, int):
                    status_box[0] = body
                    return
                sent = False

                async def replay() -> Message:
                    nonlocal sent
                    if sent:
                        return await receive()
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}

                await self.app(scope, replay, send_wrapper)
            else:
                await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.request(route, status_box[0], time.perf_counter() - t0)

    async def _too_large(self, send: Send, size: int) -> int:
        body = orjson.dumps({"detail": [{"field": "body", "msg": f"request body must be at most "
                                         f"{self.max_bytes} bytes, got {size}"}]})
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
        return 413


class AllocationAPI(FastAPI):
    """The FastAPI app with :class:`Edge` in front of its whole middleware stack.

    Still a :class:`~fastapi.FastAPI` (routes, OpenAPI, lifespan, ``app.state``); only
    ``__call__`` goes through the edge first.
    """

    edge: Edge | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        edge = self.edge
        if edge is None:
            await super().__call__(scope, receive, send)
        else:
            await edge(scope, receive, send)

    async def _inner(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)


_ROUTES = frozenset({"/v1/allocate", "/v1/feedback", "/v1/engagement", "/v1/exposures",
                     "/v1/arms", "/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"})


def _route_label(path: str) -> str:
    if path.startswith("/v1/arms/"):
        return "/v1/arms/{arm_id}"
    if path.startswith("/docs/"):
        return "/docs"
    if path in _ROUTES:
        return path
    return "other"


#: seconds a client should wait before retrying while the server cannot allocate
UNAVAILABLE_RETRY_AFTER_S = 5


class _Unavailable(Exception):
    """The server cannot allocate right now (a server-side state: 503, not the caller's fault)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


def _any_equal(given: bytes, allowed: tuple[bytes, ...]) -> bool:
    """Whether ``given`` is one of ``allowed``, in time independent of where they differ:
    every candidate is compared with :func:`hmac.compare_digest`, none skipped."""
    found = False
    for token in allowed:
        found |= hmac.compare_digest(given, token)
    return found


def _field_in(where: str, field: str) -> str:
    """``field`` of the batch item ``where`` (``[3].rating``); the item itself for ``event``."""
    if field == "event":
        return where or "body"
    return f"{where}.{field}" if where else field


class _Server:
    """State shared by the handlers of one app."""

    def __init__(self, config: Config, holder: ModelHolder, sinks: dict[str, EventSink],
                 encoder: Encoder, seed: int | list[int] | None) -> None:
        self.config = config
        self.holder = holder
        #: one sink per event kind (``decision``, ``feedback``, ``engagement``, ``exposure``)
        self.sinks = sinks
        self.sink = sinks[DecisionEvent.KIND]
        self.encoder = encoder
        self.assigner = VariantAssigner(config.experiment)
        self.rng = np.random.default_rng(np.random.SeedSequence(seed))
        # bytes, compared in constant time (:func:`_any_equal`); never logged
        self._admin_tokens = tuple(t.encode() for t in config.serve.admin_tokens)
        self._plain_tokens = tuple(t.encode() for t in config.serve.tokens)
        self.max_text = config.serve.max_text_chars
        self.max_skew_ms = int(config.serve.max_decision_skew_s * 1000)
        self.experiment_id = config.experiment.id
        distinct = list({id(s): s for s in sinks.values()}.values())
        self.metrics = ServeMetrics(holder.snapshot_age_s,
                                    lambda: float(sum(s.backlog for s in distinct)),
                                    lambda: float(sum(s.depth for s in distinct)),
                                    reload_counts=lambda: {"ok": holder.reloads,
                                                           "failed": holder.failed_reloads})
        self._decoders: dict[str, Callable[[bytes], Event]] = {
            FeedbackEvent.KIND: decode_feedback, EngagementEvent.KIND: decode_engagement}
        self.decision_ids = DecisionIds()
        self.kinds = {v.name: tuple(v.arm_kinds) for v in config.experiment.variants}

    async def allocate(self, authorization: str | None, body: bytes) -> Reply:
        """The whole allocation: auth, parse, validate, assign, choose, publish, respond."""
        begun = self._begin(authorization, body)
        if not isinstance(begun, _Begun):
            return begun
        model = self.holder.model
        try:
            x = await self.context(begun.req, model)
        except InvalidInputError as exc:
            return _error(422, exc.field, str(exc))
        return self._finish(begun, model, x)

    def answer_now(self, path: str, authorization: str | None, body: bytes) -> Reply | None:
        """A POST of :data:`_DIRECT` answered without an event-loop turn; ``None`` when an
        allocation must await the batching text encoder (see :meth:`allocate_now`)."""
        if path == "/v1/allocate":
            return self.allocate_now(authorization, body)
        return self.events_now(path, authorization, body)

    def events_now(self, path: str, authorization: str | None, body: bytes) -> Reply:
        """``POST /v1/feedback``, ``/v1/engagement`` or ``/v1/exposures``."""
        if path == "/v1/exposures":
            return self.exposures(authorization, body)
        return self.ingest(authorization, body, _DIRECT[path])

    def allocate_now(self, authorization: str | None, body: bytes) -> Reply | None:
        """:meth:`allocate` without an event-loop turn, for the inline HTTP fast path;
        ``None`` when the request needs to await the batching text encoder (the caller
        then goes through :meth:`allocate`)."""
        begun = self._begin(authorization, body)
        if not isinstance(begun, _Begun):
            return begun
        if begun.req.text is not None and isinstance(self.encoder, BatchingEncoder):
            return None
        model = self.holder.model
        try:
            x = self._context_now(begun.req, model)
        except InvalidInputError as exc:
            return _error(422, exc.field, str(exc))
        return self._finish(begun, model, x)

    def _begin(self, authorization: str | None, body: bytes) -> Reply | _Begun:
        """Auth, JSON, schema and experiment checks: an error reply or the request."""
        denied = self.check_token(authorization, admin=False)
        if denied is not None:
            return denied
        t0 = time.perf_counter()
        c0 = time.thread_time()
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return _error(422, "body", f"is not valid JSON ({exc})")
        try:
            req = AllocateRequest.model_validate(obj)
        except ValidationError as exc:
            return 422, orjson.dumps({"detail": error_fields(exc)}), None
        if req.experiment_id is not None and req.experiment_id != self.experiment_id:
            return _error(422, "experiment_id", f"unknown experiment {req.experiment_id!r} "
                                                f"(this server runs {self.experiment_id!r})")
        if req.ts_ms is not None:
            now = time.time_ns() // 1_000_000
            if abs(req.ts_ms - now) > self.max_skew_ms:
                return _error(422, "ts_ms", f"must be within {self.max_skew_ms / 1000:g} s of the "
                              f"server's clock ({now}; serve.max_decision_skew_s), "
                              f"got {req.ts_ms}")
        return _Begun(req, t0, c0)

    def _finish(self, begun: _Begun, model: ServedModel, x: np.ndarray) -> Reply:
        """Assign, choose, publish and respond (``x`` is the request's context)."""
        req = begun.req
        encoded = req.text is not None
        t1 = time.perf_counter()
        c1 = time.thread_time() if encoded else 0.0  # a system call: only when needed
        try:
            variant = self.assigner.assign(req.unit_id).name
            choice, fallback = self.choose(model, variant, x, req.eligible)
        except InvalidInputError as exc:
            return _error(422, exc.field, str(exc))
        except _Unavailable as exc:
            self.metrics.unavailable.inc()
            return self.unavailable(exc)
        decision_id = self.decision_ids()
        if isinstance(choice, _UniformChoice):
            version = choice.policy_version
        elif model.source == "snapshot":
            version = model.policy_version
        else:
            version = f"prior:{choice.policy_version}"
        propensity = float(choice.propensity)
        self.sink.publish(DecisionEvent(
            event_id=f"dec-{decision_id}", decision_id=decision_id,
            ts_ms=req.ts_ms if req.ts_ms is not None else time.time_ns() // 1_000_000,
            unit_id=req.unit_id,
            conversation_id=req.conversation_id, experiment_id=self.experiment_id,
            variant=variant, arm_id=choice.arm_id, propensity=propensity,
            policy_version=version, context=tuple(x.tolist()),
            eligible=tuple(choice.arms) if req.eligible is not None else (),
        ))
        out: dict[str, Any] = {
            "decision_id": decision_id, "experiment_id": self.experiment_id,
            "variant": variant, "arm_id": choice.arm_id, "propensity": propensity,
            "policy_version": version, "degraded": fallback,
        }
        if req.return_scores:
            out["scores"] = dict(zip(choice.arms, choice.scores.tolist(), strict=True))
            out["probabilities"] = dict(zip(choice.arms, choice.probabilities.tolist(),
                                            strict=True))
        content = orjson.dumps(out)
        metrics = self.metrics
        metrics.decisions.inc((variant, choice.arm_id))
        if fallback:
            metrics.fallbacks.inc()
        # compute excludes text encoding (its own batching wait) but includes the rest
        metrics.compute.observe(time.perf_counter() - begun.t0
                                - (t1 - begun.t0 if encoded else 0.0))
        metrics.cpu.observe(time.thread_time() - begun.c0
                            - (c1 - begun.c0 if encoded else 0.0))
        return 200, content, None

    @staticmethod
    def unavailable(exc: _Unavailable) -> Reply:
        return (503, orjson.dumps({"detail": [{"field": exc.field, "msg": exc.reason}]}),
                {"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)})

    def check_token(self, authorization: str | None, *, admin: bool
                    ) -> tuple[int, bytes, dict[str, str] | None] | None:
        scheme, _, token = (authorization or "").partition(" ")
        challenge = {"WWW-Authenticate": "Bearer"}
        if scheme.lower() != "bearer" or not token:
            return 401, orjson.dumps({"detail": "missing bearer token"}), challenge
        # the header arrives as latin-1 text: its bytes are the bytes the client sent
        given = token.encode("latin-1", "replace")
        is_admin = _any_equal(given, self._admin_tokens)
        is_plain = _any_equal(given, self._plain_tokens)
        if not (is_admin or is_plain):
            return 401, orjson.dumps({"detail": "invalid bearer token"}), challenge
        if admin and not is_admin:
            return 403, orjson.dumps({"detail": "this token may not modify arms"}), None
        return None

    def ingest(self, authorization: str | None, body: bytes, kind: str) -> Reply:
        """``POST /v1/feedback`` and ``/v1/engagement``: one event (a JSON object) or a batch
        (a JSON array), validated by the topic's own decoder, published all or none."""
        obj, denied = self._read_body(authorization, body, "event")
        if denied is not None:
            return denied
        if isinstance(obj, list):
            items = [(f"[{i}]", orjson.dumps(o)) for i, o in enumerate(obj)]
        else:
            items = [("", body)]
        decode = self._decoders[kind]
        events: list[Event] = []
        errors: list[dict[str, str]] = []
        for where, raw in items:
            if len(raw) > MAX_EVENT_BYTES:
                return _error(413, where or "body", f"an event must be at most {MAX_EVENT_BYTES} "
                                                    f"bytes, got {len(raw)}")
            try:
                events.append(decode(raw))
            except EventDecodeError as exc:
                errors.append({"field": _field_in(where, exc.field), "msg": str(exc)})
        if errors:
            return 422, orjson.dumps({"detail": errors[:_MAX_ERRORS]}), None
        return self._publish(kind, events)

    def exposures(self, authorization: str | None, body: bytes) -> Reply:
        """``POST /v1/exposures``: fallback allocations the serving tier made without this
        server; each unit gets the variant its sticky assignment gives it."""
        obj, denied = self._read_body(authorization, body, "exposure")
        if denied is not None:
            return denied
        many = isinstance(obj, list)
        try:
            reqs = _EXPOSURES.validate_python(obj) if many else [ExposureIn.model_validate(obj)]
        except ValidationError as exc:
            return 422, orjson.dumps({"detail": error_fields(exc)[:_MAX_ERRORS]}), None
        events: list[Event] = []
        for i, req in enumerate(reqs):
            if req.experiment_id is not None and req.experiment_id != self.experiment_id:
                return _error(422, f"[{i}].experiment_id" if many else "experiment_id",
                              f"unknown experiment {req.experiment_id!r} "
                              f"(this server runs {self.experiment_id!r})")
            events.append(ExposureEvent(
                event_id=req.event_id, ts_ms=req.ts_ms, unit_id=req.unit_id,
                conversation_id=req.conversation_id, experiment_id=self.experiment_id,
                variant=self.assigner.assign(req.unit_id).name, arm_id=req.arm_id,
                reason=req.reason))
        return self._publish(ExposureEvent.KIND, events)

    def _read_body(self, authorization: str | None, body: bytes, noun: str) -> tuple[Any, Reply | None]:
        """Authenticate a post of one ``noun`` or a batch of them and parse its JSON body;
        the reply is the 401/403/422 to send instead, or None."""
        denied = self.check_token(authorization, admin=False)
        if denied is not None:
            return None, denied
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return None, _error(422, "body", f"is not valid JSON ({exc})")
        if isinstance(obj, list) and not obj:
            return None, _error(422, "body", f"must be an {noun} or a non-empty array of {noun}s")
        return obj, None

    def _publish(self, kind: str, events: list[Event]) -> Reply:
        publish = self.sinks[kind].publish
        for event in events:
            publish(event)
        self.metrics.events.inc((kind,), len(events))
        return 202, orjson.dumps({"accepted": len(events)}), None

    def readiness(self) -> list[str]:
        """Why the server cannot allocate now (empty when it can)."""
        model = self.holder.model
        reasons = [f"variant {variant!r}: no active arm of kinds {list(kinds)}"
                   for variant, kinds in self.kinds.items()
                   if not model.variant_eligible(variant, kinds)]
        if self.encoder.dim != model.dim:
            reasons.append(f"model: the served model is {model.dim}-d but the encoder gives "
                           f"{self.encoder.dim}-d contexts")
        return reasons

    def auth(self, request: Request, *, admin: bool = False) -> Response | None:
        denied = self.check_token(request.headers.get("authorization"), admin=admin)
        if denied is None:
            return None
        status, content, headers = denied
        return Response(content, status_code=status, media_type=_JSON, headers=headers)

    async def context(self, req: AllocateRequest, model: ServedModel) -> np.ndarray:
        if req.text is not None and isinstance(self.encoder, BatchingEncoder):
            self._check_text(req.text, model)
            return np.asarray(await self.encoder.encode_one(req.text), dtype=np.float64)
        return self._context_now(req, model)

    def _context_now(self, req: AllocateRequest, model: ServedModel) -> np.ndarray:
        """The context of an embedding request, or of a text one with a direct encoder."""
        if req.embedding is not None:
            if len(req.embedding) != model.dim:
                raise InvalidInputError("embedding", len(req.embedding),
                                        f"must have length {model.dim} (the policy dimension)")
            return np.asarray(req.embedding, dtype=np.float64)
        text = req.text or ""
        self._check_text(text, model)
        return np.asarray(self.encoder.encode([text])[0], dtype=np.float64)

    def _check_text(self, text: str, model: ServedModel) -> None:
        if len(text) > self.max_text:
            raise InvalidInputError("text", f"<{len(text)} chars>",
                                    f"must be at most {self.max_text} characters")
        if self.encoder.dim != model.dim:
            raise InvalidInputError("text", "<text>", f"cannot be used: the encoder gives "
                                    f"{self.encoder.dim}-d contexts, the model needs {model.dim}")

    def choose(self, model: ServedModel, variant: str, x: np.ndarray,
               eligible: list[str] | None) -> tuple[Any, bool]:
        kinds = self.kinds[variant]
        if eligible is None:
            ids: tuple[str, ...] | list[str] = model.variant_eligible(variant, kinds)
            if not ids:
                raise _Unavailable("arms", f"no active arm of kinds {list(kinds)} is registered "
                                           f"for variant {variant!r}: register one with "
                                           f"POST /v1/arms")
        else:
            ids = model.arms.resolve_eligible(eligible, kinds)
        policy = model.policies[variant]
        try:
            return policy.choose(x, self.rng, ids), variant in model.fallbacks
        except InvalidInputError:
            raise
        except Exception as exc:  # a broken model must not turn into a 5xx
            log.exception("policy %s failed; choosing uniformly: %s", policy.name, exc)
            self.metrics.fallbacks.inc()
            return _uniform_choice(list(ids), self.rng), True


_EXPOSURES: TypeAdapter[list[ExposureIn]] = TypeAdapter(list[ExposureIn])

#: validation errors listed per answer (a batch of bad events gives the first ones)
_MAX_ERRORS = 50


class _Begun:
    """A parsed, validated allocation request and when its compute started."""

    __slots__ = ("c0", "req", "t0")

    def __init__(self, req: AllocateRequest, t0: float, c0: float) -> None:
        self.req = req
        self.t0 = t0
        self.c0 = c0


class _UniformChoice:
    def __init__(self, arms: list[str], rng: np.random.Generator) -> None:
        k = len(arms)
        self.arms = tuple(arms)
        self.arm_id = arms[int(rng.integers(k))]
        self.propensity = 1.0 / k
        self.policy_version = "fallback-uniform"
        self.scores = np.zeros(k)
        self.probabilities = np.full(k, 1.0 / k)


def _uniform_choice(arms: list[str], rng: np.random.Generator) -> _UniformChoice:
    return _UniformChoice(arms, rng)


def _json_body_schema(name: str) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {
        _JSON: {"schema": {"$ref": f"#/components/schemas/{name}"}}}}}


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {400: "Malformed request", 401: "Missing or invalid bearer token",
            403: "Token may not modify arms", 404: "Unknown arm",
            413: "Request body (or one event of a batch) too large",
            422: "Validation error naming the field (nothing of the request was accepted)",
            503: "The shared arm registry file could not be updated (nothing changed); "
                 "retry after Retry-After seconds"}
    return {c: {"model": ErrorResponse, "description": text[c]} for c in codes}


def _events_body(name: str) -> dict[str, Any]:
    """Request body of an event endpoint: one event, or a non-empty array of them."""
    ref = {"$ref": f"#/components/schemas/{name}"}
    return {"requestBody": {"required": True, "content": {_JSON: {"schema": {"oneOf": [
        ref, {"type": "array", "items": ref, "minItems": 1}]}}}}}


def _default_sinks(config: Config, publisher_options: dict[str, Any]) -> dict[str, EventSink]:
    """One :class:`~bandit.serving.publisher.EventPublisher` per topic; decisions spill in
    ``serve.spill_dir`` itself, the other kinds in a subdirectory named after the kind."""
    from bandit.serving.publisher import EventPublisher

    k, sc = config.kafka, config.serve
    spill = Path(sc.spill_dir)
    plan = {DecisionEvent.KIND: (k.decisions_topic, spill, "conversation_id"),
            FeedbackEvent.KIND: (k.feedback_topic, spill / "feedback", "conversation_id"),
            EngagementEvent.KIND: (k.engagement_topic, spill / "engagement", "unit_id"),
            ExposureEvent.KIND: (k.exposures_topic, spill / "exposure", "unit_id")}
    return {kind: EventPublisher(k.bootstrap_servers, topic, directory, sc.publish_buffer,
                                 key_field=key, **publisher_options)
            for kind, (topic, directory, key) in plan.items()}


def create_app(
    config: Config,
    *,
    arms: list[Arm] | None = None,
    sink: EventSink | None = None,
    encoder: Encoder | None = None,
    seed: int | list[int] | None = None,
    publisher_options: dict[str, Any] | None = None,
) -> FastAPI:
    """Build the allocation app.

    ``arms`` seed the registry when no snapshot exists (snapshots carry their own);
    ``sink`` receives every event (decisions, feedback, engagement, exposures: tests);
    by default each kind has an :class:`~bandit.serving.publisher.EventPublisher` on its
    topic (``publisher_options`` are passed to each); ``encoder`` defaults to the one
    named by ``serve.encoder``.
    """
    sc = config.serve
    holder = ModelHolder(config.policy, config.experiment, sc.snapshot_dir, list(arms or []),
                         sc.reload_interval_s)
    if sink is None:
        sinks = _default_sinks(config, publisher_options or {})
    else:
        sinks = dict.fromkeys((DecisionEvent.KIND, FeedbackEvent.KIND, EngagementEvent.KIND,
                               ExposureEvent.KIND), sink)
    if encoder is None:
        if sc.encoder == "hashing":
            encoder = HashingEncoder(config.policy.dim)
        else:
            from bandit.adapters.minilm import build_encoder

            encoder = build_encoder(sc.encoder, config.policy.dim, sc.snapshot_dir)
    server = _Server(config, holder, sinks, encoder, seed)
    distinct = list({id(s): s for s in sinks.values()}.values())

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        for each in distinct:
            each.start()
        holder.start()
        try:
            yield
        finally:
            holder.close()
            for each in distinct:
                each.close()
            if isinstance(server.encoder, BatchingEncoder):
                server.encoder.close()

    app = AllocationAPI(title="Switchboard allocation API", version="1",
                  description="Allocates conversations to expert LLMs and takes the feedback, "
                              "engagement and fallback exposures that close the loop "
                              "(see docs/serving.md).",
                  lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.server = server
    metrics = server.metrics

    @app.post("/v1/allocate", response_model=AllocateResponse,
              openapi_extra=_json_body_schema("AllocateRequest"),
              responses={**_responses(400, 401, 413, 422), 503: {
                  "model": ErrorResponse, "description": "No active arm for the unit's variant "
                  "(a server-side state; retry after Retry-After seconds, or fall back)"}})
    async def allocate(request: Request) -> Response:
        """Choose an arm for a conversation; returns the decision with its propensity.

        (Served by the ASGI fast path in :class:`Edge`; this route documents it and
        handles it identically if the fast path is bypassed.)
        """
        status, content, headers = await server.allocate(
            request.headers.get("authorization"), await request.body())
        return Response(content, status_code=status, media_type=_JSON, headers=headers)

    async def _events(request: Request, kind: str) -> Response:
        status, content, headers = server.ingest(request.headers.get("authorization"),
                                                 await request.body(), kind)
        return Response(content, status_code=status, media_type=_JSON, headers=headers)

    @app.post("/v1/feedback", status_code=202, response_model=EventsAccepted,
              openapi_extra=_events_body("FeedbackIn"), responses=_responses(401, 413, 422))
    async def feedback(request: Request) -> Response:
        """Feedback on decisions: one ``FeedbackEvent`` or an array of them, exactly as on
        the feedback topic and validated by the same rules; all are queued or none.

        Published like decisions (never blocking; spilled to disk while Kafka is down, sent
        when it is back). Joining — an unknown ``decision_id``, feedback after the
        attribution window — follows the learner's rules, as for the topic.
        """
        return await _events(request, FeedbackEvent.KIND)

    @app.post("/v1/engagement", status_code=202, response_model=EventsAccepted,
              openapi_extra=_events_body("EngagementIn"), responses=_responses(401, 413, 422))
    async def engagement(request: Request) -> Response:
        """Per-user session activity: one ``EngagementEvent`` or an array of them, exactly
        as on the engagement topic; all are queued or none."""
        return await _events(request, EngagementEvent.KIND)

    @app.post("/v1/exposures", status_code=202, response_model=EventsAccepted,
              openapi_extra=_events_body("ExposureIn"), responses=_responses(401, 413, 422))
    async def exposures(request: Request) -> Response:
        """Fallback allocations the serving tier made without this server (the Python
        client posts them once the server answers again): each becomes an
        ``ExposureEvent`` with the unit's assigned variant, stored for cohorts and never
        learnt from."""
        status, content, headers = server.exposures(request.headers.get("authorization"),
                                                    await request.body())
        return Response(content, status_code=status, media_type=_JSON, headers=headers)

    @app.get("/v1/arms", response_model=list[ArmOut], responses=_responses(401))
    async def list_arms(request: Request) -> Response:
        """All arms (active and retired) with their kind and content features."""
        denied = server.auth(request)
        if denied is not None:
            return denied
        return _json(holder.model.arms.to_list())

    @app.post("/v1/arms", status_code=201, response_model=ArmOut,
              openapi_extra=_json_body_schema("ArmRequest"),
              responses=_responses(401, 403, 413, 422, 503))
    async def register_arm(request: Request) -> Response:
        """Register (or update / re-activate) an arm; eligible from the next request.

        The arm is written to the shared registry file first, so every server (on its
        next reload poll) and the learner follow it.
        """
        denied = server.auth(request, admin=True)
        if denied is not None:
            return denied
        try:
            obj = orjson.loads(await request.body())
        except orjson.JSONDecodeError as exc:
            return _unprocessable([{"field": "body", "msg": f"is not valid JSON ({exc})"}])
        try:
            req = ArmRequest.model_validate(obj)
            arm = Arm(req.arm_id, kind=req.kind,
                      features=tuple(req.features) if req.features is not None else None)
            holder.check_features(arm)
            await run_in_threadpool(holder.register, arm)
        except ValidationError as exc:
            return _unprocessable(error_fields(exc))
        except InvalidInputError as exc:
            return _invalid(exc)
        except RegistryError as exc:
            return _registry_unavailable(exc)
        return _json(arm.to_row(), 201)

    @app.delete("/v1/arms/{arm_id}", response_model=ArmOut,
                responses=_responses(401, 403, 404, 503))
    async def retire_arm(arm_id: str, request: Request) -> Response:
        """Retire an arm: it stops being chosen; what was learnt about it is kept."""
        denied = server.auth(request, admin=True)
        if denied is not None:
            return denied
        try:
            arm = await run_in_threadpool(holder.retire, arm_id)
        except UnknownArmError as exc:
            return _json({"detail": [{"field": "arm_id", "msg": str(exc)}]}, 404)
        except RegistryError as exc:
            return _registry_unavailable(exc)
        return _json(arm.to_row())

    @app.get("/readyz", response_model=ReadyResponse, responses={503: {
        "model": ReadyResponse, "description": "Cannot allocate now (reasons listed)"}})
    async def readyz() -> Response:
        """Readiness: 200 when every variant has an active arm and the model fits the
        encoder, 503 with the reasons otherwise (route no traffic here)."""
        reasons = server.readiness()
        return _json({"status": "not ready" if reasons else "ready", "reasons": reasons},
                     503 if reasons else 200)

    @app.get("/healthz", response_model=HealthResponse)
    async def healthz() -> Response:
        """Liveness (always 200 while the process serves HTTP) plus which model is served
        and whether events reach Kafka; readiness is ``/readyz``."""
        model = holder.model
        registry = holder.registry
        degraded = model.source != "snapshot" or holder.snapshot_error is not None \
            or bool(model.fallbacks) or registry.error is not None
        return _json({
            "status": "degraded" if degraded else "ok",
            "model": {
                "source": model.source, "policy_version": model.policy_version,
                "dim": model.dim, "snapshot": str(holder.path),
                "snapshot_error": holder.snapshot_error,
                "snapshot_age_s": holder.snapshot_age_s(),
                "reloads": holder.reloads, "failed_reloads": holder.failed_reloads,
                "policies": {k: p.name for k, p in model.policies.items()},
                "policy_fallbacks": model.fallbacks,
                "arms_active": len(model.arms.active()),
                "registry": str(registry.path),
                "registry_revision": holder.registry_revision,
                "registry_error": registry.error,
            },
            "publisher": {"healthy": all(s.healthy for s in distinct),
                          "buffer": sum(s.depth for s in distinct),
                          "spill_backlog": sum(s.backlog for s in distinct),
                          "last_error": next((e for s in distinct
                                              if (e := getattr(s, "last_error", None))), None),
                          "topics": {kind: {"healthy": s.healthy, "buffer": s.depth,
                                            "spill_backlog": s.backlog}
                                     for kind, s in sinks.items()}},
            "ready": not server.readiness(),
        })

    @app.get("/metrics", response_class=Response,
             responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text"}})
    async def prometheus() -> Response:
        """Prometheus text exposition."""
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description,
                             routes=app.routes)
        comps = schema.setdefault("components", {})
        schemas = comps.setdefault("schemas", {})
        for model_cls in (AllocateRequest, ArmRequest, FeedbackIn, EngagementIn, ExposureIn):
            js = model_cls.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(js.pop("$defs", {}))
            schemas[model_cls.__name__] = js
        comps["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        for path, ops in schema.get("paths", {}).items():
            if path.startswith("/v1/"):
                for op in ops.values():
                    op["security"] = [{"bearer": []}]
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    _mount_docs(app)
    app.edge = Edge(app._inner, max_bytes=sc.max_body_bytes, metrics=metrics, server=server)
    return app


def _mount_docs(app: FastAPI) -> None:
    """Swagger UI at ``/docs`` with its assets served from the installed
    ``swagger-ui-bundle`` package under ``/docs/static`` (no CDN: works offline)."""
    import swagger_ui_bundle

    app.mount("/docs/static", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path),
              name="docs-static")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} — docs",
                                   swagger_js_url="/docs/static/swagger-ui-bundle.js",
                                   swagger_css_url="/docs/static/swagger-ui.css",
                                   swagger_favicon_url="/docs/static/favicon-32x32.png")
