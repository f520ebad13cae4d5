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
:class:`bandit.policies.base.Policy`, called with each event's eligible arms), or — fast
path — with ``choose_indices(contexts, rng) -> arm indices`` (:class:`ArgmaxPolicy`).
Rewards, event weights (DSJSON ``pdrop``) and honest intervals: see :func:`replay`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.stats import t as student_t

from bandit.errors import InvalidInputError
from simulations.logs import LoggedData
from simulations.ope import ArgmaxPolicy, bounded_interval

__all__ = [
    "FixedLinearPolicy",
    "IndexPolicy",
    "ReplayResult",
    "replay",
    "replay_many",
    "tune",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@runtime_checkable
class IndexPolicy(Protocol):
    """Fast-path protocol: choose arm indices for a block of contexts at once."""

    def choose_indices(self, contexts: FloatArray, rng: np.random.Generator) -> IntArray: ...


#: The deterministic argmax target (one implementation: :class:`simulations.ope.ArgmaxPolicy`).
FixedLinearPolicy = ArgmaxPolicy


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
    warnings: tuple[str, ...] = ()
    ess: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value, "ci_low": self.ci_low, "ci_high": self.ci_high,
            "se": self.se, "events_used": self.events_used, "events_total": self.events_total,
            "ess": self.ess, "method": self.method, "warnings": list(self.warnings),
        }


def _draw(probs: FloatArray, rng: np.random.Generator) -> IntArray:
    """One index per row drawn from each row's distribution (inverse CDF, one uniform)."""
    u = rng.random((probs.shape[0], 1))
    idx = (u > np.cumsum(probs, axis=1)).sum(axis=1)
    return np.minimum(idx, probs.shape[1] - 1).astype(np.int64)


class _Chooser:
    """Choices of any policy for a block of logged events, honouring each event's eligible arms.

    Fast paths, all through public methods: :class:`ArgmaxPolicy` and :class:`IndexPolicy`
    (vectorised); a core policy's ``probabilities_batch`` (one draw per event from the
    exact distribution ``choose`` draws from), and for linear Thompson sampling one
    posterior draw per event and arm from ``score_batch`` (θ̃ᵀx ~ N(θᵀx, v²·xᵀA⁻¹x), with
    probability K·f a uniform arm: the core's ``choose``). Otherwise, or when events offer
    different arms, one ``choose`` per event over its eligible arms that the policy knows.
    """

    def __init__(self, policy: Any, data: LoggedData, restrict: Sequence[str] | None) -> None:
        self.policy = policy
        self.data = data
        self.pos = {a: i for i, a in enumerate(data.arm_ids)}
        known = getattr(policy, "arms", None)
        allowed = np.array([(known is None or a in known) and (restrict is None or a in restrict)
                            for a in data.arm_ids])
        if not allowed.any():
            raise InvalidInputError("policy", getattr(policy, "name", "policy"),
                                    "knows none of the log's arms")
        self.allowed = allowed
        self.allowed_ids = [a for a, ok in zip(data.arm_ids, allowed, strict=True) if ok]
        self.cols = np.flatnonzero(allowed)
        batch = data.eligible is None and callable(getattr(policy, "probabilities_batch", None))
        self.batch = batch
        self.thompson = batch and getattr(policy, "name", "") == "linear_thompson" and callable(
            getattr(policy, "score_batch", None))
        # decided once: a runtime Protocol check costs more than a small block's choices
        self.argmax = isinstance(policy, ArgmaxPolicy)
        self.index = not self.argmax and isinstance(policy, IndexPolicy)
        self._lists: dict[bytes, list[str]] = {}

    def _eligible(self, i: int) -> list[str]:
        m = self.allowed if self.data.eligible is None else self.allowed & self.data.eligible[i]
        key = m.tobytes()
        hit = self._lists.get(key)
        if hit is None:
            hit = self._lists[key] = [a for a, ok in zip(self.data.arm_ids, m, strict=True) if ok]
        return hit

    def _thompson(self, x: FloatArray, rng: np.random.Generator) -> IntArray:
        pol = self.policy
        sc = pol.score_batch(x, self.allowed_ids)
        k = len(sc.arms)
        draw = sc.means + pol.config.thompson_v * sc.widths * rng.standard_normal(sc.means.shape)
        winner = np.argmax(draw, axis=1)
        f = min(float(pol.config.probability_floor), 1.0 / k)
        u = rng.random(x.shape[0])
        uniform = np.minimum((u / f).astype(np.int64), k - 1) if f > 0 else winner
        pick = np.where(u < k * f, uniform, winner)
        return np.asarray([self.pos[sc.arms[j]] for j in pick], dtype=np.int64)

    def __call__(self, start: int, stop: int, rng: np.random.Generator) -> IntArray:
        pol, x = self.policy, self.data.contexts[start:stop]
        if self.argmax:
            el = None if self.data.eligible is None else self.data.eligible[start:stop]
            if not self.allowed.all():
                el = np.broadcast_to(self.allowed, (stop - start, self.data.n_arms)) if el is None \
                    else el & self.allowed
            return pol.choose_indices(x, rng, self.data.arm_ids, el)
        if self.index:
            return np.asarray(pol.choose_indices(x, rng), dtype=np.int64)
        if self.thompson:
            return self._thompson(x, rng)
        if self.batch:
            arms, probs = pol.probabilities_batch(x, rng, self.allowed_ids)
            cols = np.fromiter((self.pos[a] for a in arms), dtype=np.int64, count=len(arms))
            return cols[_draw(probs, rng)]
        out = np.empty(stop - start, dtype=np.int64)
        for j in range(stop - start):
            el = self._eligible(start + j)
            out[j] = self.pos[pol.choose(x[j], rng, el).arm_id] if el else -1
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
    reward_range: tuple[float, float] = (0.0, 1.0),
    min_events: int = 100,
    eligible_arms: Sequence[str] | None = None,
) -> ReplayResult:
    """Replay ``policy`` over ``data`` (see the module docstring).

    ``method``: ``replay`` (uniform logs only), ``rejection`` (any logger), or ``auto``
    (``replay`` when propensities are all 1/K, else ``rejection`` with a warning).
    ``learn=False`` never updates the policy (evaluating a frozen policy); the policy is
    updated in place when learning (``batch_size=1``: after every accepted event).
    ``eligible_arms`` restricts the policy to a subset of the arms.

    The interval is honest: a t interval, never narrower than the Wilson interval at the
    events used when rewards are binary or the interval is degenerate, clipped to
    ``reward_range``; with no accepted event the value is NaN and the interval the whole
    range. Warnings (``ReplayResult.warnings``): too few events used (< ``min_events``),
    method switched, tiny propensities.
    """
    if batch_size < 1:
        raise InvalidInputError("batch_size", batch_size, "must be >= 1")
    if data.n == 0:
        raise InvalidInputError("data", 0, "must hold at least one logged event")
    if method not in ("auto", "replay", "rejection"):
        raise InvalidInputError("method", method, "must be 'auto', 'replay' or 'rejection'")
    lo_r, hi_r = reward_range
    outside = int(((data.reward < lo_r) | (data.reward > hi_r)).sum())
    if outside:
        raise InvalidInputError("reward", f"{outside} values", f"must lie in the declared range "
                                f"[{lo_r:g}, {hi_r:g}]")
    notes: list[str] = []
    uniform = data.is_uniform()
    if method == "auto":
        method = "replay" if uniform else "rejection"
        if not uniform:
            k = (data.eligible.sum(axis=1) if data.eligible is not None
                 else np.full(data.n, data.n_arms))
            off = int((~np.isclose(data.propensity, 1.0 / k, rtol=1e-6)).sum())
            notes.append(f"method switched: the log is not uniform ({off} of {data.n} "
                         "propensities differ from 1/K), so rejection replay is used")
    if method == "replay" and not uniform:
        raise InvalidInputError(
            "method", method,
            "needs uniformly-logged data (propensities all 1/K); use method='rejection'",
        )
    # Acceptance probability of a matching event (1 for uniform logs).
    p_min = float(data.propensity.min())
    accept_p = p_min / data.propensity
    if method == "rejection":
        keep = float(accept_p.mean())
        if keep < 0.05:
            notes.append(f"tiny propensities: the smallest propensity {p_min:.3g} makes rejection "
                         f"replay keep only {100 * keep:.2g}% of matching events")
    chooser = _Chooser(policy, data, eligible_arms)
    arm_ids = data.arm_ids
    x_all, a_all, r_all = data.contexts, data.arm_index, data.reward
    w_all = data.weights
    coin = rng.random(data.n) if method == "rejection" else None
    accepted: list[IntArray] = []
    start = 0
    n = data.n
    update = getattr(policy, "update_batch", None) if learn else None
    span = 2 * data.n_arms
    while start < n:
        # Walk forward until ``batch_size`` events are accepted (or the log ends): choices
        # are made from the frozen policy in blocks.
        got: list[IntArray] = []
        need = batch_size
        while need > 0 and start < n:
            block = min(n, start + max(need * span, 32))
            chosen = chooser(start, block, rng)
            ok = chosen == a_all[start:block]
            if coin is not None:
                ok &= coin[start:block] < accept_p[start:block]
            hit = np.flatnonzero(ok)
            if hit.size > need:
                hit = hit[:need]
                block = start + int(hit[-1]) + 1
            got.append(start + hit)
            need -= hit.size
            start = block
        idx = np.concatenate(got)
        accepted.append(idx)
        if update is not None and idx.size:
            update([arm_ids[i] for i in a_all[idx]], x_all[idx], r_all[idx])
    used_idx = np.concatenate(accepted) if accepted else np.zeros(0, np.int64)
    rewards = r_all[used_idx]
    used = int(rewards.size)
    if used < min_events:
        notes.append(f"too few events: {used} of {n} logged events used (fewer than "
                     f"{min_events}): the interval rests on few events")
    if used == 0:
        nan = float("nan")
        return ReplayResult(nan, lo_r, hi_r, nan, 0, n, method, rewards, tuple(notes), 0.0)
    wts = np.ones(used) if w_all is None else w_all[used_idx]
    value = float(np.average(rewards, weights=wts))
    ess = float(wts.sum() ** 2 / (wts * wts).sum())
    if used > 1:
        var = float(np.average((rewards - value) ** 2, weights=wts)) * used / (used - 1)
        se = float(np.sqrt(var / ess))
        q = float(student_t.ppf(0.5 + level / 2, max(ess - 1, 1)))
        lo, hi = value - q * se, value + q * se
    else:
        se, lo, hi = float("nan"), float("nan"), float("nan")
    binary = bool(np.all((rewards == lo_r) | (rewards == hi_r)))
    lo, hi = bounded_interval(value, lo, hi, ess, reward_range=reward_range, binary=binary,
                              level=level)
    return ReplayResult(value, lo, hi, se, used, n, method, np.cumsum(rewards), tuple(notes), ess)


def replay_many(
    data: LoggedData, policies: dict[str, Any], *, seed: int = 0, batch_size: int = 100,
    method: str = "auto", **kwargs: Any,
) -> pd.DataFrame:
    """Replay several named policies on the same log; one row per policy (``replay`` kwargs)."""
    rows = []
    seeds = np.random.SeedSequence(seed).spawn(max(len(policies), 1))
    for i, (name, policy) in enumerate(policies.items()):
        rng = np.random.default_rng(seeds[i])
        res = replay(data, policy, rng=rng, batch_size=batch_size, method=method, **kwargs)
        rows.append({"policy": name, **res.to_dict()})
    return pd.DataFrame(rows)


def tune(
    data: LoggedData, grid: Sequence[tuple[str, Mapping[str, float]]], *, arms: Any = None,
    seed: int = 0, batch_size: int = 100, method: str = "auto", **kwargs: Any,
) -> pd.DataFrame:
    """Replay every ``(policy name, hyper-parameters)`` of ``grid``; one row per setting.

    Policies are ``bandit.policies.make_policy(PolicyConfig(name, dim=data.dim, **params),
    arms)`` (``arms``: an ``ArmRegistry``, e.g. with content features for hybrid LinUCB;
    default the log's arms). Every setting replays with the same seed, so differences
    come from the parameters. Columns: policy, the parameters, :class:`ReplayResult`'s
    fields, and ``overlaps_best`` — whether the setting's interval reaches the best
    value's lower bound (not distinguishable from the best on this log).
    """
    from bandit.arms import Arm, ArmRegistry
    from bandit.config import PolicyConfig
    from bandit.policies import make_policy

    reg = arms if arms is not None else ArmRegistry([Arm(a) for a in data.arm_ids])
    rows = []
    for name, params in grid:
        extra = {"arm_feature_dim": reg.feature_dim or 0} if name == "hybrid_linucb" else {}
        cfg = PolicyConfig(name=name, dim=data.dim, fixed_arm=data.arm_ids[0],  # type: ignore[arg-type]
                           **extra, **params)
        res = replay(data, make_policy(cfg, reg), rng=np.random.default_rng(seed),
                     batch_size=batch_size, method=method, **kwargs)
        rows.append({"policy": name, **params, **res.to_dict()})
    df = pd.DataFrame(rows)
    ok = df["value"].notna() if len(df) else pd.Series(dtype=bool)
    if ok.any():
        best = df[ok].sort_values("value", ascending=False, kind="stable").iloc[0]
        df["overlaps_best"] = (df["ci_high"] >= best["ci_low"]) & ok
    else:
        df["overlaps_best"] = False
    return df
