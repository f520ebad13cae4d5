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

from typing import Any

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
POLICY_NAMES: tuple[str, ...] = (*_LINEAR, "vw")


def make_policy(config: PolicyConfig, arms: ArmRegistry) -> Any:
    """Build the policy named by ``config.name`` over the (live) arm registry.

    Arms registered later are picked up on the next call without a restart. ``vw``
    imports Vowpal Wabbit lazily (:mod:`bandit.adapters.vw`).
    """
    if config.name == "vw":
        from bandit.adapters.vw import VWPolicy

        return VWPolicy(config, arms)
    try:
        cls = _LINEAR[config.name]
    except KeyError:
        raise ConfigError(
            "policy.name", config.name, f"must be one of {list(POLICY_NAMES)}"
        ) from None
    return cls(config, arms)
