"""Statistics: closed forms, invalid input, and seeded validation against ground truth.

Seeds come from ``SeedSequence(FIXED).spawn``; each statistical assertion states its
tolerance. With the number of simulations used the binomial standard error of a 5 %
rate is about 0.5-1 percentage point, so the tolerances below are 2-4 standard errors
(false-failure probability of a fresh seed well under 5 %; the seeds are fixed anyway).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from bandit import stats
from bandit.errors import InvalidInputError

SEEDS = np.random.SeedSequence(2026_11_23).spawn(12)


def _rng(i: int) -> np.random.Generator:
    return np.random.default_rng(SEEDS[i])


# ---------------------------------------------------------------------- closed form


def test_absolute_diff_is_welch_where_a_mean_is_not_positive() -> None:
    """No ratio (a mean <= 0): the interval is Welch's, as scipy computes it."""
    rng = _rng(0)
    t, c = rng.normal(-0.3, 2.0, 300), rng.normal(0.7, 1.0, 200)
    d = stats.absolute_diff(t, c)
    ref = sps.ttest_ind(t, c, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert d.estimate == pytest.approx(t.mean() - c.mean())
    assert d.p_value == pytest.approx(ref.pvalue)
    assert (d.ci_low, d.ci_high) == pytest.approx((ci.low, ci.high))


def _scale_var_by_hand(ratio: float, se2_t: float, se2_c: float, n_t: int, n_c: int) -> float:
    """a (se2_t + R³ (n_c/n_t)² se2_c), a = n_t (R² n_c + n_t) / (R² n_c (n_t + R n_c)):
    unbiased for Var(m_t - m_c) when treatment = R × control, uncorrelated with it."""
    a = n_t * (ratio**2 * n_c + n_t) / (ratio**2 * n_c * (n_t + ratio * n_c))
    return a * (se2_t + ratio**3 * (n_c / n_t) ** 2 * se2_c)


def _moments_by_hand(x: np.ndarray) -> tuple[float, float, float, float]:
    n = x.size
    d = x - x.mean()
    return (float(x.mean()), float(d @ d / (n - 1)), float(n * np.sum(d**3) / ((n - 1) * (n - 2))),
            float(np.mean(d**4)))


@pytest.mark.parametrize("sizes", [(150, 150), (100, 900), (900, 100)])
def test_absolute_diff_bounds_solve_the_scale_variance_equation_by_hand(
        sizes: tuple[int, int]) -> None:
    """Skewed, positive, a large lift: each bound b satisfies
    ±(b - d) = (q ∓ s) √V with V the larger of the scale-model variance at
    R = 1 + b / m_c and the guard (Welch's with each arm's variance 1.5 standard errors
    lower at the pooled kurtosis), R kept within the relative interval, s the capped
    Cornish–Fisher shift γ/6 (q² - 1) for
    γ = k(R) (R³/n_t² - 1/n_c²) / V^{3/2}, k(R) the size-weighted pooled k₃ of the
    treatment / R and the control — all written out here. For equal arms the p-value is
    Welch's and the interval is wider above (the side a multiplicative effect skews)."""
    n_t, n_c = sizes
    rng = _rng(1)
    t, c = rng.lognormal(0, 1.5, n_t) * 1.68, rng.lognormal(0, 1.5, n_c)
    d = stats.absolute_diff(t, c)
    (mt, vt, kt, qt), (mc, vc, kc, qc) = _moments_by_hand(t), _moments_by_hand(c)
    n = n_t + n_c
    kap = (n_t * qt / vt**2 + n_c * qc / vc**2) / n

    def low(v: float, m: int) -> float:
        return v / (1 + 1.5 * math.sqrt(max(kap - (m - 3) / (m - 1), 0.0) / m)) / m

    guard = low(vt, n_t) + low(vc, n_c)
    v0 = max(vt / n_c + vc / n_t, guard)
    a0, b0 = (vt / n_c, vc / n_t) if vt / n_c + vc / n_t >= guard else (low(vt, n_t), low(vc, n_c))
    df0 = (a0 + b0) ** 2 / (a0**2 / (n_t - 1) + b0**2 / (n_c - 1))
    q = float(sps.t.ppf(0.975, df0))
    r = stats.relative_lift(t, c)
    for b, side in ((d.ci_low, -1), (d.ci_high, 1)):
        # R within the relative interval at the same q, widened to include 1
        ratio = min(max(1 + b / mc, min(1 + r.ci_low, 1.0)), max(1 + r.ci_high, 1.0))
        v = max(_scale_var_by_hand(ratio, vt / n_t, vc / n_c, n_t, n_c), guard)
        k = (n_t * kt / ratio**3 + n_c * kc) / n
        gamma = k * (ratio**3 / n_t**2 - 1 / n_c**2) / v**1.5
        shift = min(max(gamma / 6 * (q * q - 1), -q / 2), q / 2)
        assert side * (b - (mt - mc)) == pytest.approx((q - side * shift) * math.sqrt(v),
                                                       rel=1e-9)
    assert d.ci_low < mt - mc < d.ci_high and v0 > 0
    assert d.se == pytest.approx(math.sqrt(vt / n_t + vc / n_c))
    if n_t == n_c:
        ref = sps.ttest_ind(t, c, equal_var=False)
        assert d.p_value == pytest.approx(ref.pvalue, rel=1e-6)
        assert d.ci_high - (mt - mc) > (mt - mc) - d.ci_low


def test_difference_and_relative_intervals_make_one_call_on_zero_at_any_sizes() -> None:
    """40,000 skewed experiments, equal and unequal arms, lifts -30 % to +68 %: the
    difference interval excludes 0 exactly when the relative interval does (one test at
    0), and for equal arms exactly when Welch's test rejects 0; both contain the
    estimate."""
    rng = _rng(2)
    for n_t, n_c in ((100, 100), (100, 300), (900, 100), (50, 60)):
        for lift in (0.0, 0.1, 0.3, 0.68, -0.3):
            k = 2000
            t = rng.lognormal(0, 1.5, (k, n_t)) * (1 + lift) * (rng.random((k, n_t)) > 0.5)
            c = rng.lognormal(0, 1.5, (k, n_c)) * (rng.random((k, n_c)) > 0.5)
            mt, mc = t.mean(1), c.mean(1)
            vt, vc = t.var(1, ddof=1), c.var(1, ddof=1)
            dt, dc = t - mt[:, None], c - mc[:, None]
            kt = n_t * (dt**3).sum(1) / ((n_t - 1) * (n_t - 2))
            kc = n_c * (dc**3).sum(1) / ((n_c - 1) * (n_c - 2))
            qt, qc = (dt**4).mean(1), (dc**4).mean(1)
            q = stats.fixed_quantile(mt, vt, n_t, mc, vc, n_c, 0.975, qt, qc)
            lo, hi = stats.diff_bounds(mt, vt / n_t, mc, vc / n_c, n_t, n_c, q, kt, kc, qt, qc)
            rlo, rhi = stats.ratio_bounds(mt, vt, n_t, mc, vc, n_c, q, kt, kc, qt, qc)
            ok = (mt > 0) & (mc > 0) & (vt + vc > 0)
            excl = (lo > 0) | (hi < 0)
            assert np.array_equal(excl[ok], ((rlo > 0) | (rhi < 0))[ok]), (n_t, n_c, lift)
            if n_t == n_c:
                welch = np.abs(mt - mc) > q * np.sqrt((vt + vc) / n_t)
                assert np.array_equal(excl[ok], welch[ok]), (n_t, n_c, lift)
            d = mt - mc
            assert ((lo < d) & (d < hi))[ok].all(), (n_t, n_c, lift)
            r = np.divide(mt, mc, out=np.ones_like(mt), where=mc > 0) - 1
            assert ((rlo <= r) & (r <= rhi))[ok].all(), (n_t, n_c, lift)


def test_relative_lift_fieller_bounds_solve_the_quadratic_by_hand() -> None:
    t = np.array([2.0, 4.0, 6.0, 8.0])
    c = np.array([1.0, 2.0, 3.0, 6.0])
    r = stats.relative_lift(t, c)
    mt, mc, vt, vc = 5.0, 3.0, np.var(t, ddof=1) / 4, np.var(c, ddof=1) / 4
    df = (vt + vc) ** 2 / (vt**2 / 3 + vc**2 / 3)
    q = sps.t.ppf(0.975, df)
    # Fieller: (mt - R mc)^2 = q^2 (vt + R^2 vc) at both ends
    for bound in (r.ci_low, r.ci_high):
        ratio = bound + 1
        assert (mt - ratio * mc) ** 2 == pytest.approx(q**2 * (vt + ratio**2 * vc), rel=1e-9)
    assert r.estimate == pytest.approx(mt / mc - 1)
    assert r.se == pytest.approx(math.sqrt(vt / mc**2 + mt**2 * vc / mc**4))
    assert r.ci_low < r.estimate < r.ci_high and r.bounded


def test_fieller_unbounded_when_control_mean_not_distinguishable_from_zero() -> None:
    lo, hi = stats.fieller_bounds(1.0, 0.01, 0.1, 0.01, 1.96)
    assert math.isinf(float(hi)) and -1.0 <= float(lo) < 1.0 / 0.1 - 1
    lo, hi = stats.fieller_bounds(0.05, 0.01, 0.1, 0.01, 1.96)  # neither mean > 0 clearly
    assert float(lo) == -1.0 and math.isinf(float(hi))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(5, 300), shift=st.floats(0.0, 2.0))
def test_relative_interval_excludes_zero_exactly_when_difference_interval_does(
        seed: int, n: int, shift: float) -> None:
    """Fieller's set at R = 1 is the difference test: one decision, whichever is shown."""
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    t, c = rng.lognormal(shift * 0.3, 1.2, n), rng.lognormal(0, 1.2, n + 3)
    r, d = stats.relative_lift(t, c), stats.absolute_diff(t, c)
    assert (r.ci_low > 0) == (d.ci_low > 0) and (r.ci_high < 0) == (d.ci_high < 0)
    sr, sd = stats.sequential_lift(t, c, planned_n=1000), stats.sequential_diff(t, c, planned_n=1000)
    assert (sr.ci_low > 0) == (sd.ci_low > 0) and (sr.ci_high < 0) == (sd.ci_high < 0)
    assert r.ci_low >= -1 and sr.ci_low >= -1


def test_relative_lift_all_zero_treatment_is_an_invalid_input_not_a_crash() -> None:
    with pytest.raises(InvalidInputError, match="all zero"):
        stats.relative_lift([0.0] * 100, [0.0] * 97 + [2.5] * 3)
    with pytest.raises(InvalidInputError, match="all zero"):
        stats.sequential_lift([0.0] * 100, [0.0] * 97 + [1.0] * 3)
    with pytest.raises(InvalidInputError, match="all zero"):  # 0/1, no event on either side
        stats.relative_lift([0.0] * 100, [0.0] * 90)


def test_binary_outcomes_take_the_score_intervals_with_an_all_zero_arm() -> None:
    """0 of 100 against 5 of 100 is evidence: the score interval of the ratio exists and
    excludes 0 (the skew-corrected score interval of :func:`score_ratio_bounds`); the
    difference stays in [-1, 1]."""
    t, c = [0.0] * 100, [1.0] * 5 + [0.0] * 95
    r = stats.relative_lift(t, c)
    lo, hi = stats.score_ratio_bounds(0, 100, 5, 100, sps.norm.ppf(0.975))
    assert (r.ci_low, r.ci_high) == pytest.approx((float(lo), float(hi)), abs=1e-12)
    assert r.ci_low == -1.0 and r.ci_high < 0 and r.estimate == -1.0
    d = stats.absolute_diff(t, c)
    assert -1 <= d.ci_low < d.ci_high < 0 and math.isinf(d.df)
    up = stats.relative_lift(c, t)  # control all zero: unbounded above, estimate inf
    assert math.isinf(up.ci_high) and up.ci_low > 0 and math.isinf(up.estimate)


@pytest.mark.parametrize("shift", [0.0, 10.0, 1e3, 1e7])
def test_summary_moments_from_power_sums(shift: float) -> None:
    """k₃ and m₄ from Σy … Σy⁴ equal the per-unit ones; where the mean is so large against
    the spread that the raw sums cancel (m₄ at 1e3 ± 1, both at 1e7), the summary goes
    without them rather than carry rounding; values beyond ~1e77 overflow the same way."""
    y = shift + _rng(3).lognormal(0, 1, 1000)
    a = stats.Summary.of(y)
    b = stats.Summary.from_sums(y.size, *(float(np.sum(y**k)) for k in (1, 2, 3, 4)))
    assert (b.n, b.mean) == pytest.approx((a.n, a.mean), rel=1e-12)
    assert b.var == pytest.approx(a.var, rel=1e-9 if shift <= 1e3 else 1e-2)  # Σy² cancels too
    assert a.k3 is not None and a.m4 is not None
    for got, want in ((b.k3, a.k3), (b.m4, a.m4)):
        assert got is None or got == pytest.approx(want, rel=1e-6)
    if shift <= 10:
        assert b.k3 is not None and b.m4 is not None
    if shift >= 1e7:
        assert b.k3 is None and b.m4 is None
    huge = stats.Summary.of(np.array([1e80, 2e80, 3e80, 1e79]))
    assert huge.m4 is None and math.isfinite(huge.var)


def test_summary_detects_binary_values_and_checks_binary_sums() -> None:
    assert stats.Summary.of([0, 1, 1, 0]).binary
    assert not stats.Summary.of([0, 1, 2, 0]).binary
    s = stats.Summary.from_sums(10, 3.0, 3.0, binary=True)
    assert s.binary and s.successes == 3
    with pytest.raises(InvalidInputError, match="0/1"):
        stats.Summary.from_sums(10, 3.0, 5.0, binary=True)


def test_score_diff_matches_newcombe_published_example() -> None:
    """Newcombe (1998, Stat. Med. 17, Table II, example (a)): 56/70 - 48/80, the
    Miettinen–Nurminen interval is 0.0528 to 0.3382."""
    lo, hi = stats.score_diff_bounds(56, 70, 48, 80, sps.norm.ppf(0.975), skew=False)
    assert (float(lo), float(hi)) == pytest.approx((0.0528, 0.3382), abs=5e-5)


@pytest.mark.parametrize(("x_t", "x_c"), [(0, 4), (2, 2), (3, 1), (30, 20), (5, 0), (1, 1)])
def test_score_ratio_matches_statsmodels(x_t: int, x_c: int) -> None:
    from statsmodels.stats.proportion import confint_proportions_2indep

    lo, hi = stats.score_ratio_bounds(x_t, 100, x_c, 90, sps.norm.ppf(0.975), skew=False)
    want = confint_proportions_2indep(x_t, 100, x_c, 90, method="score", compare="ratio")
    assert (float(lo), float(hi)) == pytest.approx((want[0] - 1, want[1] - 1), rel=1e-9)


@pytest.mark.parametrize(("x_t", "n_t", "x_c", "n_c"), [(30, 900, 1, 100), (4, 100, 20, 900),
                                                        (56, 70, 48, 80)])
def test_skew_corrected_score_bounds_solve_gart_nams_equation_by_hand(
        x_t: int, n_t: int, x_c: int, n_c: int) -> None:
    """Each end φ of the ratio interval (and δ of the difference) satisfies
    z = ±q + γ/6 (q² - 1) (the shift capped at q/2): z the Miettinen–Nurminen score
    statistic and γ the skewness of p̂_t - φ p̂_c (p̂_t - p̂_c - δ), both at the
    maximum-likelihood estimates restricted to φ (δ) — found here by a numerical
    maximisation, not the closed forms."""
    from scipy.optimize import minimize_scalar

    q = float(sps.norm.ppf(0.975))
    n = n_t + n_c

    def loglik(p1: float, p2: float) -> float:
        p1, p2 = min(max(p1, 1e-12), 1 - 1e-12), min(max(p2, 1e-12), 1 - 1e-12)
        return (x_t * math.log(p1) + (n_t - x_t) * math.log(1 - p1)
                + x_c * math.log(p2) + (n_c - x_c) * math.log(1 - p2))

    def check(num: float, q1: float, q2: float, phi: float, side: int) -> None:
        v = q1 * (1 - q1) / n_t + phi**2 * q2 * (1 - q2) / n_c
        z = num / math.sqrt(v * n / (n - 1))
        m3 = q1 * (1 - q1) * (1 - 2 * q1) / n_t**2 - phi**3 * q2 * (1 - q2) * (1 - 2 * q2) / n_c**2
        gamma = m3 / v**1.5
        shift = min(max(gamma / 6 * (q * q - 1), -q / 2), q / 2)  # capped at q / 2
        assert z == pytest.approx(side * q + shift, abs=1e-6)

    lo, hi = stats.score_ratio_bounds(x_t, n_t, x_c, n_c, q)
    for bound, side in ((float(lo), 1), (float(hi), -1)):
        phi = bound + 1
        hi_p2 = min(1.0, 1 / phi)
        p2 = minimize_scalar(lambda p, phi=phi: -loglik(phi * p, p),
                             bounds=(1e-9, hi_p2 - 1e-9),
                             method="bounded", options={"xatol": 1e-13}).x
        check(x_t / n_t - phi * x_c / n_c, phi * p2, p2, phi, side)
    dlo, dhi = stats.score_diff_bounds(x_t, n_t, x_c, n_c, q)
    for bound, side in ((float(dlo), 1), (float(dhi), -1)):
        lo2, hi2 = max(0.0, -bound), min(1.0, 1 - bound)
        p2 = minimize_scalar(lambda p, bound=bound: -loglik(p + bound, p),
                             bounds=(lo2 + 1e-9, hi2 - 1e-9),
                             method="bounded", options={"xatol": 1e-13}).x
        check(x_t / n_t - x_c / n_c - bound, p2 + bound, p2, 1.0, side)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 60), st.integers(0, 60))
def test_score_intervals_contain_the_estimate_and_stay_in_range(x_t: int, x_c: int) -> None:
    z = sps.norm.ppf(0.975)
    dlo, dhi = stats.score_diff_bounds(x_t, 60, x_c, 60, z)
    assert -1 <= dlo <= (x_t - x_c) / 60 <= dhi <= 1
    lo, hi = stats.score_ratio_bounds(x_t, 60, x_c, 60, z)
    assert -1 <= lo <= hi
    if x_c > 0:
        assert lo <= x_t / x_c - 1 <= hi


@pytest.mark.parametrize(
    ("t", "c", "expected"),
    [
        (None, stats.Summary(10, 1.0, 1.0), "not enough data yet"),
        (stats.Summary(2, 0.0, 0.0), stats.Summary(2, 0.0, 0.0), "no activity at all"),
        (stats.Summary(200, 0.1, 0.09), stats.Summary(200, 0.0, 0.0), "control is all zero"),
        (stats.Summary(200, 0.0, 0.0), stats.Summary(200, 0.1, 0.09), "treatment is all zero"),
        (stats.Summary(200, 1.0, 0.0), stats.Summary(200, 1.0, 0.0), "no variation yet"),
        (stats.Summary(50, 1.0, 1.0), stats.Summary(500, 1.0, 1.0), "too early to call: 50"),
        (stats.Summary(100, 1.0, 1.0), stats.Summary(500, 1.0, 1.0), None),
    ],
    ids=["empty", "all-zero-both", "all-zero-control", "all-zero-treatment", "no-variance",
         "below-minimum", "callable"],
)
def test_degenerate_reason_in_words(t: stats.Summary | None, c: stats.Summary,
                                    expected: str | None) -> None:
    why = stats.degenerate_reason(t, c)
    assert why == expected if expected is None else (why is not None and expected in why)


def test_sequential_interval_is_estimate_plus_factor_se_and_wider() -> None:
    rng = _rng(1)
    t, c = rng.normal(0.1, 1, 2000), rng.normal(0, 1, 2000)
    s = stats.sequential_diff(t, c, planned_n=4000)
    d = stats.absolute_diff(t, c)
    f = float(stats.mixture_radius_factor(4000, 0.05, 4000))
    assert s.factor == pytest.approx(f)
    assert (s.ci_low, s.ci_high) == pytest.approx((d.estimate - f * d.se, d.estimate + f * d.se))
    assert s.ci_high - s.ci_low > d.ci_high - d.ci_low


def test_srm_flags_small_imbalance_at_large_n() -> None:
    flagged = stats.srm_test([505_000, 495_000], [0.5, 0.5])
    fair = stats.srm_test([500_300, 499_700], [0.5, 0.5])
    assert flagged.flagged and flagged.p_value < 1e-20
    assert not fair.flagged
    named = stats.srm_test({"gpt35": 700, "bandit": 300}, {"gpt35": 0.7, "bandit": 0.3})
    assert named.chi2 == pytest.approx(0.0) and not named.flagged


def test_srm_unexpected_variant_is_flagged() -> None:
    assert stats.srm_test([10, 10, 5], [0.5, 0.5, 0.0]).flagged


def test_prob_better_is_symmetric_and_saturates() -> None:
    rng = _rng(2)
    t, c = rng.normal(0.05, 1, 500), rng.normal(0, 1, 500)
    assert stats.prob_better(t, c) + stats.prob_better(c, t) == pytest.approx(1.0)
    assert stats.prob_better(t + 10, c) > 0.999


def test_guardrail_statuses() -> None:
    rng = _rng(3)
    base = rng.normal(10, 1, 5000)
    same = rng.normal(10, 1, 5000)
    worse = rng.normal(9, 1, 5000)
    ok = stats.guardrail("m", same, base, margin=0.02)
    assert ok.status == "ok" and ok.level == pytest.approx(0.95)
    assert "one-sided 95%" in ok.describe()
    assert stats.guardrail("m", worse, base, margin=0.02).status == "degraded"
    g = stats.guardrail("m", rng.normal(9.8, 1, 100), base[:100], margin=0.02)
    assert g.status in {"inconclusive", "degraded"} and not g.passed


def test_guardrail_power_is_what_the_test_detects() -> None:
    """The reported detectable drop is detected ≈ 80 % of the time (2000 experiments,
    binomial SE ≈ 0.9 pp; tolerance 0.74-0.86) and n_for_margin scales as 1/drop²."""
    rng = _rng(11)
    n, sims = 2000, 2000
    g0 = stats.guardrail("m", rng.normal(10, 2, n), rng.normal(10, 2, n), margin=0.01)
    assert g0.status == "inconclusive" and "would detect" in g0.describe()
    assert g0.n_for_margin == pytest.approx(n * (g0.detectable_drop / 0.01) ** 2, rel=1e-3)
    drop = g0.detectable_drop
    t = rng.normal(10 * (1 - drop), 2, (sims, n))
    c = rng.normal(10, 2, (sims, n))
    q = sps.t.ppf(0.95, 2 * n - 2)
    _, hi = stats.fieller_bounds(t.mean(1), t.var(1, ddof=1) / n, c.mean(1),
                                 c.var(1, ddof=1) / n, q)
    assert 0.74 <= float((hi < 0).mean()) <= 0.86


@pytest.mark.parametrize(
    ("treatment", "control", "match", "why"),
    [
        ([], [1.0, 2.0], "treatment", "empty treatment cohort"),
        ([1.0, 2.0], [], "control", "empty control cohort"),
        ([1.0, math.nan, 2.0], [1.0, 2.0], "NaN", "NaN in treatment"),
        ([1.0, 2.0], [1.0, math.inf], "NaN or inf", "inf in control"),
        ([1.0, 2.0], [0.0, 0.0], "non-zero mean", "zero control mean"),
        ([0.0, 0.0, 0.0], [1.0, 2.0], "all zero", "all-zero treatment"),
        ([3.0, 3.0], [2.0, 2.0], "zero variance", "no variance at all"),
        ([[1.0, 2.0]], [1.0, 2.0], "1-D", "2-D input"),
    ],
)
def test_relative_lift_invalid_input_raises(treatment: list[float], control: list[float],
                                            match: str, why: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        stats.relative_lift(treatment, control)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: stats.absolute_diff([1.0, 1.0], [2.0, 2.0]), "zero variance"),
        (lambda: stats.absolute_diff([1.0, 2.0], [1.0, 3.0], alpha=1.5), "alpha"),
        (lambda: stats.srm_test([1, 2], [1.0]), "weights"),
        (lambda: stats.srm_test([0, 0], [0.5, 0.5]), "at least one"),
        (lambda: stats.srm_test({"x": 3, "y": 1}, {"x": 0.5}), "no configured weight"),
        (lambda: stats.cuped([1.0, 2.0], [1.0, 2.0], [1.0, 2.0, 3.0], [1.0, 2.0]), "match"),
        (lambda: stats.guardrail("m", [1.0, 2.0], [1.0, 2.0], margin=-0.1), "margin"),
        (lambda: stats.mixture_radius_factor(0), "n"),
    ],
    ids=["zero-variance", "alpha", "srm-weights", "srm-empty", "srm-unknown-variant",
         "cuped-lengths", "guardrail-margin", "mixture-n"],
)
def test_stats_invalid_arguments_raise(call: object, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        call()  # type: ignore[operator]


@settings(max_examples=40, deadline=None)
@given(scale=st.floats(0.01, 100), shift=st.floats(-50, 50), seed=st.integers(0, 2**32 - 1))
def test_stats_invariances(scale: float, shift: float, seed: int) -> None:
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    t, c = rng.exponential(2.0, 50) + 1, rng.exponential(2.0, 60) + 1
    r = stats.relative_lift(t, c)
    rs = stats.relative_lift(t * scale, c * scale)
    assert rs.estimate == pytest.approx(r.estimate, rel=1e-9, abs=1e-12)
    assert rs.se == pytest.approx(r.se, rel=1e-9)
    d = stats.absolute_diff(t, c)
    ds = stats.absolute_diff(t + shift, c + shift)
    assert ds.estimate == pytest.approx(d.estimate, abs=1e-9 * (1 + abs(shift)))
    assert ds.se == pytest.approx(d.se, rel=1e-6)


# ---------------------------------------------------------------------- validation


def test_absolute_diff_aa_false_positive_rate_is_five_percent() -> None:
    """A/A, 2000 experiments, log-normal outcomes: 95 % CI excludes 0 in 5 % ± 2 %."""
    rng = _rng(4)
    sims, n = 2000, 400
    t = rng.lognormal(0, 1, (sims, n))
    c = rng.lognormal(0, 1, (sims, n))
    excl = np.array([not (d.ci_low <= 0 <= d.ci_high)
                     for d in (stats.absolute_diff(t[i], c[i]) for i in range(sims))])
    assert 0.03 <= excl.mean() <= 0.07


def test_sequential_aa_daily_peeking_stays_below_alpha() -> None:
    """A/A peeked every day for 30 days (1000 experiments): the always-valid CI ever
    excludes 0 in ≤ 5 %; the fixed-horizon CI peeked the same way does far worse."""
    rng = _rng(5)
    sims, days, per_day = 1000, 30, 100
    t = rng.lognormal(0, 1, (sims, days * per_day))
    c = rng.lognormal(0, 1, (sims, days * per_day))
    ends = np.arange(1, days + 1) * per_day

    def cum_moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s1 = np.cumsum(x, axis=1)[:, ends - 1]
        s2 = np.cumsum(x * x, axis=1)[:, ends - 1]
        mean = s1 / ends
        var = (s2 - ends * mean**2) / (ends - 1)
        return mean, var

    mt, vt = cum_moments(t)
    mc, vc = cum_moments(c)
    est = mt - mc
    se = np.sqrt(vt / ends + vc / ends)
    factor = stats.mixture_radius_factor(2 * ends, 0.05, planned_n=2 * ends[-1])
    seq_cross = (np.abs(est) > factor * se).any(axis=1).mean()
    naive_cross = (np.abs(est) > 1.96 * se).any(axis=1).mean()
    assert seq_cross <= 0.05
    assert naive_cross > 0.10  # peeking a fixed-horizon CI daily inflates the error
    # the function agrees with the vectorised computation on one experiment
    s = stats.sequential_diff(t[0, : ends[9]], c[0, : ends[9]], planned_n=2 * ends[-1])
    assert (s.ci_low, s.ci_high) == pytest.approx(
        (est[0, 9] - factor[9] * se[0, 9], est[0, 9] + factor[9] * se[0, 9]), rel=1e-6)


@pytest.mark.parametrize("kind", ["proportion", "lognormal"])
def test_relative_lift_coverage_of_planted_lift(kind: str) -> None:
    """2000 experiments with a planted lift: the 95 % CI covers it in 93–97 %."""
    rng = _rng(6 if kind == "proportion" else 7)
    sims, n = 2000, 2000
    if kind == "proportion":
        pc, lift = 0.30, 0.10
        c = (rng.random((sims, n)) < pc).astype(float)
        t = (rng.random((sims, n)) < pc * (1 + lift)).astype(float)
    else:
        lift = 0.20
        c = rng.lognormal(0, 1, (sims, n))
        t = rng.lognormal(0, 1, (sims, n)) * (1 + lift)
    cover = np.array([r.ci_low <= lift <= r.ci_high
                      for r in (stats.relative_lift(t[i], c[i]) for i in range(sims))])
    assert 0.93 <= cover.mean() <= 0.97


def test_cuped_shrinks_interval_and_stays_unbiased() -> None:
    """Pre-period covariate with corr ≈ 0.8: variance reduction ≈ ρ² = 0.64, intervals
    narrower by ≈ √(1-ρ²), the mean estimate unbiased (within 4 SE of the mean over
    1000 experiments), coverage still 93–97 %."""
    rng = _rng(8)
    sims, n, delta, rho = 1000, 500, 0.3, 0.8
    xt = rng.normal(5, 1, (sims, n))
    xc = rng.normal(5, 1, (sims, n))
    noise = math.sqrt(1 - rho**2)
    yt = 5 + rho * (xt - 5) + noise * rng.normal(0, 1, (sims, n)) + delta
    yc = 5 + rho * (xc - 5) + noise * rng.normal(0, 1, (sims, n))
    est, width, red, cover = [], [], [], []
    raw_width = []
    for i in range(sims):
        adj = stats.cuped(yt[i], yc[i], xt[i], xc[i])
        d = stats.absolute_diff(adj.treatment, adj.control)
        raw = stats.absolute_diff(yt[i], yc[i])
        est.append(d.estimate)
        width.append(d.ci_high - d.ci_low)
        raw_width.append(raw.ci_high - raw.ci_low)
        red.append(adj.variance_reduction)
        cover.append(d.ci_low <= delta <= d.ci_high)
    est_a = np.array(est)
    assert abs(est_a.mean() - delta) < 4 * est_a.std() / math.sqrt(sims)
    assert np.mean(red) == pytest.approx(rho**2, abs=0.03)
    assert np.mean(width) / np.mean(raw_width) == pytest.approx(math.sqrt(1 - rho**2), abs=0.03)
    assert 0.93 <= np.mean(cover) <= 0.97


def test_cuped_constant_covariate_is_a_no_op() -> None:
    rng = _rng(9)
    t, c = rng.normal(1, 1, 100), rng.normal(0, 1, 100)
    adj = stats.cuped(t, c, np.ones(100), np.ones(100))
    assert adj.variance_reduction == 0.0 and np.array_equal(adj.treatment, t)


def test_srm_aa_false_alarm_rate_is_about_one_in_a_thousand() -> None:
    """Fair 50/50 splits (20 000 experiments of 10 000 units): flagged ≤ 0.3 %."""
    rng = _rng(10)
    n_t = rng.binomial(10_000, 0.5, 20_000)
    flags = np.array([stats.srm_test([k, 10_000 - k], [0.5, 0.5]).flagged for k in n_t[:2000]])
    chi2 = (n_t - 5000.0) ** 2 / 5000 * 2
    p = sps.chi2.sf(chi2, 1)
    assert (p < stats.SRM_ALPHA).mean() <= 0.003
    assert flags.mean() <= 0.005


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(3, 200), rho=st.floats(-0.95, 0.95))
def test_cuped_sums_equals_cuped_on_arrays(seed: int, n: int, rho: float) -> None:
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    xt, xc = rng.normal(3, 1, n), rng.normal(3, 1, n + 5)
    yt = rho * xt + rng.normal(0, 1, n) + 0.5
    yc = rho * xc + rng.normal(0, 1, n + 5)
    arr = stats.cuped(yt, yc, xt, xc)
    st_, sc, theta, red = stats.cuped_sums(stats.CovSums.of(yt, xt), stats.CovSums.of(yc, xc))
    assert theta == pytest.approx(arr.theta, rel=1e-6, abs=1e-9)
    assert red == pytest.approx(arr.variance_reduction, rel=1e-6, abs=1e-9)
    ref = stats.Summary.of(arr.treatment)
    assert (st_.n, st_.mean, st_.var) == pytest.approx((ref.n, ref.mean, ref.var), rel=1e-6)
    assert sc.mean == pytest.approx(float(np.mean(arr.control)), rel=1e-6, abs=1e-9)
    # the adjusted cohorts' third and fourth central moments from the power sums
    scale = ref.var ** 1.5
    assert st_.k3 is not None and st_.m4 is not None and ref.k3 is not None and ref.m4 is not None
    assert st_.k3 / scale == pytest.approx(ref.k3 / scale, abs=1e-6)
    assert st_.m4 / ref.var**2 == pytest.approx(ref.m4 / ref.var**2, rel=1e-6)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0, 10), min_size=2, max_size=30), st.floats(0.01, 1.0))
def test_weighted_mean_ci_constant_weights_is_plain_mean(values: list[float], p: float) -> None:
    v = np.array(values)
    m, lo, hi, n_eff = stats.weighted_mean_ci(v, np.full(v.size, 1 / p))
    assert m == pytest.approx(v.mean())
    assert lo <= m + 1e-12 and hi >= m - 1e-12
    assert n_eff == pytest.approx(v.size)
    # the standard error is the sandwich one, sqrt(sum (v - m)^2) / n (from sums, so
    # equal values leave a rounding residue of the order of sqrt(eps) * |v|)
    half = (hi - lo) / 2
    assert half == pytest.approx(sps.norm.ppf(0.975) * np.sqrt(((v - v.mean()) ** 2).sum())
                                 / v.size, rel=1e-6, abs=1e-6)


def test_ratio_ci_from_sums_equals_weighted_mean_ci_on_rows() -> None:
    rng = np.random.default_rng(np.random.SeedSequence(2026_12_02))
    v, w = rng.random(50), 1 / rng.uniform(0.1, 1.0, 50)
    y = w * v
    r, lo, hi = stats.ratio_ci(y.sum(), w.sum(), (y * y).sum(), (w * w).sum(), (y * w).sum(), 50)
    m, lo2, hi2, _ = stats.weighted_mean_ci(v, w)
    assert (r, lo, hi) == pytest.approx((m, lo2, hi2), rel=1e-12)
    assert math.isnan(stats.ratio_ci(1.0, 0.0, 1.0, 0.0, 0.0, 5)[0])
    assert stats.weighted_mean_ci([], [])[3] == 0.0
