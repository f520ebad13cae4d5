"""deploy/prometheus and deploy/grafana: operators can see trouble.

* the alert rules pass ``promtool check rules`` and their unit tests (``promtool test
  rules``: each alert fires on its trouble, and stays quiet on a healthy series);
* every ``switchboard_*`` metric the rules and the Grafana dashboard use is one the code
  really exports (the servers' and the learner's own registries, scraped here);
* every alert is explained in deploy/OPERATIONS.md.

promtool comes from Debian's ``prometheus`` package; when it is missing the fixture
installs it with apt-get (as .ci/ensure-test-tools does before `make test` runs pytest)
rather than skipping.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PROM = ROOT / "deploy" / "prometheus"
RULES = PROM / "switchboard-alerts.yaml"
RULE_TESTS = PROM / "switchboard-alerts.test.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "switchboard.json"
OPERATIONS = ROOT / "deploy" / "OPERATIONS.md"


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    sudo: list[str] = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"]):
        proc = subprocess.run(sudo + cmd, env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            pytest.fail(f"promtool is missing and `{' '.join(cmd)}` failed: {proc.stderr[-1000:]}")
    found = shutil.which("promtool")
    if not found:
        pytest.fail("the prometheus package installed no promtool")
    return found


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_promtool_check_rules(promtool: str) -> None:
    proc = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in proc.stdout


def test_promtool_rule_unit_tests(promtool: str) -> None:
    proc = subprocess.run([promtool, "test", "rules", RULE_TESTS.name], cwd=PROM, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_is_unit_tested_both_ways() -> None:
    """Each alert appears in the unit tests firing at least once and silent at least once."""
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired: set[str] = set()
    silent: set[str] = set()
    for t in tests:
        for case in t["alert_rule_test"]:
            (fired if case["exp_alerts"] else silent).add(case["alertname"])
    alerts = {r["alert"] for r in _rules()}
    assert alerts == fired, f"never shown firing: {alerts - fired}"
    assert alerts == silent, f"never shown silent: {alerts - silent}"


def _exported_metric_names() -> set[str]:
    from prometheus_client import generate_latest

    from bandit.serving.metrics import ServeMetrics
    from consumers.metrics import LearnerMetrics

    serve = ServeMetrics(lambda: 1.0, lambda: 0.0, lambda: 0.0)
    serve.request("/v1/allocate", 200, 0.001)
    serve.decisions.inc(("bandit", "gpt35"))  # labelled families export samples once used
    learner = LearnerMetrics(port=1)  # collectors only: serve() is what binds a port
    names: set[str] = set()
    for registry in (serve.collectors, learner.collectors):
        text = generate_latest(registry).decode()
        names |= set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{| )", text, re.M))
    return names


def _used_names(exprs: list[str]) -> set[str]:
    return {n for e in exprs for n in re.findall(r"\b(switchboard_[a-z_]+)", e)}


def test_rules_and_dashboard_use_metrics_the_code_exports() -> None:
    exported = _exported_metric_names()
    assert "switchboard_requests_total" in exported  # sanity: the scrape above worked
    rule_names = _used_names([r["expr"] for r in _rules()])
    assert rule_names and rule_names <= exported, f"not exported: {sorted(rule_names - exported)}"
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    panel_names = _used_names(exprs)
    assert panel_names and panel_names <= exported, f"not exported: {sorted(panel_names - exported)}"


def test_dashboard_is_importable_grafana_json() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
    (var,) = [v for v in dashboard["templating"]["list"] if v["name"] == "datasource"]
    assert var["type"] == "datasource" and var["query"] == "prometheus"


def test_every_alert_is_explained_in_operations() -> None:
    text = OPERATIONS.read_text()
    for rule in _rules():
        assert re.search(rf"^#+ `?{rule['alert']}`?", text, re.M), \
            f"OPERATIONS.md does not explain {rule['alert']}"
        assert rule["annotations"]["summary"] and rule["labels"]["severity"] in ("warning", "critical")
