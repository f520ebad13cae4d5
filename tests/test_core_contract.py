"""The contract modules: config, events, reward, arms."""

from __future__ import annotations

import math
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bandit.arms import Arm, ArmRegistry
from bandit.config import Config, PolicyConfig, RewardConfig, load_config
from bandit.errors import ConfigError, EventDecodeError, InvalidInputError, UnknownArmError
from bandit.events import (
    MAX_EVENT_BYTES,
    DecisionEvent,
    EngagementEvent,
    FeedbackEvent,
    decode_event,
    encode_event,
)
from bandit.reward import reward_from_proxies

# --------------------------------------------------------------------------- config


def test_config_defaults_load_without_file() -> None:
    cfg = load_config(env={})
    assert cfg == Config() and cfg.policy.name == "linucb"


def test_config_file_and_env_precedence(tmp_path: Path) -> None:
    path = tmp_path / "sb.toml"
    path.write_text('[policy]\nalpha = 2.5\nname = "linear_thompson"\n[kafka]\npartitions = 8\n')
    cfg = load_config(path, env={"SWITCHBOARD_KAFKA__PARTITIONS": "16",
                                 "SWITCHBOARD_KAFKA__BOOTSTRAP_SERVERS": "kafka:9092"})
    assert cfg.policy.alpha == 2.5 and cfg.policy.name == "linear_thompson"
    assert cfg.kafka.partitions == 16 and cfg.kafka.bootstrap_servers == "kafka:9092"


CONFIG_ERRORS = [
    # (toml, field, value fragment, description)
    ("[policy]\nalpha = -1.0\n", "policy.alpha", "-1.0", "negative alpha"),
    ("[policy]\nname = \"magic\"\n", "policy.name", "magic", "unknown policy"),
    ("[policy]\ndim = \"big\"\n", "policy.dim", "big", "string for an int"),
    ("[policy]\nprobability_floor = 1.5\n", "policy.probability_floor", "1.5", "floor > 1"),
    ("[policy]\nbogus = 1\n", "policy.bogus", "1", "unknown setting"),
    ("[reward]\ndefault_reward = 2.0\n", "reward.default_reward", "2.0", "reward outside [0,1]"),
    ("[kafka]\npartitions = 0\n", "kafka.partitions", "0", "no partitions"),
    ("[experiment]\ncontrol = \"nobody\"\n", "experiment.control", "nobody", "unknown control"),
    ("policy = 3\n", "policy", "3", "section that is not a table"),
]


@pytest.mark.parametrize(("toml", "field", "value", "description"), CONFIG_ERRORS,
                         ids=[c[3] for c in CONFIG_ERRORS])
def test_config_error_names_field_and_value(tmp_path: Path, toml: str, field: str, value: str,
                                            description: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.field == field, description
    assert value in str(info.value), description


def test_config_missing_or_invalid_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.toml", env={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[policy\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad, env={})


def test_config_env_override_is_validated() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env={"SWITCHBOARD_POLICY__ALPHA": "-3"})
    assert info.value.field == "policy.alpha" and info.value.value == -3.0


def test_config_is_frozen() -> None:
    cfg = PolicyConfig()
    with pytest.raises(AttributeError):
        cfg.alpha = 3.0  # type: ignore[misc]


# --------------------------------------------------------------------------- events


def _decision(**kw: object) -> DecisionEvent:
    base: dict[str, object] = dict(
        event_id="e1", decision_id="d1", ts_ms=1_700_000_000_000, unit_id="u1",
        conversation_id="c1", experiment_id="exp", variant="bandit", arm_id="roleplay",
        propensity=0.25, policy_version="linucb:3", context=(0.1, -0.2), eligible=("roleplay",),
    )
    base.update(kw)
    return DecisionEvent(**base)  # type: ignore[arg-type]


ids = st.text(min_size=1, max_size=20)


@settings(max_examples=25, deadline=None)
@given(
    event_id=ids, unit=ids, arm=ids,
    prop=st.floats(min_value=1e-6, max_value=1.0),
    ctx=st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=4),
)
def test_events_encode_decode_is_identity(event_id: str, unit: str, arm: str, prop: float,
                                          ctx: list[float]) -> None:
    events = [
        _decision(event_id=event_id, unit_id=unit, arm_id=arm, propensity=prop,
                  context=tuple(ctx)),
        FeedbackEvent(event_id=event_id, decision_id="d", ts_ms=5, unit_id=unit,
                      conversation_id="c", retried=False, rating=4, conversation_length=7),
        EngagementEvent(event_id=event_id, ts_ms=5, unit_id=unit, screen_time_s=12.5,
                        messages=3),
    ]
    for event in events:
        assert decode_event(event.KIND, encode_event(event)) == event


def _raw(**kw: object) -> bytes:
    obj = orjson.loads(encode_event(_decision()))
    obj.update(kw)
    return orjson.dumps({k: v for k, v in obj.items() if v is not _MISSING})


_MISSING = object()

DECODE_ERRORS = [
    # (raw, field, description)
    (b"{not json", "event", "invalid JSON"),
    (b"[1, 2]", "event", "not an object"),
    (_raw(schema_version=2), "schema_version", "unknown schema version"),
    (_raw(propensity=0.0), "propensity", "zero propensity"),
    (_raw(propensity=1.5), "propensity", "propensity above 1"),
    (_raw(context=[]), "context", "empty context"),
    (_raw(context=[0.1, "x"]), "context[1]", "non-numeric context"),
    (_raw(event_id=""), "event_id", "empty event id"),
    (_raw(ts_ms=-5), "ts_ms", "negative timestamp"),
    (_raw(arm_id=_MISSING), "arm_id", "missing arm id"),
    (b"{" + b" " * MAX_EVENT_BYTES + b"}", "event", "oversized event"),
]


@pytest.mark.parametrize(("raw", "field", "description"), DECODE_ERRORS,
                         ids=[d[2] for d in DECODE_ERRORS])
def test_events_decode_error_names_field_and_keeps_raw(raw: bytes, field: str,
                                                        description: str) -> None:
    with pytest.raises(EventDecodeError) as info:
        decode_event("decision", raw)
    assert info.value.field == field, description
    assert info.value.raw == raw


def test_events_decode_unknown_kind() -> None:
    with pytest.raises(EventDecodeError, match="kind"):
        decode_event("click", b"{}")


def test_events_feedback_rating_range() -> None:
    raw = encode_event(FeedbackEvent(event_id="e", decision_id="d", ts_ms=1, unit_id="u",
                                     conversation_id="c", rating=3))
    bad = raw.replace(b'"rating":3', b'"rating":9')
    with pytest.raises(EventDecodeError) as info:
        decode_event("feedback", bad)
    assert info.value.field == "rating"


# --------------------------------------------------------------------------- reward


def test_reward_closed_forms() -> None:
    cfg = RewardConfig()
    assert reward_from_proxies(cfg, retried=False, rating=5, conversation_length=20) == 1.0
    assert reward_from_proxies(cfg, retried=True) == 0.0
    # weights renormalised over observed proxies: (0.5·1 + 0.3·0.5) / 0.8
    assert reward_from_proxies(cfg, retried=False, rating=3) == pytest.approx(0.65 / 0.8)
    assert reward_from_proxies(cfg) == cfg.default_reward
    assert reward_from_proxies(RewardConfig(default_reward=0.3)) == 0.3


@settings(max_examples=100, deadline=None)
@given(st.none() | st.booleans(), st.none() | st.integers(1, 5),
       st.none() | st.integers(0, 10_000))
def test_reward_is_in_unit_interval(retried: bool | None, rating: int | None,
                                    length: int | None) -> None:
    r = reward_from_proxies(RewardConfig(), retried=retried, rating=rating,
                            conversation_length=length)
    assert 0.0 <= r <= 1.0 and math.isfinite(r)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"rating": 0}, "rating"), ({"rating": 6}, "rating"), ({"rating": True}, "rating"),
    ({"retried": 1}, "retried"), ({"conversation_length": -1}, "conversation_length"),
    ({"conversation_length": float("nan")}, "conversation_length"),
])
def test_reward_rejects_bad_proxies(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        reward_from_proxies(RewardConfig(), **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


# --------------------------------------------------------------------------- arms


def test_arms_registry_add_retire_reactivate() -> None:
    reg = ArmRegistry([Arm("gpt35", kind="baseline"), Arm("roleplay")])
    v = reg.version
    reg.retire("roleplay")
    assert reg.version > v and [a.arm_id for a in reg.active()] == ["gpt35"]
    assert "roleplay" in reg  # retired, not forgotten
    reg.add(Arm("roleplay"))
    assert [a.arm_id for a in reg.active(kinds=["expert"])] == ["roleplay"]


def test_arms_resolve_eligible_errors() -> None:
    reg = ArmRegistry([Arm("a"), Arm("b", kind="baseline")])
    assert reg.resolve_eligible(None, kinds=["baseline"]) == ["b"]
    assert reg.resolve_eligible(["b", "a", "b"]) == ["b", "a"]
    with pytest.raises(UnknownArmError) as info:
        reg.resolve_eligible(["a", "zzz"])
    assert info.value.field == "eligible[1]"
    with pytest.raises(InvalidInputError, match="eligible"):
        reg.resolve_eligible([])


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"arm_id": ""}, "arm_id"), ({"arm_id": "x" * 200}, "arm_id"),
    ({"arm_id": "a", "kind": "robot"}, "kind"),
    ({"arm_id": "a", "features": (1.0, float("nan"))}, "features[1]"),
])
def test_arms_reject_bad_arm(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        Arm(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_arms_feature_dim_enforced_and_round_trip() -> None:
    reg = ArmRegistry(feature_dim=2)
    with pytest.raises(InvalidInputError, match="features"):
        reg.add(Arm("a", features=(1.0,)))
    reg.add(Arm("a", features=(1.0, 2.0)))
    reg.retire("a")
    back = ArmRegistry.from_list(reg.to_list(), feature_dim=2)
    assert back.to_list() == reg.to_list()
