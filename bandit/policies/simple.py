"""Baseline policies: ε-greedy / greedy, uniform, fixed.

* ``epsilon_greedy`` — with probability ε a uniform arm, otherwise the arm with the
  highest ridge estimate θ_aᵀx; every arm gets at least max(ε/K, floor).
  ``greedy`` is the ε = 0 case (floor only).
* ``uniform`` — every eligible arm with probability 1/K (the randomised baseline).
* ``fixed`` — always ``policy.fixed_arm`` with probability 1 (the control variant, e.g.
  GPT-3.5). The floor deliberately does not apply: exploring would contaminate the
  control. If the fixed arm is not eligible the call fails with a clear error.

All three learn the same ridge statistics as LinUCB (updates are cheap), so switching
a variant's policy or evaluating it offline reuses what was learnt.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from bandit.config import (
    EpsilonGreedyParams,
    FixedParams,
    GreedyParams,
    LinearParams,
    UniformParams,
)
from bandit.errors import InvalidInputError, UnknownArmError
from bandit.policies.base import Choice
from bandit.policies.common import (
    BatchScores,
    FloatArray,
    IntArray,
    LinearPolicy,
    floored_argmax,
    floored_distribution,
)

__all__ = ["EpsilonGreedy", "Fixed", "Greedy", "Uniform"]


class EpsilonGreedy(LinearPolicy):
    """ε-greedy over ridge estimates; ``epsilon`` is ε."""

    name = "epsilon_greedy"
    params_type: ClassVar[type[LinearParams]] = EpsilonGreedyParams

    @property
    def epsilon(self) -> float:
        return self.params.epsilon if isinstance(self.params, EpsilonGreedyParams) else 0.0

    def _decide(
        self, x: FloatArray, idx: IntArray, full: bool, rng: np.random.Generator
    ) -> tuple[FloatArray, FloatArray, int]:
        self._solver.ensure(self._stats)
        theta = self._solver.theta
        scores = theta @ x if full else theta[idx] @ x
        K = scores.shape[0]
        floor = max(self.epsilon / K, self.params.probability_floor)
        probs, pos = floored_argmax(scores, floor, rng)
        return scores, probs, pos

    def _batch_probabilities(self, scores: BatchScores, rng: np.random.Generator | None) -> FloatArray:
        K = scores.scores.shape[1]
        return floored_distribution(scores.scores, max(self.epsilon / K, self.params.probability_floor))


class Greedy(EpsilonGreedy):
    """Greedy (ε = 0): the argmax of θ_aᵀx, softened only by the probability floor."""

    name = "greedy"
    params_type = GreedyParams

    @property
    def epsilon(self) -> float:
        return 0.0


class Uniform(LinearPolicy):
    """Every eligible arm with probability 1/K; scores are zeros."""

    name = "uniform"
    params_type = UniformParams

    def _decide(
        self, x: FloatArray, idx: IntArray, full: bool, rng: np.random.Generator
    ) -> tuple[FloatArray, FloatArray, int]:
        K = idx.shape[0]
        return np.zeros(K), np.full(K, 1.0 / K), int(rng.integers(K))

    def _batch_scores(self, means: FloatArray, widths: FloatArray, idx: IntArray) -> FloatArray:
        return np.zeros_like(means)

    def _batch_probabilities(self, scores: BatchScores, rng: np.random.Generator | None) -> FloatArray:
        return np.full(scores.scores.shape, 1.0 / scores.scores.shape[1])


class Fixed(LinearPolicy):
    """Always ``policy.fixed_arm`` (probability 1); scores are its one-hot indicator."""

    name = "fixed"
    params_type = FixedParams
    params: FixedParams

    def choose(
        self,
        context: npt.ArrayLike,
        rng: np.random.Generator,
        eligible: Sequence[str] | None = None,
    ) -> Choice:
        if self.params.fixed_arm not in self.arms:
            raise UnknownArmError(self.params.fixed_arm, field="policy.fixed_arm")
        return super().choose(context, rng, eligible)

    def _fixed_pos(self, idx: IntArray) -> int:
        target = self._stats.slot(self.params.fixed_arm)
        where = np.flatnonzero(idx == target)
        if where.shape[0] == 0:
            raise InvalidInputError(
                "eligible",
                [self._stats.arm_ids[i] for i in idx[:10]],
                f"does not include policy.fixed_arm {self.params.fixed_arm!r} (is it active?)",
            )
        return int(where[0])

    def _decide(
        self, x: FloatArray, idx: IntArray, full: bool, rng: np.random.Generator
    ) -> tuple[FloatArray, FloatArray, int]:
        pos = self._fixed_pos(idx)
        probs = np.zeros(idx.shape[0])
        probs[pos] = 1.0
        return probs.copy(), probs, pos

    def score_batch(
        self, contexts: npt.ArrayLike, eligible: Sequence[str] | None = None
    ) -> BatchScores:
        if self.params.fixed_arm not in self.arms:
            raise UnknownArmError(self.params.fixed_arm, field="policy.fixed_arm")
        return super().score_batch(contexts, eligible)

    def _batch_scores(self, means: FloatArray, widths: FloatArray, idx: IntArray) -> FloatArray:
        out = np.zeros_like(means)
        out[:, self._fixed_pos(idx)] = 1.0
        return out

    def _batch_probabilities(self, scores: BatchScores, rng: np.random.Generator | None) -> FloatArray:
        return scores.scores.copy()
