"""The inline ``POST /v1/allocate`` path answers exactly like the ASGI route; cheap
metrics expose what prometheus_client would; decision ids are uuid4s."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from bandit.adapters.encoders import BatchingEncoder, HashingEncoder
from bandit.serving.allocator import POST_KINDS, Allocator, Reply
from bandit.serving.app import AllocationAPI, create_app
from bandit.serving.ids import DecisionIds
from bandit.serving.live import LiveServer
from bandit.serving.metrics import LATENCY_BUCKETS, FastHistogram
from tests.test_serve import BANDIT_UNIT, DIM, ListSink, base_arms, make_config

TOKEN = b"Bearer dev-token"


def _request(body: bytes, *, auth: bytes | None = TOKEN, path: bytes = b"/v1/allocate",
             method: bytes = b"POST", extra: bytes = b"") -> bytes:
    head = method + b" " + path + b" HTTP/1.1\r\nHost: t\r\n"
    if auth is not None:
        head += b"Authorization: " + auth + b"\r\n"
    return (head + b"Content-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body)


def _read_responses(sock: socket.socket, n: int) -> list[tuple[int, dict[str, str], bytes]]:
    """``n`` HTTP/1.1 responses with a Content-Length, in the order they arrive."""
    buf = b""
    out = []
    while len(out) < n:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise AssertionError(f"connection closed after {len(out)} responses")
            buf += chunk
        head, buf = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:])}
        length = int(headers["content-length"])
        while len(buf) < length:
            chunk = sock.recv(65536)
            if not chunk:
                raise AssertionError("connection closed inside a body")
            buf += chunk
        out.append((int(lines[0].split()[1]), headers, buf[:length]))
        buf = buf[length:]
    return out


def _body(**fields: Any) -> bytes:
    payload = {"unit_id": BANDIT_UNIT, "conversation_id": "c1", "embedding": [0.1] * DIM,
               **fields}
    return orjson.dumps({k: v for k, v in payload.items() if v is not None})


#: (request, description): answered the same way inline and through ASGI
CASES = [
    (_request(_body()), "valid"),
    (_request(_body(return_scores=True, eligible=["gpt35", "expert-1"])), "valid, scores"),
    (_request(_body(), auth=None), "no token"),
    (_request(_body(), auth=b"Bearer nope"), "unknown token"),
    (_request(_body(), auth=b"Basic abc"), "wrong scheme"),
    (_request(_body(embedding=[0.1] * (DIM + 1))), "wrong embedding length"),
    (_request(_body(embedding=["0.1"] * DIM)), "string in embedding"),
    (_request(_body()[:-1] + b', "surprise": 1}'), "unknown field"),
    (_request(b'{"unit_id": "u", "conversation_id": "c", "embedding": [NaN]}'), "NaN"),
    (_request(b"not json"), "garbage"),
    (_request(b""), "empty body"),
    (_request(_body(eligible=["nope"])), "unknown arm"),
    (_request(_body(embedding=None, text="x" * 101)), "text too long"),
    (_request(_body(experiment_id="other")), "unknown experiment"),
    (_request(_body(ts_ms=-1)), "negative ts_ms"),
    (_request(b"x" * 2048), "over max_body_bytes (413)"),
]

_DECISION_FIELDS = ("experiment_id", "variant", "policy_version", "degraded")


@pytest.fixture(scope="module")
def inline_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AllocationAPI, str]]:
    app = create_app(make_config(tmp_path_factory.mktemp("inline"), max_text_chars=100,
                                 max_body_bytes=1024),
                     arms=base_arms(), sink=ListSink(), seed=3)
    with LiveServer(app) as server:
        yield app, f"{server.host}:{server.port}"


def _asgi(app: AllocationAPI, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """The same request through the ASGI app (Edge and, off the fast path, FastAPI)."""
    head, body = raw.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ")
    headers = dict(x.split(": ", 1) for x in lines[1:])
    headers.pop("Content-Length")

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.request(method, path, content=body, headers=headers)

    r = asyncio.run(call())
    return r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content


def _same(inline: tuple[int, dict[str, str], bytes], asgi: tuple[int, dict[str, str], bytes]
          ) -> None:
    assert inline[0] == asgi[0], (inline, asgi)
    for h in ("content-type", "www-authenticate"):
        assert inline[1].get(h) == asgi[1].get(h), h
    a, b = orjson.loads(inline[2]), orjson.loads(asgi[2])
    if inline[0] == 200:  # a fresh decision each time: compare its shape and the fixed parts
        assert a.keys() == b.keys()
        assert {k: a[k] for k in _DECISION_FIELDS} == {k: b[k] for k in _DECISION_FIELDS}
        assert uuid.UUID(a["decision_id"]).version == 4
        if "scores" in a:
            assert a["scores"].keys() == b["scores"].keys()
    else:
        assert a == b


@pytest.mark.parametrize(("raw", "what"), CASES, ids=[c[1] for c in CASES])
def test_inline_path_answers_like_the_asgi_route(inline_app: tuple[AllocationAPI, str],
                                                 raw: bytes, what: str) -> None:
    app, addr = inline_app
    host, port = addr.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(raw)
        (inline,) = _read_responses(sock, 1)
    _same(inline, _asgi(app, raw))


def test_inline_path_serves_embeddings_without_the_asgi_handler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = ListSink()
    app = create_app(make_config(tmp_path), arms=base_arms(), sink=sink, seed=1)

    async def not_here(*_: Any) -> Any:
        raise AssertionError("the ASGI allocate handler ran")

    monkeypatch.setattr(app.allocator, "allocate", not_here)
    with LiveServer(app) as server, \
            socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(_request(_body()) * 3)  # pipelined, all inline
        answers = _read_responses(sock, 3)
    assert [a[0] for a in answers] == [200, 200, 200]
    assert len({orjson.loads(a[2])["decision_id"] for a in answers}) == 3
    assert len(sink.events) == 3


def test_pipelined_requests_are_answered_in_order(inline_app: tuple[AllocationAPI, str]
                                                  ) -> None:
    _, addr = inline_app
    host, port = addr.split(":")
    healthz = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        # inline, ASGI (a task), then inline again: the third must wait for the second
        sock.sendall(_request(_body(conversation_id="p1")) + healthz
                     + _request(_body(conversation_id="p3"), auth=None))
        first, second, third = _read_responses(sock, 3)
        assert first[0] == 200 and "decision_id" in orjson.loads(first[2])
        assert second[0] == 200 and "publisher" in orjson.loads(second[2])
        assert third[0] == 401
        sock.sendall(_request(_body()))  # the connection is still usable
        assert _read_responses(sock, 1)[0][0] == 200


def test_the_allocator_answers_without_any_server(tmp_path: Path) -> None:
    """The one door into allocation works with no HTTP framework: bytes in, a Reply out,
    the decision published; its errors are replies too, never exceptions."""
    sink = ListSink()
    allocator = Allocator.from_config(make_config(tmp_path), arms=base_arms(), sink=sink, seed=1)
    ok = allocator.post_now("/v1/allocate", TOKEN.decode(), _body())
    assert isinstance(ok, Reply) and ok.status == 200 and ok.headers is None
    answer = orjson.loads(ok.body)
    assert [e.decision_id for e in sink.events] == [answer["decision_id"]]
    assert sink.events[0].propensity == answer["propensity"]
    denied = allocator.post_now("/v1/allocate", None, _body())
    assert denied == Reply(401, b'{"detail":"missing bearer token"}',
                           {"WWW-Authenticate": "Bearer"})
    bad = allocator.post_now("/v1/allocate", TOKEN.decode(), _body(embedding=[0.1]))
    assert bad is not None and bad.status == 422
    assert orjson.loads(bad.body)["detail"][0]["field"] == "embedding"
    assert allocator.post_now("/v1/feedback", TOKEN.decode(), b"[]") == Reply(
        422, b'{"detail":[{"field":"body","msg":"must be an event or a non-empty array of '
             b'events"}]}')
    assert set(POST_KINDS) == {"/v1/allocate", "/v1/feedback", "/v1/engagement",
                               "/v1/exposures"}
    assert len(sink.events) == 1


def test_the_app_hands_its_allocator_to_the_inline_protocol(tmp_path: Path) -> None:
    """Through the ASGI lifespan state: the app's own allocator answers inline (its
    metrics count the request), not one found by walking uvicorn's middleware stack."""
    app = create_app(make_config(tmp_path), arms=base_arms(), sink=ListSink(), seed=1)
    with LiveServer(app) as server, \
            socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(_request(_body()))
        ((status, _, _),) = _read_responses(sock, 1)
    assert status == 200
    assert sum(app.allocator.metrics.decisions.values.values()) == 1


def test_text_with_a_batching_encoder_goes_through_asgi(tmp_path: Path) -> None:
    encoder = BatchingEncoder(HashingEncoder(DIM))
    sink = ListSink()
    app = create_app(make_config(tmp_path), arms=base_arms(), sink=sink, seed=1,
                     encoder=encoder)
    with LiveServer(app) as server, \
            socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(_request(_body(embedding=None, text="tell me a story"))
                     + _request(_body()))
        text, emb = _read_responses(sock, 2)
    assert text[0] == 200 and emb[0] == 200, (text, emb)
    assert [len(e.context) for e in sink.events] == [DIM, DIM]


def test_a_bug_in_the_inline_handler_is_a_500_and_closes_the_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(make_config(tmp_path), arms=base_arms(), sink=ListSink(), seed=1)

    def broken(*_: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(app.allocator, "allocate_now", broken)
    with LiveServer(app) as server, \
            socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(_request(_body()))
        ((status, headers, body),) = _read_responses(sock, 1)
        assert (status, body, headers["connection"]) == (500, b"Internal Server Error", "close")
        assert sock.recv(10) == b""


def test_metrics_count_inline_requests(tmp_path: Path) -> None:
    app = create_app(make_config(tmp_path), arms=base_arms(), sink=ListSink(), seed=1)
    with LiveServer(app) as server, httpx.Client(base_url=server.url) as client:
        for i in range(7):
            r = client.post("/v1/allocate", content=_body(conversation_id=f"m{i}"),
                            headers={"authorization": TOKEN.decode()})
            assert r.status_code == 200
        assert client.post("/v1/allocate", content=_body()).status_code == 401
        text = client.get("/metrics").text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    assert samples['switchboard_requests_total{route="/v1/allocate",status="200"}'] == 7
    assert samples['switchboard_requests_total{route="/v1/allocate",status="401"}'] == 1
    assert samples['switchboard_request_seconds_count{route="/v1/allocate"}'] == 8
    assert sum(v for k, v in samples.items()
               if k.startswith("switchboard_decisions_total{")) == 7
    assert samples["switchboard_allocate_compute_seconds_count"] == 7
    assert samples["switchboard_allocate_cpu_seconds_count"] == 7
    assert samples['switchboard_allocate_cpu_seconds_bucket{le="+Inf"}'] == 7
    assert samples["switchboard_policy_fallback_total"] == 0
    assert samples['switchboard_snapshot_reloads_total{outcome="ok"}'] >= 0


@pytest.mark.parametrize("values", [
    [0.0, 0.000025, 0.00002500001, 0.0001, 0.0004, 0.5, 1.0, 3.0],
    [1e-9] * 5,
    [],
    [2.0, 0.00075, 0.00075],
])
def test_fast_histogram_exposes_what_prometheus_client_would(values: list[float]) -> None:
    reg = CollectorRegistry()
    reference = Histogram("h", "h", buckets=LATENCY_BUCKETS, registry=reg)
    fast = FastHistogram(LATENCY_BUCKETS)
    for v in values:
        reference.observe(v)
        fast.observe(v)
    expected = [
        (line.split('le="')[1].split('"')[0], float(line.rsplit(" ", 1)[1]))
        for line in generate_latest(reg).decode().splitlines() if line.startswith("h_bucket")
    ]
    assert [(float(le), n) for le, n in fast.cumulative()] == \
        [(float(le), n) for le, n in expected]
    assert fast.total == pytest.approx(sum(values))


def test_decision_ids_are_unique_uuid4_hex() -> None:
    ids = DecisionIds()
    made = [ids() for _ in range(5000)]  # crosses several 256-id pools
    assert len(set(made)) == len(made)
    for d in made[:600]:
        u = uuid.UUID(d)
        assert (u.version, u.variant, u.hex) == (4, uuid.RFC_4122, d)


def test_switchboard_serve_answers_inline_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    """The real CLI (uvloop, the inline protocol): allocations are answered, SIGTERM is
    a graceful stop with exit code 0, and the decision (no broker) is on disk."""
    cfg = tmp_path / "switchboard.toml"
    cfg.write_text(f"""
[policy]
dim = {DIM}

[kafka]
bootstrap_servers = "127.0.0.1:1"

[serve]
tokens = ["dev-token"]
spill_dir = "{tmp_path / 'spill'}"

[model]
dir = "{tmp_path / 'snap'}"
""")
    arms = tmp_path / "arms.json"
    arms.write_bytes(orjson.dumps([{"arm_id": a.arm_id, "kind": a.kind} for a in base_arms()]))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).parent / "switchboard"
    proc = subprocess.Popen([str(exe), "--config", str(cfg), "serve", "--port", str(port),
                             "--arms", str(arms)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                    sock.sendall(_request(_body(conversation_id="cli-1")))
                    ((status, _, content),) = _read_responses(sock, 1)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert status == 200, content
        decision_id = orjson.loads(content)["decision_id"]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    spilled = b"".join(p.read_bytes() for p in (tmp_path / "spill").glob("*.spill"))
    assert decision_id.encode() in spilled
