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
    "CovSums",
    "CupedResult",
    "DiffResult",
    "GuardrailResult",
    "LiftResult",
    "SRMResult",
    "SequentialResult",
    "Summary",
    "absolute_diff",
    "cuped",
    "cuped_sums",
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
class Summary:
    """A cohort's size, mean and sample variance (ddof=1): all the fixed-horizon and
    sequential intervals need. Build with :meth:`of` or from sums with :meth:`from_sums`."""

    n: int
    mean: float
    var: float

    def __post_init__(self) -> None:
        if self.n < 2:
            raise InvalidInputError("n", self.n, "must be at least 2 units (empty cohort?)")
        if not (math.isfinite(self.mean) and math.isfinite(self.var)) or self.var < 0:
            raise InvalidInputError("summary", (self.mean, self.var),
                                    "must have a finite mean and a finite variance >= 0")

    @classmethod
    def of(cls, x: npt.ArrayLike, name: str = "x") -> Summary:
        a = _clean(x, name)
        return cls(int(a.size), float(a.mean()), float(a.var(ddof=1)))

    @classmethod
    def from_sums(cls, n: int, sy: float, syy: float) -> Summary:
        if n < 2:
            raise InvalidInputError("n", n, "must be at least 2 units (empty cohort?)")
        mean = sy / n
        return cls(int(n), mean, max((syy - n * mean * mean) / (n - 1), 0.0))


@dataclass(frozen=True)
class CovSums:
    """Sums over a cohort of an outcome y and a pre-exposure covariate x (for CUPED)."""

    n: int
    sy: float
    syy: float
    sx: float
    sxx: float
    sxy: float

    @classmethod
    def of(cls, y: npt.ArrayLike, x: npt.ArrayLike, name: str = "y") -> CovSums:
        ya = _clean(y, name)
        xa = _clean(x, f"pre_{name}")
        if xa.size != ya.size:
            raise InvalidInputError(f"pre_{name}", xa.size, f"must match the cohort size {ya.size}")
        return cls(int(ya.size), float(ya.sum()), float(ya @ ya), float(xa.sum()),
                   float(xa @ xa), float(ya @ xa))


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


# ---------------------------------------------------------------------- fixed horizon


def _summaries(treatment: npt.ArrayLike | Summary,
               control: npt.ArrayLike | Summary) -> tuple[Summary, Summary]:
    t = treatment if isinstance(treatment, Summary) else Summary.of(treatment, "treatment")
    c = control if isinstance(control, Summary) else Summary.of(control, "control")
    return t, c


def absolute_diff(treatment: npt.ArrayLike | Summary, control: npt.ArrayLike | Summary, *,
                  alpha: float = 0.05) -> DiffResult:
    """Difference of means with a Welch–Satterthwaite t interval.

    Takes per-unit arrays or :class:`Summary` objects. For 0/1 outcomes this is the
    unpooled Wald interval for a difference of proportions.
    """
    alpha = _alpha(alpha)
    t, c = _summaries(treatment, control)
    at, ac = t.var / t.n, c.var / c.n
    se = math.sqrt(at + ac)
    if se == 0:
        raise InvalidInputError("treatment, control", (t.mean, c.mean),
                                "have zero variance: the difference has no interval")
    # Welch (1947) degrees of freedom
    df = (at + ac) ** 2 / (at**2 / (t.n - 1) + ac**2 / (c.n - 1))
    q = float(sps.t.ppf(1 - alpha / 2, df))
    est = t.mean - c.mean
    p = float(2 * sps.t.sf(abs(est) / se, df))
    return DiffResult(t.n, c.n, t.mean, c.mean, est, se, float(df), est - q * se, est + q * se,
                      p, alpha)


def relative_lift(treatment: npt.ArrayLike | Summary, control: npt.ArrayLike | Summary, *,
                  alpha: float = 0.05) -> LiftResult:
    """Relative lift ``mean_t / mean_c - 1`` with a delta-method normal interval.

    Var(m_t / m_c) ≈ v_t / (n_t m_c²) + m_t² v_c / (n_c m_c⁴) (first-order Taylor
    expansion; cohorts independent).
    """
    alpha = _alpha(alpha)
    t, c = _summaries(treatment, control)
    mt, mc = t.mean, c.mean
    if mc == 0:
        raise InvalidInputError("control", mc, "must have a non-zero mean for a relative lift")
    if t.var == 0 and c.var == 0:
        raise InvalidInputError("treatment, control", (mt, mc),
                                "have zero variance: the lift has no interval")
    se = math.sqrt(t.var / (t.n * mc**2) + mt**2 * c.var / (c.n * mc**4))
    est = mt / mc - 1
    z = float(sps.norm.ppf(1 - alpha / 2))
    p = float(2 * sps.norm.sf(abs(est) / se))
    return LiftResult(t.n, c.n, mt, mc, est, se, est - z * se, est + z * se, p, alpha)


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


def sequential_diff(treatment: npt.ArrayLike | Summary, control: npt.ArrayLike | Summary, *,
                    alpha: float = 0.05, planned_n: int = 10_000) -> SequentialResult:
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


def sequential_lift(treatment: npt.ArrayLike | Summary, control: npt.ArrayLike | Summary, *,
                    alpha: float = 0.05, planned_n: int = 10_000) -> SequentialResult:
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


def cuped_sums(treatment: CovSums, control: CovSums) -> tuple[Summary, Summary, float, float]:
    """CUPED from sums: the adjusted cohorts' :class:`Summary`, θ and variance reduction.

    Identical to :func:`cuped` on the per-unit arrays: within cohort g,
    mean' = ȳ_g - θ (x̄_g - x̄) and var' = var_y - 2θ cov_xy + θ² var_x.
    """
    def centred(s: CovSums) -> tuple[float, float, float]:
        my, mx = s.sy / s.n, s.sx / s.n
        return s.syy - s.n * my * my, s.sxx - s.n * mx * mx, s.sxy - s.n * mx * my

    for name, s in (("treatment", treatment), ("control", control)):
        if s.n < 2:
            raise InvalidInputError(name, s.n, "must have at least 2 units (empty cohort?)")
        if not all(math.isfinite(v) for v in (s.sy, s.syy, s.sx, s.sxx, s.sxy)):
            raise InvalidInputError(name, s, "sums must be finite (NaN in the data?)")
    syy_t, sxx_t, sxy_t = centred(treatment)
    syy_c, sxx_c, sxy_c = centred(control)
    sxx, sxy, syy = sxx_t + sxx_c, sxy_t + sxy_c, syy_t + syy_c
    theta = sxy / sxx if sxx > 0 else 0.0
    xbar = (treatment.sx + control.sx) / (treatment.n + control.n)

    def adjusted(s: CovSums, syy_g: float, sxx_g: float, sxy_g: float) -> Summary:
        mean = s.sy / s.n - theta * (s.sx / s.n - xbar)
        var = (syy_g - 2 * theta * sxy_g + theta * theta * sxx_g) / (s.n - 1)
        return Summary(s.n, mean, max(var, 0.0))

    reduction = 1.0 - (syy - theta * sxy) / syy if syy > 0 and sxx > 0 else 0.0
    return (adjusted(treatment, syy_t, sxx_t, sxy_t), adjusted(control, syy_c, sxx_c, sxy_c),
            theta, float(reduction))


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


def prob_better(treatment: npt.ArrayLike | Summary, control: npt.ArrayLike | Summary, *,
                higher_is_better: bool = True) -> float:
    """P(mean_t > mean_c | data) with a flat prior and a normal posterior of the difference.

    For large cohorts this matches the Beta-posterior answer for proportions; it is
    Φ(Δ̂ / se) with the Welch standard error.
    """
    d = absolute_diff(treatment, control)
    z = d.estimate / d.se
    p = float(sps.norm.cdf(z))
    return p if higher_is_better else 1.0 - p


def guardrail(metric: str, treatment: npt.ArrayLike | Summary,
              control: npt.ArrayLike | Summary, *,
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
