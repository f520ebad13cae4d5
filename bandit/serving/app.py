"""The allocation server (FastAPI): ``/v1/allocate``, ``/v1/arms``, ``/healthz``, ``/metrics``.

The request path is kept lean: under ``switchboard serve`` a plain ``POST /v1/allocate``
is answered by the HTTP protocol itself (:mod:`bandit.serving.http`) through
:meth:`_Server.allocate_now`; on the ASGI path :class:`Edge` serves it before FastAPI's
middleware stack. Either way the body is parsed with orjson and validated by a strict
pydantic model, the variant comes from a salted hash, the variant's policy chooses, the
decision is queued for Kafka without waiting, and the response is serialised with
orjson. See ``docs/serving.md``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any, Protocol

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from bandit.arms import Arm
from bandit.config import Config
from bandit.encoders import BatchingEncoder, Encoder, HashingEncoder
from bandit.errors import InvalidInputError, RegistryError, UnknownArmError
from bandit.events import DecisionEvent
from bandit.serving.assignment import VariantAssigner
from bandit.serving.ids import DecisionIds
from bandit.serving.metrics import ServeMetrics
from bandit.serving.reloader import ModelHolder, ServedModel
from bandit.serving.schemas import (
    AllocateRequest,
    AllocateResponse,
    ArmOut,
    ArmRequest,
    ErrorResponse,
    HealthResponse,
    ValidationError,
    error_fields,
)

__all__ = ["AllocationAPI", "DecisionSink", "Edge", "create_app"]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class DecisionSink(Protocol):
    """Where decisions go (:class:`~bandit.serving.publisher.DecisionPublisher`)."""

    def publish(self, event: DecisionEvent) -> None: ...

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


class Edge:
    """Pure-ASGI edge of the app, in front of FastAPI's middleware stack and router.

    * 413 when ``Content-Length`` or the streamed (chunked) body exceeds the limit — the
      body is counted while it is read, so a missing or lying header does not help;
    * counts requests and times them per route for ``/metrics``;
    * serves ``POST /v1/allocate`` itself (:meth:`_Server.allocate`): no routing, no
      dependency resolution, no Starlette request object, no middleware chain. The
      FastAPI route of the same path documents it (OpenAPI) and answers identically.
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
        elif self.server is not None and scope["path"] == "/v1/allocate" \
                and scope["method"] == "POST":
            await self._allocate(self.server, scope, receive, send)
        else:
            await self._other(scope, receive, send)

    async def _allocate(self, server: _Server, scope: Scope, receive: Receive,
                        send: Send) -> None:
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
            status, content, extra = await server.allocate(authorization, body)
            headers = [(b"content-type", b"application/json"),
                       (b"content-length", str(len(content)).encode())]
            if extra:
                headers.extend((k.lower().encode(), v.encode()) for k, v in extra.items())
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": content})
        finally:
            self.metrics.request("/v1/allocate", status, time.perf_counter() - t0)

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


def _route_label(path: str) -> str:
    if path.startswith("/v1/arms/"):
        return "/v1/arms/{arm_id}"
    if path in ("/v1/allocate", "/v1/arms", "/healthz", "/metrics", "/openapi.json", "/docs"):
        return path
    return "other"


class _Server:
    """State shared by the handlers of one app."""

    def __init__(self, config: Config, holder: ModelHolder, sink: DecisionSink,
                 encoder: Encoder, seed: int | list[int] | None) -> None:
        self.config = config
        self.holder = holder
        self.sink = sink
        self.encoder = encoder
        self.assigner = VariantAssigner(config.experiment)
        self.rng = np.random.default_rng(np.random.SeedSequence(seed))
        self.tokens = frozenset(config.serve.tokens)
        self.admin_tokens = frozenset(config.serve.admin_tokens)
        self.read_tokens = self.tokens | self.admin_tokens
        self.max_text = config.serve.max_text_chars
        self.experiment_id = config.experiment.id
        self.metrics = ServeMetrics(holder.snapshot_age_s, lambda: float(sink.backlog),
                                    lambda: float(sink.depth),
                                    reload_counts=lambda: {"ok": holder.reloads,
                                                           "failed": holder.failed_reloads})
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

    def check_token(self, authorization: str | None, *, admin: bool
                    ) -> tuple[int, bytes, dict[str, str] | None] | None:
        scheme, _, token = (authorization or "").partition(" ")
        challenge = {"WWW-Authenticate": "Bearer"}
        if scheme.lower() != "bearer" or not token:
            return 401, orjson.dumps({"detail": "missing bearer token"}), challenge
        if token not in self.read_tokens:
            return 401, orjson.dumps({"detail": "invalid bearer token"}), challenge
        if admin and token not in self.admin_tokens:
            return 403, orjson.dumps({"detail": "this token may not modify arms"}), None
        return None

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
                raise InvalidInputError("eligible", None,
                                        f"no active arm of kinds {list(kinds)} is registered")
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
            413: "Request body too large", 422: "Validation error naming the field",
            503: "The shared arm registry file could not be updated (nothing changed); "
                 "retry after Retry-After seconds"}
    return {c: {"model": ErrorResponse, "description": text[c]} for c in codes}


def create_app(
    config: Config,
    *,
    arms: list[Arm] | None = None,
    sink: DecisionSink | None = None,
    encoder: Encoder | None = None,
    seed: int | list[int] | None = None,
    publisher_options: dict[str, Any] | None = None,
) -> FastAPI:
    """Build the allocation app.

    ``arms`` seed the registry when no snapshot exists (snapshots carry their own);
    ``sink`` defaults to a :class:`~bandit.serving.publisher.DecisionPublisher` on
    ``kafka.decisions_topic``; ``encoder`` to the one named by ``serve.encoder``.
    """
    sc = config.serve
    holder = ModelHolder(config.policy, config.experiment, sc.snapshot_dir, list(arms or []),
                         sc.reload_interval_s)
    if sink is None:
        from bandit.serving.publisher import DecisionPublisher

        sink = DecisionPublisher(config.kafka.bootstrap_servers, config.kafka.decisions_topic,
                                 sc.spill_dir, sc.publish_buffer, **(publisher_options or {}))
    if encoder is None:
        if sc.encoder == "hashing":
            encoder = HashingEncoder(config.policy.dim)
        else:
            from bandit.adapters.encoder import build_encoder

            encoder = build_encoder(sc.encoder, config.policy.dim, sc.snapshot_dir)
    server = _Server(config, holder, sink, encoder, seed)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        server.sink.start()
        holder.start()
        try:
            yield
        finally:
            holder.close()
            server.sink.close()
            if isinstance(server.encoder, BatchingEncoder):
                server.encoder.close()

    app = AllocationAPI(title="Switchboard allocation API", version="1",
                  description="Allocates conversations to expert LLMs (see docs/serving.md).",
                  lifespan=lifespan)
    app.state.server = server
    metrics = server.metrics

    @app.post("/v1/allocate", response_model=AllocateResponse,
              openapi_extra=_json_body_schema("AllocateRequest"),
              responses=_responses(400, 401, 413, 422))
    async def allocate(request: Request) -> Response:
        """Choose an arm for a conversation; returns the decision with its propensity.

        (Served by the ASGI fast path in :class:`Edge`; this route documents it and
        handles it identically if the fast path is bypassed.)
        """
        status, content, headers = await server.allocate(
            request.headers.get("authorization"), await request.body())
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

    @app.get("/healthz", response_model=HealthResponse)
    async def healthz() -> Response:
        """Liveness plus which model is served and whether decisions reach Kafka."""
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
            "publisher": {"healthy": server.sink.healthy, "buffer": server.sink.depth,
                          "spill_backlog": server.sink.backlog,
                          "last_error": getattr(server.sink, "last_error", None)},
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
        for model_cls in (AllocateRequest, ArmRequest):
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
    app.edge = Edge(app._inner, max_bytes=sc.max_body_bytes, metrics=metrics, server=server)
    return app
