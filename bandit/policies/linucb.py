"""Disjoint LinUCB (Li, Chu, Langford, Schapire 2010, Algorithm 1).

score_a(x) = θ_aᵀx + α·sqrt(xᵀA_a⁻¹x), with A_a = λI + Σ xxᵀ and θ_a = A_a⁻¹ Σ r x.
The deterministic argmax is softened by the probability floor (see
:func:`~bandit.policies.common.floored_argmax`), so the propensity is exact.

>>> import numpy as np
>>> from bandit.arms import Arm, ArmRegistry
>>> from bandit.config import PolicyConfig
>>> reg = ArmRegistry([Arm("a"), Arm("b")])
>>> pol = LinUCB(PolicyConfig(dim=2, probability_floor=0.1), reg)
>>> pol.update("a", [1.0, 0.0], 1.0)
>>> c = pol.choose([1.0, 0.0], np.random.default_rng(0))
>>> c.probabilities.tolist(), c.policy_version
([0.9, 0.1], 'linucb:1')
"""

from __future__ import annotations

import numpy as np

from bandit.policies.common import FloatArray, IntArray, LinearPolicy, floored_argmax

__all__ = ["LinUCB"]


class LinUCB(LinearPolicy):
    """Disjoint LinUCB; ``alpha`` is α (exploration width), ``ridge_lambda`` is λ."""

    name = "linucb"

    def _decide(
        self, x: FloatArray, idx: IntArray, full: bool, rng: np.random.Generator
    ) -> tuple[FloatArray, FloatArray, int]:
        mean, width_sq = self._mean_width_sq(x, idx, full)
        scores = mean + self.config.alpha * np.sqrt(width_sq)
        probs, pos = floored_argmax(scores, self.config.probability_floor, rng)
        return scores, probs, pos
