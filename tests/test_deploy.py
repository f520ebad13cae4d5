"""deploy/ is checked, not just written: the topology parses, runs only commands that
exist in this project with flags its CLI accepts, and every setting is documented."""

from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from bandit.cli import build_parser
from bandit.cli.config import config_reference
from bandit.config import Config

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
# Images the topology pulls from registries; everything else must be built from our Dockerfile.
THIRD_PARTY_IMAGES = {"apache/kafka", "clickhouse/clickhouse-server", "nginxinc/nginx-unprivileged"}


def _compose() -> dict[str, Any]:
    data = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def _k8s_docs() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _config_env_vars() -> set[str]:
    out = set()
    for section in dataclasses.fields(Config):
        for f in dataclasses.fields(getattr(Config(), section.name)):
            out.add(f"SWITCHBOARD_{section.name.upper()}__{f.name.upper()}")
    return out


def _switchboard_commands() -> list[list[str]]:
    cmds = []
    for svc in _compose()["services"].values():
        if svc.get("image", "").startswith("switchboard") and "command" in svc:
            cmd = svc["command"]
            cmds.append(shlex.split(cmd) if isinstance(cmd, str) else list(cmd))
    for doc in _k8s_docs():
        spec = doc.get("spec", {})
        pod = spec.get("template", {}).get("spec", {})
        for c in pod.get("initContainers", []) + pod.get("containers", []):
            if c["image"].startswith("switchboard"):
                cmds.append(list(c.get("args", [])))
    return cmds


def test_compose_services_cover_the_topology() -> None:
    services = _compose()["services"]
    assert {"kafka", "clickhouse", "init-topics", "bootstrap", "server", "loadbalancer", "learner",
            "dashboard", "dashboard-proxy"} <= set(services)
    assert services["server"]["deploy"]["replicas"] == 2
    assert services["learner"]["deploy"]["replicas"] == 2
    assert "KRaft" in (DEPLOY / "compose.yaml").read_text() or "controller" in str(services["kafka"])
    for name in ("kafka", "clickhouse", "server", "learner", "dashboard"):
        assert "healthcheck" in services[name], f"{name} has no healthcheck"


def test_compose_images_are_built_here_or_known() -> None:
    for name, svc in _compose()["services"].items():
        image = svc.get("image", "")
        if "build" in svc:
            dockerfile = ROOT / "deploy" / ".." / svc["build"]["dockerfile"]
            assert dockerfile.resolve().is_file(), f"{name}: missing {dockerfile}"
            assert image.startswith("switchboard")
        else:
            assert image.split(":")[0] in THIRD_PARTY_IMAGES, f"{name}: unexpected image {image}"


def test_dockerfile_copies_only_existing_paths() -> None:
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY"):
            *sources, _dest = line.split()[1:]
            for src in sources:
                assert (ROOT / src).exists(), f"Dockerfile copies missing {src}"


@pytest.mark.parametrize("argv", _switchboard_commands(), ids=lambda a: " ".join(a))
def test_deploy_commands_parse_with_the_real_cli(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert getattr(args, "func", None) is not None, f"{argv} is not a runnable command"


def test_deploy_environment_names_real_settings() -> None:
    known = _config_env_vars()
    used: set[str] = set()
    used |= set(re.findall(r"SWITCHBOARD_[A-Z_]+__[A-Z_]+", (DEPLOY / "compose.yaml").read_text()))
    for path in (DEPLOY / "k8s").glob("*.yaml"):
        used |= set(re.findall(r"SWITCHBOARD_[A-Z_]+__[A-Z_]+", path.read_text()))
    assert used, "deploy sets no SWITCHBOARD_* variables"
    assert used <= known, f"unknown settings: {sorted(used - known)}"


def test_baked_config_loads() -> None:
    from bandit.config import load_config

    cfg = load_config(DEPLOY / "switchboard.toml", env={})
    assert cfg.kafka.bootstrap_servers == "kafka:9092"


def test_every_setting_is_documented() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    assert doc.strip() == config_reference().strip(), (
        "docs/configuration.md is stale: run `switchboard config --markdown > docs/configuration.md`"
    )
    for var in _config_env_vars():
        assert var in doc
