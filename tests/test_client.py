"""One conformance suite run over both clients: :class:`SwitchboardClient` and
:class:`AsyncSwitchboardClient` (driven from a private event loop) must behave alike —
typed allocations, errors on misuse, fallback (logged as an exposure) on outage,
feedback and engagement validated locally, retries for transient failures only."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bandit.client import (
    AllocationRejected,
    AsyncSwitchboardClient,
    DeliveryFailed,
    SwitchboardClient,
    make_engagement,
    make_feedback,
)
from bandit.errors import InvalidInputError
from bandit.events import EngagementEvent, ExposureEvent, FeedbackEvent
from bandit.serving.app import create_app
from bandit.serving.assignment import VariantAssigner
from bandit.serving.live import LiveServer
from tests.test_serve import DIM, ListSink, base_arms, make_config


class _Loop:
    """An event loop on its own thread: the async client's coroutines run there."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class AsyncAsSync:
    """The async client behind the sync client's surface (every call awaited to the end)."""

    def __init__(self, loop: _Loop, *args: Any, **kwargs: Any) -> None:
        self._loop = loop
        self._client: AsyncSwitchboardClient = loop.run(self._make(*args, **kwargs))

    @staticmethod
    async def _make(*args: Any, **kwargs: Any) -> AsyncSwitchboardClient:
        return AsyncSwitchboardClient(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not asyncio.iscoroutinefunction(attr):
            return attr
        return lambda *a, **k: self._loop.run(attr(*a, **k))

    def close(self) -> None:
        self._loop.run(self._client.aclose())

    def __enter__(self) -> AsyncAsSync:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


Factory = Callable[..., Any]


@pytest.fixture(scope="module", params=["sync", "async"])
def make_client(request: pytest.FixtureRequest) -> Iterator[Factory]:
    if request.param == "sync":
        yield SwitchboardClient
        return
    loop = _Loop()
    try:
        yield lambda *a, **k: AsyncAsSync(loop, *a, **k)
    finally:
        loop.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, ListSink]]:
    sink = ListSink()
    app = create_app(make_config(tmp_path_factory.mktemp("client")), arms=base_arms(),
                     sink=sink, seed=2)
    with LiveServer(app) as live:
        yield live.url, sink


def _refused_url() -> tuple[socket.socket, str]:
    s = socket.socket()  # a bound port nobody listens on: connection refused
    s.bind(("127.0.0.1", 0))
    return s, f"http://127.0.0.1:{s.getsockname()[1]}"


def test_client_allocates_with_typed_result(make_client: Factory,
                                            server: tuple[str, ListSink]) -> None:
    url, _ = server
    with make_client(url, "dev-token", timeout_s=5) as client:
        r = client.allocate("user-1", "conv-1", embedding=[0.1] * DIM, return_scores=True)
        assert not r.fallback and r.decision_id and 0 < r.propensity <= 1
        assert r.scores is not None and r.arm_id in r.scores
        t = client.allocate("user-1", "conv-2", text="hello there")
        assert t.variant == r.variant  # sticky per unit
        assert client.pending_exposures == 0


def test_client_raises_on_misuse_naming_the_field(make_client: Factory,
                                                  server: tuple[str, ListSink]) -> None:
    url, _ = server
    with make_client(url, "dev-token", timeout_s=5) as client:
        with pytest.raises(AllocationRejected) as err:
            client.allocate("user-1", "conv-1", embedding=[0.1] * (DIM + 1))
        assert err.value.status == 422 and err.value.field == "embedding"
        with pytest.raises(InvalidInputError, match="embedding"):
            client.allocate("u", "c", embedding=[float("nan")] * DIM)
        with pytest.raises(InvalidInputError):
            client.allocate("u", "c")
        with pytest.raises(InvalidInputError, match="unit_id"):
            client.allocate("", "c", embedding=[0.0] * DIM)
    with make_client(url, "wrong", timeout_s=5) as client:
        with pytest.raises(AllocationRejected) as err:
            client.allocate("u", "c", embedding=[0.0] * DIM)
        assert err.value.status == 401
        with pytest.raises(AllocationRejected) as err:
            client.feedback("d", "u", "c", rating=3)
        assert err.value.status == 401
    for bad in ({"timeout_s": 0}, {"fallback_arm": ""}, {"retries": -1}, {"backoff_s": -1.0}):
        with pytest.raises(InvalidInputError, match=next(iter(bad))):
            make_client(url, "t", **bad)


def test_feedback_and_engagement_are_built_validated_and_delivered(
    make_client: Factory, server: tuple[str, ListSink],
) -> None:
    url, sink = server
    with make_client(url, "dev-token", timeout_s=5) as client:
        r = client.allocate("user-7", "conv-7", embedding=[0.2] * DIM)
        before = len(sink.events)
        fb_id = client.feedback(r.decision_id, "user-7", "conv-7", rating=5, retried=False)
        eng_id = client.engagement("user-7", screen_time_s=120.0, messages=9)
        many = [make_feedback(r.decision_id, "user-7", "conv-7", conversation_length=i)
                for i in range(3)] + [make_engagement("user-7", screen_time_s=1.0, messages=1)]
        assert client.send(many) == [e.event_id for e in many]
        # invalid events never leave the client: the topics' own rules, field named
        with pytest.raises(InvalidInputError, match="rating"):
            client.feedback(r.decision_id, "user-7", "conv-7", rating=9)
        with pytest.raises(InvalidInputError, match="screen_time_s"):
            client.engagement("user-7", screen_time_s=-1.0, messages=1)
        with pytest.raises(InvalidInputError, match=r"events\[1\]\.rating"):
            client.send([many[0], FeedbackEvent("e", "d", 1, "u", "c", rating=0)])
    got = sink.events[before:]
    fb = [e for e in got if isinstance(e, FeedbackEvent)]
    eng = [e for e in got if isinstance(e, EngagementEvent)]
    assert [e.event_id for e in fb] == [fb_id, *(e.event_id for e in many[:3])]
    assert fb[0].decision_id == r.decision_id and fb[0].rating == 5 and fb[0].ts_ms > 0
    assert fb[1:] == many[:3] and eng == [e for e in got if e.event_id in (eng_id,
                                                                            many[3].event_id)]
    assert len({e.event_id for e in got}) == len(got) == 6


def test_fallback_on_refused_timeout_and_5xx_is_logged_as_an_exposure(
    make_client: Factory, server: tuple[str, ListSink],
) -> None:
    url, sink = server
    sock, refused = _refused_url()
    with sock, make_client(refused, "dev-token", fallback_arm="gpt35", retries=1,
                           backoff_s=0.01) as c:
        r = c.allocate("user-3", "c-3", embedding=[0.0] * DIM)
        assert r.fallback and r.arm_id == "gpt35" and r.propensity == 1.0
        assert r.error and r.error.startswith("connection")
        assert c.pending_exposures == 1
        with pytest.raises(DeliveryFailed):
            c.flush_exposures()
        assert c.pending_exposures == 1  # kept for later
        with pytest.raises(DeliveryFailed):
            c.feedback("d", "u", "c", rating=1)
    with socket.socket() as s:  # listens, never answers: timeout
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        silent = f"http://127.0.0.1:{s.getsockname()[1]}"
        with make_client(silent, "t", timeout_s=0.2, retries=0) as c:
            r = c.allocate("u", "c", embedding=[0.0] * DIM)
            assert r.fallback and r.error and r.error.startswith("timeout")
            assert c.pending_exposures == 1

    async def broken(request: Request) -> Response:
        return PlainTextResponse("boom", status_code=503)

    app = Starlette(routes=[Route("/v1/allocate", broken, methods=["POST"])])
    with LiveServer(app) as down:
        with make_client(down.url, "t", timeout_s=5) as c:
            r = c.allocate("u", "c", embedding=[0.0] * DIM)
        assert r.fallback and r.error == "server error 503"

    # the exposures queued while the server was away reach it once it answers
    units = [f"user-{i}" for i in range(30, 35)]
    before = len(sink.events)
    with make_client(refused, "dev-token", retries=0) as c:
        for u in units:
            assert c.allocate(u, f"c-{u}", embedding=[0.0] * DIM).fallback
        assert c.pending_exposures == len(units)
        c._http.base_url = url  # the server is back at this address
        r = c.allocate("user-99", "c-99", embedding=[0.1] * DIM)
        assert not r.fallback and c.pending_exposures == 0 and c.sent_exposures == len(units)
    exposures = [e for e in sink.events[before:] if isinstance(e, ExposureEvent)]
    assigner = VariantAssigner(make_config(Path(".")).experiment)
    assert [e.unit_id for e in exposures] == units
    assert all(e.arm_id == "gpt35" and e.reason == "connection" for e in exposures)
    assert all(e.variant == assigner.assign(e.unit_id).name for e in exposures)


def _flaky(fail_first: int, status: int) -> tuple[Starlette, list[str]]:
    """A server whose event endpoints answer ``status`` ``fail_first`` times, then 202."""
    seen: list[str] = []

    async def events(request: Request) -> Response:
        seen.append(request.url.path)
        if len(seen) <= fail_first:
            return JSONResponse({"detail": [{"field": "rating", "msg": "nope"}]}, status)
        body = orjson.loads(await request.body())
        return JSONResponse({"accepted": len(body) if isinstance(body, list) else 1}, 202)

    routes = [Route(p, events, methods=["POST"])
              for p in ("/v1/feedback", "/v1/engagement", "/v1/exposures")]
    return Starlette(routes=routes), seen


@pytest.mark.parametrize(("status", "fail_first", "retries", "outcome"), [
    (503, 2, 2, "ok"), (502, 1, 2, "ok"), (429, 1, 1, "ok"), (500, 3, 2, DeliveryFailed),
    (422, 1, 3, AllocationRejected), (400, 1, 3, AllocationRejected),
])
def test_event_posts_retry_transient_errors_only(
    make_client: Factory, status: int, fail_first: int, retries: int, outcome: Any,
) -> None:
    app, seen = _flaky(fail_first, status)
    with LiveServer(app) as srv, make_client(srv.url, "t", timeout_s=5, retries=retries,
                                             backoff_s=0.01) as c:
        if outcome == "ok":
            assert c.feedback("d", "u", "c", rating=2)
            assert len(seen) == fail_first + 1
        else:
            with pytest.raises(outcome):
                c.feedback("d", "u", "c", rating=2)
            transient = outcome is DeliveryFailed
            assert len(seen) == (retries + 1 if transient else 1)  # 4xx: never re-sent


def test_allocation_is_never_resent_once_it_may_have_reached_the_server(
    make_client: Factory,
) -> None:
    seen: list[int] = []

    async def slow(request: Request) -> Response:
        seen.append(1)
        await asyncio.sleep(1.0)
        return JSONResponse({})

    app = Starlette(routes=[Route("/v1/allocate", slow, methods=["POST"])])
    with LiveServer(app) as srv, make_client(srv.url, "t", timeout_s=0.2, retries=3,
                                             backoff_s=0.01) as c:
        r = c.allocate("u", "c", embedding=[0.0] * DIM)
        assert r.fallback and r.error and r.error.startswith("timeout")
    assert len(seen) == 1  # a read timeout is not retried (it could log two decisions)
