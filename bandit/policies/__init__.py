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
from typing import Final

from bandit.arms import ArmRegistry
from bandit.config import POLICY_PARAMS, LinearParams, PolicyConfig, PolicyParams
from bandit.errors import ConfigError
from bandit.policies.base import AdditivePolicy, Choice, Policy, Statistics
from bandit.policies.common import BatchScores, LinearPolicy, floored_argmax, floored_distribution
from bandit.policies.hybrid import HybridLinUCB
from bandit.policies.linucb import LinUCB
from bandit.policies.simple import EpsilonGreedy, Fixed, Greedy, Uniform
from bandit.policies.thompson import LinearThompson

__all__ = [
    "PLUGIN_GROUP",
    "POLICY_NAMES",
    "AdditivePolicy",
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
#: the built-in policy of each exact spec type (``GreedyParams`` -> Greedy, ...)
_BY_PARAMS: dict[type, type[LinearPolicy]] = {cls.params_type: cls for cls in _LINEAR.values()}


def make_policy(config: PolicyConfig | PolicyParams, arms: ArmRegistry) -> Policy:
    """Build the policy named by ``config.name`` (or typed by a parameter spec) over the
    (live) arm registry.

    ``config`` is a ``[policy]`` section (its :meth:`~bandit.config.PolicyConfig.params`
    gives the named policy's spec, errors naming the field) or a spec itself
    (``LinUCBParams(alpha=0.5)``). Arms registered later are picked up on the next call
    without a restart. A name that is not a built-in policy is looked up in the
    entry-point group ``switchboard.policies`` (``vw`` is
    :class:`bandit.adapters.vw.VWPolicy`, registered in ``pyproject.toml``), so the core
    never imports an adapter; the plugin's module is imported only when used. Whether the
    policy can be learnt by partitions is ``isinstance(policy, AdditivePolicy)``.
    """
    name: str
    if isinstance(config, PolicyConfig):
        name = config.name
        cls = _LINEAR.get(name)
        if cls is None and name not in _plugins():
            raise ConfigError("policy.name", name, f"must be one of {list(POLICY_NAMES)}")
        # a plugin without a spec of its own takes the whole [policy] section
        params = config.params() if name in POLICY_PARAMS else config
    else:
        params = config
        cls = _BY_PARAMS.get(type(params))
        name = "vw" if cls is None else cls.name
    if cls is not None:
        if not isinstance(params, LinearParams):
            raise ConfigError("policy", type(params).__name__, f"{name} takes {cls.params_type.__name__}")
        return cls(params, arms)
    plugin = _plugins().get(name)
    if plugin is None:
        raise ConfigError("policy.name", name, f"must be one of {list(POLICY_NAMES)}")
    try:
        factory = plugin.load()
    except ImportError as exc:
        raise ConfigError("policy.name", name,
                          f"its plugin {plugin.value} cannot be imported ({exc})") from None
    policy: Policy = factory(params, arms)
    return policy
