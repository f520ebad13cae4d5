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
solve). With Q_a = (I ⊗ f̃_a)ᵀ A₀⁻¹ (I ⊗ f̃_a) (d × d per arm) the shared variance term is
λ²·u_aᵀQ_a u_a, so a choice costs O(K d²) like disjoint LinUCB.

Learning one event is a rank-one change (Sherman–Morrison, as in the disjoint solver):
when arm j's A_j⁻¹ drops by u uᵀ/den (u = A_j⁻¹x), C_j = λ(I − λA_j⁻¹) grows by
λ²u uᵀ/den, so A₀ grows by w wᵀ with w = λ (u/√den) ⊗ f̃_j, and b₀ moves by c·w with
c = (r − xᵀθ̂_j)/√den (θ̂_j moved by u(r − xᵀθ̂_j)/den). Then, with g = A₀⁻¹w and
den₀ = 1 + wᵀg (Li et al.'s Algorithm 2 with its A₀⁻¹ cached and downdated):

    A₀⁻¹ ← A₀⁻¹ − g gᵀ/den₀,    β ← β + g·(c − wᵀβ)/den₀,

the second the same identity applied to β = A₀⁻¹b₀, in O(p) with p = d(m+1); every Q_a
drops by h_ah_aᵀ with h_a = (I ⊗ f̃_a)ᵀg/√den₀ (queued and folded in every few events).
So an update costs O(p² + K d²) (the K d² amortised, in the folds) instead of the
O(K d² m² + p³) rebuild, and a choice stays O(K d²). A batch of events takes the same
downdates column by column, with β then recomputed as A₀⁻¹b₀. The rebuild (exact,
from the statistics) still runs after anything that is not a plain addition (merge,
forgetting, restore, feature changes) and every ``refactor_every`` rank updates,
against drift. A₀⁻¹ lives in its lower triangle
and is updated with BLAS ``dsyr``/``dsymv`` (numpy has no in-place rank-one update).
The per-arm matrices are kept pre-scaled, ``_Q[a] = λ²Q_a`` and queued rows ``λh_a``,
so the choice adds no scalar passes.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.linalg.blas import daxpy, dsymv, dsyr

from bandit.arms import ArmRegistry
from bandit.config import HybridParams
from bandit.errors import ConfigError
from bandit.kernels import hybrid_scores
from bandit.policies.common import FloatArray, IntArray, LinearPolicy, floored_argmax

__all__ = ["HybridLinUCB"]

#: rank-one downdates of the per-arm Q_a queued before they are folded in (one batched
#: product instead of K outer products per event)
_FOLD = 8


class HybridLinUCB(LinearPolicy):
    """Hybrid LinUCB; ``alpha`` is α, ``ridge_lambda`` λ, ``arm_feature_dim`` is m."""

    name = "hybrid_linucb"
    params_type = HybridParams
    params: HybridParams
    #: rank updates of the shared factor before it is rebuilt exactly from the statistics
    refactor_every: int = 512

    def __init__(self, params: HybridParams, arms: ArmRegistry) -> None:
        if not isinstance(params, HybridParams):
            raise ConfigError("policy", type(params).__name__, "hybrid_linucb takes HybridParams")
        config = params
        self._m1 = config.arm_feature_dim + 1
        p = config.dim * self._m1
        self._F = np.zeros((0, self._m1))
        self._lamF = self._F  # λ·F, for the cached λB f̃_a
        self._shared_dirty = True
        self._shared_since = 0
        self._beta = np.zeros((config.dim, self._m1))
        self._G = np.zeros((0, config.dim))
        self._A0inv = np.asfortranarray(np.eye(p))  # lower triangle valid
        self._Q = np.zeros((0, config.dim, config.dim))
        self._H = np.zeros((_FOLD, 0, config.dim))  # queued downdates of Q (see _push_h)
        self._nh = 0
        self._u = np.empty(config.dim)  # the scoring kernel's scratch A⁻¹x
        super().__init__(params, arms)

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
            self._lamF = self._solver.lam * F
            self._shared_dirty = True

    def _on_stats_changed(self, downdates: list[tuple[int, FloatArray]] | None = None) -> None:
        if downdates is None or self._shared_dirty:
            self._shared_dirty = True
            return
        for k, D in downdates:
            for c in range(D.shape[1]):  # a rank-m change is m rank-one changes
                if not self._downdate_shared(k, D[:, c], 1.0, math.nan):
                    self._shared_dirty = True
                    return
        self._update_beta()
        self._count_rank_update()

    def _on_event(self, slot: int, u: FloatArray, den: float, residual: float) -> None:
        if self._shared_dirty:
            return  # rebuilt exactly on the next choice anyway
        scale = 1.0 / math.sqrt(den)
        if not self._downdate_shared(slot, u, scale, residual * scale):
            self._shared_dirty = True
            return
        self._G = self._lamF @ self._beta.T
        self._count_rank_update()

    def _count_rank_update(self) -> None:
        self._shared_since += 1
        if self._shared_since >= self.refactor_every:
            self._shared_dirty = True

    def _downdate_shared(self, k: int, v: FloatArray, scale: float, c: float) -> bool:
        """A₀ += w wᵀ with w = λ·scale·v ⊗ f̃_k (module docstring); False on drift.

        β takes its O(p) update when ``c`` (b₀ moved by c·w) is finite; otherwise the
        caller recomputes it.
        """
        F = self._F
        if k >= F.shape[0] or self._Q.shape[0] != F.shape[0]:
            return False
        lam = self._solver.lam
        w = np.multiply.outer(v, F[k] * (lam * scale)).reshape(-1)
        A0inv = self._A0inv
        g = dsymv(1.0, A0inv, w, lower=1)
        den0 = 1.0 + float(w @ g)
        if not (den0 >= 1.0 and math.isfinite(den0)):  # wᵀA₀⁻¹w >= 0 exactly: drift
            return False
        if math.isfinite(c):
            beta = self._beta.reshape(-1)  # a view: updated in place
            daxpy(g, beta, a=(c - float(w @ beta)) / den0)
        self._A0inv = dsyr(-1.0 / den0, g, a=A0inv, lower=1, overwrite_a=1)
        self._push_h(F @ g.reshape(self._dim, self._m1).T, lam / math.sqrt(den0))
        return True

    def _push_h(self, H: FloatArray, scale: float) -> None:
        """Queue _Q[a] −= (scale·h_a)(scale·h_a)ᵀ (row a of ``H``); folded every _FOLD."""
        if self._nh == _FOLD:
            Hs = self._H.transpose(1, 0, 2)  # (K, _FOLD, d)
            self._Q -= np.matmul(Hs.transpose(0, 2, 1), Hs)
            self._nh = 0
        np.multiply(H, scale, out=self._H[self._nh])
        self._nh += 1

    @property
    def beta(self) -> FloatArray:
        """β as a d × (m+1) matrix (refreshed on access)."""
        with self._lock:
            self._sync()
            self._refresh_shared()
            return self._beta.copy()

    def _update_beta(self) -> None:
        b0 = self._solver.lam * (self._solver.theta.T @ self._F).reshape(-1)
        self._beta = dsymv(1.0, self._A0inv, b0, lower=1).reshape(self._dim, self._m1)
        self._G = self._lamF @ self._beta.T  # λB f̃_a of every arm, (K, d)

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
        L0inv = np.linalg.solve(np.linalg.cholesky(A0), np.eye(p))
        A0inv = L0inv.T @ L0inv
        self._Q = np.einsum("iajb,ka,kb->kij", A0inv.reshape(d, m1, d, m1), F, F,
                            optimize=True)
        self._Q *= lam * lam
        self._A0inv = np.asfortranarray(A0inv)
        self._H = np.zeros((_FOLD, F.shape[0], d))
        self._nh = 0
        self._update_beta()
        self._shared_dirty = False
        self._shared_since = 0

    def _batch_mean_width_sq(
        self, X: FloatArray, idx: IntArray, full: bool = False
    ) -> tuple[FloatArray, FloatArray]:
        """mean_a and s_a (module docstring) for each row of X and each arm in ``idx``."""
        means, s, _ = self._scores(X, idx)
        return means, s

    def _scores(self, X: FloatArray, idx: IntArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """(mean, s, mean + α·sqrt(s)) per row of X and arm of ``idx``: one compiled pass
        (:func:`bandit.kernels.hybrid_scores`) over A_a⁻¹, λ²Q_a and the queued rows."""
        self._refresh_shared()
        solver = self._solver
        shape = (X.shape[0], idx.shape[0])
        means, s, scores = np.empty(shape), np.empty(shape), np.empty(shape)
        hybrid_scores(solver.ainv, solver.theta, self._G, self._Q, self._H[: self._nh], X, idx,
                      self.params.alpha, means, s, scores, self._u)
        return means, s, scores

    def _batch_scores(self, means: FloatArray, widths: FloatArray, idx: IntArray) -> FloatArray:
        return means + self.params.alpha * widths

    def _decide(
        self, x: FloatArray, idx: IntArray, full: bool, rng: np.random.Generator
    ) -> tuple[FloatArray, FloatArray, int]:
        scores = self._scores(x.reshape(1, -1), idx)[2][0]
        probs, pos = floored_argmax(scores, self.params.probability_floor, rng)
        return scores, probs, pos
