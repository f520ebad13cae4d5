"""Allocation policies behind one protocol (:class:`~bandit.policies.base.Policy`).

>>> import numpy as np
>>> from bandit.arms import Arm, ArmRegistry
>>> from bandit.config import PolicyConfig
>>> pol = make_policy(PolicyConfig(name="linucb", dim=3), ArmRegistry([Arm("a"), Arm("b")]))
>>> choice = pol.choose([0.1, 0.2, 0.3], np.random.default_rng(7))
>>> choice.arm_id in ("a", "b"), float(choice.probabilities.sum())
(True, 1.0)
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Final

from bandit.arms import ArmRegistry
from bandit.config import PolicyConfig
from bandit.errors import ConfigError
from bandit.policies.base import Choice, Policy, Statistics
from bandit.policies.common import BatchScores, LinearPolicy, floored_argmax, floored_distribution
from bandit.policies.hybrid import HybridLinUCB
from bandit.policies.linucb import LinUCB
from bandit.policies.simple import EpsilonGreedy, Fixed, Greedy, Uniform
from bandit.policies.thompson import LinearThompson

__all__ = [
    "PLUGIN_GROUP",
    "POLICY_NAMES",
    "BatchScores",
    "Choice",
    "EpsilonGreedy",
    "Fixed",
    "Greedy",
    "HybridLinUCB",
    "LinUCB",
    "LinearPolicy",
    "LinearThompson",
    "Policy",
    "Statistics",
    "Uniform",
    "floored_argmax",
    "floored_distribution",
    "make_policy",
]

_LINEAR: dict[str, type[LinearPolicy]] = {
    cls.name: cls
    for cls in (LinUCB, HybridLinUCB, LinearThompson, EpsilonGreedy, Greedy, Uniform, Fixed)
}
#: entry-point group of policies implemented outside the core (``vw``: Vowpal Wabbit)
PLUGIN_GROUP: Final = "switchboard.policies"


@cache
def _plugins() -> dict[str, EntryPoint]:
    """The installed policy plugins by name; a plugin cannot shadow a built-in policy."""
    return {ep.name: ep for ep in entry_points(group=PLUGIN_GROUP) if ep.name not in _LINEAR}


POLICY_NAMES: tuple[str, ...] = (*_LINEAR, *sorted(_plugins()))


def make_policy(config: PolicyConfig, arms: ArmRegistry) -> Any:
    """Build the policy named by ``config.name`` over the (live) arm registry.

    Arms registered later are picked up on the next call without a restart. A name that is
    not a built-in policy is looked up in the entry-point group ``switchboard.policies``
    (``vw`` is :class:`bandit.adapters.vw.VWPolicy`, registered in ``pyproject.toml``), so
    the core never imports an adapter; the plugin's module is imported only when used.
    """
    cls = _LINEAR.get(config.name)
    if cls is not None:
        return cls(config, arms)
    plugin = _plugins().get(config.name)
    if plugin is None:
        raise ConfigError("policy.name", config.name, f"must be one of {list(POLICY_NAMES)}")
    try:
        factory = plugin.load()
    except ImportError as exc:
        raise ConfigError("policy.name", config.name,
                          f"its plugin {plugin.value} cannot be imported ({exc})") from None
    return factory(config, arms)
