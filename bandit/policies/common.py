"""Shared machinery of the linear policies: eligibility caching, floors, sampling.

Every policy here keeps :class:`~bandit.linear.RidgeStatistics` as its learnt state
(even ``uniform`` and ``fixed``, so that switching a variant's policy, leaderboards and
off-policy evaluation can reuse what was learnt), and returns exact propensities: the
logged probability is the probability with which the arm was actually drawn.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from bandit import kernels
from bandit.arms import ArmRegistry
from bandit.config import LinearParams, PolicyConfig
from bandit.errors import ConfigError, InvalidInputError, UnknownArmError
from bandit.kernels import draw_floored_argmax
from bandit.linear import (
    RidgeSolver,
    RidgeStatistics,
    _as_reward,
    as_context,
    as_contexts,
    as_rewards,
    forgetting_factor,
)
from bandit.policies.base import Choice, Statistics

__all__ = ["BatchScores", "LinearPolicy", "floored_argmax", "floored_distribution"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
_ELIGIBLE_CACHE_MAX = 4096


def floored_argmax(
    scores: FloatArray, floor: float, rng: np.random.Generator
) -> tuple[FloatArray, int]:
    """Greedy-with-floor distribution over ``scores`` and one draw from it.

    Every non-maximal arm gets ``floor`` (clamped to ``1/K``); the ``T`` arms tied at the
    maximum share the rest equally, ``(1 - (K - T)·floor) / T`` each. Returns the
    probabilities and the index drawn with ``rng`` (one uniform number; the kernel
    :func:`bandit.kernels.draw_floored_argmax` maps it to an arm).
    """
    probs = np.empty(scores.shape[0])
    pos = draw_floored_argmax(scores, floor, rng.random(), probs)
    return probs, pos


def floored_distribution(scores: FloatArray, floor: float) -> FloatArray:
    """Row-wise :func:`floored_argmax` probabilities of an ``(n, K)`` score matrix.

    Each row: non-maximal arms get f = min(floor, 1/K), the T arms tied at the row's
    maximum share the rest, (1 − (K − T)·f)/T each — the distribution ``choose`` draws from.
    """
    K = scores.shape[1]
    f = min(floor, 1.0 / K)
    top = scores == scores.max(axis=1, keepdims=True)
    T = top.sum(axis=1, keepdims=True)
    out: FloatArray = np.where(top, (1.0 - (K - T) * f) / T, f)
    return out


@dataclass(frozen=True, slots=True)
class BatchScores:
    """What a linear policy computes for a batch of contexts (rows) over the same arms.

    ``means[i, j]`` is the model's expected reward of ``arms[j]`` for context ``i``
    (θ_aᵀx; hybrid: with the shared term), ``widths[i, j]`` the posterior standard
    deviation factor sqrt(xᵀA_a⁻¹x) (hybrid: sqrt(s_a)), ``scores[i, j]`` what the policy
    ranks by (LinUCB: mean + α·width; Thompson, greedy: the mean; uniform: 0; fixed:
    the one-hot indicator of the fixed arm) — as ``Choice.scores`` for that context.
    All ``(n, K)`` float64, computed in double precision from the cached factors.
    """

    arms: tuple[str, ...]
    means: FloatArray
    widths: FloatArray
    scores: FloatArray


def _rows(contexts: npt.ArrayLike) -> int:
    shape = np.shape(contexts)
    return int(shape[0]) if len(shape) == 2 else 1


class LinearPolicy:
    """Base of the policies over per-arm ridge statistics (see :mod:`bandit.linear`).

    Subclasses implement ``_decide(x, idx, full, rng) -> (scores, probabilities, pos)``
    over the eligible slots ``idx`` (``full`` when ``idx`` is every slot in order).
    """

    name: ClassVar[str] = "linear"
    #: the frozen parameter spec this policy takes (:mod:`bandit.config`)
    params_type: ClassVar[type[LinearParams]] = LinearParams
    uses_solver: ClassVar[bool] = True
    params: LinearParams

    def __init__(self, params: LinearParams, arms: ArmRegistry) -> None:
        if not isinstance(params, self.params_type):
            raise ConfigError("policy", type(params).__name__,
                              f"{self.name} takes {self.params_type.__name__}")
        self.params = params
        self.arms = arms
        self._dim = params.dim
        self._gamma = forgetting_factor(params.half_life_events)
        self._stats = RidgeStatistics.empty(params.dim, arms.ids())
        self._solver = RidgeSolver(params.ridge_lambda)
        self._synced_version = -1
        self._version_cache: tuple[float, str] = (-1.0, "")
        self._eligible_cache: dict[Any, tuple[IntArray, tuple[str, ...], bool]] = {}
        # choose/update may come from several threads (server thread pools): the caches
        # and scratch buffers are shared, so calls are serialised (an uncontended lock is
        # cheap next to a call)
        self._lock = threading.RLock()
        kernels.warm()  # compiled (or loaded from disk) now, not on the first request

    # ---- protocol properties
    @property
    def config(self) -> PolicyConfig:
        """The ``[policy]`` section of this policy (what snapshots record)."""
        return PolicyConfig.from_params(self.name, self.params)

    @property
    def version(self) -> str:
        events = self._stats.events
        cached = self._version_cache
        if cached[0] != events:
            cached = self._version_cache = (events, f"{self.name}:{round(events)}")
        return cached[1]

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def statistics(self) -> RidgeStatistics:
        """The live statistics (read-only: ``copy()`` before mutating)."""
        return self._stats

    # ---- arms
    def _sync(self) -> None:
        if self.arms.version != self._synced_version:
            self._synced_version = self.arms.version
            self._stats.add_arms(self.arms.ids())
            self._eligible_cache.clear()
            self._on_arms_changed()

    def _on_arms_changed(self) -> None:
        """Hook for subclasses that cache per-arm registry data."""

    def _on_stats_changed(self, downdates: list[tuple[int, FloatArray]] | None = None) -> None:
        """Hook for subclasses that cache functions of the statistics.

        ``downdates`` lists the exact rank updates just made to the solver's A⁻¹
        (``(slot, D)``: A⁻¹ of ``slot`` decreased by ``D Dᵀ``) when that was the only
        change; None means anything may have changed.
        """

    def _on_event(self, slot: int, u: FloatArray, den: float, residual: float) -> None:
        """Hook for subclasses: one event was folded into the solver by Sherman–Morrison.

        A⁻¹ of ``slot`` decreased by ``u uᵀ / den`` and θ moved by ``u·residual/den``
        (see :meth:`~bandit.linear.RidgeSolver.absorb_one`). The disjoint policies need
        nothing more, so the learning hot path does no further work for them.
        """

    def _eligible(self, eligible: Sequence[str] | None) -> tuple[IntArray, tuple[str, ...], bool]:
        self._sync()
        try:
            key = None if eligible is None else tuple(eligible)
            hit = self._eligible_cache.get(key)
        except TypeError:  # unhashable ids: resolve_eligible names the bad one
            key, hit = None, None
            self.arms.resolve_eligible(eligible)
        if hit is not None:
            return hit
        ids = self.arms.resolve_eligible(eligible)
        idx = np.fromiter((self._stats.slot(a) for a in ids), dtype=np.intp, count=len(ids))
        full = idx.shape[0] == self._stats.n_arms and bool(
            (idx == np.arange(idx.shape[0])).all()
        )
        entry = (idx, tuple(ids), full)
        if len(self._eligible_cache) >= _ELIGIBLE_CACHE_MAX:
            self._eligible_cache.clear()
        self._eligible_cache[key] = entry
        return entry

    def _check_arm(self, arm_id: Any, field: str = "arm_id") -> str:
        if not isinstance(arm_id, str) or arm_id not in self.arms:
            raise UnknownArmError(arm_id, field=field)
        return arm_id

    # ---- choosing
    def choose(
        self,
        context: npt.ArrayLike,
        rng: np.random.Generator,
        eligible: Sequence[str] | None = None,
    ) -> Choice:
        x = as_context(context, self._dim)
        with self._lock:
            idx, ids, full = self._eligible(eligible)
            scores, probs, pos = self._decide(x, idx, full, rng)
            version = self.version
        return Choice(ids[pos], float(probs[pos]), version, ids, probs, scores)

    def _decide(
        self, x: FloatArray, idx: IntArray, full: bool, rng: np.random.Generator
    ) -> tuple[FloatArray, FloatArray, int]:
        raise NotImplementedError

    # ---- batches (replay, off-policy evaluation, dashboards)
    def score_batch(
        self, contexts: npt.ArrayLike, eligible: Sequence[str] | None = None
    ) -> BatchScores:
        """Means, widths and scores of the eligible arms for each row of ``contexts``.

        The public, vectorised form of what ``choose`` computes, for callers that score
        many contexts against one state (replay, OPE, leaderboards): an ``(n, d)``
        matrix in, :class:`BatchScores` out. The state is not changed.
        """
        X = as_contexts(contexts, self._dim, _rows(contexts))
        with self._lock:
            idx, ids, full = self._eligible(eligible)
            means, widths_sq = self._batch_mean_width_sq(X, idx, full)
            widths = np.sqrt(widths_sq)
            return BatchScores(ids, means, widths, self._batch_scores(means, widths, idx))

    def probabilities_batch(
        self,
        contexts: npt.ArrayLike,
        rng: np.random.Generator | None = None,
        eligible: Sequence[str] | None = None,
    ) -> tuple[tuple[str, ...], FloatArray]:
        """``(arms, P)``: P[i] is the distribution ``choose`` would draw from for row i.

        Exact for every policy but Thompson sampling, whose probabilities are the same
        Monte-Carlo estimate as its ``choose`` (``thompson_propensity_draws`` draws per
        row, with ``rng``, required there). Rows sum to 1.
        """
        scores = self.score_batch(contexts, eligible)
        return scores.arms, self._batch_probabilities(scores, rng)

    def probabilities_from_scores(
        self, scores: BatchScores, rng: np.random.Generator | None = None
    ) -> FloatArray:
        """The distributions of :meth:`probabilities_batch` from :class:`BatchScores` in hand.

        For callers that assemble scores themselves, e.g. a replay that re-scores only the
        arms an update changed (see :attr:`separable`).
        """
        return self._batch_probabilities(scores, rng)

    @property
    def separable(self) -> bool:
        """Whether an arm's means, widths and scores depend on that arm's statistics alone.

        True for the disjoint models (this class's per-arm ``score_batch``), so after an
        update only the updated arms' columns of :meth:`score_batch` change. A subclass
        that overrides the batch scoring (hybrid LinUCB's shared β, the fixed arm) is not.
        """
        cls = type(self)
        return (cls._batch_mean_width_sq is LinearPolicy._batch_mean_width_sq
                and cls.score_batch is LinearPolicy.score_batch)

    def _batch_mean_width_sq(
        self, X: FloatArray, idx: IntArray, full: bool = False
    ) -> tuple[FloatArray, FloatArray]:
        """θ_aᵀx and xᵀA_a⁻¹x (float64) per row of X and arm of ``idx`` (``full``: every
        slot in order)."""
        solver = self._solver
        solver.ensure(self._stats)
        return solver.mean_width_sq(X, idx)

    def _batch_scores(self, means: FloatArray, widths: FloatArray, idx: IntArray) -> FloatArray:
        return means.copy()

    def _batch_probabilities(self, scores: BatchScores, rng: np.random.Generator | None) -> FloatArray:
        return floored_distribution(scores.scores, self.params.probability_floor)

    def _mean_width_sq(
        self, x: FloatArray, idx: IntArray, full: bool
    ) -> tuple[FloatArray, FloatArray]:
        """θ_aᵀx and xᵀA_a⁻¹x for the eligible arms (refreshing dirty caches first)."""
        solver = self._solver
        solver.ensure(self._stats)
        means, wsq = solver.mean_width_sq(x.reshape(1, -1), idx)
        return means[0], wsq[0]

    # ---- learning
    def _changed(self, slots: IntArray | None) -> None:
        """Statistics changed by more than added events: refresh those arms exactly."""
        self._solver.mark_dirty(None if self._gamma != 1.0 else slots)
        self._on_stats_changed(None)

    def _absorbed(self, arm_ids: Sequence[str], X: FloatArray) -> None:
        """Events were just added to the live statistics: rank-update the caches."""
        if self._gamma != 1.0:  # every sum was scaled, the prior was not: not a rank update
            self._changed(None)
            return
        slots = np.fromiter((self._stats.slot(a) for a in arm_ids), dtype=np.intp,
                            count=len(arm_ids))
        self._on_stats_changed(self._solver.absorb(self._stats, slots, X))

    def update(self, arm_id: str, context: npt.ArrayLike, reward: float) -> None:
        x = as_context(context, self._dim)
        r = _as_reward(reward)
        self._check_arm(arm_id)
        with self._lock:
            if self._gamma != 1.0:
                self._stats.update(arm_id, x, r, self._gamma)
                self._changed(None)
                return
            slot, event = self._solver.learn_one(self._stats, arm_id, x, r)
            if event is None:
                self._on_stats_changed(None)
            else:
                self._on_event(slot, *event)

    def _validate_batch(
        self, arm_ids: Sequence[str], contexts: npt.ArrayLike, rewards: npt.ArrayLike
    ) -> tuple[list[str], FloatArray, FloatArray]:
        if isinstance(arm_ids, str):
            raise InvalidInputError("arm_ids", arm_ids, "must be a sequence of arm ids")
        ids = list(arm_ids)
        for i, a in enumerate(ids):
            self._check_arm(a, field=f"arm_ids[{i}]")
        X = as_contexts(contexts, self._dim, len(ids))
        r = as_rewards(rewards, len(ids))
        return ids, X, r

    def update_batch(
        self, arm_ids: Sequence[str], contexts: npt.ArrayLike, rewards: npt.ArrayLike
    ) -> None:
        ids, X, r = self._validate_batch(arm_ids, contexts, rewards)
        if ids:
            with self._lock:
                self._stats.update_batch(ids, X, r, self._gamma)
                self._absorbed(ids, X)

    def empty_statistics(self) -> RidgeStatistics:
        return RidgeStatistics.empty(self._dim)

    def statistics_from_arrays(self, arrays: Mapping[str, np.ndarray]) -> RidgeStatistics:
        """Statistics written by ``RidgeStatistics.to_arrays`` (checked against ``dim``)."""
        return self._as_stats(RidgeStatistics.from_arrays(arrays), "arrays")

    def _as_stats(self, stats: Statistics, field: str) -> RidgeStatistics:
        if not isinstance(stats, RidgeStatistics):
            raise InvalidInputError(field, type(stats).__name__, "must be RidgeStatistics")
        if stats.dim != self._dim:
            raise InvalidInputError(f"{field}.dim", stats.dim, f"must equal policy.dim {self._dim}")
        return stats

    def accumulate(
        self,
        stats: Statistics,
        arm_ids: Sequence[str],
        contexts: npt.ArrayLike,
        rewards: npt.ArrayLike,
        *,
        propensities: npt.ArrayLike | None = None,
        eligible: Sequence[Sequence[str] | None] | None = None,
    ) -> RidgeStatistics:
        """Add a batch into ``stats`` *in place* (with forgetting) and return it.

        ``propensities`` and ``eligible`` are not needed: ridge regression of each arm's
        reward on its contexts estimates the arm's conditional mean without them."""
        st = self._as_stats(stats, "stats")
        ids, X, r = self._validate_batch(arm_ids, contexts, rewards)
        if ids:
            with self._lock:
                st.update_batch(ids, X, r, self._gamma)
                if st is self._stats:
                    self._absorbed(ids, X)
        return st

    def apply(self, delta: Statistics) -> None:
        """Fold a delta in: decay by γ**events(delta) (forgetting), then add."""
        d = self._as_stats(delta, "delta")
        factor = self._gamma ** d.events if self._gamma != 1.0 else 1.0
        with self._lock:
            self._changed(self._stats.add_(d, factor))

    def set_statistics(self, stats: Statistics) -> None:
        """Replace the learnt state wholesale (a copy is taken).

        The new factors are computed before the swap, so concurrent ``choose`` calls keep
        using the old state until the new one is ready (no latency spike on hot reload).
        """
        st = self._as_stats(stats, "stats").copy()
        st.add_arms(self.arms.ids())
        solver = RidgeSolver(self.params.ridge_lambda)
        solver.ensure(st)
        with self._lock:
            self._stats = st
            self._solver = solver
            self._eligible_cache.clear()
            self._synced_version = -1
            self._on_stats_changed(None)

    # ---- snapshots
    def snapshot_arrays(self) -> dict[str, np.ndarray]:
        return self._stats.to_arrays()

    def restore_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.set_statistics(RidgeStatistics.from_arrays(arrays))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._stats!r})"
