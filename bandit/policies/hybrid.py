"""Hybrid LinUCB (Li, Chu, Langford, Schapire 2010, Algorithm 2) over arm content features.

Model: r = zᵀβ + xᵀθ_a with the shared features z = x ⊗ f̃_a, where f̃_a = (1, f_a) is the
arm's content-feature vector (``Arm.features``, length ``policy.arm_feature_dim``) with
a leading 1, so β also holds a global x-only term. An arm without features has
f_a = 0 and is scored by the global and disjoint terms only. Because β is shared, a
brand-new arm with informative features is scored from its first request.

State is the *disjoint* statistics only: since f̃_a is constant per arm, Li et al.'s
B_a = Σ x zᵀ = S_a ⊗ f̃_aᵀ and Σ z zᵀ = Σ_a S_a ⊗ f̃_a f̃_aᵀ are functions of
S_a = Σ xxᵀ, so the same additive :class:`~bandit.linear.RidgeStatistics` (merge, forget,
snapshot) serve both models. At solve time (Schur complement of the joint ridge system,
λ on every coefficient; S_a − S_aA_a⁻¹S_a = λS_aA_a⁻¹ = λ(I − λA_a⁻¹)):

    A₀ = λI + Σ_a λ(I − λA_a⁻¹) ⊗ f̃_a f̃_aᵀ,    b₀ = λ Σ_a θ̂_a ⊗ f̃_a,    β = A₀⁻¹b₀,

with θ̂_a = A_a⁻¹b_a. For a context x, with u_a = A_a⁻¹x:

    mean_a = θ̂_aᵀx + λ·u_aᵀ B f̃_a           (B = β reshaped to d × (m+1))
    s_a    = xᵀA_a⁻¹x + ‖L₀⁻¹ (λ u_a ⊗ f̃_a)‖²  (Li et al.'s s_{t,a}, A₀ = L₀L₀ᵀ)
    score  = mean_a + α·sqrt(s_a)

which equal the joint ridge posterior mean and variance (tested against a direct
solve). The shared factor is rebuilt lazily after statistics or features change,
at O(K d² m² + (dm)³).
"""

from __future__ import annotations

import numpy as np

from bandit.arms import ArmRegistry
from bandit.config import PolicyConfig
from bandit.errors import ConfigError
from bandit.policies.common import FloatArray, IntArray, LinearPolicy, floored_argmax

__all__ = ["HybridLinUCB"]


class HybridLinUCB(LinearPolicy):
    """Hybrid LinUCB; ``alpha`` is α, ``ridge_lambda`` λ, ``arm_feature_dim`` is m."""

    name = "hybrid_linucb"

    def __init__(self, config: PolicyConfig, arms: ArmRegistry) -> None:
        if config.arm_feature_dim <= 0:
            raise ConfigError(
                "policy.arm_feature_dim", config.arm_feature_dim, "must be > 0 for hybrid_linucb"
            )
        self._m1 = config.arm_feature_dim + 1
        self._F = np.zeros((0, self._m1))
        self._shared_dirty = True
        self._beta = np.zeros((config.dim, self._m1))
        self._L0inv = np.eye(config.dim * self._m1)
        super().__init__(config, arms)

    def _on_arms_changed(self) -> None:
        F = np.zeros((self._stats.n_arms, self._m1))
        F[:, 0] = 1.0
        for i, arm_id in enumerate(self._stats.arm_ids):
            if arm_id in self.arms:
                feats = self.arms.get(arm_id).features
                if feats is not None:
                    if len(feats) != self._m1 - 1:
                        raise ConfigError(
                            f"arms[{arm_id}].features", len(feats),
                            f"must have policy.arm_feature_dim = {self._m1 - 1} values",
                        )
                    F[i, 1:] = feats
        if F.shape != self._F.shape or not np.array_equal(F, self._F):
            self._F = F
            self._shared_dirty = True

    def _on_stats_changed(self) -> None:
        self._shared_dirty = True

    @property
    def beta(self) -> FloatArray:
        """β as a d × (m+1) matrix (refreshed on access)."""
        self._sync()
        self._refresh_shared()
        return self._beta

    def _refresh_shared(self) -> None:
        self._solver.ensure(self._stats)
        if not self._shared_dirty:
            return
        lam = self._solver.lam
        d, m1 = self._dim, self._m1
        Ainv = self._solver.ainv
        C = lam * (np.eye(d) - lam * Ainv)
        F = self._F
        G = F[:, :, None] * F[:, None, :]
        p = d * m1
        A0 = lam * np.eye(p) + np.einsum("kij,kab->iajb", C, G).reshape(p, p)
        b0 = lam * np.einsum("ki,ka->ia", self._solver.theta, F).reshape(p)
        L0 = np.linalg.cholesky(A0)
        self._L0inv = np.asarray(np.linalg.solve(L0, np.eye(p)), dtype=np.float64)
        self._beta = (self._L0inv.T @ (self._L0inv @ b0)).reshape(d, m1)
        self._shared_dirty = False

    def _decide(
        self, x: FloatArray, idx: IntArray, full: bool, rng: np.random.Generator
    ) -> tuple[FloatArray, FloatArray, int]:
        self._refresh_shared()
        lam = self._solver.lam
        Ainv = self._solver.ainv if full else self._solver.ainv[idx]
        theta = self._solver.theta if full else self._solver.theta[idx]
        F = self._F if full else self._F[idx]
        u = Ainv @ x
        mean = theta @ x + lam * np.einsum("ka,ka->k", u @ self._beta, F)
        W = (lam * u[:, :, None] * F[:, None, :]).reshape(u.shape[0], -1)
        shared = W @ self._L0inv.T
        s = u @ x + np.einsum("ij,ij->i", shared, shared)
        scores = mean + self.config.alpha * np.sqrt(s)
        probs, pos = floored_argmax(scores, self.config.probability_floor, rng)
        return scores, probs, pos
