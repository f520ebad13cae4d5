"""Per-arm sufficient statistics of ridge regression and a cached solver over them.

State is *sums*, never inverses (Li et al. 2010, §3.1 with the ridge prior kept apart):

* ``S[a] = Σ x xᵀ`` over the events of arm ``a`` (shape ``(K, d, d)``),
* ``b[a] = Σ r x`` (shape ``(K, d)``),
* ``n[a]`` — the (possibly decayed) number of events (shape ``(K,)``),
* ``events`` — the undecayed total number of events folded in (drives policy versions).

The prior precision λ is *not* stored: ``A[a] = λI + S[a]`` is formed at solve time, so
two replicas merge by adding their sums (the prior is counted once), and exponential
forgetting scales the sums without shrinking the prior.

Forgetting (half-life ``h`` events): ``γ = 0.5 ** (1 / h)``. Every event — whatever its
arm — first multiplies all sums by γ, then adds its own term, so an event ``h`` events
old weighs ½. A batch of ``m`` events is applied exactly as ``m`` sequential events: the
sums are scaled by ``γ**m`` and event ``i`` (0-based) enters with weight ``γ**(m-1-i)``.

>>> import numpy as np
>>> st = RidgeStatistics.empty(2, ["a"])
>>> slot = st.update("a", np.array([1.0, 0.0]), 2.0)
>>> st.S[0].tolist(), st.b[0].tolist()
([[1.0, 0.0], [0.0, 0.0]], [2.0, 0.0])
>>> solver = RidgeSolver(lam=1.0)
>>> solver.refresh(st)
>>> solver.theta[0].round(12).tolist()  # (λI + S)⁻¹ b = [2/2, 0]
[1.0, 0.0]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from bandit.errors import InvalidInputError
from bandit.events import MAX_CONTEXT_ABS
from bandit.kernels import (
    add_event,
    learn_event,
    linear_choose,
    linear_scores,
    pack_arm,
    pack_arms,
    sherman_morrison,
    within,
)

__all__ = [
    "RidgeSolver",
    "RidgeStatistics",
    "as_context",
    "as_contexts",
    "as_rewards",
    "forgetting_factor",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
#: up to this many dirty arms are refreshed one by one with LAPACK, more in one batch
_FEW_DIRTY = 8
_F64 = np.dtype(np.float64)


def forgetting_factor(half_life_events: float) -> float:
    """Per-event decay γ = 0.5 ** (1 / half_life); 1.0 (no forgetting) when half_life is 0."""
    if half_life_events < 0 or not math.isfinite(half_life_events):
        raise InvalidInputError("half_life_events", half_life_events, "must be finite and >= 0")
    return 1.0 if half_life_events == 0 else float(0.5 ** (1.0 / half_life_events))


# --------------------------------------------------------------------------- validation


def as_context(context: npt.ArrayLike, dim: int, name: str = "context") -> FloatArray:
    """Validate one context: a float vector of length ``dim``, finite and within
    ±:data:`~bandit.events.MAX_CONTEXT_ABS` (a contiguous float64
    vector is returned as it is, anything else as a contiguous float64 copy)."""
    if type(context) is np.ndarray and context.dtype == _F64 and context.shape == (dim,):
        x: FloatArray = context  # the serving fast path: no conversion
        if x.flags.c_contiguous and within(x, MAX_CONTEXT_ABS):  # one compiled pass
            return x
    else:
        try:
            x = np.asarray(context, dtype=np.float64)
        except (TypeError, ValueError):
            raise InvalidInputError(name, context, "must be a vector of numbers") from None
    if x.shape != (dim,):
        raise InvalidInputError(f"len({name})", x.shape[0] if x.ndim == 1 else x.shape,
                                f"must be a vector of length {dim}")
    _check_entries(x.reshape(1, -1), lambda r, c: f"{name}[{c}]")
    return np.ascontiguousarray(x)  # the kernels are compiled for contiguous vectors


def _check_entries(X: FloatArray, field: Callable[[int, int], str]) -> None:
    """Every entry finite and within ±MAX_CONTEXT_ABS, or the first bad one named."""
    for bad, why in ((~np.isfinite(X), "must be finite"),
                     (np.abs(X) > MAX_CONTEXT_ABS,
                      f"must be within ±{MAX_CONTEXT_ABS:g} (scale the features)")):
        if bad.any():
            r, c = (int(v[0]) for v in np.nonzero(bad))
            raise InvalidInputError(field(r, c), float(X[r, c]), why)


def as_contexts(contexts: npt.ArrayLike, dim: int, rows: int) -> FloatArray:
    """Validate a ``(rows, dim)`` matrix of contexts (finite, within ±MAX_CONTEXT_ABS)."""
    try:
        X = np.asarray(contexts, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInputError("contexts", contexts, "must be a matrix of numbers") from None
    if X.ndim == 1 and rows == 1:
        X = X.reshape(1, -1)
    if X.ndim != 2 or X.shape != (rows, dim):
        raise InvalidInputError("contexts.shape", X.shape, f"must be ({rows}, {dim})")
    _check_entries(X, lambda r, c: f"contexts[{r}][{c}]")
    return X


def as_rewards(rewards: npt.ArrayLike, rows: int) -> FloatArray:
    """Validate ``rows`` finite rewards."""
    try:
        r = np.asarray(rewards, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise InvalidInputError("rewards", rewards, "must be numbers") from None
    if r.shape != (rows,):
        raise InvalidInputError("len(rewards)", r.shape[0], f"must be {rows}")
    if not np.isfinite(r).all():
        i = int(np.flatnonzero(~np.isfinite(r))[0])
        raise InvalidInputError(f"rewards[{i}]", float(r[i]), "must be finite")
    return r


def _owner(a: np.ndarray) -> Any:
    """The array owning ``a``'s memory (what the ``base`` of any view of ``a`` is)."""
    return a if a.base is None else a.base


def _as_reward(reward: Any) -> float:
    if isinstance(reward, bool) or not isinstance(reward, int | float | np.floating | np.integer):
        raise InvalidInputError("reward", reward, "must be a finite number")
    value = float(reward)
    if not math.isfinite(value):
        raise InvalidInputError("reward", value, "must be finite")
    return value


# --------------------------------------------------------------------------- statistics


class RidgeStatistics:
    """Additive per-arm ridge statistics (see module docstring).

    ``update`` / ``update_batch`` / ``add_arms`` mutate in place; ``merge``, ``scaled``,
    ``with_arms`` and ``copy`` are pure and return new objects. Arms are kept in slot
    order; ``slot(arm_id)`` gives an arm's row in the arrays.
    """

    __slots__ = ("S", "_slots", "arm_ids", "b", "dim", "events", "n")

    def __init__(
        self,
        dim: int,
        arm_ids: Sequence[str],
        S: FloatArray,
        b: FloatArray,
        n: FloatArray,
        events: float = 0.0,
    ) -> None:
        K = len(arm_ids)
        if S.shape != (K, dim, dim) or b.shape != (K, dim) or n.shape != (K,):
            raise InvalidInputError(
                "statistics.shape", (S.shape, b.shape, n.shape), f"must match K={K}, d={dim}"
            )
        self.dim = dim
        self.arm_ids: list[str] = list(arm_ids)
        self._slots = {a: i for i, a in enumerate(self.arm_ids)}
        if len(self._slots) != K:
            raise InvalidInputError("statistics.arm_ids", self.arm_ids, "must be unique")
        self.S = np.ascontiguousarray(S)  # one memory layout for the compiled update
        self.b = b
        self.n = n
        self.events = float(events)

    @classmethod
    def empty(cls, dim: int, arm_ids: Iterable[str] = ()) -> RidgeStatistics:
        ids = list(arm_ids)
        K = len(ids)
        return cls(dim, ids, np.zeros((K, dim, dim)), np.zeros((K, dim)), np.zeros(K))

    # ---- introspection
    @property
    def n_arms(self) -> int:
        return len(self.arm_ids)

    def slot(self, arm_id: str) -> int:
        return self._slots[arm_id]

    def __contains__(self, arm_id: object) -> bool:
        return arm_id in self._slots

    def __repr__(self) -> str:
        return f"RidgeStatistics(dim={self.dim}, arms={self.n_arms}, events={self.events:g})"

    # ---- growth
    def add_arms(self, arm_ids: Iterable[str]) -> list[int]:
        """Append zero rows for ids not yet present (in place); returns their new slots."""
        new = [a for a in dict.fromkeys(arm_ids) if a not in self._slots]
        if not new:
            return []
        k, d = len(new), self.dim
        start = self.n_arms
        self.S = np.concatenate([self.S, np.zeros((k, d, d))])
        self.b = np.concatenate([self.b, np.zeros((k, d))])
        self.n = np.concatenate([self.n, np.zeros(k)])
        for a in new:
            self._slots[a] = len(self.arm_ids)
            self.arm_ids.append(a)
        return list(range(start, start + k))

    def add_(self, other: RidgeStatistics, factor: float = 1.0) -> IntArray:
        """In place: ``self = self * factor + other``; returns the slots ``other`` touched."""
        if other.dim != self.dim:
            raise InvalidInputError("other.dim", other.dim, f"must equal {self.dim}")
        if factor != 1.0:
            self.S *= factor
            self.b *= factor
            self.n *= factor
        self.add_arms(other.arm_ids)
        idx = np.fromiter((self._slots[a] for a in other.arm_ids), dtype=np.intp,
                          count=other.n_arms)
        self.S[idx] += other.S
        self.b[idx] += other.b
        self.n[idx] += other.n
        self.events += other.events
        return idx

    def with_arms(self, arm_ids: Iterable[str]) -> RidgeStatistics:
        out = self.copy()
        out.add_arms(arm_ids)
        return out

    def copy(self) -> RidgeStatistics:
        return RidgeStatistics(
            self.dim, self.arm_ids, self.S.copy(), self.b.copy(), self.n.copy(), self.events
        )

    # ---- learning (in place)
    def update(self, arm_id: str, x: FloatArray, reward: float, gamma: float = 1.0) -> int:
        """Add one event (``x`` already validated); returns the arm's slot."""
        if arm_id not in self._slots:
            self.add_arms([arm_id])
        i = self._slots[arm_id]
        if gamma != 1.0:
            self.S *= gamma
            self.b *= gamma
            self.n *= gamma
        add_event(self.S, self.b, self.n, i, x, reward)  # one compiled pass, in place
        self.events += 1.0
        return i

    def update_batch(
        self,
        arm_ids: Sequence[str],
        X: FloatArray,
        rewards: FloatArray,
        gamma: float = 1.0,
    ) -> IntArray:
        """Add ``m`` events at once, exactly as ``m`` sequential ``update`` calls.

        Vectorised: rows are weighted (forgetting), then summed per arm with
        ``np.add.at``. Returns the unique slots touched.
        """
        m = len(arm_ids)
        if m == 0:
            return np.zeros(0, dtype=np.intp)
        self.add_arms(arm_ids)
        slots = np.fromiter((self._slots[a] for a in arm_ids), dtype=np.intp, count=m)
        if gamma != 1.0:
            decay = gamma ** float(m)
            self.S *= decay
            self.b *= decay
            self.n *= decay
            w = gamma ** np.arange(m - 1, -1, -1, dtype=np.float64)
        else:
            w = np.ones(m)
        Xw = X * w[:, None]
        uniq, inverse = np.unique(slots, return_inverse=True)
        if uniq.size == m:
            self.S[slots] += np.einsum("ni,nj->nij", Xw, X)
        else:
            # group by arm: one (d, d) GEMM per touched arm beats a scattered add.at
            for j, s in enumerate(uniq):
                rows = inverse == j
                self.S[s] += Xw[rows].T @ X[rows]
        np.add.at(self.b, slots, Xw * rewards[:, None])
        np.add.at(self.n, slots, w)
        self.events += m
        return uniq.astype(np.intp)

    # ---- algebra (pure)
    def merge(self, other: Any) -> RidgeStatistics:
        """Sum of two statistics; arms are aligned by id (union, self's order first)."""
        if not isinstance(other, RidgeStatistics):
            raise InvalidInputError("other", type(other).__name__, "must be RidgeStatistics")
        if other.dim != self.dim:
            raise InvalidInputError("other.dim", other.dim, f"must equal {self.dim}")
        out = self.copy()
        out.add_(other)
        return out

    def scaled(self, factor: float) -> RidgeStatistics:
        """All sums times ``factor`` (forgetting). ``events`` is a counter and is kept."""
        if not math.isfinite(factor) or factor < 0:
            raise InvalidInputError("factor", factor, "must be finite and >= 0")
        return RidgeStatistics(
            self.dim, self.arm_ids, self.S * factor, self.b * factor, self.n * factor,
            self.events,
        )

    # ---- serialisation
    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "arm_ids": np.array(self.arm_ids, dtype=np.str_),
            "S": self.S,
            "b": self.b,
            "n": self.n,
            "events": np.array(self.events),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> RidgeStatistics:
        try:
            ids = [str(a) for a in np.asarray(arrays["arm_ids"]).reshape(-1)]
            S = np.array(arrays["S"], dtype=np.float64)
            b = np.array(arrays["b"], dtype=np.float64)
            n = np.array(arrays["n"], dtype=np.float64)
            events = float(np.asarray(arrays["events"]))
        except KeyError as exc:
            raise InvalidInputError("arrays", sorted(arrays), f"misses {exc}") from None
        if b.ndim != 2:
            raise InvalidInputError("arrays.b.shape", b.shape, "must be (K, d)")
        return cls(b.shape[1], ids, S, b, n, events)

    def allclose(self, other: RidgeStatistics, rtol: float = 1e-9, atol: float = 1e-9) -> bool:
        """Equal up to float rounding, arms compared by id (order-free)."""
        if set(self.arm_ids) != set(other.arm_ids) or self.dim != other.dim:
            return False
        idx = [other.slot(a) for a in self.arm_ids]
        return bool(
            np.allclose(self.S, other.S[idx], rtol=rtol, atol=atol)
            and np.allclose(self.b, other.b[idx], rtol=rtol, atol=atol)
            and np.allclose(self.n, other.n[idx], rtol=rtol, atol=atol)
            and math.isclose(self.events, other.events, rel_tol=rtol, abs_tol=atol)
        )


# --------------------------------------------------------------------------- solver


class RidgeSolver:
    """Cached solutions of ``A[a] θ[a] = b[a]`` with ``A[a] = λI + S[a]``.

    Per arm it caches:

    * ``theta`` — θ = A⁻¹b, ``(K, d)`` float64;
    * ``ainv`` — A⁻¹, ``(K, d, d)`` float64 (contiguous);
    * ``packed`` — one half of the symmetric A⁻¹ by wrapped diagonals, ``(K, d·(⌊d/2⌋+1))``
      float32: entry ``i·(⌊d/2⌋+1) + k`` is ``w_k·A⁻¹[i, (i+k) mod d]`` for
      ``k = 0..⌊d/2⌋`` (``w_0 = 1``; ``w_k = 2`` otherwise, except ``w_{d/2} = 1`` for
      even d, where each pair appears twice), so that xᵀA⁻¹x is one dot product of
      ``packed[a]`` with ``x_i·x_{(i+k) mod d}`` — a quarter of A⁻¹'s float64 bytes, which
      is what scoring many arms costs (K = 1000, d = 64: 8.4 MB instead of 33 MB). The
      products are taken and summed in float32 (vectorised; see
      :func:`bandit.kernels.linear_scores` for the error); results are clipped at 0.

    Choices and batches read ``packed`` and ``theta`` with one compiled kernel
    (:func:`bandit.kernels.linear_scores`, :meth:`choose`, :meth:`mean_width_sq`); ``ainv`` is the float64
    state that rank updates change and ``packed`` is re-read from, arm by arm.

    Two ways keep the caches equal to the statistics, which stay the source of truth:

    * **Rank updates** (:meth:`absorb_one`, :meth:`absorb`), for events just added to an
      arm whose cache is current: with the new rows X (m × d), Woodbury's identity
      (Sherman–Morrison for m = 1, :func:`bandit.kernels.sherman_morrison`; Golub & Van
      Loan §2.1.4) gives ``A⁻¹ ← A⁻¹ − D Dᵀ`` with ``U = A⁻¹Xᵀ``, ``M = I + XU = LLᵀ``,
      ``D = U L⁻ᵀ``, at O(m d²) instead of a refactorisation; θ moves by the same
      identity applied to A⁻¹b, and the arm's ``packed`` row is re-read from the new
      float64 A⁻¹ (float32 downdates would leave their rounding error at the magnitude
      of the old entries). So learning one event costs less than one choice.
    * **Exact refreshes** (:meth:`ensure` of dirty arms) from ``S`` and ``b``: Cholesky
      ``A = LLᵀ`` and A⁻¹ = L⁻ᵀL⁻¹ — arm by arm for a few dirty arms, batched for many.
      Arms are marked dirty by everything that is not a plain addition to a current
      cache (merge, forgetting, restore, new arms, batches touching many arms), and,
      against the slow drift of repeated downdates, after ``refactor_every`` rank updates
      or when a downdate's ``M`` is not safely positive definite.
    """

    #: rank updates an arm's cache takes before it is recomputed exactly from S and b
    refactor_every: int = 256

    theta: FloatArray
    ainv: FloatArray
    packed: npt.NDArray[np.float32]

    def __init__(self, lam: float) -> None:
        if not lam > 0:
            raise InvalidInputError("ridge_lambda", lam, "must be > 0")
        self.lam = float(lam)
        self.dim = 0
        self._dirty = np.zeros(0, dtype=bool)
        self._since: list[int] = []  # per arm: rank updates since the exact refresh
        self._any_dirty = False
        self._set_dim(0)
        self._allocate(0)

    def _set_dim(self, d: int) -> None:
        self.dim = d
        self._eye = np.eye(d)
        self._u_pred = np.empty(d + 1)  # absorb_one's A⁻¹x and, last, xᵀθ before it
        self._u = self._u_pred[:d]
        self._work = np.empty((2, 0))  # a choice's means and widths (choose's scratch)
        self._xx = np.empty(d * (d // 2 + 1), dtype=np.float32)  # x_i·x_(i+k), scoring scratch

    def _allocate(self, K: int, keep: int = 0) -> None:
        """(Re)allocate the caches for K arms, copying the first ``keep`` arms over."""
        d = self.dim
        old = (self.theta, self.ainv, self.packed) if keep else None
        self.theta = np.zeros((K, d))
        self.ainv = np.zeros((K, d, d))
        self.packed = np.zeros((K, d * (d // 2 + 1)), dtype=np.float32)
        if old is not None:
            self.theta[:keep], self.ainv[:keep], self.packed[:keep] = old
        self.all_slots: IntArray = np.arange(K, dtype=np.intp)

    def mark_dirty(self, slots: Iterable[int] | IntArray | None = None) -> None:
        """Invalidate the given slots (all when None)."""
        if slots is None:
            self._dirty[:] = True
        else:
            idx = np.asarray(slots if isinstance(slots, np.ndarray) else list(slots), dtype=np.intp)
            self._dirty[idx[idx < self._dirty.shape[0]]] = True
        self._any_dirty = bool(self._dirty.any())

    def mark_slot(self, slot: int) -> None:
        if slot < self._dirty.shape[0]:  # a slot beyond the cache is dirty once grown
            self._dirty[slot] = True
            self._any_dirty = True

    def ensure(self, stats: RidgeStatistics) -> None:
        """Grow the cache to the statistics' arms (new arms dirty), then refresh."""
        K, d = stats.n_arms, stats.dim
        have = self.theta.shape[0]
        if d != self.dim or K < have:
            self._set_dim(d)
            self._allocate(K)
            self._dirty = np.ones(K, dtype=bool)
            self._since = [0] * K
            self._any_dirty = K > 0
        elif K > have:
            self._allocate(K, keep=have)
            self._dirty = np.concatenate([self._dirty, np.ones(K - have, dtype=bool)])
            self._since.extend([0] * (K - have))
            self._any_dirty = True
        if self._any_dirty:
            self._refresh_dirty(stats)

    def refresh(self, stats: RidgeStatistics) -> None:
        """Recompute every arm."""
        self.dim = -1
        self.ensure(stats)

    def _refresh_dirty(self, stats: RidgeStatistics) -> None:
        idx = np.flatnonzero(self._dirty)
        if idx.shape[0] <= _FEW_DIRTY:
            for k in idx:
                self._refresh_one(stats, int(k))
        else:
            d = self.dim
            A = stats.S[idx] + self.lam * np.eye(d)
            try:
                L = np.linalg.cholesky(A)
            except np.linalg.LinAlgError:  # one arm's rounding: each on its own
                for k in idx:
                    self._refresh_one(stats, int(k))
            else:
                Linv = np.linalg.solve(L, np.broadcast_to(np.eye(d), A.shape))
                Ainv = np.matmul(Linv.transpose(0, 2, 1), Linv)
                self.ainv[idx] = Ainv
                self.theta[idx] = np.einsum("kij,kj->ki", Ainv, stats.b[idx])
                pack_arms(self.ainv, idx, self.packed)
        self._dirty[idx] = False
        since = self._since
        for slot in idx.tolist():
            since[slot] = 0
        self._any_dirty = False

    def _refresh_one(self, stats: RidgeStatistics, k: int) -> None:
        # One arm without the batched path's broadcasting overhead (numpy's LAPACK only:
        # mixing in scipy's separately threaded OpenBLAS makes the two thread pools
        # fight on a loaded machine).
        A = stats.S[k] + self.lam * self._eye
        try:
            L = np.linalg.cholesky(A)
        except np.linalg.LinAlgError:
            # S ⪰ 0, so A's eigenvalues are ≥ λ exactly; rounding in a badly conditioned
            # S (contexts near MAX_CONTEXT_ABS with a small λ) can still defeat Cholesky:
            # invert by eigenvalues clipped at λ instead of failing every later call
            w, Q = np.linalg.eigh(A)
            Ainv = (Q / np.maximum(w, self.lam)) @ Q.T
        else:
            Linv = np.linalg.solve(L, self._eye)
            Ainv = Linv.T @ Linv
        self.ainv[k] = Ainv
        self.theta[k] = Ainv @ stats.b[k]
        pack_arm(self.ainv, k, self.packed)

    def current(self, stats: RidgeStatistics, slot: int) -> bool:
        """Whether ``slot``'s cache holds the statistics as they were (not dirty)."""
        return stats.dim == self.dim and slot < self._dirty.shape[0] and not (
            self._any_dirty and self._dirty[slot])

    def absorb_one(
        self, stats: RidgeStatistics, slot: int, x: FloatArray, reward: float | None = None
    ) -> tuple[FloatArray, float, float] | None:
        """Fold one event just added to ``stats`` at ``slot`` into the cache (Sherman–Morrison).

        Call right after ``stats.update(arm, x, reward, gamma=1)``; with its ``reward``
        θ is updated in O(d) (θ ← θ + u·(r − xᵀθ)/(1 + xᵀu), u = A⁻¹x: the same
        identity applied to A⁻¹b), without it recomputed as A⁻¹b. Returns
        ``(u, den, residual)``: A⁻¹ decreased by ``u uᵀ / den`` (u the old A⁻¹x, in a
        scratch buffer overwritten by the next call), and ``residual = r − xᵀθ_old``
        (NaN without ``reward``), so θ moved by ``u·residual/den``; or None when the arm
        was not current and is now marked dirty (refreshed exactly on the next
        :meth:`ensure`).
        """
        if not self.current(stats, slot):
            self.mark_slot(slot)
            return None
        r = math.nan if reward is None else reward
        den = sherman_morrison(self.ainv, self.theta, self.packed, slot, x, r, self._u_pred)
        if den >= 1.0 and reward is None:
            self.theta[slot] = self.ainv[slot] @ stats.b[slot]
        return self._downdated(slot, den, r)

    def learn_one(
        self, stats: RidgeStatistics, arm_id: str, x: FloatArray, reward: float
    ) -> tuple[int, tuple[FloatArray, float, float] | None]:
        """``stats.update(arm_id, x, reward)`` then :meth:`absorb_one`, in one kernel call
        when the arm's cache is current (:func:`bandit.kernels.learn_event`): the
        learning hot path. Returns ``(slot, event)``, ``event`` as :meth:`absorb_one`'s."""
        slot = stats._slots.get(arm_id)
        if slot is None or not self.current(stats, slot):
            slot = stats.update(arm_id, x, reward)
            self.mark_slot(slot)
            return slot, None
        den = learn_event(stats.S, stats.b, stats.n, self.ainv, self.theta, self.packed, slot,
                          x, reward, self._u_pred)
        stats.events += 1.0
        return slot, self._downdated(slot, den, reward)

    def _downdated(self, slot: int, den: float, reward: float
                   ) -> tuple[FloatArray, float, float] | None:
        """After the Sherman–Morrison kernel on ``slot``: the step ``(u, den, residual)``,
        or None when ``den`` reported drift (the kernel left the cache alone; refresh it
        exactly on the next :meth:`ensure`)."""
        if den < 1.0:
            self.mark_slot(slot)
            return None
        self._count(slot, 1)
        return self._u, den, reward - float(self._u_pred[-1])

    def absorb(
        self, stats: RidgeStatistics, slots: IntArray, X: FloatArray
    ) -> list[tuple[int, FloatArray]] | None:
        """Fold rows ``X`` just added to ``stats`` at ``slots`` (one per row) into the cache.

        Call right after ``stats.update_batch(..., gamma=1)``. An arm current in the
        cache and given at most d/4 rows takes a Woodbury downdate; otherwise (or when
        more than a few arms are touched, where one batched refresh is cheaper) the
        arms are marked dirty. Returns ``[(slot, D), ...]`` of the downdates made
        (A⁻¹ of ``slot`` decreased by ``D Dᵀ``), or None if any arm was marked dirty.
        """
        uniq, inverse = np.unique(slots, return_inverse=True)
        if uniq.shape[0] > _FEW_DIRTY:
            self.mark_dirty(uniq)
            return None
        done: list[tuple[int, FloatArray]] = []
        exact = True
        for j, k in enumerate(uniq.tolist()):
            rows = X[inverse.reshape(-1) == j]
            if rows.shape[0] == 1:
                one = self.absorb_one(stats, k, rows[0])
                D = None if one is None else one[0][:, None] * (1.0 / math.sqrt(one[1]))
            elif 4 * rows.shape[0] <= self.dim and self.current(stats, k):
                U = self.ainv[k] @ rows.T
                M = np.eye(rows.shape[0]) + rows @ U
                try:
                    L = np.linalg.cholesky(M)
                except np.linalg.LinAlgError:
                    L = None
                if L is None or not np.isfinite(L).all() or float(np.diag(L).min()) < 1.0 - 1e-9:
                    D = None  # M = I + XA⁻¹Xᵀ has eigenvalues >= 1 exactly: drift
                    self.mark_slot(k)
                else:
                    D = np.linalg.solve(L, U.T).T
                    self.ainv[k] -= D @ D.T
                    self.theta[k] = self.ainv[k] @ stats.b[k]
                    pack_arm(self.ainv, k, self.packed)
                    self._count(k, D.shape[1])
            else:
                D = None
                self.mark_slot(k)
            if D is None:
                exact = False
            else:
                done.append((k, D))
        return done if exact else None

    def _count(self, k: int, rank: int) -> None:
        """Drift accounting after A⁻¹[k] took a rank update: refresh it exactly after
        ``refactor_every`` of them."""
        since = self._since[k] + rank
        self._since[k] = since
        if since >= self.refactor_every:
            self.mark_slot(k)

    def choose(self, x: FloatArray, idx: IntArray, alpha: float, floor: float,
               u: float) -> tuple[FloatArray, FloatArray, int]:
        """LinUCB's choice for one context in one kernel call: the scores θ_aᵀx +
        α·sqrt(xᵀA_a⁻¹x) of the arms ``idx`` (as :meth:`mean_width_sq`), their floored-argmax
        distribution (:func:`bandit.policies.common.floored_argmax`) and the position the
        uniform number ``u`` draws. Caches current: call :meth:`ensure` first."""
        K = idx.shape[0]
        work = self._work
        if work.shape[1] != K:
            work = self._work = np.empty((2, K))
        scores, probs = np.empty(K), np.empty(K)
        pos = linear_choose(self.packed, self.theta, x, idx, alpha, floor, u, scores, probs,
                            work, self._xx)
        return scores, probs, pos

    def mean_width_sq(self, X: FloatArray, idx: IntArray | None = None) -> tuple[FloatArray, FloatArray]:
        """θ_aᵀx and xᵀA_a⁻¹x (float64, ≥ 0), ``(n, len(idx))``, of each row of ``X`` and
        every arm (``idx`` None) or the arms ``idx``."""
        idx = self.all_slots if idx is None else idx
        means = np.empty((X.shape[0], idx.shape[0]))
        wsq = np.empty_like(means)
        linear_scores(self.packed, self.theta, X, idx, 0.0, means, wsq, means, self._xx)
        return means, wsq

    def widths_sq(self, x: FloatArray, idx: IntArray | None = None) -> FloatArray:
        """xᵀA[a]⁻¹x of one context for all arms (``idx`` None) or the arms ``idx``."""
        out: FloatArray = self.mean_width_sq(x.reshape(1, -1), idx)[1][0]
        return out

    def solve(self, stats: RidgeStatistics, arm_id: str) -> FloatArray:
        """θ for one arm (refreshing caches if needed)."""
        self.ensure(stats)
        return np.array(self.theta[stats.slot(arm_id)])
