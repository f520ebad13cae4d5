"""Compiled kernels of the per-request hot path (numba).

A choice over K arms and a Sherman–Morrison update are a few dozen small array
operations each; as numpy calls their cost is the calls, not the arithmetic (about
1.5 µs a call against 4 µs for all of K = 10, d = 64's arithmetic). These kernels do each
step in one call over the float64 caches of :class:`bandit.linear.RidgeSolver`, in
double precision. They are the only implementation of these steps: the policies, replay
and the server all call them.

Compiled lazily on first use and cached on disk (``cache=True``: numba's per-user cache
when the package directory is read-only), so importing this module costs the numba
import only. Floating-point reassociation is allowed inside the dot products (so they
vectorise); NaN and infinity semantics are kept (the drift checks rely on them).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba
import numpy as np

__all__ = ["add_event", "draw_floored_argmax", "hybrid_scores", "learn_event",
           "linear_choose", "linear_scores", "pack_arm", "pack_arms", "sherman_morrison",
           "warm", "within"]

_F = TypeVar("_F", bound=Callable[..., Any])

#: reassociate and contract (FMA) in reductions; no "nnan"/"ninf": isfinite must work
_FAST = {"reassoc", "contract", "nsz"}
_jit = cast(Callable[[_F], _F], numba.njit(cache=True, nogil=True, fastmath=_FAST))
#: a helper compiled into its callers (a plain jitted call costs ~1 µs on a 64-row pack)
_inline = cast(Callable[[_F], _F],
               numba.njit(inline="always", cache=True, nogil=True, fastmath=_FAST))


@_inline
def _pack_row(row: np.ndarray, i: int, out: np.ndarray, base: int) -> None:
    """Row ``i`` of a symmetric d × d matrix into ``out[base : base + ⌊d/2⌋ + 1]``:
    ``w_k·row[(i+k) mod d]`` for ``k = 0..⌊d/2⌋`` (the weights of :func:`pack_arm`).
    Split where ``i + k`` wraps, so that both loops are branch-free and vectorise."""
    d = row.shape[0]
    h = d // 2
    stop = min(h, d - 1 - i)  # k = 1..stop: j = i + k needs no wrapping
    out[base] = row[i]
    for k in range(1, stop + 1):
        out[base + k] = 2.0 * row[i + k]
    for k in range(stop + 1, h + 1):
        out[base + k] = 2.0 * row[i + k - d]
    if h > 0 and 2 * h == d:  # the pair (i, i + d/2) is listed twice: weight 1
        out[base + h] *= 0.5


@_jit
def pack_arm(ainv: np.ndarray, a: int, packed: np.ndarray) -> None:
    """Arm ``a``'s row of the packed half of A⁻¹ (see :class:`bandit.linear.RidgeSolver`):
    ``packed[a, i·(h+1) + k] = w_k·A⁻¹[i, (i+k) mod d]`` for ``k = 0..h``, h = ⌊d/2⌋,
    w_0 = 1, w_k = 2, except w_{d/2} = 1 for even d (that pair is listed twice)."""
    d = ainv.shape[1]
    h = d // 2
    out = packed[a]
    for i in range(d):
        _pack_row(ainv[a, i], i, out, i * (h + 1))


@_jit
def pack_arms(ainv: np.ndarray, idx: np.ndarray, packed: np.ndarray) -> None:
    """:func:`pack_arm` for every arm of ``idx``."""
    for j in range(idx.shape[0]):
        pack_arm(ainv, idx[j], packed)


@_jit
def within(x: np.ndarray, bound: float) -> bool:
    """Whether every entry of the vector ``x`` is finite and at most ``bound`` in
    magnitude: Σ x_i·0 is 0, or NaN when an entry is NaN or ±∞ (kept so: the kernels do
    not assume "nnan"/"ninf"), and max |x_i|. A quarter of the cost of the numpy
    equivalent — a context is checked on every call."""
    s = 0.0
    m = 0.0
    for i in range(x.shape[0]):
        v = x[i]
        s += v * 0.0
        m = max(m, abs(v))
    return s == 0.0 and m <= bound


@_inline
def _dot32(a: np.ndarray, b: np.ndarray) -> np.float32:
    """Σ a[t]·b[t] over two float32 vectors, in float32 (vectorised: 16 lanes a step)."""
    s = np.float32(0.0)
    for t in range(a.shape[0]):
        s += a[t] * b[t]
    return s


@_inline
def _dot32x2(a: np.ndarray, b: np.ndarray, x: np.ndarray) -> tuple[np.float32, np.float32]:
    """``(_dot32(a, x), _dot32(b, x))`` in one pass over ``x`` (15 % faster at K = 100)."""
    s = np.float32(0.0)
    t = np.float32(0.0)
    for i in range(x.shape[0]):
        v = x[i]
        s += a[i] * v
        t += b[i] * v
    return s, t


@_jit
def linear_scores(packed: np.ndarray, theta: np.ndarray, X: np.ndarray, idx: np.ndarray,
                  alpha: float, means: np.ndarray, wsq: np.ndarray, scores: np.ndarray,
                  xx: np.ndarray) -> None:
    """For each row ``x = X[r]`` and arm ``a = idx[j]``: ``means[r, j] = θ_aᵀx``,
    ``wsq[r, j] = max(xᵀA_a⁻¹x, 0)`` and ``scores[r, j] = means + α·sqrt(wsq)`` (α = 0:
    the mean).

    xᵀA⁻¹x is ``packed[a] · xx`` with ``xx[i·(h+1) + k] = x_i·x_{(i+k) mod d}`` (built
    once per row into the float32 scratch ``xx``): one float32 dot product per arm over
    the packed half of A⁻¹ — a quarter of A⁻¹'s float64 bytes, which is what a choice
    over many arms costs (memory, not arithmetic), and twice the lanes of a float64 or
    mixed product (a mixed float32 × float64 product ran at half the speed). Relative
    error 2e-7 measured at d = 64, cond(A) ≈ 400 (float64 accumulation: 4e-8), bounded
    by about 6e-8·(P/16)·Σ|terms|/xᵀA⁻¹x in the worst case.
    ``theta`` is ``(K, d)``, ``X`` ``(n, d)``, the outputs ``(n, len(idx))``.
    """
    n, d = X.shape
    h = d // 2
    for r in range(n):
        x = X[r]
        for i in range(d):
            base = i * (h + 1)
            xi = x[i]
            stop = min(h, d - 1 - i)  # split where i + k wraps: branch-free loops
            for k in range(stop + 1):
                xx[base + k] = xi * x[i + k]
            for k in range(stop + 1, h + 1):
                xx[base + k] = xi * x[i + k - d]
        K = idx.shape[0]
        for jj in range(0, K - 1, 2):  # two arms a pass: one load of xx, two streams
            wsq[r, jj], wsq[r, jj + 1] = _dot32x2(packed[idx[jj]], packed[idx[jj + 1]], xx)
        if K % 2:
            wsq[r, K - 1] = _dot32(packed[idx[K - 1]], xx)
        for jj in range(K):
            a = idx[jj]
            q = wsq[r, jj]
            th = theta[a]
            m = 0.0
            for i in range(d):
                m += th[i] * x[i]
            if not q > 0.0:  # exact xᵀA⁻¹x >= 0; rounding can leave a tiny negative
                q = 0.0
            means[r, jj] = m
            wsq[r, jj] = q
            scores[r, jj] = m + alpha * math.sqrt(q) if alpha != 0.0 else m


@_jit
def hybrid_scores(ainv: np.ndarray, theta: np.ndarray, G: np.ndarray, Q: np.ndarray,
                  H: np.ndarray, X: np.ndarray, idx: np.ndarray, alpha: float,
                  means: np.ndarray, wsq: np.ndarray, scores: np.ndarray, u: np.ndarray) -> None:
    """Hybrid LinUCB's mean and s of each row of ``X`` and arm of ``idx`` (see
    :mod:`bandit.policies.hybrid`): with ``u = A_a⁻¹x``, ``mean = θ_aᵀx + u·G_a`` and
    ``s = uᵀx + uᵀQ_a u − Σ_h (H[h, a]·u)²`` (``H`` the queued downdates of Q), clipped
    at 0; ``scores = mean + α·sqrt(s)``. ``u`` is a length-d scratch vector.
    """
    n, d = X.shape
    nh = H.shape[0]
    for j in range(idx.shape[0]):
        a = idx[j]
        for r in range(n):
            m = 0.0
            q = 0.0
            for i in range(d):
                s = 0.0
                for k in range(d):
                    s += ainv[a, i, k] * X[r, k]
                u[i] = s
                m += theta[a, i] * X[r, i] + s * G[a, i]
                q += s * X[r, i]
            for i in range(d):
                s = 0.0
                for k in range(d):
                    s += Q[a, i, k] * u[k]
                q += u[i] * s
            for h in range(nh):
                s = 0.0
                for k in range(d):
                    s += H[h, a, k] * u[k]
                q -= s * s
            if not q > 0.0:
                q = 0.0
            means[r, j] = m
            wsq[r, j] = q
            scores[r, j] = m + alpha * math.sqrt(q)


@_jit
def add_event(S: np.ndarray, b: np.ndarray, n: np.ndarray, slot: int, x: np.ndarray,
              reward: float) -> None:
    """One event into arm ``slot``'s sums, in place: ``S += x xᵀ``, ``b += r·x``, ``n += 1``."""
    d = x.shape[0]
    for i in range(d):
        xi = x[i]
        for k in range(d):
            S[slot, i, k] += xi * x[k]
        b[slot, i] += reward * xi
    n[slot] += 1.0


@_jit
def sherman_morrison(ainv: np.ndarray, theta: np.ndarray, packed: np.ndarray, a: int,
                     x: np.ndarray, reward: float, u: np.ndarray) -> float:
    """One event into arm ``a``'s ``A⁻¹`` (in place): ``A⁻¹ −= u uᵀ/den`` with
    ``u = A⁻¹x`` (left in ``u[:d]``) and ``den = 1 + xᵀu``; with a finite ``reward``,
    ``θ += u·(r − xᵀθ)/den`` (the same identity applied to A⁻¹b); each row of the arm's
    ``packed`` half re-read from the new float64 A⁻¹ right after that row is updated
    (:func:`pack_arm`'s layout, in the same pass). ``u`` has length d + 1: ``u[d]``
    receives xᵀθ before the update (the prediction the residual is taken against).

    Returns ``den``, or −1.0 without touching anything when ``den`` is not a finite
    number ≥ 1 (xᵀA⁻¹x ≥ 0 exactly, so a smaller value means drift: refactorise).
    The caller recomputes θ when ``reward`` is NaN.
    """
    d = x.shape[0]
    h = d // 2
    A = ainv[a]
    th = theta[a]
    den = 1.0
    pred = 0.0
    for i in range(d):
        row = A[i]
        s = 0.0
        for k in range(d):
            s += row[k] * x[k]
        u[i] = s
        den += s * x[i]
        pred += th[i] * x[i]
    u[d] = pred
    if not (den >= 1.0 and math.isfinite(den)):
        return -1.0
    c = 1.0 / den
    out = packed[a]
    for i in range(d):
        row = A[i]
        ui = u[i] * c
        for k in range(d):
            row[k] -= ui * u[k]
        _pack_row(row, i, out, i * (h + 1))
    if math.isfinite(reward):
        step = (reward - pred) * c
        for i in range(d):
            th[i] += u[i] * step
    return den


@_jit
def learn_event(S: np.ndarray, b: np.ndarray, n: np.ndarray, ainv: np.ndarray,
                theta: np.ndarray, packed: np.ndarray, a: int, x: np.ndarray, reward: float,
                u: np.ndarray) -> float:
    """:func:`add_event` then :func:`sherman_morrison` on arm ``a``, in one call: learning
    one event whose arm's cache is current. Returns ``den`` (−1.0: drift, the cache was
    left unchanged — the sums were still updated)."""
    add_event(S, b, n, a, x, reward)
    return sherman_morrison(ainv, theta, packed, a, x, reward, u)


@_jit
def draw_floored_argmax(scores: np.ndarray, floor: float, u: float, probs: np.ndarray) -> int:
    """The greedy-with-floor distribution of ``scores`` into ``probs``, and the index
    that the uniform number ``u`` draws from it (see
    :func:`bandit.policies.common.floored_argmax`).

    Non-maximal arms get f = min(floor, 1/K); the T arms tied at the maximum share
    1 − (K − T)·f. ``u`` below the tied mass picks tie ``⌊u / p_top⌋``; above it, the
    ``⌊(u − mass_top)/f⌋``-th other arm (in index order). NaN scores are never the
    maximum; all NaN is read as all tied.
    """
    K = scores.shape[0]
    f = min(floor, 1.0 / K)
    top = -math.inf
    T = 0
    for i in range(K):
        v = scores[i]
        if v > top:
            top = v
            T = 1
        elif v == top:
            T += 1
    if T == 0:  # every score NaN (or −inf): all tied
        for i in range(K):
            probs[i] = 1.0 / K
        return int(min(int(u * K), K - 1))
    mass_top = 1.0 - (K - T) * f
    p_top = mass_top / T
    for i in range(K):
        probs[i] = p_top if scores[i] == top else f
    if u < mass_top or T == K or f <= 0.0:
        want = min(int(u / p_top), T - 1)
        top_seen = True
    else:
        want = min(int((u - mass_top) / f), K - T - 1)
        top_seen = False
    seen = 0
    for i in range(K):
        if (scores[i] == top) == top_seen:
            if seen == want:
                return int(i)
            seen += 1
    return int(K) - 1  # unreachable: want < the count of its kind


@_jit
def linear_choose(packed: np.ndarray, theta: np.ndarray, x: np.ndarray, idx: np.ndarray,
                  alpha: float, floor: float, u: float, scores: np.ndarray,
                  probs: np.ndarray, work: np.ndarray, xx: np.ndarray) -> int:
    """One LinUCB choice in one call: :func:`linear_scores` of the context ``x`` over the
    arms ``idx`` into ``scores`` (``work``: a (2, len(idx)) scratch for the means and
    widths), then :func:`draw_floored_argmax` with ``floor`` and the uniform ``u`` into
    ``probs``; returns the position drawn."""
    X = x.reshape(1, x.shape[0])
    linear_scores(packed, theta, X, idx, alpha, work[0:1], work[1:2],
                  scores.reshape(1, scores.shape[0]), xx)
    return draw_floored_argmax(scores, floor, u, probs)


_warm = False


def warm() -> None:
    """Compile (or load from the on-disk cache) every kernel for the float64 / intp
    arrays the solver passes, once per process: a policy calls this when it is built, so
    that no request pays for compilation."""
    global _warm
    if _warm:
        return
    d = 2
    ainv = np.zeros((1, d, d))
    theta = np.zeros((1, d))
    packed = np.zeros((1, d * (d // 2 + 1)), dtype=np.float32)
    x = np.zeros(d)
    idx = np.zeros(1, dtype=np.intp)
    out = np.empty((1, 1))
    linear_scores(packed, theta, x[None, :], idx, 1.0, out, out.copy(), out.copy(),
                  np.empty(packed.shape[1], dtype=np.float32))
    hybrid_scores(ainv, theta, theta, ainv, np.zeros((0, 1, d)), x[None, :], idx, 1.0, out,
                  out.copy(), out.copy(), np.empty(d))
    sherman_morrison(ainv, theta, packed, 0, x, 0.0, np.empty(d + 1))
    learn_event(ainv.copy(), theta.copy(), np.zeros(1), ainv, theta, packed, 0, x, 0.0,
                np.empty(d + 1))
    linear_choose(packed, theta, x, idx, 1.0, 0.0, 0.5, out[0].copy(), out[0].copy(),
                  np.empty((2, 1)), np.empty(packed.shape[1], dtype=np.float32))
    pack_arms(ainv, idx, packed)
    add_event(ainv, theta, np.zeros(1), 0, x, 0.0)
    draw_floored_argmax(out[0], 0.0, 0.5, out[0].copy())
    within(x, 1.0)
    _warm = True
