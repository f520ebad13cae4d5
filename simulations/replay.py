"""Offline replay of (learning) policies on logged data (Li, Chu, Langford & Wang 2011).

On *uniformly*-logged data, the replay method walks the log in order; an event whose
logged arm equals the arm the policy chooses is *accepted* — its reward counts and the
policy learns from it —, any other event is discarded. Accepted events are an unbiased
sample of the policy's own interaction, so the mean accepted reward estimates its value.

For a *non-uniform* logger, the rejection-sampling generalisation accepts a matching
event with probability ``p_min / μ(a_i|x_i)`` (``p_min`` = smallest logged propensity),
which re-weights the log to uniform before matching (cf. Dudík, Erhan, Langford & Li
2012). Both use delayed, batched feedback as a stream would deliver it: the policy is
frozen for ``batch_size`` accepted events and then updated with ``update_batch``, which
also lets choices inside a block be computed in one vectorised call (the fast path).

Policies are anything with ``choose(context, rng, eligible) -> Choice`` (the core
:class:`bandit.policies.base.Policy`), or — fast path — with
``choose_indices(contexts, rng) -> arm indices`` (:class:`FixedLinearPolicy`, or any
policy exposing ``choose_batch``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.stats import norm

from bandit.errors import InvalidInputError
from simulations.logs import LoggedData

__all__ = [
    "FixedLinearPolicy",
    "IndexPolicy",
    "ReplayResult",
    "replay",
    "replay_many",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@runtime_checkable
class IndexPolicy(Protocol):
    """Fast-path protocol: choose arm indices for a block of contexts at once."""

    def choose_indices(self, contexts: FloatArray, rng: np.random.Generator) -> IntArray: ...


@dataclass(frozen=True)
class FixedLinearPolicy:
    """A frozen deterministic policy: argmax_k w_k · x (a cheap target for tests/benches)."""

    weights: FloatArray  # (K, d)

    def choose_indices(self, contexts: FloatArray, rng: np.random.Generator) -> IntArray:
        return np.asarray(np.argmax(contexts @ self.weights.T, axis=1), dtype=np.int64)

    def probabilities(self, contexts: FloatArray) -> FloatArray:
        idx = self.choose_indices(contexts, np.random.default_rng(0))
        out = np.zeros((contexts.shape[0], self.weights.shape[0]))
        out[np.arange(contexts.shape[0]), idx] = 1.0
        return out


@dataclass(frozen=True)
class ReplayResult:
    """Replay value estimate with its CI and how many events were used."""

    value: float
    ci_low: float
    ci_high: float
    se: float
    events_used: int
    events_total: int
    method: str
    cumulative_reward: FloatArray

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value, "ci_low": self.ci_low, "ci_high": self.ci_high,
            "se": self.se, "events_used": self.events_used, "events_total": self.events_total,
            "method": self.method,
        }


class _LinearBlockChooser:
    """Vectorised choices of a frozen core LinUCB / greedy / linear Thompson policy.

    Same scores as :class:`bandit.policies.linucb.LinUCB` (θᵀx + α·sqrt(xᵀA⁻¹x), from the
    policy's cached solver) and the same floored-argmax distribution (non-maximal arms get
    the floor); exact ties, which have probability 0 with continuous contexts, go to the
    first arm. Reads the policy's solver cache: the core's fast path, refreshed per block.
    """

    def __init__(self, policy: Any, arm_ids: tuple[str, ...]) -> None:
        self.policy = policy
        self.thompson = policy.name == "linear_thompson"
        if policy.name == "linucb":
            self.alpha = float(policy.config.alpha)
        elif self.thompson:
            self.alpha = float(policy.config.thompson_v)
        else:
            self.alpha = 0.0
        self.floor = float(policy.config.probability_floor)
        self.arm_ids = arm_ids

    @staticmethod
    def supports(policy: Any) -> bool:
        return (getattr(policy, "name", None) in ("linucb", "greedy", "linear_thompson")
                and hasattr(policy, "_solver") and hasattr(policy, "_stats")
                and hasattr(policy, "_eligible"))

    def __call__(self, x: FloatArray, rng: np.random.Generator) -> IntArray:
        pol = self.policy
        pol._eligible(list(self.arm_ids))  # sync arms into the statistics
        stats, solver = pol._stats, pol._solver
        solver.ensure(stats)
        slots = np.fromiter((stats.slot(a) for a in self.arm_ids), dtype=np.intp,
                            count=len(self.arm_ids))
        k, d = slots.shape[0], x.shape[1]
        x32 = x.astype(np.float32)
        if self.alpha > 0:
            # xᵀA⁻¹x = ‖Rᵀx‖² (A⁻¹ = RRᵀ): one float32 (B, d) × (d, K·d) BLAS product per
            # block (single precision, as the core's packed widths).
            r = np.linalg.cholesky(solver.ainv[slots])  # (K, d, d), lower
            m = r.transpose(1, 0, 2).reshape(d, k * d).astype(np.float32)
            w = (x32 @ m).reshape(x.shape[0], k, d)
            scores = x32 @ solver.theta[slots].T.astype(np.float32)
            width = np.sqrt(np.einsum("bkd,bkd->bk", w, w))
            if self.thompson:
                # One posterior draw per event: θ̃ᵀx ~ N(θᵀx, v²·xᵀA⁻¹x), independent arms;
                # with probability K·f a uniform arm (the core's LinearThompson draw).
                scores += self.alpha * width * rng.standard_normal(width.shape)
                winner = np.argmax(scores, axis=1)
                f = min(self.floor, 1.0 / k)
                u = rng.random(x.shape[0])
                uniform = np.minimum((u / f).astype(np.int64), k - 1) if f > 0 else winner
                return np.where(u < k * f, uniform, winner).astype(np.int64)
            scores += self.alpha * width
        else:
            scores = x32 @ solver.theta[slots].T.astype(np.float32)
        k = len(self.arm_ids)
        f = min(self.floor, 1.0 / k)
        best = np.argmax(scores, axis=1)
        u = rng.random(x.shape[0])
        top = 1.0 - (k - 1) * f
        if f <= 0 or k == 1:
            return best.astype(np.int64)
        j = np.minimum(((u - top) / f).astype(np.int64), k - 2)
        other = j + (j >= best)
        return np.where(u < top, best, other).astype(np.int64)


def _choose_block(policy: Any, x: FloatArray, rng: np.random.Generator,
                  arm_ids: tuple[str, ...], pos: dict[str, int]) -> IntArray:
    if isinstance(policy, IndexPolicy):
        return np.asarray(policy.choose_indices(x, rng), dtype=np.int64)
    if _LinearBlockChooser.supports(policy):
        return _LinearBlockChooser(policy, arm_ids)(x, rng)
    batch = getattr(policy, "choose_batch", None)
    if batch is not None:
        chosen = batch(x, rng, eligible=arm_ids)
        return np.fromiter((pos[c if isinstance(c, str) else c.arm_id] for c in chosen),
                           dtype=np.int64, count=x.shape[0])
    out = np.empty(x.shape[0], dtype=np.int64)
    for i in range(x.shape[0]):
        out[i] = pos[policy.choose(x[i], rng, arm_ids).arm_id]
    return out


def replay(
    data: LoggedData,
    policy: Any,
    *,
    rng: np.random.Generator,
    batch_size: int = 100,
    method: str = "auto",
    level: float = 0.95,
    learn: bool = True,
) -> ReplayResult:
    """Replay ``policy`` over ``data`` (see the module docstring).

    ``method``: ``replay`` (uniform logs only), ``rejection`` (any logger), or ``auto``
    (``replay`` when propensities are all 1/K). ``learn=False`` never updates the
    policy (evaluating a frozen policy). The policy is updated in place when learning.
    """
    if batch_size < 1:
        raise InvalidInputError("batch_size", batch_size, "must be >= 1")
    if data.n == 0:
        raise InvalidInputError("data", 0, "must hold at least one logged event")
    uniform = data.is_uniform()
    if method == "auto":
        method = "replay" if uniform else "rejection"
    if method == "replay" and not uniform:
        raise InvalidInputError(
            "method", method,
            "needs uniformly-logged data (propensities all 1/K); use method='rejection'",
        )
    if method not in ("replay", "rejection"):
        raise InvalidInputError("method", method, "must be 'auto', 'replay' or 'rejection'")
    # Acceptance probability of a matching event (1 for uniform logs).
    accept_p = data.propensity.min() / data.propensity
    arm_ids, pos = data.arm_ids, {a: i for i, a in enumerate(data.arm_ids)}
    x_all, a_all, r_all = data.contexts, data.arm_index, data.reward
    coin = rng.random(data.n) if method == "rejection" else None
    accepted_rewards: list[FloatArray] = []
    start = 0
    n = data.n
    update = getattr(policy, "update_batch", None) if learn else None
    while start < n:
        # Walk forward until ``batch_size`` events are accepted (or the log ends): choices
        # are made from the frozen policy in vectorised blocks.
        got_x: list[FloatArray] = []
        got_a: list[IntArray] = []
        got_r: list[FloatArray] = []
        need = batch_size
        while need > 0 and start < n:
            block = min(n, start + max(need * data.n_arms, 256))
            xb = x_all[start:block]
            chosen = _choose_block(policy, xb, rng, arm_ids, pos)
            ok = chosen == a_all[start:block]
            if coin is not None:
                ok &= coin[start:block] < accept_p[start:block]
            hit = np.flatnonzero(ok)
            if hit.size > need:
                hit = hit[:need]
                block = start + int(hit[-1]) + 1
            got_x.append(xb[hit])
            got_a.append(a_all[start:block][hit])
            got_r.append(r_all[start:block][hit])
            need -= hit.size
            start = block
        rb = np.concatenate(got_r)
        accepted_rewards.append(rb)
        if update is not None and rb.size:
            ab = np.concatenate(got_a)
            update([arm_ids[i] for i in ab], np.concatenate(got_x), rb)
    rewards = np.concatenate(accepted_rewards) if accepted_rewards else np.zeros(0)
    used = int(rewards.size)
    if used == 0:
        nan = float("nan")
        return ReplayResult(nan, nan, nan, nan, 0, n, method, rewards)
    value = float(rewards.mean())
    se = float(rewards.std(ddof=1) / np.sqrt(used)) if used > 1 else float("nan")
    z = float(norm.ppf(0.5 + level / 2))
    return ReplayResult(value, value - z * se, value + z * se, se, used, n, method,
                        np.cumsum(rewards))


def replay_many(
    data: LoggedData, policies: dict[str, Any], *, seed: int = 0, batch_size: int = 100,
    method: str = "auto",
) -> pd.DataFrame:
    """Replay several named policies on the same log; one row per policy."""
    rows = []
    for i, (name, policy) in enumerate(policies.items()):
        rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(i + 1)[i])
        res = replay(data, policy, rng=rng, batch_size=batch_size, method=method)
        rows.append({"policy": name, **res.to_dict()})
    return pd.DataFrame(rows)
