"""Off-policy estimators of a fixed target policy's value from logged bandit data.

All estimators are vectorised over arrays: ``reward`` (n,), ``arm_index`` (n,),
``propensity`` (n,) — the logging probability μ(a_i|x_i) —, ``target`` (n, K) the
target policy's probabilities π(·|x_i), and for model-based estimators ``q_hat`` (n, K)
a reward model. With importance weight w_i = π(a_i|x_i) / μ(a_i|x_i):

* IPS (Horvitz & Thompson 1952): mean(w r);
* SNIPS (Swaminathan & Joachims 2015): Σ w r / Σ w;
* DM: mean(Σ_k π_k q̂_k);
* DR (Dudík, Langford & Li 2011): DM + mean(w (r − q̂_a));
* Switch-DR (Wang, Agarwal & Dudík 2017): DR's correction only where w ≤ τ, DM
  elsewhere (the per-logged-action form of Open Bandit Pipeline).

The point estimates equal Open Bandit Pipeline's to 1e-9 (tests/test_offline_targets.py).
Events may carry weights (DSJSON ``pdrop``): every mean is then a weighted mean.

**Honest intervals.** Percentile bootstrap (or normal), then: never narrower than the
Wilson score interval of the point estimate (rescaled to the declared reward range) at
the effective sample size when rewards are binary or the interval is degenerate (zero
width, e.g. 0 successes), and clipped to the reward range. Warnings (``OPEWarning``, also
in ``df.attrs["warnings"]``) when the effective sample size is below ``min_events``,
propensities are tiny, or the target puts mass where the logger had none.

**Target policies** (:func:`target_probabilities`): an (n, K) array, a fixed
distribution over a subset of arms (``{"a": 0.5, "b": 0.5}``), a callable
``f(contexts, arm_ids, eligible) -> (n, K)``, a file of per-row probabilities
(:func:`read_target_file`), a deterministic argmax (:class:`ArgmaxPolicy`, stated tie
rule), or any core policy (including a frozen snapshot restricted to a subset of arms,
and hybrid LinUCB) through its public ``choose``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from bandit.errors import InvalidInputError
from simulations.logs import LoggedData

__all__ = [
    "ESTIMATORS",
    "ArgmaxPolicy",
    "OPEWarning",
    "bounded_interval",
    "estimate",
    "evaluate_policy",
    "fit_reward_model",
    "policy_probabilities",
    "predict_rewards",
    "read_target_file",
    "target_probabilities",
    "wilson_interval",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
ESTIMATORS = ("ips", "snips", "dm", "dr", "switch_dr")


class OPEWarning(UserWarning):
    """Estimates may be unreliable (tiny propensities, unsupported target mass)."""


def fit_reward_model(
    contexts: FloatArray, arm_index: npt.ArrayLike, reward: FloatArray, n_arms: int,
    *, ridge: float = 1.0,
) -> FloatArray:
    """Per-arm ridge regression of reward on context; returns weights (K, d)."""
    a = np.asarray(arm_index)
    d = contexts.shape[1]
    weights = np.zeros((n_arms, d))
    for k in range(n_arms):
        m = a == k
        xk = contexts[m]
        gram = xk.T @ xk + ridge * np.eye(d)
        weights[k] = np.linalg.solve(gram, xk.T @ reward[m])
    return weights


def predict_rewards(weights: FloatArray, contexts: FloatArray) -> FloatArray:
    """q̂(x, k) = w_k · x for every row and arm, shape (n, K)."""
    out: FloatArray = contexts @ weights.T
    return out


def _contributions(
    reward: FloatArray, arm_index: npt.NDArray[np.int64], propensity: FloatArray,
    target: FloatArray, q_hat: FloatArray | None, estimators: Sequence[str], tau: float,
) -> dict[str, tuple[FloatArray, FloatArray | None]]:
    n = reward.shape[0]
    rows = np.arange(n)
    w = target[rows, arm_index] / propensity
    out: dict[str, tuple[FloatArray, FloatArray | None]] = {}
    dm_v = None
    resid = None
    if q_hat is not None:
        dm_v = np.einsum("nk,nk->n", target, q_hat)
        resid = reward - q_hat[rows, arm_index]
    for name in estimators:
        if name == "ips":
            out[name] = (w * reward, None)
        elif name == "snips":
            out[name] = (w * reward, w)
        elif name in ("dm", "dr", "switch_dr"):
            if dm_v is None or resid is None:
                raise InvalidInputError("q_hat", None, f"is required by the {name} estimator")
            if name == "dm":
                out[name] = (dm_v, None)
            elif name == "dr":
                out[name] = (dm_v + w * resid, None)
            else:
                out[name] = (dm_v + np.where(w <= tau, w * resid, 0.0), None)
        else:
            raise InvalidInputError("estimator", name, f"must be one of {ESTIMATORS}")
    return out


def wilson_interval(mean01: float, n: float, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval (Wilson 1927) of a mean in [0, 1] from ``n`` observations.

    Valid (conservative) for any [0, 1]-bounded variable, whose variance is at most
    m(1 − m); it never collapses at 0 or n successes. ``n`` may be fractional (an
    effective sample size); ``n <= 0`` gives [0, 1].
    """
    if not n > 0 or not math.isfinite(mean01):
        return 0.0, 1.0
    m = min(max(mean01, 0.0), 1.0)
    z = _normal_quantile(0.5 + level / 2)
    z2 = z * z
    centre = (m + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(m * (1 - m) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def bounded_interval(value: float, lo: float, hi: float, n_eff: float, *,
                     reward_range: tuple[float, float], binary: bool,
                     level: float = 0.95) -> tuple[float, float]:
    """``[lo, hi]`` made honest: Wilson-floored when binary or degenerate, clipped to the range.

    The Wilson interval of ``value`` (rescaled to [0, 1] by ``reward_range``) at ``n_eff``
    is merged in when rewards are binary, the interval has zero width or is not finite;
    the result is clipped to ``reward_range``. No value (``nan``) gives the whole range.
    """
    r_lo, r_hi = reward_range
    if not math.isfinite(value):
        return r_lo, r_hi
    span = r_hi - r_lo
    if binary or not (math.isfinite(lo) and math.isfinite(hi)) or hi - lo <= 1e-12 * span:
        w_lo, w_hi = wilson_interval((value - r_lo) / span, n_eff, level)
        lo = min(lo, r_lo + span * w_lo) if math.isfinite(lo) else r_lo + span * w_lo
        hi = max(hi, r_lo + span * w_hi) if math.isfinite(hi) else r_lo + span * w_hi
    return min(max(lo, r_lo), r_hi), min(max(hi, r_lo), r_hi)


def _point(num: FloatArray, den: FloatArray | None) -> float:
    if den is None:
        return float(num.mean())
    s = float(den.sum())
    return float(num.sum() / s) if s > 0 else float("nan")


def estimate(
    reward: npt.ArrayLike,
    arm_index: npt.ArrayLike,
    propensity: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    q_hat: npt.ArrayLike | None = None,
    estimators: Sequence[str] = ESTIMATORS,
    switch_tau: float = 50.0,
    ci: str = "bootstrap",
    n_bootstrap: int = 200,
    level: float = 0.95,
    rng: np.random.Generator | None = None,
    logging_probabilities: npt.ArrayLike | None = None,
    min_propensity_warn: float = 1e-3,
    reward_range: tuple[float, float] = (0.0, 1.0),
    sample_weight: npt.ArrayLike | None = None,
    min_events: int = 100,
) -> pd.DataFrame:
    """Estimate the target policy's value with each estimator; one row per estimator.

    Columns: ``estimator, value, ci_low, ci_high, se, n, ess`` (ESS = (Σw)²/Σw², the
    effective sample size of the importance weights). Intervals as in the module
    docstring. ``df.attrs["warnings"]`` lists the reliability warnings, which are also
    emitted as :class:`OPEWarning`.
    """
    r = np.asarray(reward, dtype=np.float64)
    a = np.asarray(arm_index, dtype=np.int64)
    p = np.asarray(propensity, dtype=np.float64)
    pi = np.asarray(target, dtype=np.float64)
    n = r.shape[0]
    if n == 0:
        raise InvalidInputError("reward", n, "must hold at least one logged event")
    if a.shape != (n,) or p.shape != (n,) or pi.ndim != 2 or pi.shape[0] != n:
        raise InvalidInputError("arrays", (a.shape, p.shape, pi.shape), f"must align on n={n}")
    if not np.all(np.isfinite(p) & (p > 0) & (p <= 1)):
        bad = int(np.flatnonzero(~(np.isfinite(p) & (p > 0) & (p <= 1)))[0])
        raise InvalidInputError(f"propensity[{bad}]", float(p[bad]), "must be in (0, 1]")
    if a.min() < 0 or a.max() >= pi.shape[1]:
        raise InvalidInputError("arm_index", int(a.max()), f"must be in [0, {pi.shape[1]})")
    if not np.allclose(pi.sum(axis=1), 1.0, atol=1e-6) or pi.min() < 0:
        raise InvalidInputError("target", "rows", "must be probability distributions over arms")
    if ci not in ("bootstrap", "normal"):
        raise InvalidInputError("ci", ci, "must be 'bootstrap' or 'normal'")
    if not 0 < level < 1:
        raise InvalidInputError("level", level, "must be in (0, 1)")
    lo_r, hi_r = reward_range
    if not (math.isfinite(lo_r) and math.isfinite(hi_r) and lo_r < hi_r):
        raise InvalidInputError("reward_range", reward_range, "must be finite with low < high")
    outside = int(((r < lo_r) | (r > hi_r)).sum())
    if outside:
        raise InvalidInputError("reward", f"{outside} values", f"must lie in the declared range "
                                f"[{lo_r:g}, {hi_r:g}] (declare the range or clip when reading)")
    qh = None if q_hat is None else np.asarray(q_hat, dtype=np.float64)
    if qh is not None and qh.shape != pi.shape:
        raise InvalidInputError("q_hat", qh.shape, f"must have shape {pi.shape}")
    c = None
    if sample_weight is not None:
        c = np.asarray(sample_weight, dtype=np.float64)
        if c.shape != (n,) or not np.all(np.isfinite(c) & (c > 0)):
            raise InvalidInputError("sample_weight", c.shape, f"must be ({n},) positive finite")
        c = c / c.mean()
    rng = rng if rng is not None else np.random.default_rng(0)
    notes: list[str] = []
    if p.min() < min_propensity_warn:
        notes.append(f"tiny propensities: {int((p < min_propensity_warn).sum())} below "
                     f"{min_propensity_warn:g} (min {p.min():.3g}): IPS variance will be large")
    if logging_probabilities is not None:
        mu = np.asarray(logging_probabilities, dtype=np.float64)
        unsupported = float((pi * (mu <= 0)).sum(axis=1).mean())
    else:
        seen = np.bincount(a, minlength=pi.shape[1]) > 0
        unsupported = float(pi[:, ~seen].sum(axis=1).mean())
    if unsupported > 1e-9:
        notes.append(f"unsupported target mass: the target puts {unsupported:.3g} of its mass "
                     "where the logger had none: IPS/DR are biased there; trust DM only if "
                     "the model is right")
    contrib = _contributions(r, a, p, pi, qh, estimators, switch_tau)
    if c is not None:  # weighted means: Σ c·v / Σ c, with c normalised to mean 1
        contrib = {k: (num * c, None if den is None else den * c)
                   for k, (num, den) in contrib.items()}
    w = pi[np.arange(n), a] / p
    cw = w if c is None else w * c
    ess = float(cw.sum() ** 2 / max(float((cw * cw).sum()), 1e-300))
    if ess < min_events:
        notes.append(f"too few events: effective sample size {ess:.1f} of {n} events is below "
                     f"{min_events}: the interval is wide and rests on few events")
    for msg in notes:
        warnings.warn(msg, OPEWarning, stacklevel=2)
    binary = bool(np.all((r == lo_r) | (r == hi_r)))
    z = _normal_quantile(0.5 + level / 2)
    rows: list[dict[str, Any]] = []
    boot: dict[str, FloatArray] = {}
    if ci == "bootstrap":
        boot = {k: np.empty(n_bootstrap) for k in contrib}
        chunk = max(1, 2_000_000 // n)
        for start in range(0, n_bootstrap, chunk):
            b = min(chunk, n_bootstrap - start)
            idx = rng.integers(0, n, size=(b, n))
            for k, (num, den) in contrib.items():
                if den is None:
                    boot[k][start:start + b] = num[idx].mean(axis=1)
                else:
                    with np.errstate(invalid="ignore", divide="ignore"):
                        boot[k][start:start + b] = num[idx].sum(axis=1) / den[idx].sum(axis=1)
    for k, (num, den) in contrib.items():
        value = _point(num, den)
        if den is None:
            se = float(num.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
        else:
            lin = (num - value * den) / max(float(den.mean()), 1e-300)
            se = float(lin.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
        if ci == "bootstrap":
            finite = boot[k][np.isfinite(boot[k])]
            lo, hi = (np.quantile(finite, [(1 - level) / 2, (1 + level) / 2]) if finite.size
                      else (float("nan"), float("nan")))
        else:
            lo, hi = value - z * se, value + z * se
        n_eff = ess if k in ("ips", "snips", "dr", "switch_dr") else float(n)
        lo, hi = bounded_interval(value, float(lo), float(hi), n_eff, reward_range=reward_range,
                                  binary=binary, level=level)
        rows.append({"estimator": k, "value": value, "ci_low": lo, "ci_high": hi,
                     "se": se, "n": n, "ess": ess})
    df = pd.DataFrame(rows)
    df.attrs["warnings"] = notes
    return df


def _normal_quantile(q: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(q))


def evaluate_policy(
    data: LoggedData,
    target: Any,
    *,
    q_hat: npt.ArrayLike | None = None,
    ridge: float = 1.0,
    rng: np.random.Generator | None = None,
    eligible_arms: Sequence[str] | None = None,
    **kwargs: Any,
) -> pd.DataFrame:
    """:func:`estimate` on a :class:`LoggedData` for any target (:func:`target_probabilities`).

    Fits a per-arm ridge reward model for DM/DR if no ``q_hat`` is given; uses the log's
    full logging distribution (support check) and event weights when present.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    pi = target_probabilities(target, data, rng=rng, eligible_arms=eligible_arms)
    if q_hat is None:
        weights = fit_reward_model(data.contexts, data.arm_index, data.reward, data.n_arms,
                                   ridge=ridge)
        q_hat = predict_rewards(weights, data.contexts)
    return estimate(
        data.reward, data.arm_index, data.propensity, pi, q_hat=q_hat, rng=rng,
        logging_probabilities=data.probabilities, sample_weight=data.weights, **kwargs,
    )


# ----------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class ArgmaxPolicy:
    """A frozen deterministic policy: argmax_k w_k · x over the eligible arms.

    ``weights`` (K, d) rows follow ``arm_ids`` (default: the log's arms in order).
    Tie rule (``ties``): ``first`` — the tied arm listed first in ``arm_ids`` wins;
    ``split`` — tied arms share the probability equally (replay draws one uniformly).
    """

    weights: FloatArray
    arm_ids: tuple[str, ...] | None = None
    ties: str = "first"

    def __post_init__(self) -> None:
        w = np.asarray(self.weights, dtype=np.float64)
        if w.ndim != 2 or not np.all(np.isfinite(w)):
            raise InvalidInputError("weights", w.shape, "must be a finite (K, d) array")
        if self.arm_ids is not None and len(self.arm_ids) != w.shape[0]:
            raise InvalidInputError("arm_ids", len(self.arm_ids), f"must name {w.shape[0]} arms")
        if self.ties not in ("first", "split"):
            raise InvalidInputError("ties", self.ties, "must be 'first' or 'split'")
        object.__setattr__(self, "weights", w)

    def _scores(self, contexts: FloatArray, arm_ids: Sequence[str] | None,
                eligible: BoolArray | None) -> FloatArray:
        x = np.asarray(contexts, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.weights.shape[1]:
            raise InvalidInputError("contexts", x.shape, f"must be (n, {self.weights.shape[1]})")
        own = x @ self.weights.T
        if arm_ids is None or self.arm_ids is None:
            scores = own
            if arm_ids is not None and len(arm_ids) != own.shape[1]:
                raise InvalidInputError("weights", own.shape[1], f"must have {len(arm_ids)} rows")
        else:
            col = {a: j for j, a in enumerate(self.arm_ids)}
            scores = np.full((x.shape[0], len(arm_ids)), -np.inf)
            for j, a in enumerate(arm_ids):
                if a in col:
                    scores[:, j] = own[:, col[a]]
        if eligible is not None:
            scores = np.where(eligible, scores, -np.inf)
        if not np.all(np.isfinite(scores.max(axis=1))):
            raise InvalidInputError("target", "argmax", "has no eligible arm for some events")
        return scores

    def probabilities(self, contexts: FloatArray, arm_ids: Sequence[str] | None = None,
                      eligible: BoolArray | None = None) -> FloatArray:
        scores = self._scores(contexts, arm_ids, eligible)
        n = scores.shape[0]
        out = np.zeros(scores.shape)
        if self.ties == "first":
            out[np.arange(n), np.argmax(scores, axis=1)] = 1.0
        else:
            top = scores == scores.max(axis=1, keepdims=True)
            out = top / top.sum(axis=1, keepdims=True)
        return out

    def choose_indices(self, contexts: FloatArray, rng: np.random.Generator,
                       arm_ids: Sequence[str] | None = None,
                       eligible: BoolArray | None = None) -> IntArray:
        if self.ties == "first":
            return np.asarray(np.argmax(self._scores(contexts, arm_ids, eligible), axis=1),
                              dtype=np.int64)
        probs = self.probabilities(contexts, arm_ids, eligible)
        u = rng.random((probs.shape[0], 1))
        idx = (u > np.cumsum(probs, axis=1)).sum(axis=1)
        return np.minimum(idx, probs.shape[1] - 1).astype(np.int64)


def _check_target(pi: FloatArray, data: LoggedData, what: str) -> FloatArray:
    if pi.shape != (data.n, data.n_arms):
        raise InvalidInputError(what, pi.shape, f"must have shape ({data.n}, {data.n_arms}) "
                                f"(events, arms {list(data.arm_ids)[:10]})")
    if not np.all(np.isfinite(pi)) or pi.min() < 0:
        raise InvalidInputError(what, "values", "must be finite and >= 0")
    sums = pi.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > 1e-6)
    if bad.size:
        raise InvalidInputError(f"{what} row {int(bad[0])}", float(sums[bad[0]]),
                                f"must sum to 1 ({bad.size} rows do not)")
    if data.eligible is not None:
        off = (pi * ~data.eligible).sum(axis=1)
        bad = np.flatnonzero(off > 1e-9)
        if bad.size:
            raise InvalidInputError(f"{what} row {int(bad[0])}", float(off[bad[0]]),
                                    f"puts mass on arms not eligible for the event ({bad.size} rows)")
    return pi


def _fixed_distribution(dist: Mapping[str, float], data: LoggedData) -> FloatArray:
    col = {a: j for j, a in enumerate(data.arm_ids)}
    row = np.zeros(data.n_arms)
    for a, v in dist.items():
        if a not in col:
            raise InvalidInputError("target arm", a, f"is not an arm of the log "
                                    f"({list(data.arm_ids)[:10]})")
        if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
            raise InvalidInputError(f"target[{a}]", v, "must be a probability >= 0")
        row[col[a]] = v
    total = row.sum()
    if not total > 0:
        raise InvalidInputError("target", dict(dist), "must put positive mass on some arm")
    pi = np.tile(row / total, (data.n, 1))
    if data.eligible is not None:
        # a fixed distribution over arms some events did not offer: renormalised over the
        # event's eligible arms (the policy "as deployed" would only see those)
        pi = pi * data.eligible
        mass = pi.sum(axis=1, keepdims=True)
        if np.any(mass <= 0):
            raise InvalidInputError("target", dict(dist), f"has no eligible arm for "
                                    f"{int((mass <= 0).sum())} events")
        pi = pi / mass
    return pi


def _policy_probabilities(policy: Any, data: LoggedData, rng: np.random.Generator,
                          eligible_arms: Sequence[str] | None) -> FloatArray:
    """π(·|x) of a core policy via its public API: ``probabilities_batch`` or ``choose``.

    Each event's eligible arms are the log's (``data.eligible``), restricted to the arms
    the policy knows and to ``eligible_arms`` when given (a snapshot over a subset).
    """
    col = {a: i for i, a in enumerate(data.arm_ids)}
    known = getattr(policy, "arms", None)
    allowed = [a for a in data.arm_ids
               if (known is None or a in known) and (eligible_arms is None or a in eligible_arms)]
    if eligible_arms is not None:
        missing = [a for a in eligible_arms if a not in col]
        if missing:
            raise InvalidInputError("arms", missing[0], "is not an arm of the log")
    if not allowed:
        raise InvalidInputError("target", getattr(policy, "name", "policy"),
                                "knows none of the log's arms")
    allowed_mask = np.array([a in set(allowed) for a in data.arm_ids])
    masks = (np.broadcast_to(allowed_mask, (data.n, data.n_arms)) if data.eligible is None
             else data.eligible & allowed_mask)
    empty = np.flatnonzero(~masks.any(axis=1))
    if empty.size:
        raise InvalidInputError(f"target event {int(empty[0])}", getattr(policy, "name", "policy"),
                                f"has no eligible arm it knows ({empty.size} events)")
    out = np.zeros((data.n, data.n_arms))
    batch = getattr(policy, "probabilities_batch", None)
    # events grouped by their eligible arms: one public batch call per group when the
    # policy has one (the core's probabilities_batch), else one choose per event
    keys = np.packbits(masks, axis=1)
    _, group = np.unique(keys, axis=0, return_inverse=True)
    for g in range(int(group.max()) + 1):
        rows = np.flatnonzero(group.ravel() == g)
        el = [a for a, ok in zip(data.arm_ids, masks[rows[0]], strict=True) if ok]
        if callable(batch):
            arms, probs = batch(data.contexts[rows], rng, el)
            out[np.ix_(rows, [col[a] for a in arms])] = probs
            continue
        for i in rows:
            choice = policy.choose(data.contexts[i], rng, el)
            out[i, [col[a] for a in choice.arms]] = choice.probabilities
    return out


def policy_probabilities(
    policy: Any, contexts: FloatArray, arm_ids: Sequence[str], rng: np.random.Generator
) -> FloatArray:
    """π(·|x) of a policy for every row, columns in ``arm_ids`` order, shape (n, K)."""
    n = contexts.shape[0]
    data = LoggedData(tuple(arm_ids), contexts, np.zeros(n, np.int64), np.ones(n), np.zeros(n))
    return target_probabilities(policy, data, rng=rng)


def target_probabilities(target: Any, data: LoggedData, *, rng: np.random.Generator | None = None,
                         eligible_arms: Sequence[str] | None = None) -> FloatArray:
    """The target's π(·|x_i) for every logged event, shape (n, K) in ``data.arm_ids`` order.

    ``target`` is one of: an (n, K) array; a mapping ``{arm: probability}`` (a fixed
    distribution over a subset of arms, renormalised over each event's eligible arms);
    an :class:`ArgmaxPolicy`; a core policy (anything with ``choose``, e.g. a loaded
    snapshot; ``eligible_arms`` restricts it to a subset); or a callable
    ``f(contexts, arm_ids, eligible) -> (n, K)`` (``eligible`` an (n, K) bool array).
    Rows must be distributions with no mass on ineligible arms.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    if isinstance(target, np.ndarray | list | tuple):
        return _check_target(np.asarray(target, dtype=np.float64), data, "target")
    if isinstance(target, Mapping):
        return _check_target(_fixed_distribution(target, data), data, "target")
    if isinstance(target, ArgmaxPolicy):
        pi = target.probabilities(data.contexts, data.arm_ids, data.eligible)
        return _check_target(pi, data, "target")
    if hasattr(target, "choose"):
        return _check_target(_policy_probabilities(target, data, rng, eligible_arms), data,
                             "target")
    fast = getattr(target, "probabilities", None)
    if callable(fast):
        return _check_target(np.asarray(fast(data.contexts), dtype=np.float64), data, "target")
    if callable(target):
        eligible = (data.eligible if data.eligible is not None
                    else np.ones((data.n, data.n_arms), dtype=bool))
        try:
            raw = target(data.contexts.copy(), data.arm_ids, eligible.copy())
        except Exception as exc:  # a user's function: report it, never a traceback
            name = getattr(target, "__qualname__", repr(target))
            raise InvalidInputError("target", name, f"raised {type(exc).__name__}: {exc}") from None
        if isinstance(raw, pd.DataFrame):
            raw = raw.reindex(columns=list(data.arm_ids), fill_value=0.0).to_numpy()
        return _check_target(np.asarray(raw, dtype=np.float64), data, "target")
    return _check_target(np.asarray(target, dtype=np.float64), data, "target")


def read_target_file(path: str | Path, data: LoggedData) -> FloatArray:
    """Per-event target probabilities from a file (CSV, Parquet, JSON Lines or ``.npy``).

    Tables have one column per arm (arms without a column get 0) and either a
    ``decision_id`` column (joined to the log's decision ids) or exactly one row per logged
    event in order. ``.npy`` holds an (n, K) array in the log's arm order.
    """
    p = Path(path)
    if not p.is_file():
        raise InvalidInputError("target file", str(p), "must be an existing file")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            return _check_target(np.load(p, allow_pickle=False).astype(np.float64), data,
                                 f"target file {p.name}")
        if suffix == ".csv":
            frame = pd.read_csv(p)
        elif suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(p)
        else:
            frame = pd.read_json(p, lines=True, dtype=False)
    except (OSError, ValueError) as exc:
        raise InvalidInputError("target file", str(p), f"is not readable ({exc})") from None
    frame.columns = [str(c) for c in frame.columns]
    arms = [c for c in frame.columns if c in set(data.arm_ids)]
    if not arms:
        raise InvalidInputError("target file", str(p), f"has no column named after an arm "
                                f"({list(data.arm_ids)[:10]})")
    if "decision_id" in frame.columns:
        if data.decision_ids is None:
            raise InvalidInputError("target file", str(p), "joins on decision_id but the log has none")
        frame = frame.assign(decision_id=frame["decision_id"].astype(str)).set_index("decision_id")
        if not frame.index.is_unique:
            raise InvalidInputError("target file decision_id", str(p), "must be unique")
        missing = [d for d in data.decision_ids if d not in frame.index]
        if missing:
            raise InvalidInputError("target file", str(p), f"has no row for {len(missing)} logged "
                                    f"decisions (first: {missing[0]!r})")
        frame = frame.loc[list(data.decision_ids)]
    elif len(frame) != data.n:
        raise InvalidInputError("target file", str(p), f"has {len(frame)} rows for {data.n} "
                                "logged events (add a decision_id column to join)")
    pi = frame.reindex(columns=list(data.arm_ids), fill_value=0.0).to_numpy(dtype=np.float64)
    return _check_target(pi, data, f"target file {p.name}")
