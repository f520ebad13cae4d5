"""Offline replay of (learning) policies on logged data (Li, Chu, Langford & Wang 2011).

On *uniformly*-logged data, the replay method walks the log in order; an event whose
logged arm equals the arm the policy chooses is *accepted* — its reward counts and the
policy learns from it —, any other event is discarded. Accepted events are an unbiased
sample of the policy's own interaction, so the mean accepted reward estimates its value.

For a *non-uniform* logger, the rejection-sampling generalisation accepts a matching
event with probability ``p_min / μ(a_i|x_i)`` (``p_min`` = smallest logged propensity),
which re-weights the log to uniform before matching (cf. Dudík, Erhan, Langford & Li
2012). Both use delayed, batched feedback as a stream would deliver it: the policy is
frozen for ``batch_size`` accepted events and then updated (``update`` for one event,
``update_batch`` for more); every event after the update sees the new state.

Speed without a second implementation: the policy is frozen between updates, so the
choices of a stretch of events come from one call of the core's public ``score_batch``;
for a ``separable`` policy (an arm's scores depend on its own statistics only: disjoint
LinUCB, Thompson sampling, greedy) an update re-scores just the updated arms over the
rest of the stretch, so learning after every event costs one one-arm call per update.
Each event draws its own random numbers (:class:`_Draws`), so the result is the same as
the event-by-event loop (choose, match, learn), which tests/test_replay.py checks.

Policies are anything with ``choose(context, rng, eligible) -> Choice`` (the core
:class:`bandit.policies.base.Policy`, called with each event's eligible arms), or — fast
path — with ``choose_indices(contexts, rng) -> arm indices`` (:class:`ArgmaxPolicy`).
Rewards, event weights (DSJSON ``pdrop``) and honest intervals: see :func:`replay`.
:func:`replay_rewards` replays the same policies on a log re-scored under several reward
configs (α's) from the events' proxies, and judges each learnt policy by every reward.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.stats import t as student_t

from bandit.errors import InvalidInputError
from bandit.policies import BatchScores
from simulations.logs import LoggedData
from simulations.ope import ArgmaxPolicy, bounded_interval

__all__ = [
    "FixedLinearPolicy",
    "IndexPolicy",
    "ReplayResult",
    "RewardReplay",
    "replay",
    "replay_many",
    "replay_rewards",
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
    #: the accepted events (positions in the log, in replay order)
    accepted: IntArray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value, "ci_low": self.ci_low, "ci_high": self.ci_high,
            "se": self.se, "events_used": self.events_used, "events_total": self.events_total,
            "ess": self.ess, "method": self.method, "warnings": list(self.warnings),
        }


def _draw(probs: FloatArray, u: FloatArray) -> IntArray:
    """One index per row drawn from each row's distribution (inverse CDF of ``u``)."""
    cdf = np.cumsum(probs, axis=1)
    cdf[:, -1] = np.inf  # a row summing to a hair under u still draws its last index
    return (cdf < u[:, None]).sum(axis=1, dtype=np.int64)  # type: ignore[no-any-return]


#: events per chunk of the per-event random stream (see :class:`_Draws`)
DRAW_CHUNK = 4096
#: rows scored at once for a separable policy (one call per window; an update re-scores
#: only the updated arms over the rest of the window)
_WINDOW = 256


class _Draws:
    """The per-event random numbers of a replay, independent of how the log is cut.

    Event ``i`` draws ``u[i]`` (and, for Thompson sampling, ``z[i, :]``, one standard
    normal per allowed arm), where the stream is drawn in consecutive chunks of
    :data:`DRAW_CHUNK` events: ``rng.random(DRAW_CHUNK)`` then, for Thompson,
    ``rng.standard_normal((DRAW_CHUNK, k))``. So a choice does not depend on which
    block it was computed in, and the block replay equals the event-by-event loop.
    """

    def __init__(self, rng: np.random.Generator, k: int, normals: bool) -> None:
        self.rng, self.k, self.normals = rng, k, normals
        self._chunks: dict[int, tuple[FloatArray, FloatArray | None]] = {}
        self._next = 0

    def _chunk(self, c: int) -> tuple[FloatArray, FloatArray | None]:
        while self._next <= c:
            u = self.rng.random(DRAW_CHUNK)
            z = self.rng.standard_normal((DRAW_CHUNK, self.k)) if self.normals else None
            self._chunks[self._next] = (u, z)
            self._next += 1
        return self._chunks[c]

    def take(self, start: int, stop: int) -> tuple[FloatArray, FloatArray | None]:
        """``u`` (and ``z``) of events ``start..stop-1`` (starts never go backwards)."""
        c0, c1 = start // DRAW_CHUNK, (stop - 1) // DRAW_CHUNK
        if c0 == c1 and c0 in self._chunks:  # the usual case: inside the current chunk
            u, z = self._chunks[c0]
            lo = start - c0 * DRAW_CHUNK
            hi = lo + (stop - start)
            return u[lo:hi], None if z is None else z[lo:hi]
        for old in [c for c in self._chunks if c < c0]:
            del self._chunks[old]
        parts = [self._chunk(c) for c in range(c0, c1 + 1)]
        lo = start - c0 * DRAW_CHUNK
        hi = lo + (stop - start)
        u = parts[0][0] if len(parts) == 1 else np.concatenate([p[0] for p in parts])
        z = None
        if self.normals:
            z = parts[0][1] if len(parts) == 1 else np.concatenate([p[1] for p in parts])
            z = z[lo:hi]  # type: ignore[index]
        return u[lo:hi], z


class _Chooser:
    """Choices of any policy for a stretch of logged events, honouring each event's eligible arms.

    Fast paths, all through public methods:

    * :class:`ArgmaxPolicy` and :class:`IndexPolicy`: vectorised over a block;
    * a core policy's ``score_batch``: the choice of event i is drawn with the event's own
      random numbers (:class:`_Draws`) from the distribution ``probabilities_from_scores``
      gives — the one ``choose`` draws from —, and for linear Thompson sampling from one
      posterior draw per arm (θ̃ᵀx ~ N(θᵀx, v²·xᵀA⁻¹x), with probability K·f a uniform arm:
      the core's ``choose``). Scores are computed for a window of events at once; when
      the policy is ``separable`` (an arm's scores depend on its own statistics only), an
      update re-scores only the updated arms over the rest of the window, so learning
      every event costs one one-arm call per update instead of a full call;
    * otherwise, or when events offer different arms, one ``choose`` per event over its
      eligible arms that the policy knows.
    """

    def __init__(self, policy: Any, data: LoggedData, restrict: Sequence[str] | None,
                 rng: np.random.Generator) -> None:
        self.policy = policy
        self.data = data
        self.rng = rng
        self.pos = {a: i for i, a in enumerate(data.arm_ids)}
        known = getattr(policy, "arms", None)
        allowed = np.array([(known is None or a in known) and (restrict is None or a in restrict)
                            for a in data.arm_ids])
        if not allowed.any():
            raise InvalidInputError("policy", getattr(policy, "name", "policy"),
                                    "knows none of the log's arms")
        self.allowed = allowed
        self.allowed_ids = [a for a, ok in zip(data.arm_ids, allowed, strict=True) if ok]
        self.cols = np.flatnonzero(allowed).astype(np.int64)
        # decided once: a runtime Protocol check costs more than a small block's choices
        self.argmax = isinstance(policy, ArgmaxPolicy)
        self.index = not self.argmax and isinstance(policy, IndexPolicy)
        self.scored = (not self.argmax and not self.index and data.eligible is None
                       and callable(getattr(policy, "score_batch", None))
                       and callable(getattr(policy, "probabilities_from_scores", None)))
        self.thompson = self.scored and getattr(policy, "name", "") == "linear_thompson"
        self.separable = self.scored and bool(getattr(policy, "separable", False))
        self.draws = _Draws(rng, len(self.allowed_ids), self.thompson) if self.scored else None
        self._lists: dict[bytes, list[str]] = {}
        self._w0 = self._w1 = 0
        self._means = self._widths = self._scores = np.zeros((0, 0))
        self._slot = {a: j for j, a in enumerate(self.allowed_ids)}
        self._ids = tuple(self.allowed_ids)
        self._all_cols = bool(allowed.all())  # choice slot == log column

    # ---- windows of scores
    def window(self, start: int, step: int) -> int:
        """End of the stretch from ``start`` whose choices can be made now (frozen state)."""
        n = self.data.n
        if not self.scored:
            return min(n, start + step)
        if start >= self._w1 or start < self._w0:
            size = max(_WINDOW, step) if self.separable else step
            stop = min(n, start + size)
            sc = self.policy.score_batch(self.data.contexts[start:stop], self.allowed_ids)
            self._means, self._widths, self._scores = sc.means, sc.widths, sc.scores
            self._w0, self._w1 = start, stop
        return min(self._w1, start + step)

    def updated(self, arm_cols: IntArray, start: int) -> None:
        """The policy learnt from events with these logged arms; events from ``start`` on see it."""
        if not self.scored:
            return
        if not self.separable or start >= self._w1:
            self._w1 = 0  # the next window is scored afresh
            return
        if arm_cols.shape[0] == 1:
            arm = self.data.arm_ids[int(arm_cols[0])]
            slots = [self._slot[arm]] if arm in self._slot else []
        else:
            slots = sorted({self._slot[a] for a in (self.data.arm_ids[c] for c in
                                                    set(arm_cols.tolist())) if a in self._slot})
        if not slots:
            return
        if 2 * len(slots) > len(self.allowed_ids):
            self._w1 = 0
            return
        sc = self.policy.score_batch(self.data.contexts[start:self._w1],
                                     [self.allowed_ids[j] for j in slots])
        r = start - self._w0
        if len(slots) == 1:  # basic indexing: no fancy-index copy per update
            j = slots[0]
            self._means[r:, j] = sc.means[:, 0]
            self._widths[r:, j] = sc.widths[:, 0]
            self._scores[r:, j] = sc.scores[:, 0]
        else:
            self._means[r:, slots] = sc.means
            self._widths[r:, slots] = sc.widths
            self._scores[r:, slots] = sc.scores

    # ---- choices
    def _eligible(self, i: int) -> list[str]:
        m = self.allowed if self.data.eligible is None else self.allowed & self.data.eligible[i]
        key = m.tobytes()
        hit = self._lists.get(key)
        if hit is None:
            hit = self._lists[key] = [a for a, ok in zip(self.data.arm_ids, m, strict=True) if ok]
        return hit

    def _from_scores(self, start: int, stop: int) -> IntArray:
        pol = self.policy
        r0, r1 = start - self._w0, stop - self._w0
        u, z = self.draws.take(start, stop)  # type: ignore[union-attr]
        means, widths = self._means[r0:r1], self._widths[r0:r1]
        if self.thompson:
            k = len(self.allowed_ids)
            winner = np.argmax(means + pol.config.thompson_v * widths * z, axis=1)
            f = min(float(pol.config.probability_floor), 1.0 / k)
            uniform = np.minimum((u / f).astype(np.int64), k - 1) if f > 0 else winner
            pick = np.where(u < k * f, uniform, winner)
        else:
            sc = BatchScores(self._ids, means, widths, self._scores[r0:r1])
            pick = _draw(pol.probabilities_from_scores(sc), u)
        return pick if self._all_cols else self.cols[pick]  # type: ignore[no-any-return]

    def __call__(self, start: int, stop: int) -> IntArray:
        """Log arm columns chosen for events ``start..stop-1`` (within :meth:`window`)."""
        pol, x, rng = self.policy, self.data.contexts[start:stop], self.rng
        if self.scored:
            return self._from_scores(start, stop)
        if self.argmax:
            el = None if self.data.eligible is None else self.data.eligible[start:stop]
            if not self.allowed.all():
                el = np.broadcast_to(self.allowed, (stop - start, self.data.n_arms)) if el is None \
                    else el & self.allowed
            return pol.choose_indices(x, rng, self.data.arm_ids, el)
        if self.index:
            return np.asarray(pol.choose_indices(x, rng), dtype=np.int64)
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
    ``eligible_arms`` restricts the policy to a subset of the arms. ``rng`` draws, in
    order, the rejection coins (one per event, rejection only) and then each event's own
    numbers (:class:`_Draws`) for a core policy, or the policy's own draws otherwise.

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
    coin = rng.random(data.n) if method == "rejection" else None
    chooser = _Chooser(policy, data, eligible_arms, rng)
    arm_ids = data.arm_ids
    x_all, a_all, r_all = data.contexts, data.arm_index, data.reward
    w_all = data.weights
    accepted: list[IntArray] = []
    start = 0
    n = data.n
    update = getattr(policy, "update_batch", None) if learn else None
    update_one = getattr(policy, "update", None) if learn else None
    span = 2 * data.n_arms
    while start < n:
        # Walk forward until ``batch_size`` events are accepted (or the log ends): the
        # policy is frozen meanwhile, so choices are made in blocks.
        got: list[IntArray] = []
        need = batch_size
        while need > 0 and start < n:
            block = chooser.window(start, max(need * span, 32))
            chosen = chooser(start, block)
            ok = chosen == a_all[start:block]
            if coin is not None:
                ok &= coin[start:block] < accept_p[start:block]
            hit = ok.nonzero()[0]
            if hit.size >= need:  # the policy learns here: later events see the new state
                hit = hit[:need]
                block = start + int(hit[-1]) + 1
            got.append(start + hit)
            need -= hit.size
            start = block
        idx = got[0] if len(got) == 1 else np.concatenate(got)
        accepted.append(idx)
        if update is not None and idx.size:
            arms = a_all[idx]
            if idx.size == 1 and update_one is not None:  # learning every event
                i = int(idx[0])
                update_one(arm_ids[int(arms[0])], x_all[i], float(r_all[i]))
            else:
                update([arm_ids[i] for i in arms], x_all[idx], r_all[idx])
            chooser.updated(arms, start)
    used_idx = np.concatenate(accepted) if accepted else np.zeros(0, np.int64)
    rewards = r_all[used_idx]
    used = int(rewards.size)
    if used < min_events:
        notes.append(f"too few events: {used} of {n} logged events used (fewer than "
                     f"{min_events}): the interval rests on few events")
    value, lo, hi, se, ess = _mean_interval(
        rewards, None if w_all is None else w_all[used_idx], level, reward_range)
    return ReplayResult(value, lo, hi, se, used, n, method, np.cumsum(rewards), tuple(notes),
                        ess, used_idx)


def _mean_interval(rewards: FloatArray, wts: FloatArray | None, level: float,
                   reward_range: tuple[float, float]) -> tuple[float, float, float, float, float]:
    """(value, ci_low, ci_high, se, ess) of the accepted events' (weighted) mean reward.

    A t interval, never narrower than the Wilson interval at the events used when rewards
    are binary or the interval is degenerate, clipped to ``reward_range``; with no event
    the value is NaN and the interval the whole range (:func:`replay`).
    """
    lo_r, hi_r = reward_range
    used = int(rewards.size)
    if used == 0:
        nan = float("nan")
        return nan, lo_r, hi_r, nan, 0.0
    wts = np.ones(used) if wts is None else wts
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
    return value, lo, hi, se, ess


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


@dataclass(frozen=True)
class RewardReplay:
    """Policies replayed on one log under several rewards (:func:`replay_rewards`).

    ``values``: one row per (``policy``, ``learnt_under``, ``judged_by``) — the policy learnt
    from the reward ``learnt_under`` and judged by the mean reward ``judged_by`` over the
    events it accepted (``own`` when the two are the same): ``value``, ``ci_low``,
    ``ci_high``, ``se``, ``events_used``, ``events_total``, ``ess``, ``method``.
    ``shares``: one row per (``policy``, ``learnt_under``) with ``events_used`` and one column
    per arm, the (weighted) share of the accepted events on which the policy chose that arm
    (replay's accepted events are a sample of the policy's own choices).
    ``rescored``: events re-scored; ``not_rescorable``: events left out (their proxies were
    not kept); ``warnings``: the replays' warnings, each naming its policy and reward.
    """

    values: pd.DataFrame
    shares: pd.DataFrame
    rescored: int
    not_rescorable: int
    warnings: tuple[str, ...] = ()


def replay_rewards(
    data: LoggedData,
    policies: Mapping[str, Callable[[], Any]],
    rewards: Mapping[str, Any],
    *,
    seed: int = 0,
    batch_size: int = 100,
    method: str = "auto",
    level: float = 0.95,
    reward_range: tuple[float, float] = (0.0, 1.0),
    min_events: int = 100,
    eligible_arms: Sequence[str] | None = None,
) -> RewardReplay:
    """Replay ``policies`` on ``data`` re-scored under each reward config of ``rewards``.

    ``rewards`` maps a label to a :class:`bandit.config.RewardConfig`; every event's reward
    is recomputed from its proxies under each (:meth:`LoggedData.rescored`, which refuses a
    log without proxies; events whose proxies were not kept are left out of every replay).
    ``policies`` maps a name to a function returning a fresh policy (e.g.
    ``functools.partial(make_policy, config, arms)``): each is replayed (:func:`replay`)
    from a fresh policy under each reward, with the same random numbers (a policy's seed
    as in :func:`replay_many`), so differences come from the rewards. The events each
    learnt policy accepted are then scored by every reward — a policy learnt under new
    α's is judged by the old reward too, and the other way round.
    """
    if not rewards:
        raise InvalidInputError("rewards", {}, "must name at least one reward config")
    if not policies:
        raise InvalidInputError("policies", {}, "must name at least one policy")
    scored = {label: data.rescored(cfg) for label, cfg in rewards.items()}
    first = next(iter(scored.values()))
    wts = first.weights
    seeds = np.random.SeedSequence(seed).spawn(len(policies))
    values: list[dict[str, Any]] = []
    shares: list[dict[str, Any]] = []
    notes: list[str] = []
    for i, (name, make) in enumerate(policies.items()):
        for label, d in scored.items():
            res = replay(d, make(), rng=np.random.default_rng(seeds[i]),
                         batch_size=batch_size, method=method, level=level,
                         reward_range=reward_range, min_events=min_events,
                         eligible_arms=eligible_arms)
            notes.extend(f"{name} learnt under {label}: {w}" for w in res.warnings)
            idx = res.accepted
            w = None if wts is None else wts[idx]
            for judge, dj in scored.items():
                value, lo, hi, se, ess = _mean_interval(dj.reward[idx], w, level, reward_range)
                values.append({"policy": name, "learnt_under": label, "judged_by": judge,
                               "own": judge == label, "value": value, "ci_low": lo,
                               "ci_high": hi, "se": se, "events_used": res.events_used,
                               "events_total": res.events_total, "ess": ess,
                               "method": res.method})
            counts = np.bincount(d.arm_index[idx], weights=w, minlength=d.n_arms)
            total = float(counts.sum())
            shares.append({"policy": name, "learnt_under": label,
                           "events_used": res.events_used,
                           **{a: (float(c) / total if total else float("nan"))
                              for a, c in zip(d.arm_ids, counts, strict=True)}})
    px = data.proxies
    return RewardReplay(pd.DataFrame(values), pd.DataFrame(shares), first.n,
                        0 if px is None else px.not_rescorable, tuple(notes))


def tune(
    data: LoggedData, grid: Sequence[tuple[str, Mapping[str, float]]], *, arms: Any = None,
    seed: int = 0, batch_size: int = 100, method: str = "auto", **kwargs: Any,
) -> pd.DataFrame:
    """Replay every ``(policy name, hyper-parameters)`` of ``grid``; one row per setting.

    Policies are ``bandit.policies.make_policy(PolicyConfig(name, dim=data.dim, **params),
    arms)`` (``arms``: an ``ArmRegistry``, e.g. with content features for hybrid LinUCB;
    default the log's arms, with the content features it carries:
    :meth:`LoggedData.arm_registry`). Every setting replays with the same seed, so differences
    come from the parameters. Columns: policy, the parameters, :class:`ReplayResult`'s
    fields, and ``overlaps_best`` — whether the setting's interval reaches the best
    value's lower bound (not distinguishable from the best on this log).
    """
    from bandit.config import PolicyConfig
    from bandit.policies import make_policy

    reg = arms if arms is not None else data.arm_registry()
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
