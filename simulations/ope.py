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

Confidence intervals are percentile bootstrap (or normal, for speed on very large logs).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from bandit.errors import InvalidInputError
from simulations.logs import LoggedData

__all__ = [
    "ESTIMATORS",
    "OPEWarning",
    "estimate",
    "evaluate_policy",
    "fit_reward_model",
    "policy_probabilities",
    "predict_rewards",
]

FloatArray = npt.NDArray[np.float64]
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
) -> pd.DataFrame:
    """Estimate the target policy's value with each estimator; one row per estimator.

    Columns: ``estimator, value, ci_low, ci_high, se, n, ess`` (ESS = (Σw)²/Σw², the
    effective sample size of the importance weights). ``df.attrs["warnings"]`` lists the
    reliability warnings, which are also emitted as :class:`OPEWarning`.
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
    qh = None if q_hat is None else np.asarray(q_hat, dtype=np.float64)
    if qh is not None and qh.shape != pi.shape:
        raise InvalidInputError("q_hat", qh.shape, f"must have shape {pi.shape}")
    rng = rng if rng is not None else np.random.default_rng(0)
    notes: list[str] = []
    if p.min() < min_propensity_warn:
        notes.append(f"{int((p < min_propensity_warn).sum())} propensities below "
                     f"{min_propensity_warn:g} (min {p.min():.3g}): IPS variance will be large")
    if logging_probabilities is not None:
        mu = np.asarray(logging_probabilities, dtype=np.float64)
        unsupported = float((pi * (mu <= 0)).sum(axis=1).mean())
    else:
        seen = np.bincount(a, minlength=pi.shape[1]) > 0
        unsupported = float(pi[:, ~seen].sum(axis=1).mean())
    if unsupported > 1e-9:
        notes.append(f"target puts {unsupported:.3g} of its mass on arms the logger never "
                     "chose: IPS/DR are biased there; trust DM only if the model is right")
    for msg in notes:
        warnings.warn(msg, OPEWarning, stacklevel=2)
    contrib = _contributions(r, a, p, pi, qh, estimators, switch_tau)
    w = pi[np.arange(n), a] / p
    ess = float(w.sum() ** 2 / max(float((w * w).sum()), 1e-300))
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
                    boot[k][start:start + b] = num[idx].sum(axis=1) / den[idx].sum(axis=1)
    for k, (num, den) in contrib.items():
        value = _point(num, den)
        if den is None:
            se = float(num.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
        else:
            lin = (num - value * den) / max(float(den.mean()), 1e-300)
            se = float(lin.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
        if ci == "bootstrap":
            lo, hi = np.quantile(boot[k], [(1 - level) / 2, (1 + level) / 2])
        else:
            lo, hi = value - z * se, value + z * se
        rows.append({"estimator": k, "value": value, "ci_low": float(lo), "ci_high": float(hi),
                     "se": se, "n": n, "ess": ess})
    df = pd.DataFrame(rows)
    df.attrs["warnings"] = notes
    return df


def _normal_quantile(q: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(q))


def evaluate_policy(
    data: LoggedData,
    target: npt.ArrayLike,
    *,
    q_hat: npt.ArrayLike | None = None,
    ridge: float = 1.0,
    **kwargs: Any,
) -> pd.DataFrame:
    """:func:`estimate` on a :class:`LoggedData`; fits a ridge reward model if none given."""
    if q_hat is None:
        weights = fit_reward_model(data.contexts, data.arm_index, data.reward, data.n_arms,
                                   ridge=ridge)
        q_hat = predict_rewards(weights, data.contexts)
    return estimate(
        data.reward, data.arm_index, data.propensity, target, q_hat=q_hat,
        logging_probabilities=data.probabilities, **kwargs,
    )


def policy_probabilities(
    policy: Any, contexts: FloatArray, arm_ids: Sequence[str], rng: np.random.Generator
) -> FloatArray:
    """π(·|x) of a policy for every row, columns in ``arm_ids`` order, shape (n, K).

    Uses ``probabilities(contexts)`` when the policy has it (vectorised), else each
    ``choose`` call's ``Choice.probabilities``.
    """
    fast = getattr(policy, "probabilities", None)
    if callable(fast):
        out = np.asarray(fast(contexts), dtype=np.float64)
        return out
    col = {a: i for i, a in enumerate(arm_ids)}
    out = np.zeros((contexts.shape[0], len(arm_ids)))
    eligible = list(arm_ids)
    for i in range(contexts.shape[0]):
        choice = policy.choose(contexts[i], rng, eligible)
        for a, p in zip(choice.arms, choice.probabilities, strict=True):
            out[i, col[a]] = p
    return out
