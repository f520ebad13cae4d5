"""The allocator: one door into allocation, with no HTTP framework in it.

:class:`Allocator` does what ``POST /v1/allocate`` and the event posts mean — bearer
token check, JSON parse, strict validation, sticky variant assignment, the variant's
policy choosing with its propensity, the decision event queued for Kafka, the answer
serialised — from the raw ``Authorization`` header and body bytes to a typed
:class:`Reply` (status, JSON body, extra headers). Every transport calls it: the
FastAPI routes (:mod:`bandit.serving.app`), the inline HTTP protocol
(:mod:`bandit.serving.http`) and any embedding without a server at all::

    allocator = Allocator.from_config(config, arms=arms, sink=sink, seed=1)
    reply = allocator.allocate_now("Bearer <token>", b'{"unit_id": ...}')

so that the rules (which status for which input, which field a 422 names, what is
published) live in one place, and the wire answer does not depend on the path a
request took. See ``docs/serving.md``.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
import orjson
from pydantic import TypeAdapter

from bandit.adapters.encoders import BatchingEncoder, Encoder, HashingEncoder
from bandit.arms import Arm
from bandit.config import Config
from bandit.errors import EventDecodeError, InvalidInputError
from bandit.events import (
    MAX_EVENT_BYTES,
    DecisionEvent,
    DesignEvent,
    EngagementEvent,
    Event,
    ExposureEvent,
    FeedbackEvent,
    decode_engagement,
    decode_feedback,
    design_version,
)
from bandit.policies.base import Choice
from bandit.serving.assignment import VariantAssigner
from bandit.serving.ids import DecisionIds
from bandit.serving.metrics import ServeMetrics
from bandit.serving.reloader import ModelHolder, ServedModel
from bandit.serving.schemas import AllocateRequest, ExposureIn, ValidationError, error_fields

__all__ = ["ALLOCATOR_STATE_KEY", "FALLBACK_VERSION", "POST_KINDS", "SINK_KINDS",
           "UNAVAILABLE_RETRY_AFTER_S", "Allocator", "EventSink", "Reply", "default_sinks"]

log = logging.getLogger(__name__)


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


class Reply(NamedTuple):
    """One answer: HTTP status, JSON body, extra headers (``Retry-After``,
    ``WWW-Authenticate``) or None. Content type is always ``application/json``."""

    status: int
    body: bytes
    headers: Mapping[str, str] | None = None


def _error(status: int, field: str, msg: str) -> Reply:
    return Reply(status, orjson.dumps({"detail": [{"field": field, "msg": msg}]}))


#: key of an app's allocator in the ASGI lifespan state, which the server passes to every
#: connection: how :func:`~bandit.serving.app.create_app` hands it to the inline protocol
ALLOCATOR_STATE_KEY = "switchboard.allocator"

#: the POST paths of the allocation API and the event kind each publishes
POST_KINDS: Mapping[str, str] = {"/v1/allocate": DecisionEvent.KIND,
                                 "/v1/feedback": FeedbackEvent.KIND,
                                 "/v1/engagement": EngagementEvent.KIND,
                                 "/v1/exposures": ExposureEvent.KIND}


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


#: every event kind an allocator publishes: the posted ones and its experiment's design
SINK_KINDS: tuple[str, ...] = (*POST_KINDS.values(), DesignEvent.KIND)


def default_sinks(config: Config, publisher_options: Mapping[str, Any] | None = None
                  ) -> dict[str, EventSink]:
    """One :class:`~bandit.serving.publisher.EventPublisher` per topic (every kind of
    :data:`SINK_KINDS`); decisions spill in ``serve.spill_dir`` itself, the other kinds in
    a subdirectory named after the kind."""
    from bandit.serving.publisher import EventPublisher

    k, sc = config.kafka, config.serve
    spill = Path(sc.spill_dir)
    plan = {DecisionEvent.KIND: (k.decisions_topic, spill, "conversation_id"),
            FeedbackEvent.KIND: (k.feedback_topic, spill / "feedback", "conversation_id"),
            EngagementEvent.KIND: (k.engagement_topic, spill / "engagement", "unit_id"),
            ExposureEvent.KIND: (k.exposures_topic, spill / "exposure", "unit_id"),
            DesignEvent.KIND: (k.designs_topic, spill / "design", "experiment_id")}
    return {kind: EventPublisher(k.bootstrap_servers, topic, directory, sc.publish_buffer,
                                 key_field=key, **(publisher_options or {}))
            for kind, (topic, directory, key) in plan.items()}


class Allocator:
    """Allocation and event intake for one experiment, transport-free.

    Holds the served model (:class:`~bandit.serving.reloader.ModelHolder`), one event
    sink per kind, the encoder, the variant assigner, the RNG, the tokens and the
    metrics. Its request methods take the raw ``Authorization`` header (or None) and the
    body bytes, and return a :class:`Reply`; they never raise for bad input. Call
    :meth:`start` before serving (publishers, reloader) and :meth:`close` after.

    The experiment's design (its variants' weights, :attr:`design`) is published as a
    :class:`~bandit.events.DesignEvent` just before the first decision under it, stamped
    with that decision's time, so the store's design periods start on the decisions'
    clock (see ``docs/serving.md``).
    """

    def __init__(self, config: Config, holder: ModelHolder, sinks: Mapping[str, EventSink],
                 encoder: Encoder, seed: int | list[int] | None = None) -> None:
        missing = [kind for kind in SINK_KINDS if kind not in sinks]
        if missing:
            raise InvalidInputError("sinks", sorted(sinks), f"must have a sink for {missing}")
        self.config = config
        self.holder = holder
        #: one sink per event kind (``decision``, ``feedback``, ``engagement``, ``exposure``,
        #: ``design``)
        self.sinks = dict(sinks)
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
        #: the largest request body a transport should accept (413 beyond)
        self.max_body_bytes = config.serve.max_body_bytes
        #: each sink once (tests pass one sink for every kind)
        self.distinct_sinks = distinct = list({id(s): s for s in sinks.values()}.values())
        self.metrics = ServeMetrics(holder.snapshot_age_s,
                                    lambda: float(sum(s.backlog for s in distinct)),
                                    lambda: float(sum(s.depth for s in distinct)),
                                    reload_counts=lambda: {"ok": holder.reloads,
                                                           "failed": holder.failed_reloads})
        self._decoders: dict[str, Callable[[bytes], Event]] = {
            FeedbackEvent.KIND: decode_feedback, EngagementEvent.KIND: decode_engagement}
        self.decision_ids = DecisionIds()
        self.kinds = {v.name: tuple(v.arm_kinds) for v in config.experiment.variants}
        #: the weights every unit is assigned with (every configured variant, 0 included)
        self.design = {v.name: float(v.weight) for v in config.experiment.variants}
        #: :func:`bandit.events.design_version` of :attr:`design`
        self.design_version = design_version(self.experiment_id, self.design.items())
        #: the time of the first decision under :attr:`design` (None: none yet, so its
        #: design event is still to be published)
        self.design_since_ms: int | None = None
        self._design_lock = threading.Lock()

    @classmethod
    def from_config(cls, config: Config, *, arms: list[Arm] | None = None,
                    sink: EventSink | None = None, encoder: Encoder | None = None,
                    seed: int | list[int] | None = None,
                    publisher_options: Mapping[str, Any] | None = None) -> Allocator:
        """The allocator ``config`` describes.

        ``arms`` seed the registry when no snapshot exists (snapshots carry their own);
        ``sink`` receives every event (decisions, feedback, engagement, exposures and the
        design: tests);
        by default each kind has an :class:`~bandit.serving.publisher.EventPublisher` on
        its topic (``publisher_options`` are passed to each); ``encoder`` defaults to the
        one named by ``serve.encoder``.
        """
        sc = config.serve
        holder = ModelHolder(config.policy, config.experiment, config.model.dir,
                             list(arms or []), sc.reload_interval_s)
        if sink is None:
            sinks = default_sinks(config, publisher_options)
        else:
            sinks = dict.fromkeys(SINK_KINDS, sink)
        if encoder is None:
            if sc.encoder == "hashing":
                encoder = HashingEncoder(config.policy.dim)
            else:
                from bandit.adapters.minilm import build_encoder

                encoder = build_encoder(sc.encoder, config.policy.dim, config.model.dir)
        return cls(config, holder, sinks, encoder, seed)

    def start(self) -> Allocator:
        """Start the publishers and the snapshot reloader."""
        for each in self.distinct_sinks:
            each.start()
        self.holder.start()
        return self

    def close(self) -> None:
        """Stop the reloader, drain the publishers (spilling what Kafka did not take) and
        stop a batching encoder."""
        self.holder.close()
        for each in self.distinct_sinks:
            each.close()
        if isinstance(self.encoder, BatchingEncoder):
            self.encoder.close()

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

    def post_now(self, path: str, authorization: str | None, body: bytes) -> Reply | None:
        """A POST to one of :data:`POST_KINDS` answered without awaiting anything; ``None``
        when an allocation must await the batching text encoder (:meth:`allocate_now`).
        Raises :class:`KeyError` for another path."""
        kind = POST_KINDS[path]
        if kind == DecisionEvent.KIND:
            return self.allocate_now(authorization, body)
        if kind == ExposureEvent.KIND:
            return self.exposures(authorization, body)
        return self.ingest(authorization, body, kind)

    def allocate_now(self, authorization: str | None, body: bytes) -> Reply | None:
        """:meth:`allocate` without awaiting anything (for a transport that answers from a
        callback); ``None`` when the request needs to await the batching text encoder
        (the caller then goes through :meth:`allocate`)."""
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
            return Reply(422, orjson.dumps({"detail": error_fields(exc)}))
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
            return Reply(503, orjson.dumps({"detail": [{"field": exc.field, "msg": exc.reason}]}),
                         {"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)})
        decision_id = self.decision_ids()
        if choice.policy_version == FALLBACK_VERSION:
            version = choice.policy_version
        elif model.source == "snapshot":
            version = model.policy_version
        else:
            version = f"prior:{choice.policy_version}"
        propensity = float(choice.propensity)
        ts_ms = req.ts_ms if req.ts_ms is not None else time.time_ns() // 1_000_000
        if self.design_since_ms is None:
            self._publish_design(ts_ms)
        self.sink.publish(DecisionEvent(
            event_id=f"dec-{decision_id}", decision_id=decision_id,
            ts_ms=ts_ms,
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
        return Reply(200, content)

    def _publish_design(self, ts_ms: int) -> None:
        """Queue the design event ahead of the first decision under the design (stamped
        ``ts_ms``, that decision's time); once per design (the lock keeps two threads
        from sending it twice; a second copy would be harmless, the learner records a
        design period only when the weights change)."""
        with self._design_lock:
            if self.design_since_ms is not None:
                return
            event = DesignEvent.of(event_id=f"des-{self.decision_ids()}", ts_ms=ts_ms,
                                   experiment_id=self.experiment_id, weights=self.design)
            self.sinks[DesignEvent.KIND].publish(event)
            self.design_since_ms = ts_ms
        log.info("experiment %s: design %s (weights %s) in force from %d", self.experiment_id,
                 self.design_version, self.design, ts_ms)

    def check_token(self, authorization: str | None, *, admin: bool = False) -> Reply | None:
        """None when ``authorization`` carries a configured bearer token (an admin one if
        ``admin``), else the 401/403 to answer. Constant time in the token's content."""
        scheme, _, token = (authorization or "").partition(" ")
        challenge = {"WWW-Authenticate": "Bearer"}
        if scheme.lower() != "bearer" or not token:
            return Reply(401, orjson.dumps({"detail": "missing bearer token"}), challenge)
        # the header arrives as latin-1 text: its bytes are the bytes the client sent
        given = token.encode("latin-1", "replace")
        is_admin = _any_equal(given, self._admin_tokens)
        is_plain = _any_equal(given, self._plain_tokens)
        if not (is_admin or is_plain):
            return Reply(401, orjson.dumps({"detail": "invalid bearer token"}), challenge)
        if admin and not is_admin:
            return Reply(403, orjson.dumps({"detail": "this token may not modify arms"}))
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
            return Reply(422, orjson.dumps({"detail": errors[:_MAX_ERRORS]}))
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
            return Reply(422, orjson.dumps({"detail": error_fields(exc)[:_MAX_ERRORS]}))
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
        return Reply(202, orjson.dumps({"accepted": len(events)}))

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
               eligible: list[str] | None) -> tuple[Choice, bool]:
        """The variant's policy's choice among its eligible arms, and whether it came from a
        stand-in (the uniform policy of a variant whose policy could not be built, or a
        uniform choice because the policy failed)."""
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
            return _uniform_choice(tuple(ids), self.rng), True


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


#: ``policy_version`` of a uniform choice made because the variant's policy failed
FALLBACK_VERSION = "fallback-uniform"


def _uniform_choice(arms: tuple[str, ...], rng: np.random.Generator) -> Choice:
    k = len(arms)
    return Choice(arm_id=arms[int(rng.integers(k))], propensity=1.0 / k,
                  policy_version=FALLBACK_VERSION, arms=arms,
                  probabilities=np.full(k, 1.0 / k), scores=np.zeros(k))
