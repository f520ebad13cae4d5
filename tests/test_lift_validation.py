"""Validation of the lift intervals against planted truth (tests/lift_grid.py).

The heavy grid (``@pytest.mark.validation``, ``make validate``): 4 distributions × 4 sizes
× 4 planted lifts, 2,000 experiments per cell, 30 daily looks, seeds from
``SeedSequence(lift_grid.ROOT_SEED).spawn``. With 2,000 experiments the binomial
standard error of a 5 % rate is 0.49 percentage points, so the bands of the issue
(false positives 3–6 %, coverage 93–97 %, each tail ≤ 3.5 %) sit about 2–3 SE from the
nominal rates: a correct method fails one given cell with probability ≈ 1–2 %, which is
why the seeds are fixed (a fresh seed could fail somewhere in 64 cells; a broken method
fails most of them); the lower bands ("not needlessly conservative") allow one
Monte-Carlo standard error (``CONSERVATIVE_ALLOWANCE``). No cell is exempt: the 0/1
distributions use the Miettinen–Nurminen score intervals, which hold the bands down to
p = 0.02 at n = 100 (two expected events per arm); their fixed-horizon figures are exact
(every pair of counts enumerated, :func:`lift_grid.exact_fixed_misses`), and the default
run checks the small-count ones (``test_score_intervals_exact_level_at_small_counts``).

The light version (default run, a few seconds): five cells of 400 experiments, with
bands set from the binomial distribution so a correct method fails with probability
< 0.5 % per check at its nominal rate — and a check that the previous delta-method
interval fails the same test, so the test can fail; and two small-n cells of 20,000
experiments where each tail of the difference interval must hold at least half its
share (a floor at Welch's variance did not).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from bandit import stats
from tests import lift_grid as grid

SEEDS = grid.grid_seeds()


def _cell(key: tuple[str, int, float], sims: int) -> grid.Cell:
    return grid.run_cell(*key, sims, SEEDS[key])


def _at_least(share: float, bound: float, sims: int) -> bool:
    """``share >= bound`` on the count scale (shares are counts / sims, so 30 / 2000
    + 30 / 2000 must read as 3 %, whatever the floating-point sum)."""
    return round(share * sims) >= round(bound * sims)


#: allowance on the "not needlessly conservative" side only: one Monte-Carlo standard
#: error of a 5 % rate at 2,000 experiments (0.49 pp). A method whose true miss rate is
#: 3.3 % reads below 3 % in a given cell about a quarter of the time; validity bounds
#: (at most 6 % / 7 % missed, each tail at most 3.5 %) get no allowance.
CONSERVATIVE_ALLOWANCE = math.sqrt(0.05 * 0.95 / 2000)


# ---------------------------------------------------------------------- heavy


@pytest.mark.validation
@pytest.mark.parametrize("key", [k for k in SEEDS if k[2] == 0.0],
                         ids=[f"{d}-n{n}" for d, n, lift in SEEDS if lift == 0.0])
def test_aa_false_positives_fixed_and_always_valid(key: tuple[str, int, float]) -> None:
    c = _cell(key, 2000)
    for name, miss, tails in (("relative", c.rel_miss, (c.rel_below, c.rel_above)),
                              ("absolute", c.abs_miss, (c.abs_below, c.abs_above))):
        assert miss <= 0.06, (name, c)
        assert max(tails) <= 0.035, (name, c)
        assert _at_least(miss, 0.03 - CONSERVATIVE_ALLOWANCE, c.sims), (
            name, "needlessly conservative", c)
    assert c.seq_rel_cross <= 0.05 and c.seq_abs_cross <= 0.05, c


@pytest.mark.validation
@pytest.mark.parametrize("key", [k for k in SEEDS if k[2] > 0.0],
                         ids=[f"{d}-n{n}-lift{lift:+.2f}" for d, n, lift in SEEDS if lift > 0])
def test_planted_lift_coverage_of_the_relative_interval(key: tuple[str, int, float]) -> None:
    c = _cell(key, 2000)
    assert max(c.rel_below, c.rel_above) <= 0.035, c
    assert c.rel_miss <= 0.07, c
    assert _at_least(c.rel_miss, 0.03 - CONSERVATIVE_ALLOWANCE, c.sims), (
        "needlessly conservative", c)
    assert c.seq_rel_cross <= 0.05, c


@pytest.mark.validation
@pytest.mark.parametrize("key", [k for k in SEEDS if k[2] > 0.0],
                         ids=[f"{d}-n{n}-lift{lift:+.2f}" for d, n, lift in SEEDS if lift > 0])
def test_planted_lift_coverage_of_the_absolute_interval(key: tuple[str, int, float]) -> None:
    c = _cell(key, 2000)
    assert max(c.abs_below, c.abs_above) <= 0.035, c
    assert c.abs_miss <= 0.07, c
    assert _at_least(c.abs_miss, 0.03 - CONSERVATIVE_ALLOWANCE, c.sims), (
        "needlessly conservative", c)


# ---------------------------------------------------------------------- light


def _upper(rate: float, sims: int, p: float = 0.995) -> float:
    """The share a method with true ``rate`` stays under with probability ``p``."""
    return float(sps.binom.ppf(p, sims, rate)) / sims


LIGHT = [("log-normal", 200, 0.0), ("zero-inflated", 100, 0.0), ("p=0.02", 1000, 0.0),
         ("zero-inflated", 200, 0.68), ("p=0.3", 1000, 0.20)]


@pytest.mark.parametrize("key", LIGHT, ids=[f"{d}-n{n}-lift{lift:+.2f}" for d, n, lift in LIGHT])
def test_light_grid_cell_holds_its_level(key: tuple[str, int, float]) -> None:
    """400 experiments: miss ≤ the 99.5 % binomial quantile at 5 %, each tail ≤ that at
    2.5 %, always-valid crossing ≤ that at 5 % — for the relative and the absolute
    intervals."""
    sims = 400
    c = _cell(key, sims)
    assert c.rel_miss <= _upper(0.05, sims), c
    assert max(c.rel_below, c.rel_above) <= _upper(0.025, sims), c
    assert c.seq_rel_cross <= _upper(0.05, sims), c
    assert c.abs_miss <= _upper(0.05, sims), c
    assert max(c.abs_below, c.abs_above) <= _upper(0.025, sims), c
    if key[2] == 0.0:
        assert c.seq_abs_cross <= _upper(0.05, sims), c


def test_light_grid_catches_the_previous_delta_method() -> None:
    """The same draws judged with the delta-method interval (the one this replaced):
    zero-inflated engagement at n = 200, A/A — its lower tail is far above 2.5 %."""
    sims, key = 400, ("zero-inflated", 200, 0.0)
    lk = grid.simulate(*key, sims, SEEDS[key])
    mt, vt, mc, vc = (a[:, -1] for a in (lk.mean_t, lk.var_t, lk.mean_c, lk.var_c))
    n = lk.n[-1]
    se = np.sqrt(vt / (n * mc**2) + mt**2 * vc / (n * mc**4))
    est = mt / mc - 1
    below = float((est + 1.96 * se < 0).mean())
    assert below > _upper(0.025, sims), below
    # while Fieller on the same draws holds (the cell above)
    assert _cell(key, sims).rel_below <= _upper(0.025, sims)


def test_light_grid_catches_welchs_difference_interval() -> None:
    """The same draws judged with Welch's interval of the difference (the one
    :func:`bandit.stats.diff_bounds` replaced): zero-inflated engagement at n = 200 with
    a +68 % lift — its lower tail (interval below the truth) is far above 2.5 %, while
    the cell above holds."""
    sims, key = 400, ("zero-inflated", 200, 0.68)
    lk = grid.simulate(*key, sims, SEEDS[key])
    mt, vt, mc, vc = (a[:, -1] for a in (lk.mean_t, lk.var_t, lk.mean_c, lk.var_c))
    n = lk.n[-1]
    q = stats.welch_quantile(vt / n, vc / n, n, n, 0.975)
    truth = grid.true_mean(key[0]) * key[2]
    below = float((mt - mc + q * np.sqrt((vt + vc) / n) < truth).mean())
    assert below > _upper(0.025, sims), below
    assert _cell(key, sims).abs_below <= _upper(0.025, sims)


#: cells where a floor at Welch's variance made the difference interval lopsided
BALANCE = [("zero-inflated", 100, 0.20), ("zero-inflated", 200, 0.68)]


@pytest.mark.parametrize("key", BALANCE, ids=[f"{d}-n{n}-lift{lift:+.2f}" for d, n, lift in BALANCE])
def test_absolute_interval_tails_balance_at_small_n(key: tuple[str, int, float]) -> None:
    """20,000 experiments (independent of the grid's seeds), one look: each tail of the
    difference interval holds at least half its 2.5 % share, and at most 3.5 %. A floor
    at Welch's variance on the bound nearer 0 (the previous :func:`bandit.stats.diff_bounds`)
    left that tail at 0.79 % and 0.51 % on these draws (and Welch's interval puts 3.4 %
    and 6.1 % in the other); a method whose tail is 2 % fails the lower check with
    probability < 1e-12."""
    sims, (dist, n, lift) = 20_000, key
    seed = np.random.SeedSequence(grid.ROOT_SEED + 3).spawn(len(BALANCE))[BALANCE.index(key)]
    lk = grid.simulate(dist, n, lift, sims, seed, days=1)
    _lo, _hi, _ok, lo, hi, _has = grid.fixed_bounds(
        dist, n, n, lk.mean_t[:, 0], lk.var_t[:, 0], lk.mean_c[:, 0], lk.var_c[:, 0],
        (lk.k3_t[:, 0], lk.k3_c[:, 0]), (lk.m4_t[:, 0], lk.m4_c[:, 0]))
    truth = grid.true_mean(dist) * lift
    below, above = float((hi < truth).mean()), float((lo > truth).mean())
    assert 0.0125 <= min(below, above) and max(below, above) <= 0.035, (below, above)


@pytest.mark.parametrize("sizes", [(300, 280), (900, 100)])
def test_grid_kernels_are_the_scalar_functions(sizes: tuple[int, int]) -> None:
    """The vectorised kernels the grid uses (:func:`tests.lift_grid.fixed_bounds` on the
    moments :func:`tests.lift_grid._moments` computes from power sums) give what
    lift_table's functions give on the per-unit values and on the store's sums."""
    rng = np.random.default_rng(SEEDS[LIGHT[0]])
    t, c = rng.lognormal(0, 1.5, sizes[0]), rng.lognormal(0, 1.5, sizes[1])
    st, sc = stats.Summary.of(t), stats.Summary.of(c)
    power = [tuple(np.array([[float(np.sum(a ** k))]]) for k in (1, 2, 3, 4)) for a in (t, c)]
    (mt, vt, kt, qt), (mc, vc, kc, qc) = (
        (x[:, 0] for x in grid._moments(p, np.array([float(a.size)])))
        for p, a in zip(power, (t, c), strict=True))
    assert (float(kt[0]), float(qt[0])) == pytest.approx((st.k3, st.m4), rel=1e-8)
    lo, hi, _ok, dlo, dhi, _has = grid.fixed_bounds("log-normal", st.n, sc.n, mt, vt, mc, vc,
                                                    (kt, kc), (qt, qc))
    r = stats.relative_lift(t, c)
    assert (float(lo[0]), float(hi[0])) == pytest.approx((r.ci_low, r.ci_high), rel=1e-7)
    d = stats.absolute_diff(t, c)
    assert (float(dlo[0]), float(dhi[0])) == pytest.approx((d.ci_low, d.ci_high), rel=1e-7)
    sums = [stats.Summary.from_sums(a.size, *(float(np.sum(a ** k)) for k in (1, 2, 3, 4)))
            for a in (t, c)]
    r2 = stats.relative_lift(*sums)
    assert (r2.ci_low, r2.ci_high) == pytest.approx((r.ci_low, r.ci_high), rel=1e-7)
    f = stats.mixture_radius_factor(st.n + sc.n, 0.05, planned_n=1000)
    slo, shi, sse = stats.sequential_bounds(st.mean, st.var, st.n, sc.mean, sc.var, sc.n, f)
    s = stats.sequential_lift(t, c, planned_n=1000)
    assert (float(slo), float(shi)) == pytest.approx((s.ci_low, s.ci_high), rel=1e-12)
    sd = stats.sequential_diff(t, c, planned_n=1000)
    assert float(sse) == pytest.approx(sd.se, rel=1e-12)


@pytest.mark.parametrize("n", [100, 200])
@pytest.mark.parametrize("lift", grid.LIFTS)
def test_score_intervals_exact_level_at_small_counts(n: int, lift: float) -> None:
    """p = 0.02 at 100 and 200 units per arm (2 and 4 expected events): the relative and
    absolute score intervals miss 3–6 % (A/A) or 3–7 % (planted lift), neither tail above
    3.5 % — exactly, with no Monte-Carlo error, so no allowance."""
    rb, ra, db, da = grid.exact_fixed_misses(0.02, n, lift)
    top = 0.06 if lift == 0 else 0.07
    for below, above in ((rb, ra), (db, da)):
        assert 0.03 <= below + above <= top, (below, above)
        assert max(below, above) <= 0.035, (below, above)


# ---------------------------------------------------------------------- unequal arms (issue 15)

UNEQUAL = grid.unequal_seeds()
#: the unequal-arm cells' floor on the total miss rate, in place of the 3 % − one SE of
#: the equal-arm grid: two prices, both on the safe side, are tabled in
#: docs/statistics.md ("Unequal arms"). The guard that keeps the scale-model variance
#: valid for non-multiplicative effects (bandit.stats.guard_se2) widens the interval
#: when the small arm catches a rare large value (zero-inflated, 900 / 100: 1.8–2.5 %
#: total), and with two expected events in the small arm (p = 0.02) one tail of a
#: discrete interval cannot hold its 2.5 % (it reads 0.3–0.6 %, the other 2.3–2.5 %).
UNEQUAL_FLOOR = 0.015


def _check_unequal(below: float, above: float, lift: float) -> None:
    top = 0.06 if lift == 0 else 0.07
    assert below + above <= top, (below, above)
    assert max(below, above) <= 0.035, (below, above)
    assert below + above >= UNEQUAL_FLOOR, (below, above)


@pytest.mark.validation
@pytest.mark.parametrize("key", list(UNEQUAL),
                         ids=[f"{d}-{nt}v{nc}-lift{lift:+.2f}" for d, nt, nc, lift in UNEQUAL])
def test_unequal_arms_fixed_horizon_intervals_hold_their_level(
        key: tuple[str, int, int, float]) -> None:
    """Arms of 900 / 100, 100 / 900 and 1,000 / 100 units, A/A and +20 %, 2,000
    experiments (0/1 cells exact): neither tail of the relative and absolute
    fixed-horizon intervals above 3.5 %, at most 6 % (7 % with a lift) in all, at least
    :data:`UNEQUAL_FLOOR`. Welch's variance put 9–13 % in one tail on the skewed cells,
    the plain score intervals 3.7–4.0 % at p = 0.02."""
    rb, ra, db, da = grid.run_unequal_cell(*key, 2000, UNEQUAL[key])
    _check_unequal(rb, ra, key[3])
    _check_unequal(db, da, key[3])


def test_light_unequal_arms_skewed_metric() -> None:
    """Default run: zero-inflated engagement, 1,000 treatment / 100 control units, A/A, 400
    experiments — each tail of both intervals stays under the 99.5 % binomial quantile at
    2.5 %, where Fieller's interval at Welch's variance (the one before) does not."""
    key = ("zero-inflated", 1000, 100, 0.0)
    rb, ra, db, da = grid.run_unequal_cell(*key, 400, UNEQUAL[key])
    assert max(rb, ra, db, da) <= _upper(0.025, 400), (rb, ra, db, da)
    rng = np.random.default_rng(UNEQUAL[key])  # the same draws, judged the old way
    (mt, vt), (mc, vc) = (
        (m[:, 0], v[:, 0]) for m, v, _k, _q in
        (grid._moments(grid._draw(key[0], rng, 400, np.array([n]), 0.0), np.array([float(n)]))
         for n in (1000, 100)))
    q = stats.welch_quantile(vt / 1000, vc / 100, 1000, 100, 0.975)
    lo, _hi = stats.fieller_bounds(mt, vt / 1000, mc, vc / 100, q)
    assert float((lo > 0).mean()) > _upper(0.025, 400)


def test_light_unequal_arms_proportions_hold_exactly() -> None:
    """Default run, exact: on 900 / 100 units the score intervals hold for the relative
    and absolute lift, A/A and +20 % — 3–6 % and each tail <= 3.5 % for p = 0.3; for
    p = 0.02 (two expected control events) each tail <= 3.5 % and at least
    :data:`UNEQUAL_FLOOR` in all, where the intervals without Gart & Nam's skewness
    correction put 3.9 % in one tail."""
    for lift in grid.UNEQUAL_LIFTS:
        rb, ra, db, da = grid.exact_unequal_misses(0.3, 900, 100, lift)
        for below, above in ((rb, ra), (db, da)):
            assert 0.03 <= below + above <= 0.06 and max(below, above) <= 0.035, (below, above)
        rb, ra, db, da = grid.exact_unequal_misses(0.02, 900, 100, lift)
        _check_unequal(rb, ra, lift)
        _check_unequal(db, da, lift)
    plain = stats.score_ratio_bounds
    xt, xc = np.meshgrid(np.arange(0, 60), np.arange(0, 15), indexing="ij")
    w = np.outer(sps.binom.pmf(np.arange(0, 60), 900, 0.02), sps.binom.pmf(np.arange(0, 15),
                                                                          100, 0.02))
    _lo, hi = plain(xt, 900, xc, 100, float(sps.norm.ppf(0.975)), skew=False)
    assert float(w[hi < 0].sum()) > 0.035


# ------------------------------------------------- always valid on unequal arms (issue 15)

SEQ_UNEQUAL = grid.seq_unequal_seeds()


@pytest.mark.validation
@pytest.mark.parametrize("key", list(SEQ_UNEQUAL),
                         ids=[f"{d}-{nt}v{nc}-lift{lift:+.2f}" for d, nt, nc, lift in SEQ_UNEQUAL])
def test_unequal_arms_always_valid_intervals_hold_under_daily_peeking(
        key: tuple[str, int, int, float]) -> None:
    """90 / 10 both ways and 1,800 / 200 units over 30 daily looks, A/A and +20 %: the
    always-valid relative and absolute intervals ever exclude the truth in at most 5 % of
    2,000 experiments, on every distribution."""
    rel, absolute = grid.run_unequal_sequential_cell(*key, 2000, SEQ_UNEQUAL[key])
    assert rel <= 0.05 and absolute <= 0.05, (rel, absolute)


def test_light_unequal_arms_always_valid_with_daily_peeks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Default run: zero-inflated engagement on 9,000 / 1,000 units, A/A, 30 daily looks,
    400 experiments — the always-valid intervals stay under the 99.5 % binomial quantile at
    5 %, where Welch's variance alone (the boundary before the pooled variance) does not."""
    key = ("zero-inflated", 9000, 1000, 0.0)
    rel, absolute = grid.run_unequal_sequential_cell(*key, 400, SEQ_UNEQUAL[key])
    assert max(rel, absolute) <= _upper(0.05, 400), (rel, absolute)

    def welch_only(mt, vt, nt, mc, vc, nc, f):  # type: ignore[no-untyped-def]
        lo, hi = stats.fieller_bounds(mt, vt / nt, mc, vc / nc, f)
        return lo, hi, np.sqrt(vt / nt + vc / nc)

    monkeypatch.setattr(grid.stats, "sequential_bounds", welch_only)
    old_rel, old_abs = grid.run_unequal_sequential_cell(*key, 400, SEQ_UNEQUAL[key])
    assert min(old_rel, old_abs) > _upper(0.05, 400), (old_rel, old_abs)
