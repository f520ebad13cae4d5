"""Policies outside the core are plugins: the core finds ``vw`` through an entry point and
never imports an adapter itself."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import EntryPoint

import pytest

import bandit.policies as policies
from bandit.arms import Arm, ArmRegistry
from bandit.config import PolicyConfig
from bandit.errors import ConfigError


def _arms() -> ArmRegistry:
    return ArmRegistry([Arm("a"), Arm("b")])


def test_vw_is_found_through_its_entry_point() -> None:
    assert "vw" in policies.POLICY_NAMES
    assert policies._plugins()["vw"].value == "bandit.adapters.vw:make_vw_policy"
    pol = policies.make_policy(PolicyConfig(name="vw", dim=3), _arms())
    assert type(pol).__module__ == "bandit.adapters.vw"


def test_unknown_policy_names_the_field_and_the_choices() -> None:
    with pytest.raises(ConfigError) as err:
        policies.make_policy(PolicyConfig(name="nosuch", dim=3), _arms())  # type: ignore[arg-type]
    text = str(err.value)
    assert "policy.name" in text and "nosuch" in text and "'vw'" in text


def test_a_plugin_that_cannot_be_imported_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = EntryPoint("broken", "switchboard_no_such_module:Policy", policies.PLUGIN_GROUP)
    monkeypatch.setattr(policies, "_plugins", lambda: {"broken": broken})
    with pytest.raises(ConfigError) as err:
        policies.make_policy(PolicyConfig(name="broken", dim=3), _arms())  # type: ignore[arg-type]
    assert "policy.name" in str(err.value) and "switchboard_no_such_module" in str(err.value)


def test_the_core_imports_no_adapter() -> None:
    code = ("import sys, numpy as np\n"
            "from bandit.arms import Arm, ArmRegistry\n"
            "from bandit.config import PolicyConfig\n"
            "from bandit.policies import make_policy\n"
            "p = make_policy(PolicyConfig(name='linucb', dim=3), ArmRegistry([Arm('a')]))\n"
            "p.choose(np.ones(3), np.random.default_rng(0))\n"
            "print(sorted(m for m in sys.modules if m.startswith('bandit.adapters')"
            " or m == 'vowpal_wabbit_next'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
