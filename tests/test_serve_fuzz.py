"""Property fuzz of the allocation API from its own OpenAPI document (allocation, feedback,
engagement, exposures, arms, probes): no input gives a 5xx."""

from __future__ import annotations

import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings

from bandit.arms import Arm
from bandit.config import Config, KafkaConfig, ModelConfig, PolicyConfig, ServeConfig
from bandit.serving.app import create_app
from tests.test_serve import ListSink

_tmp = Path(tempfile.mkdtemp(prefix="serve-fuzz-"))
_app = create_app(
    Config(policy=PolicyConfig(dim=2),
           model=ModelConfig(dir=str(_tmp / "snap")),
           serve=ServeConfig(spill_dir=str(_tmp / "spill"),
                             max_text_chars=200, admin_tokens=("dev-admin-token",)),
           kafka=KafkaConfig(bootstrap_servers="127.0.0.1:1")),
    arms=[Arm("gpt35", kind="baseline"), Arm("e1"), Arm("e2")], sink=ListSink(), seed=1,
)
schema = schemathesis.openapi.from_asgi("/openapi.json", _app)


@schema.parametrize()
@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_api_never_answers_5xx(case: schemathesis.Case) -> None:
    for headers in ({"authorization": "Bearer dev-admin-token"}, {}):
        response = case.call(headers=headers)
        assert response.status_code < 500, (case.method, case.path, response.text)


def test_fuzz_covers_the_event_endpoints() -> None:
    assert {"/v1/allocate", "/v1/feedback", "/v1/engagement", "/v1/exposures",
            "/readyz"} <= set(schema.raw_schema["paths"])
