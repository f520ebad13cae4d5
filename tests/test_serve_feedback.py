"""Feedback, engagement and fallback exposures over HTTP: the topics' own rules, one
answer per request (all queued or none), the same auth and size limits as allocation."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from bandit.events import (
    MAX_EVENT_BYTES,
    EngagementEvent,
    ExposureEvent,
    FeedbackEvent,
    decode_engagement,
    decode_feedback,
    encode_event,
)
from bandit.serving.app import create_app
from bandit.serving.assignment import VariantAssigner
from bandit.serving.live import LiveServer
from tests.test_serve import TOKEN, ListSink, base_arms, make_config


def feedback(i: int = 0, **over: Any) -> dict[str, Any]:
    return {"schema_version": 1, "event_id": f"fb-{i}", "decision_id": f"d-{i}",
            "ts_ms": 1_767_571_200_000 + i, "unit_id": f"user-{i}",
            "conversation_id": f"conv-{i}", "retried": False, "rating": 4,
            "conversation_length": 3, **over}


def engagement(i: int = 0, **over: Any) -> dict[str, Any]:
    return {"schema_version": 1, "event_id": f"eng-{i}", "ts_ms": 1_767_571_200_000 + i,
            "unit_id": f"user-{i}", "screen_time_s": 60.5, "messages": 7, **over}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, ListSink]]:
    sink = ListSink()
    app = create_app(make_config(tmp_path_factory.mktemp("feedback")), arms=base_arms(),
                     sink=sink, seed=3)
    with LiveServer(app) as server, httpx.Client(base_url=server.url, headers=TOKEN) as client:
        yield client, sink


def post(client: httpx.Client, path: str, body: Any, **headers: str) -> httpx.Response:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return client.post(path, content=raw, headers={"content-type": "application/json",
                                                   **headers})


def test_feedback_single_and_batch_are_published_as_the_topic_would_decode_them(
    served: tuple[httpx.Client, ListSink],
) -> None:
    client, sink = served
    sink.events.clear()
    r = post(client, "/v1/feedback", feedback(0))
    assert r.status_code == 202 and r.json() == {"accepted": 1}
    batch = [feedback(i, rating=None if i % 2 else 5) for i in range(1, 40)]
    r = post(client, "/v1/feedback", batch)
    assert r.status_code == 202 and r.json() == {"accepted": 39}
    got = [e for e in sink.events if isinstance(e, FeedbackEvent)]
    assert got == [decode_feedback(orjson.dumps(b)) for b in [feedback(0), *batch]]
    # what goes to Kafka decodes to the same event (one set of rules, both ways)
    assert all(decode_feedback(encode_event(e)) == e for e in got)


def test_engagement_single_and_batch(served: tuple[httpx.Client, ListSink]) -> None:
    client, sink = served
    sink.events.clear()
    assert post(client, "/v1/engagement", engagement(0)).json() == {"accepted": 1}
    assert post(client, "/v1/engagement", [engagement(1), engagement(2)]).status_code == 202
    got = [e for e in sink.events if isinstance(e, EngagementEvent)]
    assert [e.event_id for e in got] == ["eng-0", "eng-1", "eng-2"]
    assert got[0] == decode_engagement(orjson.dumps(engagement(0)))


# (path, body, field named in the 422): the decoders' own checks, item paths for batches
INVALID = [
    ("/v1/feedback", feedback(rating=6), "rating"),
    ("/v1/feedback", feedback(rating=True), "rating"),
    ("/v1/feedback", feedback(retried="yes"), "retried"),
    ("/v1/feedback", feedback(schema_version=2), "schema_version"),
    ("/v1/feedback", feedback(event_id=""), "event_id"),
    ("/v1/feedback", feedback(decision_id="x" * 257), "decision_id"),
    ("/v1/feedback", feedback(ts_ms=-1), "ts_ms"),
    ("/v1/feedback", feedback(conversation_length=1_000_001), "conversation_length"),
    ("/v1/feedback", {k: v for k, v in feedback().items() if k != "unit_id"}, "unit_id"),
    ("/v1/feedback", [feedback(0), feedback(1, rating=0)], "[1].rating"),
    ("/v1/feedback", [feedback(0), 7], "[1]"),
    ("/v1/feedback", [], "body"),
    ("/v1/feedback", b"{not json", "body"),
    ("/v1/feedback", b"[1, 2", "body"),
    ("/v1/engagement", engagement(screen_time_s=-1.0), "screen_time_s"),
    ("/v1/engagement", engagement(screen_time_s=86_400.5), "screen_time_s"),
    ("/v1/engagement", engagement(messages=1.5), "messages"),
    ("/v1/engagement", [engagement(0, unit_id=3)], "[0].unit_id"),
    ("/v1/engagement", "a string", "body"),
]


@pytest.mark.parametrize(("path", "body", "field"), INVALID)
def test_invalid_events_are_a_422_naming_the_field_and_nothing_is_published(
    served: tuple[httpx.Client, ListSink], path: str, body: Any, field: str,
) -> None:
    client, sink = served
    sink.events.clear()
    r = post(client, path, body)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["field"] == field, r.text
    assert not sink.events


def test_oversize_is_a_413(served: tuple[httpx.Client, ListSink]) -> None:
    client, sink = served
    sink.events.clear()
    # one event over the topic's size limit, inside the body limit
    big = feedback(unit_id="u", conversation_id="c" * 200, event_id="e" * 200,
                   pad="x" * MAX_EVENT_BYTES)
    r = post(client, "/v1/feedback", big)
    assert r.status_code == 413 and r.json()["detail"][0]["field"] == "body"
    r = post(client, "/v1/feedback", [feedback(0), big])
    assert r.status_code == 413 and r.json()["detail"][0]["field"] == "[1]"
    # the whole body over serve.max_body_bytes
    r = post(client, "/v1/engagement", [engagement(i) for i in range(3000)])
    assert r.status_code == 413
    assert not sink.events


def test_event_endpoints_need_a_token(served: tuple[httpx.Client, ListSink]) -> None:
    client, sink = served
    sink.events.clear()
    for path, body in (("/v1/feedback", feedback()), ("/v1/engagement", engagement()),
                       ("/v1/exposures", {"event_id": "x", "ts_ms": 1, "unit_id": "u",
                                          "conversation_id": "c", "arm_id": "gpt35",
                                          "reason": "timeout"})):
        assert post(client, path, body, authorization="Bearer nope").status_code == 401
        assert httpx.post(str(client.base_url) + path, json=body).status_code == 401
    assert not sink.events


def test_exposures_get_the_units_assigned_variant(tmp_path: Path) -> None:
    sink = ListSink()
    config = make_config(tmp_path)
    app = create_app(config, arms=base_arms(), sink=sink)
    assigner = VariantAssigner(config.experiment)
    units = [f"user-{i}" for i in range(20)]
    body = [{"event_id": f"exp-{u}", "ts_ms": 1_767_571_200_000, "unit_id": u,
             "conversation_id": f"c-{u}", "arm_id": "gpt35", "reason": "timeout"}
            for u in units]
    with LiveServer(app) as server, httpx.Client(base_url=server.url, headers=TOKEN) as c:
        assert post(c, "/v1/exposures", body).json() == {"accepted": 20}
        assert post(c, "/v1/exposures", {**body[0], "experiment_id": "other"}
                    ).json()["detail"][0]["field"] == "experiment_id"
        bad = post(c, "/v1/exposures", [body[0], {**body[1], "ts_ms": -5}])
        assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "[1].ts_ms"
        metrics = c.get("/metrics").text
    got = [e for e in sink.events if isinstance(e, ExposureEvent)]
    assert [e.unit_id for e in got] == units
    assert all(e.variant == assigner.assign(e.unit_id).name for e in got)
    assert {e.experiment_id for e in got} == {config.experiment.id}
    assert 'switchboard_events_accepted_total{kind="exposure"} 20.0' in metrics


def test_openapi_documents_the_event_endpoints_with_examples(
    served: tuple[httpx.Client, ListSink],
) -> None:
    client, _ = served
    doc = client.get("/openapi.json").json()
    for path, name in (("/v1/feedback", "FeedbackIn"), ("/v1/engagement", "EngagementIn"),
                       ("/v1/exposures", "ExposureIn")):
        op = doc["paths"][path]["post"]
        schema = op["requestBody"]["content"]["application/json"]["schema"]
        assert schema["oneOf"][0]["$ref"].endswith(name)
        assert {"202", "401", "413", "422"} <= set(op["responses"])
        assert op["security"] == [{"bearer": []}]
        example = doc["components"]["schemas"][name]["examples"][0]
        if name != "ExposureIn":  # the documented example is a valid event of the topic
            decoder = decode_feedback if name == "FeedbackIn" else decode_engagement
            decoder(orjson.dumps(example))
        assert post(client, path, example).status_code == 202
    assert "503" in doc["paths"]["/v1/allocate"]["post"]["responses"]
    assert "/readyz" in doc["paths"]


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/feedback", feedback(0)), ("/v1/feedback", [feedback(1), feedback(2)]),
    ("/v1/feedback", [feedback(3), feedback(4, rating=0)]), ("/v1/feedback", b"{"),
    ("/v1/engagement", engagement(5)), ("/v1/engagement", []),
    ("/v1/exposures", {"event_id": "x", "ts_ms": 1, "unit_id": "u", "conversation_id": "c",
                       "arm_id": "gpt35", "reason": "timeout"}),
    ("/v1/exposures", {"event_id": "x", "ts_ms": "1", "unit_id": "u"}),
])
def test_the_fastapi_routes_answer_like_the_edge(tmp_path: Path, path: str, body: Any) -> None:
    async def answer(edge_on: bool) -> tuple[int, Any, list[Any]]:
        sink = ListSink()
        app = create_app(make_config(tmp_path / str(edge_on)), arms=base_arms(), sink=sink)
        if not edge_on:
            app.edge = None  # type: ignore[attr-defined]
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            r = await client.post(path, content=body if isinstance(body, bytes)
                                  else orjson.dumps(body), headers=TOKEN)
        return r.status_code, r.json(), [dataclasses.astuple(e) for e in sink.events]

    assert asyncio.run(answer(True)) == asyncio.run(answer(False))
