"""Linear Thompson sampling (Agrawal & Goyal 2013), disjoint per arm.

Posterior of arm a: θ̃_a ~ N(θ_a, v²A_a⁻¹) (``thompson_v`` is v). For a context x the
sampled score θ̃_aᵀx is N(θ_aᵀx, v²·xᵀA_a⁻¹x), independent across arms, so a draw costs
one normal per arm.

Propensity. The probability that arm a wins a posterior draw has no closed form, so
``choose`` makes D = ``thompson_propensity_draws`` posterior draws, estimates
p̂_a = (draws won by a) / D, mixes in the floor, p_a = f + (1 - K·f)·p̂_a with
f = min(probability_floor, 1/K), and then *draws the arm from p*: with probability
K·f uniformly, otherwise the winner of the first posterior draw (a uniformly chosen
one of the D i.i.d. draws). The logged propensity is therefore the exact probability
of the arm given the draws — unbiased for inverse-propensity weighting — while the
arm is still a genuine Thompson sample. p̂ estimates the "true" Thompson probability
with standard error sqrt(p(1-p)/D) (≤ 0.031 for D = 256).

Arms that cannot plausibly win (posterior mean + 7σ below the best arm's mean − 7σ;
win probability < 1e-11 per draw) are left out of the draws and get p̂ = 0.

``Choice.scores`` are the posterior means θ_aᵀx.
"""

from __future__ import annotations

import numpy as np

from bandit.config import ThompsonParams
from bandit.errors import InvalidInputError
from bandit.policies.common import BatchScores, FloatArray, IntArray, LinearPolicy

__all__ = ["LinearThompson"]

_PRUNE_SIGMAS = 7.0
#: normal draws per chunk of rows in ``probabilities_batch`` (bounds its memory)
_BATCH_DRAWS = 1 << 21


class LinearThompson(LinearPolicy):
    """Linear Thompson sampling; ``thompson_v`` is v, ``ridge_lambda`` is λ."""

    name = "linear_thompson"
    params_type = ThompsonParams
    params: ThompsonParams

    def _decide(
        self, x: FloatArray, idx: IntArray, full: bool, rng: np.random.Generator
    ) -> tuple[FloatArray, FloatArray, int]:
        mu, width_sq = self._mean_width_sq(x, idx, full)
        sigma = self.params.thompson_v * np.sqrt(width_sq)
        K = mu.shape[0]
        D = self.params.thompson_propensity_draws
        # Arms whose draw is 7σ below the best arm's 7σ-low draw win with probability
        # < 1e-11 per draw: they are left out of the Monte-Carlo (K = 1000: most arms).
        spread = _PRUNE_SIGMAS * sigma
        keep = np.flatnonzero(mu + spread >= (mu - spread).max())
        samples = rng.standard_normal((D, keep.shape[0]))
        if keep.shape[0] == K:  # nothing pruned (few arms): no gathers
            samples *= sigma
            samples += mu
            winners = samples.argmax(axis=1)
        else:
            samples *= sigma[keep]
            samples += mu[keep]
            winners = keep[samples.argmax(axis=1)]
        f = min(self.params.probability_floor, 1.0 / K)
        probs = np.bincount(winners, minlength=K) * ((1.0 - K * f) / D)
        probs += f
        u = rng.random()
        pos = int(u / f) if u < K * f else int(winners[0])
        return mu, probs, min(pos, K - 1)

    def _batch_probabilities(self, scores: BatchScores, rng: np.random.Generator | None) -> FloatArray:
        """The Monte-Carlo estimate of ``choose`` (without its pruning of hopeless arms)."""
        if rng is None:
            raise InvalidInputError("rng", rng, "is required for linear_thompson probabilities")
        mu = scores.means
        sigma = self.params.thompson_v * scores.widths
        n, K = mu.shape
        D = self.params.thompson_propensity_draws
        f = min(self.params.probability_floor, 1.0 / K)
        out = np.empty((n, K))
        step = max(1, _BATCH_DRAWS // (D * K))
        for start in range(0, n, step):
            m, s = mu[start:start + step], sigma[start:start + step]
            draws = m[:, None, :] + s[:, None, :] * rng.standard_normal((m.shape[0], D, K))
            winners = draws.argmax(axis=2) + K * np.arange(m.shape[0])[:, None]
            wins = np.bincount(winners.reshape(-1), minlength=m.shape[0] * K).reshape(-1, K)
            out[start:start + step] = f + (1.0 - K * f) * (wins / D)
        return out
