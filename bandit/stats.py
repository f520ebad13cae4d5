"""Statistics of an A/B comparison: pure functions over numpy arrays.

Every function takes per-unit outcomes of the treatment and the control cohort (1-D
arrays; 0/1 for proportions) and returns a frozen result. Bad input — an empty cohort,
NaN, a control whose mean is zero or whose variance is zero where that makes the
statistic undefined — raises :class:`InvalidInputError` naming the problem.

Methods:

* absolute difference with a Welch (1947) t interval;
* relative lift ``mean_t / mean_c - 1`` with a delta-method interval
  (e.g. Deng, Knoblich & Lu 2018, "Applying the Delta Method in Metric Analytics");
* CUPED (Deng, Xu, Kohavi & Walker 2013): ``y - θ (x - mean x)`` with
  ``θ = cov(y, x) / var(x)`` pooled over both cohorts; reports the variance reduction;
* an always-valid confidence sequence: the normal-mixture boundary of Robbins (1970) in
  the form of Howard, Ramdas, McAuliffe & Sekhon (2021, "Time-uniform, nonparametric,
  nonasymptotic confidence sequences", Ann. Statist., eq. (14)) applied, as in
  Waudby-Smith et al. (2021/2024, "Time-uniform central limit theory and asymptotic
  confidence sequences"), to the standardised difference — it may be looked at after
  every day without inflating the error rate;
* sample-ratio mismatch: Pearson χ² against the configured split, flagged at p < 0.001
  (Fabijan et al. 2019, "Diagnosing Sample Ratio Mismatch");
* P(treatment beats control) under a normal approximation of the posterior of the
  difference with a flat prior;
* guardrails: a metric must not degrade beyond a relative margin (non-inferiority on
  the lower confidence bound of the relative lift).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
from scipy import stats as sps

from bandit.errors import InvalidInputError

__all__ = [
    "SRM_ALPHA",
    "CupedResult",
    "DiffResult",
    "GuardrailResult",
    "LiftResult",
    "SRMResult",
    "SequentialResult",
    "absolute_diff",
    "cuped",
    "guardrail",
    "mixture_radius_factor",
    "prob_better",
    "relative_lift",
    "sequential_diff",
    "sequential_lift",
    "srm_test",
]

#: SRM is flagged below this p-value (a false alarm once in a thousand experiments)
SRM_ALPHA: Final = 0.001

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class DiffResult:
    """mean_t - mean_c with a Welch interval."""

    n_treatment: int
    n_control: int
    mean_treatment: float
    mean_control: float
    estimate: float
    se: float
    df: float
    ci_low: float
    ci_high: float
    p_value: float
    alpha: float


@dataclass(frozen=True)
class LiftResult:
    """mean_t / mean_c - 1 with a delta-method interval."""

    n_treatment: int
    n_control: int
    mean_treatment: float
    mean_control: float
    estimate: float
    se: float
    ci_low: float
    ci_high: float
    p_value: float
    alpha: float


@dataclass(frozen=True)
class SequentialResult:
    """An always-valid interval: ``estimate ± factor · se`` holds at all times with 1-α."""

    estimate: float
    se: float
    factor: float
    ci_low: float
    ci_high: float
    alpha: float
    n: int
    planned_n: int


@dataclass(frozen=True)
class CupedResult:
    """CUPED-adjusted outcomes and what the adjustment bought."""

    treatment: FloatArray
    control: FloatArray
    theta: float
    #: 1 - var(adjusted) / var(raw), pooled over both cohorts (within-cohort variances)
    variance_reduction: float


@dataclass(frozen=True)
class SRMResult:
    observed: tuple[int, ...]
    expected: tuple[float, ...]
    chi2: float
    p_value: float
    flagged: bool


@dataclass(frozen=True)
class GuardrailResult:
    metric: str
    estimate: float
    ci_low: float
    ci_high: float
    margin: float
    #: "ok" (lower bound above -margin), "degraded" (upper bound below -margin) or
    #: "inconclusive"
    status: Literal["ok", "degraded", "inconclusive"]

    @property
    def passed(self) -> bool:
        return self.status == "ok"


# ---------------------------------------------------------------------- validation


def _clean(x: npt.ArrayLike, name: str, *, min_n: int = 2) -> FloatArray:
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInputError(name, x, "must be an array of numbers") from None
    if a.ndim != 1:
        raise InvalidInputError(name, a.shape, "must be a 1-D array")
    if a.size < min_n:
        raise InvalidInputError(name, a.size, f"must have at least {min_n} units (empty cohort?)")
    if not np.isfinite(a).all():
        bad = int((~np.isfinite(a)).sum())
        raise InvalidInputError(name, f"{bad} non-finite values", "must contain no NaN or inf")
    return a


def _alpha(alpha: float) -> float:
    if not 0 < alpha < 1:
        raise InvalidInputError("alpha", alpha, "must be in (0, 1)")
    return float(alpha)


def _moments(t: FloatArray, c: FloatArray) -> tuple[float, float, float, float]:
    return float(t.mean()), float(c.mean()), float(t.var(ddof=1)), float(c.var(ddof=1))


# ---------------------------------------------------------------------- fixed horizon


def absolute_diff(treatment: npt.ArrayLike, control: npt.ArrayLike, *,
                  alpha: float = 0.05) -> DiffResult:
    """Difference of means with a Welch–Satterthwaite t interval.

    For 0/1 outcomes this is the unpooled Wald interval for a difference of proportions.
    """
    alpha = _alpha(alpha)
    t = _clean(treatment, "treatment")
    c = _clean(control, "control")
    mt, mc, vt, vc = _moments(t, c)
    at, ac = vt / t.size, vc / c.size
    se = math.sqrt(at + ac)
    if se == 0:
        raise InvalidInputError("treatment, control", (mt, mc),
                                "have zero variance: the difference has no interval")
    # Welch (1947) degrees of freedom
    df = (at + ac) ** 2 / (at**2 / (t.size - 1) + ac**2 / (c.size - 1))
    q = float(sps.t.ppf(1 - alpha / 2, df))
    est = mt - mc
    p = float(2 * sps.t.sf(abs(est) / se, df))
    return DiffResult(t.size, c.size, mt, mc, est, se, float(df), est - q * se, est + q * se,
                      p, alpha)


def relative_lift(treatment: npt.ArrayLike, control: npt.ArrayLike, *,
                  alpha: float = 0.05) -> LiftResult:
    """Relative lift ``mean_t / mean_c - 1`` with a delta-method normal interval.

    Var(m_t / m_c) ≈ v_t / (n_t m_c²) + m_t² v_c / (n_c m_c⁴) (first-order Taylor
    expansion; cohorts independent).
    """
    alpha = _alpha(alpha)
    t = _clean(treatment, "treatment")
    c = _clean(control, "control")
    mt, mc, vt, vc = _moments(t, c)
    if mc == 0:
        raise InvalidInputError("control", mc, "must have a non-zero mean for a relative lift")
    if vc == 0 and vt == 0:
        raise InvalidInputError("treatment, control", (mt, mc),
                                "have zero variance: the lift has no interval")
    se = math.sqrt(vt / (t.size * mc**2) + mt**2 * vc / (c.size * mc**4))
    est = mt / mc - 1
    z = float(sps.norm.ppf(1 - alpha / 2))
    p = float(2 * sps.norm.sf(abs(est) / se))
    return LiftResult(t.size, c.size, mt, mc, est, se, est - z * se, est + z * se, p, alpha)


# ---------------------------------------------------------------------- sequential


def mixture_radius_factor(n: int | npt.NDArray[np.int64], alpha: float = 0.05,
                          planned_n: int = 10_000) -> npt.NDArray[np.float64]:
    """Multiplier of the standard error for the normal-mixture confidence sequence.

    With ``n`` observations and mixture precision ρ², the two-sided boundary of
    Howard et al. (2021, eq. 14) for a standardised sum is
    ``sqrt((n ρ² + 1)/(n² ρ²) · 2 log(sqrt(n ρ² + 1) / α))`` per unit of standard
    deviation; dividing by the fixed-n standard error ``1/√n`` gives the factor here.
    ρ is tuned so the boundary is tightest at ``planned_n`` (Howard et al. 2021,
    eq. 15 approximation: ρ² = (-2 log α + log(-2 log α + 1)) / planned_n).
    """
    alpha = _alpha(alpha)
    if planned_n < 1:
        raise InvalidInputError("planned_n", planned_n, "must be >= 1")
    nn = np.asarray(n, dtype=np.float64)
    if (nn < 1).any():
        raise InvalidInputError("n", n, "must be >= 1")
    l2a = -2 * math.log(alpha)
    rho2 = (l2a + math.log(l2a + 1)) / planned_n
    v = nn * rho2
    return np.asarray(np.sqrt((v + 1) / v * 2 * np.log(np.sqrt(v + 1) / alpha)))


def sequential_diff(treatment: npt.ArrayLike, control: npt.ArrayLike, *, alpha: float = 0.05,
                    planned_n: int = 10_000) -> SequentialResult:
    """Always-valid (anytime) interval for the difference of means.

    Uses the Welch standard error and ``n = n_t + n_c`` observations in the mixture
    boundary (asymptotic confidence sequence, Waudby-Smith et al.). Valid under
    continuous monitoring — e.g. recomputed every day — at level 1-α.
    """
    d = absolute_diff(treatment, control, alpha=alpha)
    n = d.n_treatment + d.n_control
    f = float(mixture_radius_factor(n, alpha, planned_n))
    return SequentialResult(d.estimate, d.se, f, d.estimate - f * d.se, d.estimate + f * d.se,
                            alpha, n, planned_n)


def sequential_lift(treatment: npt.ArrayLike, control: npt.ArrayLike, *, alpha: float = 0.05,
                    planned_n: int = 10_000) -> SequentialResult:
    """Always-valid interval for the relative lift (delta-method SE, mixture factor)."""
    r = relative_lift(treatment, control, alpha=alpha)
    n = r.n_treatment + r.n_control
    f = float(mixture_radius_factor(n, alpha, planned_n))
    return SequentialResult(r.estimate, r.se, f, r.estimate - f * r.se, r.estimate + f * r.se,
                            alpha, n, planned_n)


# ---------------------------------------------------------------------- CUPED


def cuped(treatment: npt.ArrayLike, control: npt.ArrayLike, pre_treatment: npt.ArrayLike,
          pre_control: npt.ArrayLike) -> CupedResult:
    """CUPED adjustment with a pre-exposure covariate (Deng et al. 2013).

    θ = Σ_groups cov(y, x) / Σ_groups var(x) (within-cohort, pooled), and
    y' = y - θ (x - x̄) with x̄ the pooled mean, so the adjustment is the same for both
    cohorts and leaves E[ȳ'_t - ȳ'_c] unchanged (the covariate is pre-exposure, hence
    independent of assignment).
    """
    t = _clean(treatment, "treatment")
    c = _clean(control, "control")
    xt = _clean(pre_treatment, "pre_treatment")
    xc = _clean(pre_control, "pre_control")
    if xt.size != t.size or xc.size != c.size:
        raise InvalidInputError("pre_treatment, pre_control", (xt.size, xc.size),
                                f"must match the cohort sizes ({t.size}, {c.size})")
    sxx = float(((xt - xt.mean()) ** 2).sum() + ((xc - xc.mean()) ** 2).sum())
    syy = float(((t - t.mean()) ** 2).sum() + ((c - c.mean()) ** 2).sum())
    if sxx == 0:
        return CupedResult(t, c, 0.0, 0.0)
    sxy = float(((xt - xt.mean()) * (t - t.mean())).sum()
                + ((xc - xc.mean()) * (c - c.mean())).sum())
    theta = sxy / sxx
    xbar = float(np.concatenate([xt, xc]).mean())
    at = t - theta * (xt - xbar)
    ac = c - theta * (xc - xbar)
    syy_adj = syy - sxy**2 / sxx
    reduction = 1.0 - syy_adj / syy if syy > 0 else 0.0
    return CupedResult(at, ac, theta, float(reduction))


# ---------------------------------------------------------------------- health


def srm_test(observed: Mapping[str, int] | Sequence[int],
             weights: Mapping[str, float] | Sequence[float], *,
             alpha: float = SRM_ALPHA) -> SRMResult:
    """Pearson χ² test of observed unit counts per variant against the configured split."""
    if isinstance(observed, Mapping):
        if not isinstance(weights, Mapping):
            raise InvalidInputError("weights", weights, "must be a mapping when observed is")
        missing = set(observed) - set(weights)
        if missing:
            raise InvalidInputError("observed", sorted(missing),
                                    "has variants with no configured weight")
        keys = list(weights)
        obs = np.array([observed.get(k, 0) for k in keys], dtype=np.float64)
        w = np.array([weights[k] for k in keys], dtype=np.float64)
    else:
        obs = np.asarray(observed, dtype=np.float64)
        w = np.asarray(list(weights) if not isinstance(weights, Mapping) else [], dtype=np.float64)
    if obs.size < 2 or w.size != obs.size:
        raise InvalidInputError("observed", obs.tolist(),
                                "needs >= 2 variants matching the weights")
    if not np.isfinite(obs).all() or (obs < 0).any():
        raise InvalidInputError("observed", obs.tolist(), "must be non-negative counts")
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise InvalidInputError("weights", w.tolist(), "must be non-negative and sum to > 0")
    total = obs.sum()
    if total <= 0:
        raise InvalidInputError("observed", obs.tolist(), "must contain at least one unit")
    keep = w > 0
    if (obs[~keep] > 0).any():
        return SRMResult(tuple(int(o) for o in obs), tuple(float(x) for x in w / w.sum() * total),
                         math.inf, 0.0, True)
    exp = w[keep] / w[keep].sum() * total
    chi2 = float(((obs[keep] - exp) ** 2 / exp).sum())
    p = float(sps.chi2.sf(chi2, keep.sum() - 1))
    return SRMResult(tuple(int(o) for o in obs), tuple(float(x) for x in w / w.sum() * total),
                     chi2, p, p < alpha)


def prob_better(treatment: npt.ArrayLike, control: npt.ArrayLike, *,
                higher_is_better: bool = True) -> float:
    """P(mean_t > mean_c | data) with a flat prior and a normal posterior of the difference.

    For large cohorts this matches the Beta-posterior answer for proportions; it is
    Φ(Δ̂ / se) with the Welch standard error.
    """
    d = absolute_diff(treatment, control)
    z = d.estimate / d.se
    p = float(sps.norm.cdf(z))
    return p if higher_is_better else 1.0 - p


def guardrail(metric: str, treatment: npt.ArrayLike, control: npt.ArrayLike, *,
              margin: float, alpha: float = 0.05) -> GuardrailResult:
    """Non-inferiority of ``metric``: the relative lift must not fall below ``-margin``.

    ``ok`` when the (1-α) lower bound is above ``-margin``; ``degraded`` when even the
    upper bound is below it; otherwise ``inconclusive``.
    """
    if not 0 <= margin < 1:
        raise InvalidInputError("margin", margin, "must be in [0, 1)")
    r = relative_lift(treatment, control, alpha=alpha)
    status: Literal["ok", "degraded", "inconclusive"]
    if r.ci_low >= -margin:
        status = "ok"
    elif r.ci_high < -margin:
        status = "degraded"
    else:
        status = "inconclusive"
    return GuardrailResult(metric, r.estimate, r.ci_low, r.ci_high, float(margin), status)
