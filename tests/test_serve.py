"""The allocation server over HTTP (uvicorn on a free port), decisions captured in memory."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from bandit.arms import Arm, ArmRegistry
from bandit.config import (
    Config,
    ExperimentConfig,
    KafkaConfig,
    ModelConfig,
    PolicyConfig,
    ServeConfig,
    VariantConfig,
)
from bandit.events import DecisionEvent, DesignEvent, decode_design, design_version, encode_event
from bandit.formats.paths import SNAPSHOT_NAME
from bandit.formats.snapshot import save_policy_snapshot
from bandit.policies import make_policy
from bandit.serving.allocator import Allocator
from bandit.serving.app import create_app
from bandit.serving.assignment import VariantAssigner, unit_hash
from bandit.serving.live import LiveServer

DIM = 8
TOKEN = {"authorization": "Bearer dev-token"}
ADMIN = {"authorization": "Bearer dev-admin-token"}
#: a unit the default experiment assigns to the learning variant (not the fixed control)
BANDIT_UNIT = next(u for u in (f"user-{i}" for i in range(100))
                   if VariantAssigner(ExperimentConfig()).assign(u).name == "bandit")
CONTROL_UNIT = next(u for u in (f"user-{i}" for i in range(100))
                    if VariantAssigner(ExperimentConfig()).assign(u).name == "gpt35")


class ListSink:
    """In-memory event sink (the Kafka path is tested in test_serve_publisher.py): the
    experiment's design events in ``designs``, every other event in ``events``."""

    def __init__(self) -> None:
        self.events: list[DecisionEvent] = []
        self.designs: list[DesignEvent] = []
        self.depth = 0
        self.backlog = 0
        self.healthy = True

    def publish(self, event: Any) -> None:
        (self.designs if isinstance(event, DesignEvent) else self.events).append(event)

    def start(self) -> ListSink:
        return self

    def close(self, timeout_s: float = 5.0) -> None:
        pass


def make_config(tmp: Path, **serve: Any) -> Config:
    # no built-in credentials: the tests' tokens are configured like any deployment's
    serve = {"tokens": ("dev-token",), "admin_tokens": ("dev-admin-token",), **serve}
    serve_cfg = ServeConfig(spill_dir=str(tmp / "spill"),
                            reload_interval_s=0.05, **serve)
    return Config(policy=PolicyConfig(dim=DIM), serve=serve_cfg,
                  model=ModelConfig(dir=str(tmp / "snap")),
                  kafka=KafkaConfig(bootstrap_servers="127.0.0.1:1"))


def base_arms(k: int = 5) -> list[Arm]:
    return [Arm("gpt35", kind="baseline"), *(Arm(f"expert-{i}") for i in range(k))]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, ListSink]]:
    sink = ListSink()
    app = create_app(make_config(tmp_path), arms=base_arms(), sink=sink, seed=1)
    with LiveServer(app) as server:
        yield server.url, sink


def alloc(url: str, **body: Any) -> httpx.Response:
    payload = {"unit_id": "u1", "conversation_id": "c1", "embedding": [0.1] * DIM, **body}
    payload = {k: v for k, v in payload.items() if v is not None}
    return _CLIENT.post(url + "/v1/allocate", json=payload, headers=TOKEN)


_CLIENT = httpx.Client(timeout=10)


def test_allocate_returns_decision_with_propensity_and_logs_it(
    served: tuple[str, ListSink],
) -> None:
    url, sink = served
    seen_variants = set()
    for u in range(30):
        r = alloc(url, unit_id=f"user-{u}", conversation_id=f"conv-{u}", return_scores=True)
        assert r.status_code == 200, r.text
        d = r.json()
        assert 0 < d["propensity"] <= 1
        assert d["experiment_id"] == "exp-default"
        assert abs(sum(d["probabilities"].values()) - 1) < 1e-9
        assert d["probabilities"][d["arm_id"]] == pytest.approx(d["propensity"])
        if d["variant"] == "gpt35":
            assert d["arm_id"] == "gpt35" and d["propensity"] == 1.0
        seen_variants.add(d["variant"])
    assert seen_variants == {"gpt35", "bandit"}
    assert len(sink.events) == 30
    ev = sink.events[0]
    assert ev.conversation_id == "conv-0" and len(ev.context) == DIM and 0 < ev.propensity <= 1


def test_allocate_accepts_text_and_eligible_subset(served: tuple[str, ListSink]) -> None:
    url, _ = served
    r = alloc(url, embedding=None, text="tell me a story about dragons")
    assert r.status_code == 200, r.text
    for u in range(20):
        r = alloc(url, unit_id=f"e{u}", eligible=["gpt35", "expert-1"], return_scores=True)
        assert r.status_code == 200, r.text
        assert set(r.json()["scores"]) <= {"gpt35", "expert-1"}


def test_assignment_is_sticky_across_server_instances(tmp_path: Path) -> None:
    units = [f"user-{i}" for i in range(40)]
    results = []
    for seed in (1, 2):
        app = create_app(make_config(tmp_path / str(seed)), arms=base_arms(), sink=ListSink(),
                         seed=seed)
        with LiveServer(app) as server:
            results.append([alloc(server.url, unit_id=u).json()["variant"] for u in units])
    assert results[0] == results[1]
    expected = [VariantAssigner(ExperimentConfig()).assign(u).name for u in units]
    assert results[0] == expected


def test_assignment_hash_is_uniform_and_salted() -> None:
    u = np.array([unit_hash("s", f"user-{i}") for i in range(4000)])
    assert ((u >= 0) & (u < 1)).all()
    assert abs(u.mean() - 0.5) < 0.03  # sd of the mean is 0.0046: ~6 sd
    other = np.array([unit_hash("t", f"user-{i}") for i in range(4000)])
    assert (u != other).mean() > 0.99
    exp = ExperimentConfig(variants=(VariantConfig("gpt35", 0.2, "fixed", ("baseline",)),
                                     VariantConfig("bandit", 0.8, "linucb")))
    share = np.mean([VariantAssigner(exp).assign(f"x{i}").name == "gpt35" for i in range(4000)])
    assert abs(share - 0.2) < 0.03  # sd 0.0063


def test_auth_requires_valid_token_and_admin_for_writes(served: tuple[str, ListSink]) -> None:
    url, _ = served
    body = {"unit_id": "u", "conversation_id": "c", "embedding": [0.0] * DIM}
    assert httpx.post(url + "/v1/allocate", json=body).status_code == 401
    bad = {"authorization": "Bearer nope"}
    assert httpx.post(url + "/v1/allocate", json=body, headers=bad).status_code == 401
    assert httpx.get(url + "/v1/arms", headers=bad).status_code == 401
    assert httpx.get(url + "/v1/arms", headers=TOKEN).status_code == 200
    arm = {"arm_id": "new-expert"}
    assert httpx.post(url + "/v1/arms", json=arm).status_code == 401
    assert httpx.post(url + "/v1/arms", json=arm, headers=TOKEN).status_code == 403
    assert httpx.delete(url + "/v1/arms/expert-1", headers=TOKEN).status_code == 403
    assert httpx.post(url + "/v1/arms", json=arm, headers=ADMIN).status_code == 201


def test_body_size_limit_is_413_by_header_and_by_stream(tmp_path: Path) -> None:
    app = create_app(make_config(tmp_path, max_body_bytes=1024), arms=base_arms(),
                     sink=ListSink())
    with LiveServer(app) as server:
        big = b'{"unit_id": "' + b"x" * 2000 + b'"}'
        r = httpx.post(server.url + "/v1/allocate", content=big, headers=TOKEN)
        assert r.status_code == 413
        assert httpx.post(server.url + "/v1/allocate", content=iter([big[:600], big[600:]]),
                          headers=TOKEN).status_code == 413  # chunked: no Content-Length
        # raw socket: a lying Content-Length followed by more bytes than declared
        with socket.create_connection((server.host, server.port)) as s:
            s.sendall(b"POST /v1/allocate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer dev-token"
                      b"\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(3):
                s.sendall(b"200\r\n" + b"a" * 512 + b"\r\n")
            s.sendall(b"0\r\n\r\n")
            assert b" 413 " in s.recv(4096).split(b"\r\n")[0] + b" "


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"unit_id": 5}, "unit_id"),
        ({"unit_id": ""}, "unit_id"),
        ({"conversation_id": None, "embedding": [0.0] * DIM}, "conversation_id"),
        ({"embedding": [0.1] * (DIM - 1)}, "embedding"),
        ({"embedding": ["0.1"] * DIM}, "embedding[0]"),
        ({"embedding": [True] * DIM}, "embedding[0]"),
        ({"embedding": None, "text": None}, "body"),
        ({"text": "hi"}, "body"),  # both text and embedding
        ({"embedding": None, "text": "x" * 101}, "text"),
        ({"eligible": ["nope"]}, "eligible[0]"),
        ({"eligible": "gpt35"}, "eligible"),
        ({"return_scores": "yes"}, "return_scores"),
        ({"experiment_id": "other"}, "experiment_id"),
        ({"surprise": 1}, "surprise"),
        ({"ts_ms": -1}, "ts_ms"),
        ({"ts_ms": 1.5}, "ts_ms"),
    ],
)
def test_allocate_validation_is_422_naming_the_field(
    tmp_path: Path, body: dict[str, Any], field: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("small_text_server")
    payload = {"unit_id": "u1", "conversation_id": "c1", "embedding": [0.1] * DIM, **body}
    payload = {k: v for k, v in payload.items() if v is not None or k == "conversation_id"}
    if body.get("conversation_id", 0) is None:
        payload["conversation_id"] = None
    r = httpx.post(url + "/v1/allocate", json=payload, headers=TOKEN)
    assert r.status_code == 422, r.text
    fields = [d["field"] for d in r.json()["detail"]]
    assert any(f == field or f.startswith(field) for f in fields), fields


@pytest.fixture(scope="module")
def small_text_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    app = create_app(make_config(tmp_path_factory.mktemp("small"), max_text_chars=100),
                     arms=base_arms(), sink=ListSink())
    with LiveServer(app) as server:
        yield server.url


_HEAD = b'{"unit_id": "u", "conversation_id": "c", "embedding": '


@pytest.mark.parametrize("raw", [_HEAD + b"[NaN]}", _HEAD + b"[1e999]}", _HEAD + b"[Infinity]}",
                                 _HEAD + b"[-Infinity]}", b"not json", b"[1, 2]", b""])
def test_allocate_rejects_nan_infinity_and_garbage(small_text_server: str, raw: bytes) -> None:
    r = httpx.post(small_text_server + "/v1/allocate", content=raw,
                   headers={**TOKEN, "content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["field"]


def test_arms_register_and_retire_at_run_time(served: tuple[str, ListSink]) -> None:
    url, _ = served
    r = httpx.post(url + "/v1/arms", json={"arm_id": "fresh", "kind": "expert"}, headers=ADMIN)
    assert r.status_code == 201, r.text
    r = alloc(url, unit_id="user-9", eligible=["fresh"])
    assert r.status_code == 200 and r.json()["arm_id"] == "fresh"  # eligible immediately
    assert any(a["arm_id"] == "fresh" for a in httpx.get(url + "/v1/arms", headers=TOKEN).json())
    assert httpx.delete(url + "/v1/arms/fresh", headers=ADMIN).json()["active"] is False
    assert alloc(url, unit_id="user-9", eligible=["fresh"]).status_code == 422
    assert httpx.delete(url + "/v1/arms/never", headers=ADMIN).status_code == 404
    bad = httpx.post(url + "/v1/arms", json={"arm_id": "x", "features": [1.0, "a"]},
                     headers=ADMIN)
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "features[1]"


def _hybrid_config(tmp: Path) -> Config:
    cfg = make_config(tmp)
    exp = ExperimentConfig(control="bandit", variants=(
        VariantConfig("bandit", 1.0, "hybrid_linucb", ("expert", "baseline")),))
    return dataclasses.replace(cfg, experiment=exp, policy=PolicyConfig(
        name="hybrid_linucb", dim=DIM, arm_feature_dim=2, alpha=0.1))


def test_new_arm_with_features_is_scored_by_hybrid_policy(tmp_path: Path) -> None:
    cfg = _hybrid_config(tmp_path)
    arms = ArmRegistry([Arm("good-a", features=(1.0, 0.0)), Arm("bad-a", features=(0.0, 1.0)),
                        Arm("good-b", features=(0.9, 0.1)), Arm("bad-b", features=(0.1, 0.9))],
                       feature_dim=2)
    policy = make_policy(cfg.policy, arms)
    rng = np.random.default_rng(np.random.SeedSequence(11))
    X = rng.normal(size=(400, DIM)) / np.sqrt(DIM) + 0.5
    ids = [["good-a", "bad-a", "good-b", "bad-b"][i % 4] for i in range(400)]
    rewards = np.array([1.0 if a.startswith("good") else 0.0 for a in ids])
    policy.update_batch(ids, X, rewards)
    save_policy_snapshot(Path(cfg.model.dir) / SNAPSHOT_NAME, policy, arms)
    with LiveServer(create_app(cfg, sink=ListSink(), seed=3)) as server:
        health = httpx.get(server.url + "/healthz").json()
        assert health["model"]["source"] == "snapshot", health
        for arm_id, feats in (("newcomer-good", [1.0, 0.0]), ("newcomer-bad", [0.0, 1.0])):
            r = httpx.post(server.url + "/v1/arms", json={"arm_id": arm_id, "features": feats},
                           headers=ADMIN)
            assert r.status_code == 201, r.text
        r = httpx.post(server.url + "/v1/arms", json={"arm_id": "x", "features": [1.0]},
                       headers=ADMIN)
        assert r.status_code == 422 and r.json()["detail"][0]["field"] == "features"
        r = alloc(server.url, embedding=[0.5] * DIM, eligible=["newcomer-good", "newcomer-bad"],
                  return_scores=True)
        assert r.status_code == 200, r.text
        scores = r.json()["scores"]
        assert scores["newcomer-good"] > scores["newcomer-bad"] + 0.3


def _linucb_snapshot(cfg: Config, path: Path, events: int, seed: int) -> str:
    arms = ArmRegistry(base_arms())
    policy = make_policy(cfg.policy, arms)
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    ids = [arms.ids()[i % len(arms)] for i in range(events)]
    policy.update_batch(ids, rng.normal(size=(events, DIM)), rng.random(events))
    save_policy_snapshot(path, policy, arms)
    return str(policy.version)


def test_hot_reload_swaps_policy_without_failed_requests(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    path = Path(cfg.model.dir) / SNAPSHOT_NAME
    v1 = _linucb_snapshot(cfg, path, 50, seed=1)
    statuses: list[int] = []
    versions: set[str] = set()
    stop = threading.Event()
    with LiveServer(create_app(cfg, sink=ListSink(), seed=5)) as server:
        def hammer() -> None:
            with httpx.Client(base_url=server.url, headers=TOKEN) as c:
                i = 0
                while not stop.is_set():
                    i += 1
                    # units hashed into the learning variant (not the fixed control)
                    r = c.post("/v1/allocate", json={"unit_id": BANDIT_UNIT, "conversation_id":
                                                     f"c{i}", "embedding": [0.2] * DIM})
                    statuses.append(r.status_code)
                    if r.status_code == 200:
                        versions.add(r.json()["policy_version"])

        t = threading.Thread(target=hammer)
        t.start()
        try:
            _wait(lambda: v1 in versions)
            v2 = _linucb_snapshot(cfg, path, 120, seed=2)
            _wait(lambda: v2 in versions)
        finally:
            stop.set()
            t.join()
        health = httpx.get(server.url + "/healthz").json()
    assert v1 != v2 and {v1, v2} <= versions
    assert statuses and set(statuses) == {200}
    assert health["model"]["policy_version"] == v2 and health["status"] == "ok"


def test_corrupt_snapshot_falls_back_and_healthz_reports_it(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    path = Path(cfg.model.dir) / SNAPSHOT_NAME
    path.parent.mkdir(parents=True)
    path.write_bytes(b"SWBSNAP\0garbage")
    with LiveServer(create_app(cfg, arms=base_arms(), sink=ListSink())) as server:
        health = httpx.get(server.url + "/healthz").json()
        assert health["status"] == "degraded"
        assert health["model"]["source"] == "prior" and health["model"]["snapshot_error"]
        r = alloc(server.url, unit_id=BANDIT_UNIT)
        assert r.status_code == 200 and r.json()["policy_version"].startswith("prior:")
        # a good snapshot then a corrupt one: the good model is kept, the error reported
        good = _linucb_snapshot(cfg, path, 30, seed=3)
        _wait(lambda: httpx.get(server.url + "/healthz").json()["model"]["policy_version"] == good)
        data = path.read_bytes()
        path.write_bytes(data[:-10])
        _wait(lambda: httpx.get(server.url + "/healthz").json()["model"]["snapshot_error"])
        r = alloc(server.url, unit_id=BANDIT_UNIT)
        assert r.status_code == 200 and r.json()["policy_version"] == good
        metrics = httpx.get(server.url + "/metrics").text
        assert "switchboard_snapshot_age_seconds" in metrics
        assert 'switchboard_requests_total{route="/v1/allocate",status="200"}' in metrics
        assert "switchboard_allocate_compute_seconds_bucket" in metrics


def _wait(cond: Any, timeout_s: float = 20.0) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.02)


def test_openapi_documents_allocate_schema(served: tuple[str, ListSink]) -> None:
    url, _ = served
    doc = httpx.get(url + "/openapi.json").json()
    body = doc["paths"]["/v1/allocate"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["$ref"].endswith("/AllocateRequest")
    assert "embedding" in doc["components"]["schemas"]["AllocateRequest"]["properties"]


def test_allocate_logs_the_callers_event_time(tmp_path: Path) -> None:
    sink = ListSink()
    # a replay of a past calendar: the operator widens the skew bound for it
    app = create_app(make_config(tmp_path, max_decision_skew_s=10 * 365 * 86_400.0),
                     arms=base_arms(), sink=sink)
    with LiveServer(app) as server:
        body = {"unit_id": "u1", "conversation_id": "c1", "embedding": [0.1] * DIM,
                "ts_ms": 1_767_571_200_123}
        assert httpx.post(server.url + "/v1/allocate", json=body, headers=TOKEN).status_code == 200
        del body["ts_ms"]
        assert httpx.post(server.url + "/v1/allocate", json=body, headers=TOKEN).status_code == 200
    assert sink.events[0].ts_ms == 1_767_571_200_123
    assert sink.events[1].ts_ms > 1_767_571_200_123 + 10**9


def test_allocator_publishes_its_design_once_before_its_first_decision(tmp_path: Path) -> None:
    # a 90/10 experiment replayed on a past calendar: its design starts on that clock
    exp = ExperimentConfig(id="exp-90-10", variants=(
        VariantConfig("gpt35", 0.9, "fixed", ("baseline",)),
        VariantConfig("bandit", 0.1, "linucb", ("expert", "baseline")),
        VariantConfig("uniform", 0.0, "uniform", ("expert",))))
    cfg = dataclasses.replace(make_config(tmp_path, max_decision_skew_s=10 * 365 * 86_400.0),
                              experiment=exp)
    order: list[object] = []

    class Recording(ListSink):
        def publish(self, event: Any) -> None:
            order.append(event)
            super().publish(event)

    sink = Recording()
    allocator = Allocator.from_config(cfg, arms=base_arms(), sink=sink, seed=1)
    first = 1_767_571_200_123
    refused = allocator.allocate_now("Bearer dev-token", orjson.dumps(
        {"unit_id": "u0", "conversation_id": "c0", "embedding": [0.1] * (DIM + 1),
         "ts_ms": first - 5}))
    assert refused is not None and refused.status == 422
    assert not sink.designs  # no decision, no design
    for i in range(5):
        body = {"unit_id": f"u{i}", "conversation_id": f"c{i}", "embedding": [0.1] * DIM,
                "ts_ms": first + i}
        reply = allocator.allocate_now("Bearer dev-token", orjson.dumps(body))
        assert reply is not None and reply.status == 200, reply
    assert len(sink.designs) == 1 and len(sink.events) == 5
    design = sink.designs[0]
    assert order[0] is design  # queued before the first decision under it
    assert design.ts_ms == sink.events[0].ts_ms == first
    assert design.experiment_id == "exp-90-10"
    assert dict(design.weights) == {"gpt35": 0.9, "bandit": 0.1, "uniform": 0.0}
    assert design.design_version == design_version("exp-90-10", design.weights)
    assert decode_design(encode_event(design)) == design
    assert allocator.design_since_ms == first


def test_healthz_names_the_design_served_and_since_when(served: tuple[str, ListSink]) -> None:
    url, sink = served
    design = httpx.get(url + "/healthz").json()["design"]
    assert design == {"experiment_id": "exp-default",
                      "design_version": design_version("exp-default",
                                                       [("gpt35", 0.5), ("bandit", 0.5)]),
                      "weights": {"gpt35": 0.5, "bandit": 0.5}, "since_ms": None}
    assert alloc(url, ts_ms=int(time.time() * 1000)).status_code == 200
    after = httpx.get(url + "/healthz").json()["design"]
    assert after["since_ms"] == sink.designs[0].ts_ms == sink.events[0].ts_ms
    assert after["design_version"] == sink.designs[0].design_version


@pytest.mark.parametrize(("offset_s", "accepted"), [
    (0.0, True), (-250.0, True), (250.0, True), (-400.0, False), (400.0, False),
    (-86_400.0 * 365, False), (86_400.0 * 365 * 900, False),
])
def test_allocate_bounds_the_decision_time_to_the_server_clock(
    served: tuple[str, ListSink], offset_s: float, accepted: bool,
) -> None:
    url, sink = served  # the default bound: 300 s either way
    ts_ms = int((time.time() + offset_s) * 1000)
    r = alloc(url, ts_ms=min(ts_ms, 32_503_680_000_000))
    if accepted:
        assert r.status_code == 200, r.text
        assert sink.events[-1].ts_ms == ts_ms
    else:
        assert r.status_code == 422, r.text
        item = r.json()["detail"][0]
        assert item["field"] == "ts_ms" and "serve.max_decision_skew_s" in item["msg"]
        assert not sink.events


def test_no_active_arm_is_a_503_with_the_reason_and_readiness_fails(tmp_path: Path) -> None:
    # experts only: the control variant (baseline arms) has nothing to serve
    app = create_app(make_config(tmp_path), arms=[Arm("e1")], sink=ListSink())
    with LiveServer(app) as server:
        live = httpx.get(server.url + "/healthz")
        ready = httpx.get(server.url + "/readyz")
        assert live.status_code == 200 and live.json()["ready"] is False
        assert ready.status_code == 503 and ready.json()["status"] == "not ready"
        assert any("'gpt35'" in why and "baseline" in why for why in ready.json()["reasons"])
        assert alloc(server.url, unit_id=BANDIT_UNIT).status_code == 200  # its variant can
        r = alloc(server.url, unit_id=CONTROL_UNIT)
        assert r.status_code == 503 and r.headers["retry-after"]
        assert r.json()["detail"][0]["field"] == "arms"
        assert "no active arm" in r.json()["detail"][0]["msg"]
        assert httpx.post(server.url + "/v1/arms", json={"arm_id": "gpt35", "kind": "baseline"},
                          headers=ADMIN).status_code == 201
        assert httpx.get(server.url + "/readyz").status_code == 200
        assert alloc(server.url, unit_id=CONTROL_UNIT).status_code == 200
        metrics = httpx.get(server.url + "/metrics").text
        assert "switchboard_allocate_unavailable_total 1.0" in metrics


@pytest.mark.parametrize("header", [
    "Bearer dev-toke", "Bearer dev-tokenx", "Bearer DEV-TOKEN", "Bearer dev-admin-toke",
    "Bearer \u00e9", "Basic dev-token", "Bearer",
])
def test_tokens_must_match_exactly_on_both_paths(served: tuple[str, ListSink], header: str,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    url, sink = served
    body = b'{"unit_id": "u", "conversation_id": "c", "embedding": [0.1, 0.1, 0.1, 0.1, 0.1, ' \
           b'0.1, 0.1, 0.1]}'
    # httpx: the inline fast path; the FastAPI route answers feedback and arms
    for path in ("/v1/allocate", "/v1/feedback", "/v1/arms"):
        r = httpx.post(url + path, content=body, headers={
            "authorization": header.encode(),
            "content-type": "application/json"})
        assert r.status_code == 401, (path, header, r.text)
    assert not sink.events
    assert "dev-token" not in caplog.text
