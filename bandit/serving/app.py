"""The allocation server (FastAPI): ``/v1/allocate``, ``/v1/feedback``, ``/v1/engagement``,
``/v1/exposures``, ``/v1/arms``, ``/healthz`` (liveness), ``/readyz`` (readiness),
``/metrics`` and the API docs at ``/docs`` (Swagger UI served from the installed
``swagger-ui-bundle`` package: no CDN, works offline).

What an allocation or an event post means is decided in one place, the transport-free
:class:`~bandit.serving.allocator.Allocator`; the routes here and the inline HTTP
protocol (:mod:`bandit.serving.http`, which answers plain ``POST /v1/allocate`` and the
event posts under ``switchboard serve`` without an ASGI task) only carry bytes to it and
its :class:`~bandit.serving.allocator.Reply` back. The app hands its allocator to that
protocol through the ASGI lifespan state
(:data:`~bandit.serving.allocator.ALLOCATOR_STATE_KEY`). :class:`Edge`,
in front of FastAPI's middleware stack, enforces ``serve.max_body_bytes`` and counts
requests for ``/metrics``. See ``docs/serving.md``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.staticfiles import StaticFiles

from bandit.adapters.encoders import Encoder
from bandit.arms import Arm
from bandit.config import Config
from bandit.errors import InvalidInputError, RegistryError, UnknownArmError
from bandit.events import EngagementEvent, FeedbackEvent
from bandit.serving.allocator import ALLOCATOR_STATE_KEY, Allocator, EventSink, Reply
from bandit.serving.metrics import ServeMetrics
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

__all__ = ["AllocationAPI", "Edge", "create_app"]


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


_JSON = "application/json"


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status,
                    media_type=_JSON, headers=headers)


def _unprocessable(items: list[dict[str, str]]) -> Response:
    return _json({"detail": items}, 422)


def _invalid(exc: InvalidInputError) -> Response:
    return _unprocessable([{"field": exc.field, "msg": str(exc)}])


#: seconds a client should wait before retrying a change the registry file refused
REGISTRY_RETRY_AFTER_S = 5


def _registry_unavailable(exc: RegistryError) -> Response:
    """503: the shared registry file could not be updated, so nothing changed anywhere."""
    return _json({"detail": [{"field": "registry", "msg": f"arm change not applied: {exc}"}]},
                 503, {"Retry-After": str(REGISTRY_RETRY_AFTER_S)})


def _reply(reply: Reply) -> Response:
    return Response(reply.body, status_code=reply.status, media_type=_JSON,
                    headers=dict(reply.headers) if reply.headers else None)


def _auth(allocator: Allocator, request: Request, *, admin: bool = False) -> Response | None:
    denied = allocator.check_token(request.headers.get("authorization"), admin=admin)
    return None if denied is None else _reply(denied)


class Edge:
    """Pure-ASGI edge of the app, in front of FastAPI's middleware stack and router.

    * 413 when ``Content-Length`` or the streamed (chunked) body exceeds the limit — the
      body is counted while it is read, so a missing or lying header does not help;
    * counts requests and times them per route for ``/metrics``.

    Requests the inline HTTP protocol (:mod:`bandit.serving.http`) answers never get
    here; it applies the same limit and counts them in the same metrics.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, metrics: ServeMetrics) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
        else:
            await self._http(scope, receive, send)

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

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
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
    ``__call__`` goes through the edge first. :attr:`allocator` is the app's
    :class:`~bandit.serving.allocator.Allocator`.
    """

    edge: Edge | None = None
    #: what every route (and the inline HTTP protocol) answers with
    allocator: Allocator

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


def create_app(
    config: Config,
    *,
    arms: list[Arm] | None = None,
    sink: EventSink | None = None,
    encoder: Encoder | None = None,
    seed: int | list[int] | None = None,
    publisher_options: Mapping[str, Any] | None = None,
) -> AllocationAPI:
    """The allocation app around the allocator :meth:`Allocator.from_config
    <bandit.serving.allocator.Allocator.from_config>` builds from the same arguments."""
    allocator = Allocator.from_config(config, arms=arms, sink=sink, encoder=encoder, seed=seed,
                                      publisher_options=publisher_options)
    holder, sinks, distinct = allocator.holder, allocator.sinks, allocator.distinct_sinks

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[Mapping[str, Any]]:
        allocator.start()
        try:
            # the lifespan state reaches every connection's protocol (bandit.serving.http)
            yield {ALLOCATOR_STATE_KEY: allocator}
        finally:
            allocator.close()

    app = AllocationAPI(title="Switchboard allocation API", version="1",
                        description="Allocates conversations to expert LLMs and takes the "
                                    "feedback, engagement and fallback exposures that close "
                                    "the loop (see docs/serving.md).",
                        lifespan=lifespan, docs_url=None, redoc_url=None)
    app.allocator = allocator
    metrics = allocator.metrics

    @app.post("/v1/allocate", response_model=AllocateResponse,
              openapi_extra=_json_body_schema("AllocateRequest"),
              responses={**_responses(400, 401, 413, 422), 503: {
                  "model": ErrorResponse, "description": "No active arm for the unit's variant "
                  "(a server-side state; retry after Retry-After seconds, or fall back)"}})
    async def allocate(request: Request) -> Response:
        """Choose an arm for a conversation; returns the decision with its propensity.

        (Under ``switchboard serve`` a plain request is answered by the inline HTTP
        protocol through the same allocator; this route answers the rest identically.)
        """
        return _reply(await allocator.allocate(request.headers.get("authorization"),
                                               await request.body()))

    async def _events(request: Request, kind: str) -> Response:
        return _reply(allocator.ingest(request.headers.get("authorization"),
                                       await request.body(), kind))

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
        return _reply(allocator.exposures(request.headers.get("authorization"),
                                          await request.body()))

    @app.get("/v1/arms", response_model=list[ArmOut], responses=_responses(401))
    async def list_arms(request: Request) -> Response:
        """All arms (active and retired) with their kind and content features."""
        denied = _auth(allocator, request)
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
        denied = _auth(allocator, request, admin=True)
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
        denied = _auth(allocator, request, admin=True)
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
        reasons = allocator.readiness()
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
            # the design this server assigns units with; since_ms is null until its
            # first decision (when its design event is sent)
            "design": {"experiment_id": allocator.experiment_id,
                       "design_version": allocator.design_version,
                       "weights": allocator.design, "since_ms": allocator.design_since_ms},
            "ready": not allocator.readiness(),
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
    app.edge = Edge(app._inner, max_bytes=allocator.max_body_bytes, metrics=metrics)
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
