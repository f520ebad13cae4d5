"""Statistics of an A/B comparison: pure functions over numpy arrays.

Every function takes per-unit outcomes of the treatment and the control cohort (1-D
arrays; 0/1 for proportions) and returns a frozen result. Bad input — an empty cohort,
NaN, a control whose mean is zero or whose variance is zero where that makes the
statistic undefined — raises :class:`InvalidInputError` naming the problem.

Methods:

* absolute difference: the Welch (1947) statistic inverted with a variance and a skew
  correction that, for non-negative metrics with positive means, follow a
  multiplicative effect, guarded by Welch's variance less its sampling error so that it
  is consistent for any effect (:func:`diff_bounds`); for 0/1 outcomes the
  Miettinen–Nurminen (1985, "Comparative analysis of two rates", Stat. Med. 4) score
  interval instead, with Gart & Nam's (1988, 1990) skewness correction, which holds its
  level with a handful of events per arm (Newcombe 1998; Fagerland, Lydersen & Laake
  2015);
* relative lift ``mean_t / mean_c - 1`` with Fieller's (1954, "Some problems in interval
  estimation", J. R. Stat. Soc. B 16) interval for a ratio of means: the set of ratios R
  for which ``mean_t - R mean_c`` is not significantly different from zero. Unlike the
  delta method (Deng, Knoblich & Lu 2018) it follows the skew of the ratio, so it keeps
  its coverage on skewed and rare metrics from 100 units per arm (docs/statistics.md);
  for unequal arms the contrast is studentised with its scale-model variance and its
  remaining skew corrected by Cornish–Fisher with a pooled third moment
  (:func:`ratio_bounds`; Welch's Fieller interval for equal arms); it never goes below
  -100 % (metrics are non-negative, so R >= 0) and it is unbounded above when the
  control mean itself is not distinguishable from zero; for 0/1 outcomes the
  skew-corrected score interval of the risk ratio (Koopman 1984; Gart & Nam 1988)
  instead;
* CUPED (Deng, Xu, Kohavi & Walker 2013): ``y - θ (x - mean x)`` with
  ``θ = cov(y, x) / var(x)`` pooled over both cohorts; reports the variance reduction;
* an always-valid confidence sequence: the normal-mixture boundary of Robbins (1970) in
  the form of Howard, Ramdas, McAuliffe & Sekhon (2021, "Time-uniform, nonparametric,
  nonasymptotic confidence sequences", Ann. Statist., eq. (14)) applied, as in
  Waudby-Smith et al. (2021/2024, "Time-uniform central limit theory and asymptotic
  confidence sequences"), to the standardised difference — it may be looked at after
  every day without inflating the error rate. Its tuning ρ comes from a planned sample
  size fixed in advance (:data:`DEFAULT_PLANNED_N` unless given), never from the data;
  the relative version is the Fieller set with the mixture factor in place of the t
  quantile, so it is time-uniform for the same reason and excludes 0 exactly when the
  always-valid difference interval does;
* sample-ratio mismatch: Pearson χ² against the configured split, flagged at p < 0.001
  (Fabijan et al. 2019, "Diagnosing Sample Ratio Mismatch");
* P(treatment beats control) under a normal approximation of the posterior of the
  difference with a flat prior;
* a ratio of sums Σy / Σw (a self-normalised weighted mean: inverse-propensity means of
  the leaderboard) with its linearised (delta-method) standard error;
* guardrails: a metric must not degrade beyond a relative margin (non-inferiority on
  the one-sided (1-α) lower Fieller bound of the relative lift), with the drop the
  test would detect at the current size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
from scipy import stats as sps

from bandit.errors import InvalidInputError

__all__ = [
    "DEFAULT_PLANNED_N",
    "GUARDRAIL_POWER",
    "GUARD_SE",
    "MIN_UNITS",
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
    "degenerate_reason",
    "diff_bounds",
    "fieller_bounds",
    "fixed_quantile",
    "guard_se2",
    "guardrail",
    "mixture_radius_factor",
    "power_moments",
    "prob_better",
    "ratio_bounds",
    "ratio_ci",
    "ratio_mean_se",
    "relative_lift",
    "score_diff_bounds",
    "score_ratio_bounds",
    "sequential_bounds",
    "sequential_diff",
    "sequential_lift",
    "skew_p_value",
    "srm_test",
    "weighted_mean_ci",
    "welch_df",
    "welch_quantile",
]

#: SRM is flagged below this p-value (a false alarm once in a thousand experiments)
SRM_ALPHA: Final = 0.001
#: units per arm below which no verdict is given ("too early to call"): the smallest
#: size at which the intervals are validated (docs/statistics.md)
MIN_UNITS: Final = 100
#: total units the always-valid interval is tuned for when no planned size is given
DEFAULT_PLANNED_N: Final = 10_000
#: power at which guardrails report the drop they would detect
GUARDRAIL_POWER: Final = 0.8

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Summary:
    """A cohort's size, mean and sample variance (ddof=1): all the fixed-horizon and
    sequential intervals need. Build with :meth:`of` or from sums with :meth:`from_sums`.

    ``binary``: every value is 0 or 1 (``n · mean`` successes), which selects the
    small-count score intervals for proportions (:func:`score_diff_bounds`,
    :func:`score_ratio_bounds`) in :func:`absolute_diff`, :func:`relative_lift` and
    :func:`guardrail`.
    """

    n: int
    mean: float
    var: float
    binary: bool = False
    #: the third central moment's unbiased estimate k₃ (Fisher's k-statistic), when the
    #: cube sums are known; the fixed-horizon intervals correct for skew with it
    #: (:func:`ratio_bounds`, :func:`diff_bounds`). None: no skew correction.
    k3: float | None = None
    #: the fourth central moment Σ(y - ȳ)⁴ / n, when the sums of fourth powers are known;
    #: it sizes how far below the truth the arms' own variances may be (the guard of
    #: the scale-model variance, :func:`guard_se2`). None: no allowance (Welch's).
    m4: float | None = None

    def __post_init__(self) -> None:
        if self.n < 2:
            raise InvalidInputError("n", self.n, "must be at least 2 units (empty cohort?)")
        if not (math.isfinite(self.mean) and math.isfinite(self.var)) or self.var < 0:
            raise InvalidInputError("summary", (self.mean, self.var),
                                    "must have a finite mean and a finite variance >= 0")
        for name, v in (("k3", self.k3), ("m4", self.m4)):
            if v is not None and not math.isfinite(v):
                raise InvalidInputError(f"summary.{name}", v, "must be finite")
        if self.binary and not 0 <= self.mean <= 1:
            raise InvalidInputError("summary.mean", self.mean, "must be in [0, 1] for 0/1 values")

    @property
    def successes(self) -> int:
        """Units with value 1 (meaningful when :attr:`binary`)."""
        return round(self.n * self.mean)

    @classmethod
    def of(cls, x: npt.ArrayLike, name: str = "x") -> Summary:
        """Summary of per-unit values; ``binary`` when every value is 0 or 1."""
        a = _clean(x, name)
        binary = bool(np.all((a == 0) | (a == 1)))
        n = int(a.size)
        d = a - a.mean()
        d2 = d * d
        with np.errstate(over="ignore", invalid="ignore"):
            k3 = n * float(d @ d2) / ((n - 1) * (n - 2)) if n > 2 else None
            m4 = float(d2 @ d2) / n
        return cls(n, float(a.mean()), float(a.var(ddof=1)), binary, _finite(k3), _finite(m4))

    @classmethod
    def from_sums(cls, n: int, sy: float, syy: float, syyy: float | None = None,
                  syyyy: float | None = None, *, binary: bool = False) -> Summary:
        """From Σy and Σy² (and Σy³, Σy⁴ for the skew correction and the variance guard,
        when known; where they overflowed, as for values beyond ~1e77, the summary goes
        without them); ``binary`` says the values are 0/1 (then Σy² must equal Σy, a whole
        number of successes)."""
        if n < 2:
            raise InvalidInputError("n", n, "must be at least 2 units (empty cohort?)")
        if binary and (sy != syy or sy != round(sy) or not 0 <= sy <= n):
            raise InvalidInputError("sums", (n, sy, syy),
                                    "are not those of 0/1 values (Σy = Σy² successes in [0, n])")
        nan = math.nan
        mean, var, k3, m4 = (float(v) for v in power_moments(
            n, sy, syy, nan if syyy is None else syyy, nan if syyyy is None else syyyy))
        return cls(int(n), mean, var, binary, _finite(k3), _finite(m4))


#: a central moment computed from raw power sums within this share of its terms' size is
#: rounding (catastrophic cancellation: a large mean against a small spread) — unknown
_CANCELLED: Final = 1e-10


def power_moments(n: npt.ArrayLike, s1: npt.ArrayLike, s2: npt.ArrayLike,
                  s3: npt.ArrayLike, s4: npt.ArrayLike
                  ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Mean, sample variance (ddof = 1), k₃ (Fisher's unbiased k-statistic) and m₄
    (Σ(y - ȳ)⁴ / n) from n and the power sums Σy … Σy⁴ (vectorised; what
    :meth:`Summary.from_sums` and the validation grid use). k₃ and m₄ are NaN (unknown)
    where a sum is NaN or not finite, n <= 2, or the central sum is within rounding of
    its terms (:data:`_CANCELLED`: a large mean against a small spread); m₄ also where it
    falls below its bound var² ((n-1)/n)²."""
    nn, a1, a2, a3, a4 = _floats(n, s1, s2, s3, s4)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        mean = a1 / nn
        var = np.maximum((a2 - nn * mean * mean) / (nn - 1), 0.0)
        # Σ(y - ȳ)³ = Σy³ - 3ȳ Σy² + 2 n ȳ³;  Σ(y - ȳ)⁴ = Σy⁴ - 4ȳ Σy³ + 6ȳ² Σy² - 3 n ȳ⁴
        t3 = (a3, -3 * mean * a2, 2 * nn * mean**3)
        t4 = (a4, -4 * mean * a3, 6 * mean * mean * a2, -3 * nn * mean**4)
        c3, c4 = sum(t3), sum(t4)
        size3, size4 = sum(np.abs(t) for t in t3), sum(np.abs(t) for t in t4)
        k3 = np.where((nn > 2) & (np.abs(c3) > _CANCELLED * size3),
                      nn * c3 / ((nn - 1) * (nn - 2)), math.nan)
        floor = (var * (nn - 1) / nn) ** 2 * (1 - 1e-9)
        m4 = np.where((nn > 2) & (c4 > _CANCELLED * size4) & (c4 / nn >= floor), c4 / nn,
                      math.nan)
    finite = np.isfinite
    return (np.asarray(mean), np.asarray(var), np.asarray(np.where(finite(k3), k3, math.nan)),
            np.asarray(np.where(finite(m4), m4, math.nan)))


def _finite(v: float | None) -> float | None:
    """``v`` where it is a finite number, else None (a moment that is unknown or
    overflowed: the intervals go without the skew correction and with Welch's guard)."""
    return v if v is not None and math.isfinite(v) else None


@dataclass(frozen=True)
class CovSums:
    """Sums over a cohort of an outcome y and a pre-exposure covariate x (for CUPED)."""

    n: int
    sy: float
    syy: float
    sx: float
    sxx: float
    sxy: float
    #: the third and fourth power sums Σyᵃxᵇ (``sxxy`` = Σx²y, ...), when known: the skew
    #: correction and variance guard of the fixed-horizon intervals, raw (Σy³, Σy⁴) and
    #: CUPED-adjusted (all of them, :func:`cuped_sums`)
    syyy: float | None = None
    syyyy: float | None = None
    sxxx: float | None = None
    sxxxx: float | None = None
    sxxy: float | None = None
    sxyy: float | None = None
    sxxxy: float | None = None
    sxxyy: float | None = None
    sxyyy: float | None = None

    @classmethod
    def of(cls, y: npt.ArrayLike, x: npt.ArrayLike, name: str = "y") -> CovSums:
        ya = _clean(y, name)
        xa = _clean(x, f"pre_{name}")
        if xa.size != ya.size:
            raise InvalidInputError(f"pre_{name}", xa.size, f"must match the cohort size {ya.size}")
        def s(a: int, b: int) -> float:
            return float(np.sum(ya**a * xa**b))

        return cls(int(ya.size), float(ya.sum()), float(ya @ ya), float(xa.sum()),
                   float(xa @ xa), float(ya @ xa), s(3, 0), s(4, 0), s(0, 3), s(0, 4), s(1, 2),
                   s(2, 1), s(1, 3), s(2, 2), s(3, 1))


@dataclass(frozen=True)
class DiffResult:
    """mean_t - mean_c with its interval (:func:`diff_bounds`, or the score interval for
    0/1 outcomes); ``se`` and ``df`` are Welch's (for reference), ``p_value`` that of the
    test of 0 the interval makes (it excludes 0 exactly when p < α)."""

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
    """mean_t / mean_c - 1 with Fieller's interval (``ci_high`` is inf when unbounded).

    ``se`` is the delta-method standard error, for reference only: the interval is not
    ``estimate ± z se``. ``p_value`` tests lift 0 with the test the interval makes at
    R = 1 (Welch's for equal arms), so the interval excludes 0 exactly when p < α.
    """

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

    @property
    def bounded(self) -> bool:
        return math.isfinite(self.ci_high)


@dataclass(frozen=True)
class SequentialResult:
    """An always-valid interval, holding at all times with probability 1-α.

    For the difference it is ``estimate ± factor · se``; for the relative lift it is the
    Fieller set with ``factor`` in place of the t quantile (so not symmetric).
    """

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
    #: one-sided (1-α) lower bound of the relative lift (Fieller)
    ci_low: float
    #: one-sided (1-α) upper bound (inf when unbounded)
    ci_high: float
    margin: float
    #: one-sided level of each bound, e.g. 0.95
    level: float
    #: "ok" (lower bound above -margin), "degraded" (upper bound below -margin) or
    #: "inconclusive"
    status: Literal["ok", "degraded", "inconclusive"]
    #: units per arm now (the smaller arm)
    n: int
    #: relative drop the one-sided test detects with probability ``GUARDRAIL_POWER`` at n
    detectable_drop: float
    #: units per arm at which a drop of ``margin`` would be detected with that power
    n_for_margin: int

    @property
    def passed(self) -> bool:
        return self.status == "ok"

    def describe(self) -> str:
        """The status in words, with the level and, when inconclusive, the power."""
        lvl = f"one-sided {self.level:.0%}"
        if self.status == "ok":
            return (f"ok: lower {lvl} bound {self.ci_low:+.1%} is above the "
                    f"-{self.margin:.1%} margin")
        if self.status == "degraded":
            return (f"degraded: upper {lvl} bound {self.ci_high:+.1%} is below the "
                    f"-{self.margin:.1%} margin")
        return (f"inconclusive ({lvl}): would detect a {self.detectable_drop:.1%} drop at "
                f"n = {self.n:,} per variant; settling the -{self.margin:.1%} margin needs "
                f"n ≈ {self.n_for_margin:,} per variant ({GUARDRAIL_POWER:.0%} power)")


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


def _welch(t: Summary, c: Summary, alpha: float) -> tuple[float, float, float]:
    """(se, df, q): the Welch standard error, degrees of freedom and two-sided critical
    value; refuses zero variance in words."""
    at, ac = t.var / t.n, c.var / c.n
    se = math.sqrt(at + ac)
    _refuse_zero_variance(t, c, se)
    return se, _welch_df(t, c), float(welch_quantile(at, ac, t.n, c.n, 1 - alpha / 2))


def _k3(s: Summary) -> float:
    """The summary's k₃, 0 (no skew correction) when unknown."""
    return 0.0 if s.k3 is None else s.k3


def _m4(s: Summary) -> float:
    """The summary's m₄, NaN (the variance guard is Welch's) when unknown."""
    return math.nan if s.m4 is None else s.m4


def _test_at_zero(t: Summary, c: Summary, alpha: float, level: float | None = None
                  ) -> tuple[float, float]:
    """(q, p) of the fixed-horizon test of "no difference" that both :func:`diff_bounds`
    and :func:`ratio_bounds` make at 0: the critical value at ``level`` (1 - α/2 unless
    given) of Student's t at the Satterthwaite degrees of freedom of their variance at
    R = 1 (:func:`_zero_se2`: the scale model's or the guard's; Welch's for equal arms and
    where a mean is <= 0), and the two-sided p-value with the skew correction
    (:func:`skew_p_value`). Refuses zero variance in words."""
    positive = t.mean > 0 and c.mean > 0
    mt, vt, nt, mc, vc, nc = _floats(t.mean, t.var, t.n, c.mean, c.var, c.n)
    a, b = (float(x) for x in _zero_se2(mt, vt, nt, mc, vc, nc, _m4(t), _m4(c)))
    se = math.sqrt(a + b)
    _refuse_zero_variance(t, c, se)
    df = float(welch_df(a, b, t.n, c.n))
    q = float(sps.t.ppf(1 - alpha / 2 if level is None else level, df))
    kt, kc = _floats(_k3(t), _k3(c))
    k3 = float(_contrast_skew(np.asarray(1.0), kt, nt, kc, nc, diff=False)) if positive else 0.0
    gamma = k3 / se**3
    return q, skew_p_value((t.mean - c.mean) / se, gamma, df)


def _refuse_zero_variance(t: Summary, c: Summary, se: float) -> None:
    if se == 0:
        raise InvalidInputError("treatment, control", (t.mean, c.mean),
                                "have zero variance: the difference has no interval")


def _score_p(t: Summary, c: Summary) -> float:
    """Two-sided p-value of the score test of p_t = p_c (the pooled z test, which is the
    Miettinen–Nurminen statistic at δ = 0 and at ratio 1 alike)."""
    z, gamma = (float(v) for v in _mn_diff_z(*_floats(t.successes, t.n, c.successes, c.n,
                                                      0.0)))
    return skew_p_value(z, gamma, math.inf)


def absolute_diff(treatment: npt.ArrayLike | Summary, control: npt.ArrayLike | Summary, *,
                  alpha: float = 0.05) -> DiffResult:
    """Difference of means with the interval of :func:`diff_bounds` (the variance and skew
    of a multiplicative effect, guarded by Welch's; Welch's interval for equal arms at 0
    and wherever a mean is <= 0), or for 0/1 outcomes (both :attr:`Summary.binary`) the
    Miettinen–Nurminen score interval (:func:`score_diff_bounds`), which keeps its level
    from a handful of events per arm and stays within [-1, 1].

    Takes per-unit arrays or :class:`Summary` objects (with Σy³ and Σy⁴ for the skew
    correction and the guard: :meth:`Summary.from_sums`). ``p_value`` is that of the
    test of 0 the interval makes (:func:`_test_at_zero`; Welch's for equal arms, the
    same test as :func:`relative_lift`'s), so the interval excludes 0 exactly when
    p < α. ``se`` and ``df`` are Welch's, for reference; ``df`` is inf for the score
    interval (a normal quantile) and ``se`` then the unpooled Wald standard error (it may
    be 0 where the score interval still exists, e.g. 0 of n in both arms).
    """
    alpha = _alpha(alpha)
    t, c = _summaries(treatment, control)
    est = t.mean - c.mean
    if t.binary and c.binary:
        z = float(sps.norm.ppf(1 - alpha / 2))
        lo, hi = score_diff_bounds(t.successes, t.n, c.successes, c.n, z)
        se = math.sqrt(t.mean * (1 - t.mean) / t.n + c.mean * (1 - c.mean) / c.n)
        return DiffResult(t.n, c.n, t.mean, c.mean, est, se, math.inf, float(lo), float(hi),
                          _score_p(t, c), alpha)
    q, p = _test_at_zero(t, c, alpha)
    lo, hi = diff_bounds(t.mean, t.var / t.n, c.mean, c.var / c.n, t.n, c.n, q,
                         _k3(t), _k3(c), _m4(t), _m4(c))
    return DiffResult(t.n, c.n, t.mean, c.mean, est, math.sqrt(t.var / t.n + c.var / c.n),
                      _welch_df(t, c), float(lo), float(hi), p, alpha)


def fieller_bounds(mean_t: npt.ArrayLike, se2_t: npt.ArrayLike, mean_c: npt.ArrayLike,
                   se2_c: npt.ArrayLike, q: npt.ArrayLike
                   ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Fieller's (1954) bounds on the relative lift R - 1, R = μ_t / μ_c, vectorised.

    ``se2_*`` are squared standard errors of the means (var / n), ``q`` the critical
    value (a t quantile for a fixed horizon, the mixture factor for an always-valid
    interval). The set is {R >= 0 : (m_t - R m_c)² <= q² (se2_t + R² se2_c)}, i.e. the
    R whose contrast ``Y_t - R Y_c`` is not rejected at level q — a quadratic
    a R² - 2 b R + c <= 0 with a = m_c² - q² se2_c, b = m_t m_c, c = m_t² - q² se2_t.
    When a > 0 (control mean distinguishable from zero) it is the interval between the
    roots; otherwise it is unbounded above (upper bound inf). R is restricted to
    R >= 0 because every metric here is non-negative, so the lower bound is >= -1.
    Because the contrast at R = 1 is the difference of means, the set contains lift 0
    exactly when the difference interval with the same q and standard errors
    contains 0.
    """
    mt, vt, mc, vc, qq = (np.asarray(v, dtype=np.float64)
                          for v in (mean_t, se2_t, mean_c, se2_c, q))
    q2 = qq * qq
    a = mc * mc - q2 * vc
    b = mt * mc
    c = mt * mt - q2 * vt
    root = np.sqrt(np.maximum(b * b - a * c, 0.0))
    bounded = a > 0
    safe_a = np.where(a == 0, 1.0, a)
    r1 = (b - root) / safe_a
    r2 = (b + root) / safe_a
    # a > 0: [r1, r2]. a <= 0 (concave or linear): if R = 0 is outside the set (c > 0)
    # the set on R >= 0 starts at the positive root (the larger of the two for a < 0,
    # c / 2b for a = 0); otherwise it is all of [0, inf).
    lin = np.divide(c, 2 * b, out=np.zeros_like(c), where=b != 0)
    open_lo = np.where(c > 0, np.where(a == 0, lin, np.maximum(r1, r2)), 0.0)
    lo = np.where(bounded, r1, open_lo)
    hi = np.where(bounded, r2, np.inf)
    return np.maximum(lo, 0.0) - 1.0, hi - 1.0


# ------------------------------------------------------------- skew of unequal arms
#
# With unequal arms the difference of means is skewed on skewed metrics (the small arm's
# third cumulant is not cancelled by the large arm's: κ₃(ȳ_t - ȳ_c) = κ₃,t/n_t² -
# κ₃,c/n_c²), and Welch's studentisation makes it worse: the small arm's mean and
# variance are correlated (cov(ȳ, s²) = κ₃/n; a sample short of the rare large values
# has both too low), so Welch's intervals put 9–13 % in one tail at 900/100 on
# log-normal data (docs/statistics.md, "Unequal arms"). Two steps remove both effects:
#
# * the contrast is studentised with the variance that is unbiased when the treatment is
#   the control scaled by R in distribution — each arm's variance weighted by the *other*
#   arm's size, ``var_t/n_c + R² var_c/n_t`` — which is uncorrelated with the contrast
#   under that model (the two covariances cancel), so the statistic's skew is its
#   numerator's alone; for equal arms it is Welch's variance;
# * that skew is corrected by the Cornish–Fisher expansion of the critical values
#   (Cornish & Fisher 1937; Johnson 1978, "Modified t tests and confidence intervals for
#   asymmetrical populations", JASA 73; Hall 1992, "On the removal of skewness by
#   transformation", JRSS B 54): q ± → ±q + γ/6 (q² - 1), with the third cumulant
#   pooled over both arms under the same scale model, so the large arm informs the small
#   one's (a small arm's own k₃ is noise: Hall's correction with per-arm k₃ still missed
#   9–11 % in one tail). For equal arms the relative contrast's skew is exactly 0 and the
#   interval is Fieller's at Welch's variance, as before.

#: standard errors below its estimate at which each arm's variance enters the guard of
#: the scale-model variance (:func:`guard_se2`; the choice is tabled in docs/statistics.md)
GUARD_SE: Final = 1.5
#: largest Cornish–Fisher shift of a critical value, as a share of it (beyond it the
#: expansion is not to be trusted; it keeps both critical values on their side of 0)
_MAX_SHIFT: Final = 0.5
#: fixed-point steps of the skew-corrected bounds (they settle in a few)
_SKEW_STEPS: Final = 40


def guard_se2(var_t: npt.ArrayLike, n_t: npt.ArrayLike, m4_t: npt.ArrayLike,
              var_c: npt.ArrayLike, n_c: npt.ArrayLike, m4_c: npt.ArrayLike
              ) -> tuple[FloatArray, FloatArray]:
    """The guard of the scale-model variance (vectorised): Welch's squared standard
    errors with each arm's variance :data:`GUARD_SE` standard errors below its estimate,
    ``var / (1 + GUARD_SE · cv)``, ``cv² = (κ - (n-3)/(n-1)) / n`` the squared coefficient of
    variation of a sample variance (Cramér 1946, §27.4) at the kurtosis κ pooled over
    both arms (each arm's m4 / var², weighted by its size; kurtosis does not depend on
    scale, so pooling it needs no model of the effect). ``m4_*`` NaN (unknown): Welch's.

    Why a guard: the scale-model variance (:func:`ratio_bounds`, :func:`diff_bounds`) is
    wrong when the effect is not multiplicative — normal arms with a 4:1 variance ratio
    at 100/900 put 12 % in each tail with it — while Welch's variance is consistent for
    any effect but, on skewed data, too small exactly when the small arm's mean is off.
    Taking the larger of the scale-model variance and this guard keeps the first where
    the arms' own variances are too noisy to contradict it (skewed, heavy-tailed data)
    and Welch's where they are precise (normal-like data), and tends to Welch's as n
    grows (cv → 0), so the intervals are asymptotically valid for any effect."""
    vt, nt, kt, vc, nc, kc = _floats(var_t, n_t, m4_t, var_c, n_c, m4_c)
    known = np.isfinite(kt) & np.isfinite(kc)
    wt = np.where(vt > 0, nt, 0.0)
    wc = np.where(vc > 0, nc, 0.0)
    kap_t = np.divide(kt, vt * vt, out=np.zeros_like(vt), where=(vt > 0) & known)
    kap_c = np.divide(kc, vc * vc, out=np.zeros_like(vc), where=(vc > 0) & known)
    kap = np.divide(wt * kap_t + wc * kap_c, wt + wc, out=np.zeros_like(vt),
                    where=(wt + wc) > 0)

    def below(v: FloatArray, n: FloatArray) -> FloatArray:
        cv = np.sqrt(np.maximum(kap - (n - 3) / (n - 1), 0.0) / n)
        return np.asarray(v / (1.0 + GUARD_SE * np.where(known, cv, 0.0)) / n)

    return below(vt, nt), below(vc, nc)


def _contrast_skew(ratio: FloatArray, k3_t: FloatArray, n_t: FloatArray, k3_c: FloatArray,
                   n_c: FloatArray, diff: bool) -> FloatArray:
    """Third cumulant of the contrast when the treatment is the control scaled by R, the
    control's k₃ pooled from both arms (the treatment's values divided by R pooled with
    the control's, weighted by size): ``k(R) = (n_t k3_t / R³ + n_c k3_c) / N``. For the
    ratio's contrast m_t - R m_c it is ``R³ k(R) (1/n_t² - 1/n_c²)`` (0 for equal arms),
    for the difference m_t - m_c ``k(R) (R³/n_t² - 1/n_c²)``."""
    r3 = np.minimum(np.maximum(ratio, 1e-12), 1e12) ** 3
    n = n_t + n_c
    if diff:
        return np.asarray((n_t * k3_t / r3 + n_c * k3_c) / n * (r3 / n_t**2 - 1.0 / n_c**2))
    return np.asarray((n_t * k3_t + r3 * n_c * k3_c) / n * (1.0 / n_t**2 - 1.0 / n_c**2))


def _known(k3: FloatArray) -> FloatArray:
    """k₃ with NaN (unknown, :func:`power_moments`) as 0: no skew correction there."""
    return np.asarray(np.where(np.isfinite(k3), k3, 0.0))


def _shift(gamma: FloatArray, q: FloatArray) -> FloatArray:
    """The Cornish–Fisher shift γ/6 (q² - 1) of both critical values, capped at
    :data:`_MAX_SHIFT` · q."""
    return np.asarray(np.clip(gamma / 6.0 * (q * q - 1.0), -_MAX_SHIFT * q, _MAX_SHIFT * q))


def _pooled_se2(var_t: FloatArray, n_t: FloatArray, var_c: FloatArray, n_c: FloatArray
                ) -> tuple[FloatArray, FloatArray]:
    """The scale-model ("pooled") squared standard errors of the contrast Y_t - R Y_c:
    ``(var_t / n_c, var_c / n_t)`` — Welch's for equal arms."""
    return np.asarray(var_t / n_c), np.asarray(var_c / n_t)


def fixed_quantile(mean_t: npt.ArrayLike, var_t: npt.ArrayLike, n_t: npt.ArrayLike,
                   mean_c: npt.ArrayLike, var_c: npt.ArrayLike, n_c: npt.ArrayLike,
                   level: float, m4_t: npt.ArrayLike = math.nan,
                   m4_c: npt.ArrayLike = math.nan) -> FloatArray:
    """The critical value of :func:`ratio_bounds` and :func:`diff_bounds` (vectorised): the
    ``level`` quantile of Student's t at the Satterthwaite degrees of freedom of their
    variance at R = 1 — the larger of the scale-model ``var_t/n_c + var_c/n_t`` and the
    guard :func:`guard_se2`; Welch's where a mean is <= 0 (no scale model) and for equal
    arms (where both are Welch's or below)."""
    mt, vt, nt, mc, vc, nc = _floats(mean_t, var_t, n_t, mean_c, var_c, n_c)
    a, b = _zero_se2(mt, vt, nt, mc, vc, nc, m4_t, m4_c)
    return welch_quantile(a, b, nt, nc, level)


def _zero_se2(mt: FloatArray, vt: FloatArray, nt: FloatArray, mc: FloatArray, vc: FloatArray,
              nc: FloatArray, m4_t: npt.ArrayLike, m4_c: npt.ArrayLike
              ) -> tuple[FloatArray, FloatArray]:
    """The two squared-standard-error terms of the variance at R = 1 (d = 0) of
    :func:`ratio_bounds` and :func:`diff_bounds`: the scale model's or the guard's,
    whichever sums larger; Welch's where a mean is <= 0."""
    a, b = _pooled_se2(vt, nt, vc, nc)
    ga, gb = guard_se2(vt, nt, m4_t, vc, nc, m4_c)
    use = ga + gb > a + b
    a, b = np.where(use, ga, a), np.where(use, gb, b)
    positive = (mt > 0) & (mc > 0)
    return np.asarray(np.where(positive, a, vt / nt)), np.asarray(np.where(positive, b, vc / nc))


def ratio_bounds(mean_t: npt.ArrayLike, var_t: npt.ArrayLike, n_t: npt.ArrayLike,
                 mean_c: npt.ArrayLike, var_c: npt.ArrayLike, n_c: npt.ArrayLike,
                 q: npt.ArrayLike, k3_t: npt.ArrayLike = 0.0, k3_c: npt.ArrayLike = 0.0,
                 m4_t: npt.ArrayLike = math.nan, m4_c: npt.ArrayLike = math.nan
                 ) -> tuple[FloatArray, FloatArray]:
    """Fixed-horizon bounds on the relative lift R - 1 (vectorised): the R whose contrast
    ``T(R) = (m_t - R m_c) / √V(R)`` lies within ``[-q + s(R), q + s(R)]``.

    V(R) is the larger of the scale-model variance ``var_t/n_c + R² var_c/n_t`` and the
    guard :func:`guard_se2` at R (both Welch's or below for equal arms, so there it is
    Welch's), s(R) the Cornish–Fisher shift (:func:`_shift`) for the contrast's
    skewness ``κ₃(R) / V^{3/2}`` (:func:`_contrast_skew`; see the section comment above).
    ``var_*``, ``k3_*``, ``m4_*`` are per-unit sample moments (k3 0 or NaN: no skew
    correction; m4 NaN: the guard is Welch's). With s = 0 it is the union of Fieller's
    (1954) sets at the two variances — so for equal arms, where the skew term vanishes,
    Fieller's interval at Welch's variance. Each bound is that bound at the critical value q ± s
    of its own R, reached by fixed-point steps; never below -100 %, unbounded above where
    the control mean is not distinguishable from 0 at that critical value.
    """
    mt, vt, nt, mc, vc, nc, qq, kt, kc = _floats(mean_t, var_t, n_t, mean_c, var_c, n_c, q,
                                                 k3_t, k3_c)
    kt, kc = _known(kt), _known(kc)
    se2_t, se2_c = _pooled_se2(vt, nt, vc, nc)
    g_t, g_c = guard_se2(vt, nt, m4_t, vc, nc, m4_c)

    def bounds(qv: FloatArray) -> tuple[FloatArray, FloatArray]:
        lo_p, hi_p = fieller_bounds(mt, se2_t, mc, se2_c, qv)
        lo_g, hi_g = fieller_bounds(mt, g_t, mc, g_c, qv)
        return np.minimum(lo_p, lo_g), np.maximum(hi_p, hi_g)

    lo, hi = bounds(qq)
    if not np.any((nt != nc) & ((kt != 0) | (kc != 0))):
        return lo, hi

    def shift(r: FloatArray) -> FloatArray:
        r2 = np.minimum(r, 1e12) ** 2
        v = np.maximum(se2_t + r2 * se2_c, g_t + r2 * g_c)
        k3 = _contrast_skew(r, kt, nt, kc, nc, diff=False)
        return _shift(np.divide(k3, v**1.5, out=np.zeros_like(v), where=v > 0), qq)

    for _ in range(_SKEW_STEPS):
        new_lo = bounds(qq + shift(lo + 1.0))[0]
        new_hi = bounds(qq - shift(hi + 1.0))[1]
        with np.errstate(invalid="ignore"):  # inf - inf where unbounded: settled
            settled = (np.abs(new_lo - lo) <= 1e-10 * (1 + np.abs(lo))) & (
                (new_hi == hi) | (np.abs(new_hi - hi) <= 1e-10 * (1 + np.abs(hi))))
        lo, hi = new_lo, new_hi
        if bool(np.all(settled)):
            break
    return lo, hi


def skew_p_value(stat: float, gamma: float, df: float) -> float:
    """Two-sided p-value of a statistic ``stat`` of skewness ``gamma`` under the
    Cornish–Fisher critical values of :func:`ratio_bounds` / :func:`diff_bounds` at
    Student's t with ``df`` degrees of freedom: 2 P(t > q*), q* the critical value at
    which ``stat`` is on the boundary (so p < α exactly when the interval excludes the
    tested value). Welch's p-value when ``gamma`` is 0."""
    if not math.isfinite(stat):
        return 0.0

    def inside(q: float) -> bool:
        s = float(_shift(np.asarray(gamma), np.asarray(q)))
        return -q + s <= stat <= q + s

    lo, hi = 0.0, 1.0
    while not inside(hi):
        lo, hi = hi, hi * 2
        if hi > 1e6:
            return 0.0
    for _ in range(_BISECTIONS):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if inside(mid) else (mid, hi)
    return float(min(1.0, 2 * sps.t.sf(hi, df)))


#: fixed-point steps of :func:`diff_bounds` (it settles in a few; the cap bounds the cost)
_DIFF_STEPS: Final = 50


def _scale_var(ratio: FloatArray, se2_t: FloatArray, se2_c: FloatArray, n_t: FloatArray,
               n_c: FloatArray) -> FloatArray:
    """Var(m_t - m_c) estimated as ``a (se2_t + R³ (n_c / n_t)² se2_c)``: unbiased when the
    treatment is the control scaled by R (σ_t = R σ_c, μ3_t = R³ μ3_c) and, by
    cov(ȳ, s²) = μ3 / n, uncorrelated with m_t - m_c; at R = 1 it is Welch's
    se2_t + se2_c when n_t = n_c."""
    r2 = ratio * ratio
    a = n_t * (r2 * n_c + n_t) / (r2 * n_c * (n_t + ratio * n_c))
    return np.asarray(a * (se2_t + ratio**3 * (n_c / n_t) ** 2 * se2_c))


def diff_bounds(mean_t: npt.ArrayLike, se2_t: npt.ArrayLike, mean_c: npt.ArrayLike,
                se2_c: npt.ArrayLike, n_t: npt.ArrayLike, n_c: npt.ArrayLike,
                q: npt.ArrayLike, k3_t: npt.ArrayLike = 0.0, k3_c: npt.ArrayLike = 0.0,
                m4_t: npt.ArrayLike = math.nan, m4_c: npt.ArrayLike = math.nan
                ) -> tuple[FloatArray, FloatArray]:
    """Bounds on μ_t - μ_c (vectorised): the d with
    ``-q + s(d) <= (m_t - m_c - d) / √V(d) <= q + s(d)`` at the critical value ``q``
    (:func:`fixed_quantile`), ``se2_*`` squared standard errors of the means (var / n),
    ``k3_*``, ``m4_*`` the arms' per-unit third and fourth central moments (k3 0 or NaN:
    no skew correction; m4 NaN: the guard below is Welch's).

    Why not Welch's V = se2_t + se2_c: on right-skewed metrics a sample short of the rare
    large values has both a low mean and a low variance (cov(ȳ, s²) = μ3 / n; Johnson
    1978), so Welch's statistic is skewed and its interval falls below the truth too
    often — with a lift, whose treatment has the larger μ3, and with unequal arms, whose
    small arm's skew nothing cancels. Here the two arms inform each other, as in
    Fieller's (1954) contrast: at the ratio R = 1 + d / m_c the bound implies, V(d) is the
    variance of m_t - m_c that is unbiased when the effect is multiplicative (treatment =
    R × control in distribution) and uncorrelated with m_t - m_c (:func:`_scale_var`; at
    R = 1 it is ``var_t/n_c + var_c/n_t``, Welch's for equal arms), and s(d) the
    Cornish–Fisher shift (:func:`_shift`) for the skewness of m_t - m_c under the same
    model, ``κ₃(R) / V^{3/2}`` (:func:`_contrast_skew`; the section comment above).

    That variance assumes the scale model; when the treatment is not R × control (a lift
    carried by a few users, unequal spreads) it can be too small. So V is never below the
    guard :func:`guard_se2` (Welch's with each arm's variance :data:`GUARD_SE` standard
    errors lower), which tends to Welch's as n grows, so the interval is asymptotically
    valid for any effect. At d = 0 the test is the one :func:`ratio_bounds` makes at
    R = 1 (same variance, same skew), so the two intervals exclude 0 together; a step
    past 0 where that test rejects is replaced by a boundary point between its bound and
    0. R is kept within the relative interval :func:`ratio_bounds` gives at ``q``
    (widened to include 1); each bound is the fixed point reached from the bound of the
    test at 0. Where that interval reaches 0 or infinity, the bound is the
    one of the test at 0, ``d ± (q ∓ s(0)) √V(0)``. Where a mean is <= 0 (no ratio, no
    scale model; e.g. a CUPED-adjusted mean) it is Welch's, ``d ± q √(se2_t + se2_c)``
    (:func:`fixed_quantile` gives Welch's q there).
    """
    mt, vt, mc, vc, nt, nc, qq, kt, kc = _floats(mean_t, se2_t, mean_c, se2_c, n_t, n_c, q,
                                                 k3_t, k3_c)
    kt, kc = _known(kt), _known(kc)
    d = mt - mc
    positive = (mt > 0) & (mc > 0)
    safe_mc = np.where(positive, mc, 1.0)
    ones = np.ones_like(d)
    g_t, g_c = guard_se2(vt * nt, nt, m4_t, vc * nc, nc, m4_c)
    low_welch = g_t + g_c
    rlo, rhi = ratio_bounds(np.where(positive, mt, 1.0), vt * nt, nt, safe_mc, vc * nc, nc, qq,
                            kt, kc, m4_t, m4_c)
    # R = 1 stays in range so that the test at d = 0 is the one at R = 1
    rlo, rhi = np.minimum(rlo + 1.0, 1.0), np.maximum(rhi + 1.0, 1.0)
    skewed = bool(np.any((kt != 0) | (kc != 0)))

    def radius(b: FloatArray, sign: float, r_lo: FloatArray, r_hi: FloatArray) -> FloatArray:
        ratio = np.clip(1.0 + b / safe_mc, r_lo, r_hi)
        v = np.maximum(_scale_var(ratio, vt, vc, nt, nc), low_welch)
        if not skewed:
            return np.asarray(qq * np.sqrt(v))
        k3_d = _contrast_skew(ratio, kt, nt, kc, nc, diff=True)
        gamma = np.divide(k3_d, v**1.5, out=np.zeros_like(v), where=v > 0)
        return np.asarray((qq - sign * _shift(gamma, qq)) * np.sqrt(v))

    out = []
    for sign, usable in ((-1.0, positive & (rlo > 0)), (1.0, positive & np.isfinite(rhi))):
        r_lo, r_hi = np.where(usable, rlo, 1.0), np.where(usable, rhi, 1.0)
        start = d + sign * radius(np.zeros_like(d), sign, ones, ones)
        half = np.abs(start - d)
        b = start
        for _ in range(_DIFF_STEPS):
            nb = d + sign * radius(b, sign, r_lo, r_hi)
            done = bool(np.all(np.abs(nb - b) <= 1e-12 * (np.abs(b) + half)))
            b = nb
            if done:
                break
        # Where the test at 0 rejects, the set excludes 0; a step that jumped past 0 is
        # replaced by a boundary point between the start bound and 0.
        crossed = usable & (sign * start < 0) & (sign * b >= 0)
        if crossed.any():
            inside, outside = start, np.zeros_like(d)
            for _ in range(_BISECTIONS):
                mid = (inside + outside) / 2
                out_mid = sign * (mid - d) > radius(mid, sign, r_lo, r_hi)
                inside = np.where(out_mid, inside, mid)
                outside = np.where(out_mid, mid, outside)
            b = np.where(crossed, inside, b)
        welch_b = d + sign * qq * np.sqrt(vt + vc)
        out.append(np.where(usable, b, np.where(positive, start, welch_b)))
    return np.asarray(out[0]), np.asarray(out[1])


def welch_df(se2_t: npt.ArrayLike, se2_c: npt.ArrayLike, n_t: npt.ArrayLike,
             n_c: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Welch (1947)–Satterthwaite degrees of freedom from squared standard errors,
    vectorised (``n_t + n_c - 2`` where both variances are zero)."""
    at, ac, nt, nc = (np.asarray(v, dtype=np.float64) for v in (se2_t, se2_c, n_t, n_c))
    den = at**2 / (nt - 1) + ac**2 / (nc - 1)
    safe = np.where(den > 0, den, 1.0)
    return np.asarray(np.where(den > 0, (at + ac) ** 2 / safe, nt + nc - 2))


def welch_quantile(se2_t: npt.ArrayLike, se2_c: npt.ArrayLike, n_t: npt.ArrayLike,
                   n_c: npt.ArrayLike, level: float) -> npt.NDArray[np.float64]:
    """The ``level`` quantile of Student's t at the Welch degrees of freedom (vectorised):
    the critical value of the fixed-horizon difference and Fieller intervals."""
    return np.asarray(sps.t.ppf(level, welch_df(se2_t, se2_c, n_t, n_c)))


def _welch_df(t: Summary, c: Summary) -> float:
    return float(welch_df(t.var / t.n, c.var / c.n, t.n, c.n))


# ---------------------------------------------------------------------- proportions
#
# Miettinen & Nurminen (1985) score intervals for two independent binomials: the set of
# δ (or φ) that the score test, with the variance evaluated at the maximum-likelihood
# estimates restricted to that δ (φ) and the N / (N - 1) correction, does not reject. They
# are the intervals Newcombe (1998, "Interval estimation for the difference between
# independent proportions", Stat. Med. 17) and Fagerland, Lydersen & Laake (2015,
# "Recommended confidence intervals for two independent binomial proportions", Stat.
# Methods Med. Res. 24) recommend at small counts. statsmodels'
# ``confint_proportions_2indep(method="score")`` computes the same intervals one at a time
# (its difference version fails to bracket a root at small counts, e.g. 2 of 100 vs
# 2 of 100); these are vectorised (the validation grid evaluates millions) and checked
# against it and against Newcombe's published example (tests/test_stats.py).

_BISECTIONS: Final = 60
#: log-ratio search range of :func:`score_ratio_bounds` (beyond it: 0 or unbounded)
_LOG_RATIO_RANGE: Final = 30.0


def _floats(*values: npt.ArrayLike) -> tuple[FloatArray, ...]:
    return tuple(np.asarray(v, dtype=np.float64) for v in values)


def _score_z(num: FloatArray, var: FloatArray) -> FloatArray:
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(var > 0, num / np.sqrt(np.where(var > 0, var, 1.0)), np.sign(num) * np.inf)
    return np.asarray(np.where(num == 0, 0.0, z))


def _binomial_skew(q1: FloatArray, n1: FloatArray, q2: FloatArray, n2: FloatArray,
                   phi: FloatArray | float) -> FloatArray:
    """Skewness of p̂1 - φ p̂2 at the restricted estimates (Gart & Nam 1988, 1990):
    (q1(1-q1)(1-2q1)/n1² - φ³ q2(1-q2)(1-2q2)/n2²) / V^{3/2},
    V = q1(1-q1)/n1 + φ² q2(1-q2)/n2; 0 where V is 0."""
    v = q1 * (1 - q1) / n1 + phi * phi * q2 * (1 - q2) / n2
    m3 = q1 * (1 - q1) * (1 - 2 * q1) / n1**2 - phi**3 * q2 * (1 - q2) * (1 - 2 * q2) / n2**2
    return np.asarray(np.divide(m3, v**1.5, out=np.zeros_like(v), where=v > 0))


def _mn_diff_z(x1: FloatArray, n1: FloatArray, x2: FloatArray, n2: FloatArray,
               delta: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Score statistic of p1 - p2 = δ and its skewness (:func:`_binomial_skew`); the
    restricted MLE is the closed-form root of a cubic (Farrington & Manning 1990, Stat.
    Med. 9, eq. 7 ff.)."""
    p1, p2 = x1 / n1, x2 / n2
    th = n2 / n1
    a = 1 + th
    b = -(1 + th + p1 + th * p2 + delta * (th + 2))
    c = delta * delta + delta * (2 * p1 + th + 1) + p1 + th * p2
    d = -p1 * delta * (1 + delta)
    v = b**3 / (27 * a**3) - b * c / (6 * a * a) + d / (2 * a)
    u = np.where(v >= 0, 1.0, -1.0) * np.sqrt(np.maximum(b * b / (9 * a * a) - c / (3 * a), 0.0))
    u3 = np.where(u != 0, u**3, 1.0)
    w = (np.pi + np.arccos(np.clip(np.where(u != 0, v / u3, 0.0), -1.0, 1.0))) / 3
    q1 = np.clip(2 * u * np.cos(w) - b / (3 * a), 0.0, 1.0)
    q2 = np.clip(q1 - delta, 0.0, 1.0)
    n = n1 + n2
    var = (q1 * (1 - q1) / n1 + q2 * (1 - q2) / n2) * n / (n - 1)
    return _score_z(p1 - p2 - delta, var), _binomial_skew(q1, n1, q2, n2, 1.0)


def _mn_ratio_z(x1: FloatArray, n1: FloatArray, x2: FloatArray, n2: FloatArray,
                phi: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Score statistic of p1 / p2 = φ and its skewness (:func:`_binomial_skew`); the
    restricted MLE is a quadratic's root (Miettinen & Nurminen 1985, eq. 27)."""
    p1, p2 = x1 / n1, x2 / n2
    n = n1 + n2
    qa = n * phi
    qb = -(n1 * phi + x1 + n2 + x2 * phi)
    root = np.sqrt(np.maximum(qb * qb - 4 * qa * (x1 + x2), 0.0))
    q2 = np.clip((-qb - root) / (2 * qa), 0.0, 1.0)
    q1 = np.clip(phi * q2, 0.0, 1.0)
    var = (q1 * (1 - q1) / n1 + phi * phi * q2 * (1 - q2) / n2) * n / (n - 1)
    return _score_z(p1 - phi * p2, var), _binomial_skew(q1, n1, q2, n2, phi)


def _corrected(zg: tuple[FloatArray, FloatArray], q: FloatArray, skew: bool) -> FloatArray:
    """The score statistic less the Cornish–Fisher shift of the critical values
    (:func:`_shift`) for its skewness, so that ``|result| <= q`` is
    ``-q + s <= z <= q + s`` — Gart & Nam's (1988, "Approximate interval estimation of
    the ratio of binomial parameters: a review and corrections for skewness",
    Biometrics 44; 1990, for the difference, Biometrics 46) skewness-corrected score
    interval in the Cornish–Fisher form the continuous intervals use. ``skew`` False:
    the plain Miettinen–Nurminen statistic."""
    z, gamma = zg
    return np.asarray(z - _shift(gamma, q)) if skew else z


def _invert(z: Callable[[FloatArray], FloatArray], lo: FloatArray, hi: FloatArray,
            est: FloatArray, q: FloatArray) -> tuple[FloatArray, FloatArray]:
    """The ends of {t in [lo, hi] : |z(t)| <= q} for a statistic decreasing in t, by
    bisection on both sides of the estimate ``est`` (an end stays at lo / hi when the
    set reaches it)."""
    def root(target: FloatArray, a: FloatArray, b: FloatArray) -> FloatArray:
        for _ in range(_BISECTIONS):
            m = (a + b) / 2
            above = z(m) > target
            a, b = np.where(above, m, a), np.where(above, b, m)
        return (a + b) / 2

    low = np.where(z(lo) <= q, lo, root(q, lo, est))
    high = np.where(z(hi) >= -q, hi, root(-q, est, hi))
    return np.asarray(low), np.asarray(high)


def score_diff_bounds(x_t: npt.ArrayLike, n_t: npt.ArrayLike, x_c: npt.ArrayLike,
                      n_c: npt.ArrayLike, q: npt.ArrayLike, *, skew: bool = True
                      ) -> tuple[FloatArray, FloatArray]:
    """Miettinen–Nurminen score interval of p_t - p_c from ``x`` successes of ``n``
    (vectorised), at critical value ``q`` (a normal quantile), with Gart & Nam's skewness
    correction (:func:`_corrected`; ``skew=False``: without, as statsmodels computes
    it). Always within [-1, 1]; defined for any counts, 0 of n included."""
    xt, nt, xc, nc, qq = _floats(x_t, n_t, x_c, n_c, q)
    est = np.asarray(xt / nt - xc / nc)
    ones = np.ones_like(est)
    return _invert(lambda d: _corrected(_mn_diff_z(xt, nt, xc, nc, d), qq, skew), -ones, ones,
                   est, qq)


def score_ratio_bounds(x_t: npt.ArrayLike, n_t: npt.ArrayLike, x_c: npt.ArrayLike,
                       n_c: npt.ArrayLike, q: npt.ArrayLike, *, skew: bool = True
                       ) -> tuple[FloatArray, FloatArray]:
    """Miettinen–Nurminen (Koopman 1984) score interval of the relative lift
    p_t / p_c - 1 (vectorised), at critical value ``q``, with Gart & Nam's skewness
    correction (``skew=False``: without, as statsmodels computes it): never below -1, upper end inf
    when the control count is too small to bound it (0 of n_c included); 0 of n in both
    arms gives [-1, inf)."""
    xt, nt, xc, nc, qq = _floats(x_t, n_t, x_c, n_c, q)
    span = _LOG_RATIO_RANGE
    with np.errstate(divide="ignore", invalid="ignore"):  # 0 of n: log 0 = -inf, clipped
        est = np.log(xt / nt) - np.log(xc / nc)  # where the statistic is 0
    est = np.clip(np.nan_to_num(est, nan=0.0), -span, span)
    ends = np.full_like(est, span)
    lo, hi = _invert(lambda t: _corrected(_mn_ratio_z(xt, nt, xc, nc, np.exp(t)), qq, skew),
                     -ends, ends, est, qq)
    return (np.where(lo <= -span, 0.0, np.exp(lo)) - 1.0,
            np.where(hi >= span, np.inf, np.exp(hi)) - 1.0)


def _ratio_inputs(t: Summary, c: Summary) -> None:
    """Refuse what has no relative interval, in words (never a ZeroDivisionError)."""
    if c.mean == 0:
        raise InvalidInputError("control", c.mean,
                                "must have a non-zero mean for a relative lift (all zero?)")
    if t.var == 0 and c.var == 0:
        raise InvalidInputError("treatment, control", (t.mean, c.mean),
                                "have zero variance: the lift has no interval")
    if t.mean == 0 and t.var == 0:
        raise InvalidInputError("treatment", t.mean,
                                "is all zero: the relative lift is -100 % with no interval")


def relative_lift(treatment: npt.ArrayLike | Summary, control: npt.ArrayLike | Summary, *,
                  alpha: float = 0.05) -> LiftResult:
    """Relative lift ``mean_t / mean_c - 1`` with the interval of :func:`ratio_bounds` —
    Fieller's at the Welch t quantile for equal arms; for unequal arms the contrast's
    scale-model variance (guarded by Welch's) and skew correction — or for 0/1 outcomes
    (both :attr:`Summary.binary`) the Miettinen–Nurminen score interval of the risk
    ratio (:func:`score_ratio_bounds`).

    Fieller (1954); for its use on A/B ratio metrics see e.g. Kohavi, Tang & Xu (2020,
    "Trustworthy Online Controlled Experiments", ch. 18). A :class:`Summary` without k₃
    and m₄ (no Σy³, Σy⁴) gets no skew correction and Welch's guard. Unbounded above when the
    control mean is not distinguishable from zero; never below -100 %. For 0/1 outcomes
    an all-zero arm still has an interval (0 of 100 against 5 of 100 is evidence); only
    0 events in both arms is refused.
    """
    alpha = _alpha(alpha)
    t, c = _summaries(treatment, control)
    mt, mc = t.mean, c.mean
    if t.binary and c.binary:
        if t.successes == 0 and c.successes == 0:
            raise InvalidInputError("treatment, control", (mt, mc),
                                    "are all zero: the relative lift is undefined")
        z = float(sps.norm.ppf(1 - alpha / 2))
        lo, hi = score_ratio_bounds(t.successes, t.n, c.successes, c.n, z)
        est = mt / mc - 1 if mc > 0 else math.inf
        se = (math.sqrt(t.var / (t.n * mc**2) + mt**2 * c.var / (c.n * mc**4)) if mc > 0
              else math.nan)
        return LiftResult(t.n, c.n, mt, mc, est, se, float(lo), float(hi), _score_p(t, c),
                          alpha)
    _ratio_inputs(t, c)
    q, p = _test_at_zero(t, c, alpha)
    lo, hi = ratio_bounds(mt, t.var, t.n, mc, c.var, c.n, q, _k3(t), _k3(c), _m4(t), _m4(c))
    se = math.sqrt(t.var / (t.n * mc**2) + mt**2 * c.var / (c.n * mc**4))
    return LiftResult(t.n, c.n, mt, mc, mt / mc - 1, se, float(lo), float(hi), p, alpha)


def degenerate_reason(treatment: Summary | None, control: Summary | None, *,
                      min_units: int = MIN_UNITS,
                      what: str = "a complete cohort") -> str | None:
    """Why a comparison cannot be called yet, in words, or None when it can.

    Empty or too-small cohorts, all-zero cohorts and zero variance give a sentence a
    product person can read ("too early to call: ..."); the caller shows it instead of
    an interval or a verdict. ``what`` is what a counted unit has ("day-30 in the
    past").
    """
    n_t = 0 if treatment is None else treatment.n
    n_c = 0 if control is None else control.n
    if treatment is None or control is None or min(n_t, n_c) < 2:
        return f"not enough data yet: {n_t} treatment and {n_c} control units have {what}"
    zero_t = treatment.mean == 0 and treatment.var == 0
    zero_c = control.mean == 0 and control.var == 0
    if zero_t and zero_c:
        return f"no activity at all yet: all {n_t} treatment and {n_c} control units are 0"
    if zero_c:
        return (f"control is all zero ({n_c} units): a relative lift is undefined until "
                "control has some activity")
    if zero_t:
        return (f"treatment is all zero ({n_t} units, control mean {control.mean:.4g}): "
                "lift -100 %, too little spread for an interval")
    if treatment.var == 0 and control.var == 0:
        return (f"no variation yet: every unit has the same value "
                f"({treatment.mean:.4g} vs {control.mean:.4g})")
    if min(n_t, n_c) < min_units:
        return (f"too early to call: {min(n_t, n_c)} units in the smaller arm have {what} "
                f"(a call needs {min_units} per arm)")
    return None


# ---------------------------------------------------------------------- sequential


def mixture_radius_factor(n: int | npt.NDArray[np.int64], alpha: float = 0.05,
                          planned_n: int = DEFAULT_PLANNED_N) -> npt.NDArray[np.float64]:
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


def sequential_bounds(mean_t: npt.ArrayLike, var_t: npt.ArrayLike, n_t: npt.ArrayLike,
                      mean_c: npt.ArrayLike, var_c: npt.ArrayLike, n_c: npt.ArrayLike,
                      factor: npt.ArrayLike
                      ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64],
                                 npt.NDArray[np.float64]]:
    """The always-valid intervals' kernel, vectorised: ``(rel_lo, rel_hi, diff_se)``.

    ``var_*`` are the arms' sample variances (not divided by n). The contrast
    ``Y_t − R·Y_c`` is judged with the larger of two variances at each R: Welch's,
    ``var_t/n_t + R² var_c/n_c``, and the pooled one that is unbiased when treatment =
    R × control in distribution, ``var_t/n_c + R² var_c/n_t`` (each arm's variance
    weighted by the *other* arm's size; the variance mix with λ = 0 in
    docs/statistics.md, "Unequal arms"). With unequal arms the small arm's mean and
    variance are correlated on skewed or rare data (cov(ȳ, s²) = μ₃/n: a sample short of
    the rare large values has both too low), so Welch's variance alone is too small
    exactly when the small arm's mean is off — the boundary was crossed in 6–9 % of
    A/A experiments at 90 / 10 on skewed data, 15 % for the difference at p = 0.02; the
    pooled variance leans on the large arm. Taking the larger keeps Welch's wherever it
    is larger, so the set is never narrower than Welch's and stays valid when the scale
    model does not hold. For equal arms the two are the same, and the interval is
    Welch's. The relative set is the union of the two Fieller sets (both contain
    m_t/m_c), and ``diff_se`` is the larger standard error at R = 1, so the relative and
    absolute intervals still exclude 0 together.
    """
    mt, vt, nt, mc, vc, nc, f = (np.asarray(v, dtype=np.float64)
                                 for v in (mean_t, var_t, n_t, mean_c, var_c, n_c, factor))
    lo_w, hi_w = fieller_bounds(mt, vt / nt, mc, vc / nc, f)
    lo_p, hi_p = fieller_bounds(mt, vt / nc, mc, vc / nt, f)
    return np.minimum(lo_w, lo_p), np.maximum(hi_w, hi_p), np.sqrt(_sequential_se2(vt, nt, vc, nc))


def _sequential_se2(var_t: FloatArray, n_t: FloatArray, var_c: FloatArray,
                    n_c: FloatArray) -> FloatArray:
    """The difference's squared standard error in :func:`sequential_bounds`."""
    return np.maximum(var_t / n_t + var_c / n_c, var_t / n_c + var_c / n_t)


def sequential_diff(treatment: npt.ArrayLike | Summary, control: npt.ArrayLike | Summary, *,
                    alpha: float = 0.05, planned_n: int = DEFAULT_PLANNED_N) -> SequentialResult:
    """Always-valid (anytime) interval for the difference of means.

    ``d ± factor · se`` with ``n = n_t + n_c`` observations in the mixture boundary
    (asymptotic confidence sequence, Waudby-Smith et al.) and the standard error of
    :func:`sequential_bounds` (Welch's, or the pooled one when larger: they are equal
    for equal arms). Valid under continuous monitoring — e.g. recomputed every day — at
    level 1-α.
    """
    alpha = _alpha(alpha)
    t, c = _summaries(treatment, control)
    est = t.mean - c.mean
    n = t.n + c.n
    f = float(mixture_radius_factor(n, alpha, planned_n))
    se = math.sqrt(float(_sequential_se2(*_floats(t.var, t.n, c.var, c.n))))
    _refuse_zero_variance(t, c, se)  # 0 exactly when both variances are (Welch's too)
    return SequentialResult(est, se, f, est - f * se, est + f * se, alpha, n, planned_n)


def sequential_lift(treatment: npt.ArrayLike | Summary, control: npt.ArrayLike | Summary, *,
                    alpha: float = 0.05, planned_n: int = DEFAULT_PLANNED_N) -> SequentialResult:
    """Always-valid interval for the relative lift: Fieller's set with the mixture factor.

    For a fixed R the contrast ``Y_t - R Y_c`` has mean zero exactly at the true ratio,
    and the normal-mixture boundary for its standardised sum holds at all times with
    probability 1-α (Howard et al. 2021; Waudby-Smith et al.). The set of R that the
    boundary does not reject therefore contains the true ratio at all times with that
    probability: the interval is time-uniform by construction, with ρ fixed by
    ``planned_n``, and excludes lift 0 exactly when :func:`sequential_diff` excludes 0.
    The contrast's variance is :func:`sequential_bounds`' (Welch's, or the pooled one
    when larger, which matters for unequal arms).
    """
    alpha = _alpha(alpha)
    t, c = _summaries(treatment, control)
    _ratio_inputs(t, c)
    n = t.n + c.n
    f = float(mixture_radius_factor(n, alpha, planned_n))
    lo, hi, _se = sequential_bounds(t.mean, t.var, t.n, c.mean, c.var, c.n, f)
    se = math.sqrt(t.var / (t.n * c.mean**2) + t.mean**2 * c.var / (c.n * c.mean**4))
    return SequentialResult(t.mean / c.mean - 1, se, f, float(lo), float(hi), alpha, n,
                            planned_n)


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
        k3 = m4 = None
        high = (s.syyy, s.syyyy, s.sxxx, s.sxxxx, s.sxxy, s.sxyy, s.sxxxy, s.sxxyy, s.sxyyy)
        if all(v is not None for v in high) and s.n > 2:
            # power sums of w = y - θx (its central moments are those of the adjusted y)
            y3, y4, x3, x4, x2y, xy2, x3y, x2y2, xy3 = (float(v or 0.0) for v in high)
            t = theta
            w = Summary.from_sums(s.n, s.sy - t * s.sx, s.syy - 2 * t * s.sxy + t * t * s.sxx,
                                  y3 - 3 * t * xy2 + 3 * t * t * x2y - t**3 * x3,
                                  y4 - 4 * t * xy3 + 6 * t * t * x2y2 - 4 * t**3 * x3y
                                  + t**4 * x4)
            k3, m4 = w.k3, w.m4
        return Summary(s.n, mean, max(var, 0.0), False, k3, m4)

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
    t, c = _summaries(treatment, control)
    se, _df, _q = _welch(t, c, 0.05)
    p = float(sps.norm.cdf((t.mean - c.mean) / se))
    return p if higher_is_better else 1.0 - p


def guardrail(metric: str, treatment: npt.ArrayLike | Summary,
              control: npt.ArrayLike | Summary, *,
              margin: float, alpha: float = 0.05) -> GuardrailResult:
    """Non-inferiority of ``metric``: the relative lift must not fall below ``-margin``.

    A one-sided test at level α: ``ok`` when the one-sided (1-α) lower bound of the
    relative interval (:func:`ratio_bounds`; for 0/1 outcomes the score bound of the risk
    ratio, as in :func:`relative_lift`) is
    above ``-margin``; ``degraded`` when the one-sided (1-α) upper bound is below it;
    otherwise ``inconclusive``. Also reports the relative drop the test would detect with
    :data:`GUARDRAIL_POWER` power at the current size (normal approximation,
    (z_{1-α} + z_{power}) · se of the lift) and the units per arm at which a drop of
    ``margin`` would be detected.
    """
    if not 0 <= margin < 1:
        raise InvalidInputError("margin", margin, "must be in [0, 1)")
    alpha = _alpha(alpha)
    t, c = _summaries(treatment, control)
    _ratio_inputs(t, c)
    if t.binary and c.binary:  # the score interval of the risk ratio, one-sided
        lo, hi = score_ratio_bounds(t.successes, t.n, c.successes, c.n,
                                    float(sps.norm.ppf(1 - alpha)))
    else:
        q = _test_at_zero(t, c, alpha, 1 - alpha)[0]
        lo, hi = ratio_bounds(t.mean, t.var, t.n, c.mean, c.var, c.n, q, _k3(t), _k3(c),
                              _m4(t), _m4(c))
    est = t.mean / c.mean - 1
    status: Literal["ok", "degraded", "inconclusive"]
    if lo >= -margin:
        status = "ok"
    elif hi < -margin:
        status = "degraded"
    else:
        status = "inconclusive"
    # se of the lift under "no change" (R = 1): sqrt(var_t/n_t + var_c/n_c) / mean_c
    se0 = math.sqrt(t.var / t.n + c.var / c.n) / c.mean
    k = float(sps.norm.ppf(1 - alpha) + sps.norm.ppf(GUARDRAIL_POWER))
    n = min(t.n, c.n)
    drop = k * se0
    n_margin = math.ceil(n * (drop / margin) ** 2) if margin > 0 else 0
    return GuardrailResult(metric, est, float(lo), float(hi), float(margin), 1 - alpha,
                           status, n, drop, n_margin)


# ---------------------------------------------------------------------- ratio of sums


def ratio_mean_se(num: npt.ArrayLike, den: npt.ArrayLike, num_sq: npt.ArrayLike,
                  den_sq: npt.ArrayLike, cross: npt.ArrayLike
                  ) -> tuple[FloatArray, FloatArray]:
    """Σy / Σw and its linearised standard error from the sums Σy, Σw, Σy², Σw², Σyw
    (vectorised; NaN where Σw <= 0).

    The ratio estimator's variance is Var(Σy - r Σw) / (Σw)² with
    Σ(y - r w)² = Σy² - 2 r Σyw + r² Σw² (the delta method; e.g. Cochran 1977, *Sampling
    Techniques*, eq. 6.9). With y = w·v this is the self-normalised weighted mean of v and
    its sandwich standard error √Σw²(v - m)² / Σw (Swaminathan & Joachims 2015).
    """
    y, w, y2, w2, yw = _floats(num, den, num_sq, den_sq, cross)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(w > 0, y / np.where(w > 0, w, 1.0), np.nan)
        resid = np.maximum(y2 - 2 * r * yw + r * r * w2, 0.0)
        se = np.where(w > 0, np.sqrt(resid) / np.where(w > 0, w, 1.0), np.nan)
    return np.asarray(r), np.asarray(se)


def ratio_ci(num: float, den: float, num_sq: float, den_sq: float, cross: float, n: float,
             *, alpha: float = 0.05) -> tuple[float, float, float]:
    """Σy / Σw with a (1-α) normal interval (:func:`ratio_mean_se`) from the sums over ``n``
    rows: (ratio, low, high); NaN when Σw <= 0 or n < 2."""
    alpha = _alpha(alpha)
    if not den > 0 or n < 2:
        return (math.nan, math.nan, math.nan)
    r, se = (float(v) for v in ratio_mean_se(num, den, num_sq, den_sq, cross))
    half = float(sps.norm.ppf(1 - alpha / 2)) * se
    return (r, r - half, r + half)


def weighted_mean_ci(values: npt.ArrayLike, weights: npt.ArrayLike, *,
                     alpha: float = 0.05) -> tuple[float, float, float, float]:
    """Self-normalised weighted mean Σwv / Σw with a (1-α) normal interval
    (:func:`ratio_mean_se`) and Kish's effective sample size (Σw)² / Σw²:
    (mean, low, high, n_eff). Rows with a non-finite value or weight, or a weight <= 0,
    are left out; no row gives NaNs and n_eff 0, one row a mean without an interval."""
    alpha = _alpha(alpha)
    v = np.asarray(values, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if v.shape != w.shape or v.ndim != 1:
        raise InvalidInputError("weights", w.shape, f"must be 1-D and match values {v.shape}")
    ok = np.isfinite(v) & np.isfinite(w) & (w > 0)
    v, w = v[ok], w[ok]
    if v.size == 0:
        return (math.nan, math.nan, math.nan, 0.0)
    sw, sw2 = float(w.sum()), float((w * w).sum())
    wv = w * v
    m, lo, hi = ratio_ci(float(wv.sum()), sw, float((wv * wv).sum()), sw2,
                         float((wv * w).sum()), 2 if v.size > 1 else 1, alpha=alpha)
    if v.size == 1:
        m = float(v[0])
    return (m, lo, hi, sw * sw / sw2)
