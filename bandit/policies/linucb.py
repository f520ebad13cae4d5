"""Disjoint LinUCB (Li, Chu, Langford, Schapire 2010, Algorithm 1).

score_a(x) = θ_aᵀx + α·sqrt(xᵀA_a⁻¹x), with A_a = λI + Σ xxᵀ and θ_a = A_a⁻¹ Σ r x.
The deterministic argmax is softened by the probability floor (see
:func:`~bandit.policies.common.floored_argmax`), so the propensity is exact.

>>> import numpy as np
>>> from bandit.arms import Arm, ArmRegistry
>>> from bandit.config import LinUCBParams
>>> reg = ArmRegistry([Arm("a"), Arm("b")])
>>> pol = LinUCB(LinUCBParams(dim=2, probability_floor=0.1), reg)
>>> pol.update("a", [1.0, 0.0], 1.0)
>>> c = pol.choose([1.0, 0.0], np.random.default_rng(0))
>>> c.probabilities.tolist(), c.policy_version
([0.9, 0.1], 'linucb:1')
"""

from __future__ import annotations

import numpy as np

from bandit.config import LinUCBParams
from bandit.policies.common import FloatArray, IntArray, LinearPolicy

__all__ = ["LinUCB"]


class LinUCB(LinearPolicy):
    """Disjoint LinUCB over :class:`~bandit.config.LinUCBParams` (α, λ, floor, forgetting)."""

    name = "linucb"
    params_type = LinUCBParams
    params: LinUCBParams

    def _batch_scores(self, means: FloatArray, widths: FloatArray, idx: IntArray) -> FloatArray:
        return means + self.params.alpha * widths

    def _decide(
        self, x: FloatArray, idx: IntArray, full: bool, rng: np.random.Generator
    ) -> tuple[FloatArray, FloatArray, int]:
        solver = self._solver
        solver.ensure(self._stats)
        params = self.params
        return solver.choose(x, idx, params.alpha, params.probability_floor, rng.random())
