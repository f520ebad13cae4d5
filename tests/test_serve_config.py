"""The one config tree: config_to_toml round-trips, the [model] and [dashboard] sections
are validated like every other, and serve.snapshot_dir is a deprecated alias of model.dir."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from bandit.config import (
    Config,
    DashboardConfig,
    ExperimentConfig,
    ModelConfig,
    ServeConfig,
    VariantConfig,
    config_to_toml,
    load_config,
)
from bandit.errors import ConfigError

_CONFIGS = [
    (Config(), "defaults"),
    (Config(serve=ServeConfig(tokens=("tok-a", "tok-b"), admin_tokens=("adm",), port=9001,
                              max_decision_skew_s=315360000.0),
            model=ModelConfig(dir="/srv/models"),
            dashboard=DashboardConfig(clock="simulated", as_of_ms=1767571200000,
                                      stale_after_s=1e9, results_dir="out")),
     "tokens, model dir, simulated dashboard"),
    (Config(experiment=ExperimentConfig(id="demo", salt="s", control="a", guardrails=(),
                                        variants=(VariantConfig("a", 0.25, "fixed", ("baseline",)),
                                                  VariantConfig("b", 0.75, "linear_thompson")))),
     "variants, empty guardrails"),
]


@pytest.mark.parametrize("config", [c for c, _ in _CONFIGS], ids=[d for _, d in _CONFIGS])
def test_config_to_toml_round_trips(tmp_path: Path, config: Config) -> None:
    path = tmp_path / "switchboard.toml"
    path.write_text(config_to_toml(config))
    assert load_config(path, env={}) == config


def test_config_to_toml_leaves_out_the_deprecated_alias() -> None:
    text = config_to_toml(Config(model=ModelConfig(dir="/srv/models")))
    assert "snapshot_dir" not in text and 'dir = "/srv/models"' in text


@pytest.mark.parametrize(("env", "field"), [
    ({"SWITCHBOARD_DASHBOARD__STALE_AFTER_S": "0"}, "dashboard.stale_after_s"),
    ({"SWITCHBOARD_DASHBOARD__LAG_AFTER_S": "-1"}, "dashboard.lag_after_s"),
    ({"SWITCHBOARD_DASHBOARD__STORE_TTL_S": "0"}, "dashboard.store_ttl_s"),
    ({"SWITCHBOARD_DASHBOARD__STORE_TTL_S": "soon"}, "dashboard.store_ttl_s"),
    ({"SWITCHBOARD_DASHBOARD__AS_OF_MS": "-5"}, "dashboard.as_of_ms"),
    ({"SWITCHBOARD_DASHBOARD__CLOCK": "sim"}, "dashboard.clock"),
    ({"SWITCHBOARD_DASHBOARD__NOW": "1"}, "dashboard.now"),
    ({"SWITCHBOARD_MODEL__DIR": '""'}, "model.dir"),
])
def test_dashboard_and_model_sections_are_validated(env: dict[str, str], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env=env)
    assert info.value.field == field


def test_dashboard_settings_come_from_the_environment_scheme() -> None:
    cfg = load_config(env={"SWITCHBOARD_DASHBOARD__CLOCK": "simulated",
                           "SWITCHBOARD_DASHBOARD__AS_OF_MS": "1767571200000",
                           "SWITCHBOARD_DASHBOARD__STORE_TTL_S": "2.5"})
    assert (cfg.dashboard.clock, cfg.dashboard.as_of_ms, cfg.dashboard.store_ttl_s) == \
        ("simulated", 1767571200000, 2.5)


def test_serve_snapshot_dir_is_a_deprecated_alias_of_model_dir(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bandit.config

    monkeypatch.setattr(bandit.config, "_deprecation_logged", False)
    path = tmp_path / "old.toml"
    path.write_text('[serve]\nsnapshot_dir = "/old/place"\n')
    with caplog.at_level(logging.WARNING, logger="bandit.config"):
        old = load_config(path, env={})
        load_config(path, env={})
    assert old.model.dir == old.serve.snapshot_dir == "/old/place"
    assert [r.getMessage() for r in caplog.records].count(
        "serve.snapshot_dir is deprecated: set model.dir (SWITCHBOARD_MODEL__DIR) instead") == 1
    new = load_config(env={"SWITCHBOARD_MODEL__DIR": "/new/place"})
    assert new.model.dir == new.serve.snapshot_dir == "/new/place"
    moved = dataclasses.replace(old, model=ModelConfig(dir="/elsewhere"))
    assert moved.model.dir == moved.serve.snapshot_dir == "/elsewhere"
    both = tmp_path / "both.toml"
    both.write_text('[serve]\nsnapshot_dir = "/old/place"\n[model]\ndir = "/new/place"\n')
    with pytest.raises(ConfigError, match=r"model\.dir") as info:
        load_config(both, env={})
    assert info.value.field == "serve.snapshot_dir"


def test_the_demo_config_is_generated_from_the_one_config(tmp_path: Path) -> None:
    """``switchboard demo`` writes its services' TOML with config_to_toml, the dashboard's
    simulated clock included (no hand-written template, no extra environment)."""
    from simulations.demo import DemoOptions, _config
    from simulations.stack import StackPaths
    from simulations.world import World

    opts = DemoOptions(workdir=tmp_path)
    world = cast(World, SimpleNamespace(dim=16))  # the config needs the world's dimension only
    config = _config(opts, world, "127.0.0.1:9", StackPaths(tmp_path), 8123, 9100)
    path = tmp_path / "switchboard.toml"
    path.write_text(config_to_toml(config))
    loaded = load_config(path, env={})
    assert loaded == config
    assert (loaded.dashboard.clock, loaded.model.dir, loaded.serve.tokens) == \
        ("simulated", str(tmp_path / "snapshots"), (opts.token,))
