"""SwitchboardClient: typed allocations, fallback arm on outage, errors on misuse."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from bandit.client import AllocationRejected, SwitchboardClient
from bandit.errors import InvalidInputError
from bandit.serving.app import create_app
from bandit.serving.live import LiveServer
from tests.test_serve import DIM, ListSink, base_arms, make_config


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    app = create_app(make_config(tmp_path_factory.mktemp("client")), arms=base_arms(),
                     sink=ListSink(), seed=2)
    with LiveServer(app) as server:
        yield server.url


def test_client_allocates_with_typed_result(server_url: str) -> None:
    with SwitchboardClient(server_url, "dev-token", timeout_s=5) as client:
        r = client.allocate("user-1", "conv-1", embedding=[0.1] * DIM, return_scores=True)
        assert not r.fallback and r.decision_id and 0 < r.propensity <= 1
        assert r.scores is not None and r.arm_id in r.scores
        t = client.allocate("user-1", "conv-2", text="hello there")
        assert t.variant == r.variant  # sticky per unit


def test_client_raises_on_misuse_naming_the_field(server_url: str) -> None:
    with SwitchboardClient(server_url, "dev-token", timeout_s=5) as client:
        with pytest.raises(AllocationRejected) as err:
            client.allocate("user-1", "conv-1", embedding=[0.1] * (DIM + 1))
        assert err.value.status == 422 and err.value.field == "embedding"
        with pytest.raises(InvalidInputError, match="embedding"):
            client.allocate("u", "c", embedding=[float("nan")] * DIM)
        with pytest.raises(InvalidInputError):
            client.allocate("u", "c")
    with SwitchboardClient(server_url, "wrong", timeout_s=5) as client:
        with pytest.raises(AllocationRejected) as err:
            client.allocate("u", "c", embedding=[0.0] * DIM)
        assert err.value.status == 401


def test_client_falls_back_when_server_is_down_slow_or_failing(tmp_path: Path) -> None:
    with socket.socket() as s:  # a bound port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        with SwitchboardClient(f"http://127.0.0.1:{port}", "t", fallback_arm="gpt35") as c:
            r = c.allocate("u", "c", embedding=[0.0] * DIM)
        assert r.fallback and r.arm_id == "gpt35" and r.propensity == 1.0 and r.error
    with socket.socket() as s:  # listens, never answers: timeout
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        port = s.getsockname()[1]
        with SwitchboardClient(f"http://127.0.0.1:{port}", "t", timeout_s=0.2) as c:
            r = c.allocate("u", "c", embedding=[0.0] * DIM)
        assert r.fallback and r.error and r.error.startswith("timeout")

    async def broken(request: object) -> PlainTextResponse:
        return PlainTextResponse("boom", status_code=503)

    app = Starlette(routes=[Route("/v1/allocate", broken, methods=["POST"])])
    with LiveServer(app) as server, SwitchboardClient(server.url, "t", timeout_s=5) as c:
        r = c.allocate("u", "c", embedding=[0.0] * DIM)
    assert r.fallback and r.error == "server error 503"
