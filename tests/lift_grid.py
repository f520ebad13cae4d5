"""The validation grid of the lift intervals: many simulated experiments, vectorised.

Each cell is a distribution, a size per arm and a planted relative lift. Every simulated
experiment receives its units over ``DAYS`` daily looks (equal arrivals per day and arm);
the fixed-horizon intervals are judged at the last look, the always-valid ones at every
look. The intervals are the production ones, on each arm's power sums Σy … Σy⁴ as the
store has them: :func:`bandit.stats.ratio_bounds` and :func:`bandit.stats.diff_bounds` at
:func:`bandit.stats.fixed_quantile` (fixed horizon, :func:`fixed_bounds`),
:func:`bandit.stats.sequential_bounds` at :func:`bandit.stats.mixture_radius_factor`
tuned for the planned size (always valid; ``d ± factor · se`` with that kernel's se for
the difference) — the kernels of :func:`bandit.stats.relative_lift`,
:func:`bandit.stats.absolute_diff`, :func:`bandit.stats.sequential_lift` and
:func:`bandit.stats.sequential_diff`, which the tests tie to these. For the 0/1
distributions the fixed-horizon intervals are the skew-corrected Miettinen–Nurminen score
intervals (:func:`bandit.stats.score_ratio_bounds`, :func:`bandit.stats.score_diff_bounds`),
as :func:`bandit.stats.relative_lift` and :func:`bandit.stats.absolute_diff` choose for 0/1
outcomes. Their fixed-horizon figures are exact (:func:`exact_fixed_misses`, every pair of
counts) rather than simulated; the always-valid ones, which depend on the path over 30
looks, are simulated for every distribution.
Only the reference methods (the delta method and its log form in :func:`width_comparison`,
Welch's intervals in :func:`off_model_markdown`) are written out here.

Run ``python -m tests.lift_grid`` to print the tables of docs/statistics.md
(``--sims 2000`` is the heavy grid; it takes minutes).
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from typing import Final

import numpy as np
from scipy import stats as sps

from bandit import stats

#: distribution name -> description (see :func:`_draw`)
DISTRIBUTIONS: Final = ("p=0.3", "p=0.02", "log-normal", "zero-inflated")
SIZES: Final = (100, 200, 1_000, 10_000)
LIFTS: Final = (0.0, 0.05, 0.20, 0.68)
DAYS: Final = 30
SIGMA: Final = 1.5
ZERO_SHARE: Final = 0.6
#: the grid's root seed; cells get children of SeedSequence(ROOT_SEED) in grid order
ROOT_SEED: Final = 2026_12_01
#: floats drawn per chunk of experiments (memory bound)
_CHUNK: Final = 4_000_000


def _rate(dist: str) -> float:
    return {"p=0.3": 0.3, "p=0.02": 0.02}[dist]


def true_mean(dist: str) -> float:
    """Control mean of ``dist`` (the treatment's is ``(1 + lift)`` times it)."""
    if dist.startswith("p="):
        return _rate(dist)
    m = math.exp(SIGMA**2 / 2)
    return m * (1 - ZERO_SHARE) if dist == "zero-inflated" else m


def _day_sizes(n: int, days: int) -> np.ndarray:
    cuts = np.ceil(n * np.arange(1, days + 1) / days).astype(np.int64)
    return np.diff(np.concatenate([[0], cuts]))


def _draw(dist: str, rng: np.random.Generator, sims: int, sizes: np.ndarray,
          lift: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per experiment and day: Σy, Σy², Σy³ and Σy⁴ of one arm's new units (sims × days)."""
    if dist.startswith("p="):
        s1 = rng.binomial(sizes[None, :], _rate(dist) * (1 + lift),
                          size=(sims, sizes.size)).astype(np.float64)
        return s1, s1, s1, s1
    n = int(sizes.sum())
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    out = tuple(np.empty((sims, sizes.size)) for _ in range(4))
    step = max(1, _CHUNK // n)
    for i in range(0, sims, step):
        k = min(step, sims - i)
        y = rng.lognormal(0.0, SIGMA, size=(k, n)) * (1 + lift)
        if dist == "zero-inflated":
            y *= rng.random((k, n)) >= ZERO_SHARE
        power = y
        for s in out:
            s[i:i + k] = np.add.reduceat(power, starts, axis=1)
            power = power * y
    return out


def _moments(sums: tuple[np.ndarray, ...], nn: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative mean, sample variance, k₃ and m₄ at each look from per-day power sums —
    :func:`bandit.stats.power_moments`, as :meth:`bandit.stats.Summary.from_sums` has them."""
    c1, c2, c3, c4 = (np.cumsum(s, axis=1) for s in sums)
    return stats.power_moments(nn, c1, c2, c3, c4)


@dataclass(frozen=True)
class Looks:
    """Cumulative per-look moments of both arms (sims × looks)."""

    n: np.ndarray  # units per arm at each look (looks,)
    mean_t: np.ndarray
    var_t: np.ndarray
    mean_c: np.ndarray
    var_c: np.ndarray
    k3_t: np.ndarray
    m4_t: np.ndarray
    k3_c: np.ndarray
    m4_c: np.ndarray


def simulate(dist: str, n: int, lift: float, sims: int, seed: np.random.SeedSequence,
             days: int = DAYS) -> Looks:
    """``sims`` experiments of ``n`` units per arm arriving over ``days`` daily looks."""
    rng = np.random.default_rng(seed)
    sizes = _day_sizes(n, days)
    nn = np.cumsum(sizes).astype(np.float64)
    (mt, vt, kt, qt), (mc, vc, kc, qc) = (
        _moments(_draw(dist, rng, sims, sizes, arm_lift), nn) for arm_lift in (lift, 0.0))
    return Looks(np.cumsum(sizes), mt, vt, mc, vc, kt, qt, kc, qc)


def _has_interval(mt: np.ndarray, vt: np.ndarray, mc: np.ndarray, vc: np.ndarray,
                  n: np.ndarray) -> np.ndarray:
    """Where :mod:`bandit.stats` gives a Fieller interval (no all-zero arm, some spread;
    non-negative data, so a zero mean is an all-zero arm)."""
    return (n >= 2) & (mt > 0) & (mc > 0) & ((vt > 0) | (vc > 0))


def exact_fixed_misses(p: float, n: int, lift: float, alpha: float = 0.05
                       ) -> tuple[float, float, float, float]:
    """Exact probabilities that the fixed-horizon score intervals of :mod:`bandit.stats`
    for 0/1 outcomes lie below / above the truth (relative, then absolute) with ``n``
    units per arm: a sum over every pair of binomial counts with non-negligible
    probability (what is left out weighs < 1e-8). No Monte-Carlo error."""
    return exact_unequal_misses(p, n, n, lift, alpha)


def fixed_bounds(dist: str, n_t: int, n_c: int, mt: np.ndarray, vt: np.ndarray,
                 mc: np.ndarray, vc: np.ndarray, k3: tuple[np.ndarray, np.ndarray],
                 m4: tuple[np.ndarray, np.ndarray], alpha: float = 0.05
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                            np.ndarray]:
    """The fixed-horizon intervals of :mod:`bandit.stats` at one look of ``n_t`` / ``n_c``
    units (``vt``, ``vc`` per-unit sample variances; ``k3``, ``m4`` the arms' third and
    fourth central moments): relative (lo, hi, where it exists) and absolute (lo, hi,
    where it exists) — the kernels of :func:`bandit.stats.relative_lift` and
    :func:`bandit.stats.absolute_diff`."""
    if dist.startswith("p="):  # 0/1 outcomes: the score intervals on the counts
        z = float(sps.norm.ppf(1 - alpha / 2))
        xt, xc = np.rint(mt * n_t), np.rint(mc * n_c)
        lo, hi = stats.score_ratio_bounds(xt, n_t, xc, n_c, z)
        dlo, dhi = stats.score_diff_bounds(xt, n_t, xc, n_c, z)
        every = np.ones(mt.shape, dtype=bool)
        return lo, hi, (xt > 0) | (xc > 0), dlo, dhi, every
    q = stats.fixed_quantile(mt, vt, n_t, mc, vc, n_c, 1 - alpha / 2, m4[0], m4[1])
    lo, hi = stats.ratio_bounds(mt, vt, n_t, mc, vc, n_c, q, k3[0], k3[1], m4[0], m4[1])
    dlo, dhi = stats.diff_bounds(mt, vt / n_t, mc, vc / n_c, n_t, n_c, q, k3[0], k3[1],
                                 m4[0], m4[1])
    return (lo, hi, _has_interval(mt, vt, mc, vc, np.full(mt.shape, min(n_t, n_c))),
            dlo, dhi, vt + vc > 0)


@dataclass(frozen=True)
class Cell:
    dist: str
    n: int
    lift: float
    sims: int
    #: fixed horizon: interval entirely below / above the truth (share of experiments)
    rel_below: float
    rel_above: float
    abs_below: float
    abs_above: float
    #: always valid: excluded the truth at some look (from the burn-in on)
    seq_rel_cross: float
    seq_abs_cross: float
    #: share of experiments with no fixed-horizon relative interval at the last look
    no_interval: float

    @property
    def rel_miss(self) -> float:
        return self.rel_below + self.rel_above

    @property
    def abs_miss(self) -> float:
        return self.abs_below + self.abs_above



def run_cell(dist: str, n: int, lift: float, sims: int, seed: np.random.SeedSequence, *,
             alpha: float = 0.05, burn_in: int = stats.MIN_UNITS) -> Cell:
    """One cell. The always-valid intervals count at every look from ``burn_in`` units per
    arm — where :func:`bandit.analysis.lift.lift_table` starts calling (before, it says "too early
    to call")."""
    lk = simulate(dist, n, lift, sims, seed)
    nn = lk.n.astype(np.float64)[None, :]
    at, ac = lk.var_t / nn, lk.var_c / nn
    ok = _has_interval(lk.mean_t, lk.var_t, lk.mean_c, lk.var_c, nn)
    se = np.sqrt(at + ac)
    d = lk.mean_t - lk.mean_c
    true_d = true_mean(dist) * lift
    # fixed horizon, last look
    lo, hi, last, dlo, dhi, has_d = fixed_bounds(
        dist, n, n, lk.mean_t[:, -1], lk.var_t[:, -1], lk.mean_c[:, -1], lk.var_c[:, -1],
        (lk.k3_t[:, -1], lk.k3_c[:, -1]), (lk.m4_t[:, -1], lk.m4_c[:, -1]), alpha)
    if dist.startswith("p="):  # 0/1 outcomes: exact figures instead of Monte Carlo
        rel_below, rel_above, abs_below, abs_above = exact_fixed_misses(_rate(dist), n, lift,
                                                                        alpha)
    else:
        rel_below = float((last & (hi < lift)).mean())
        rel_above = float((last & (lo > lift)).mean())
        abs_below = float((has_d & (dhi < true_d)).mean())
        abs_above = float((has_d & (dlo > true_d)).mean())
    # always valid, every look, tuned for the planned total 2n
    f = stats.mixture_radius_factor(2 * lk.n, alpha, planned_n=2 * n)[None, :]
    slo, shi, sse = stats.sequential_bounds(lk.mean_t, lk.var_t, nn, lk.mean_c, lk.var_c, nn, f)
    live = nn >= min(burn_in, n)
    rel_cross = (live & ok & ((shi < lift) | (slo > lift))).any(axis=1)
    abs_cross = (live & (se > 0) & (np.abs(d - true_d) > f * sse)).any(axis=1)
    return Cell(dist, n, lift, sims, rel_below, rel_above, abs_below, abs_above,
                float(rel_cross.mean()), float(abs_cross.mean()), float(1 - last.mean()))


def grid_seeds() -> dict[tuple[str, int, float], np.random.SeedSequence]:
    """One child seed per cell of the full grid, in a fixed order (so a cell's draws do
    not depend on which other cells are run)."""
    keys = [(d, n, lift) for d in DISTRIBUTIONS for n in SIZES for lift in LIFTS]
    return dict(zip(keys, np.random.SeedSequence(ROOT_SEED).spawn(len(keys)), strict=True))


def run_grid(sims: int) -> list[Cell]:
    seeds = grid_seeds()
    return [run_cell(d, n, lift, sims, s) for (d, n, lift), s in seeds.items()]


# ---------------------------------------------------------------------- unequal arms

#: (treatment units, control units): the small arm dominates the variance, and its skew
#: no longer cancels against the other arm's as it does for equal arms (issue 15)
UNEQUAL_SIZES: Final = ((900, 100), (100, 900), (1_000, 100))
UNEQUAL_LIFTS: Final = (0.0, 0.20)


def unequal_seeds() -> dict[tuple[str, int, int, float], np.random.SeedSequence]:
    """One child seed per unequal-arm cell, in a fixed order (apart from the main grid's)."""
    keys = [(d, nt, nc, lift) for d in DISTRIBUTIONS for nt, nc in UNEQUAL_SIZES
            for lift in UNEQUAL_LIFTS]
    return dict(zip(keys, np.random.SeedSequence(ROOT_SEED + 4).spawn(len(keys)), strict=True))


def exact_unequal_misses(p: float, n_t: int, n_c: int, lift: float, alpha: float = 0.05
                         ) -> tuple[float, float, float, float]:
    """:func:`exact_fixed_misses` for arms of ``n_t`` and ``n_c`` units (the one sum both
    use)."""
    pt, pc = p * (1 + lift), p

    def support(rate: float, n: int) -> np.ndarray:
        return np.arange(int(sps.binom.ppf(1e-10, n, rate)),
                         int(sps.binom.isf(1e-10, n, rate)) + 2)

    kt, kc = support(pt, n_t), support(pc, n_c)
    xt, xc = np.meshgrid(kt, kc, indexing="ij")
    w = np.outer(sps.binom.pmf(kt, n_t, pt), sps.binom.pmf(kc, n_c, pc))
    z = float(sps.norm.ppf(1 - alpha / 2))
    lo, hi = stats.score_ratio_bounds(xt, n_t, xc, n_c, z)
    dlo, dhi = stats.score_diff_bounds(xt, n_t, xc, n_c, z)
    return (float(w[hi < lift].sum()), float(w[lo > lift].sum()),
            float(w[dhi < pt - pc].sum()), float(w[dlo > pt - pc].sum()))


def run_unequal_cell(dist: str, n_t: int, n_c: int, lift: float, sims: int,
                     seed: np.random.SeedSequence, *, alpha: float = 0.05
                     ) -> tuple[float, float, float, float]:
    """Fixed horizon, one look, arms of ``n_t`` / ``n_c`` units: shares of experiments
    whose relative interval lies below / above the truth, then the absolute interval's —
    the production kernels (Fieller at the Welch t quantile and :func:`bandit.stats.diff_bounds`;
    for 0/1 outcomes the score intervals, exactly)."""
    if dist.startswith("p="):
        return exact_unequal_misses(_rate(dist), n_t, n_c, lift, alpha)
    rng = np.random.default_rng(seed)
    (mt, vt, kt, qt), (mc, vc, kc, qc) = (
        (x[:, 0] for x in _moments(_draw(dist, rng, sims, np.array([n]), arm_lift),
                                   np.array([float(n)])))
        for n, arm_lift in ((n_t, lift), (n_c, 0.0)))
    lo, hi, ok, dlo, dhi, has_d = fixed_bounds(dist, n_t, n_c, mt, vt, mc, vc, (kt, kc),
                                               (qt, qc), alpha)
    truth = true_mean(dist) * lift
    return (float((ok & (hi < lift)).mean()), float((ok & (lo > lift)).mean()),
            float((has_d & (dhi < truth)).mean()), float((has_d & (dlo > truth)).mean()))


#: the always-valid intervals on unequal arms: 90 / 10 (both ways) and 1,800 / 200 units
SEQ_UNEQUAL_SIZES: Final = ((9_000, 1_000), (1_000, 9_000), (1_800, 200))


def seq_unequal_seeds() -> dict[tuple[str, int, int, float], np.random.SeedSequence]:
    """One child seed per always-valid unequal-arm cell (apart from every other grid)."""
    keys = [(d, nt, nc, lift) for d in DISTRIBUTIONS for nt, nc in SEQ_UNEQUAL_SIZES
            for lift in UNEQUAL_LIFTS]
    return dict(zip(keys, np.random.SeedSequence(ROOT_SEED + 5).spawn(len(keys)), strict=True))


def run_unequal_sequential_cell(dist: str, n_t: int, n_c: int, lift: float, sims: int,
                                seed: np.random.SeedSequence, *, alpha: float = 0.05,
                                burn_in: int = stats.MIN_UNITS) -> tuple[float, float]:
    """Arms of ``n_t`` / ``n_c`` units arriving over ``DAYS`` daily looks: shares of
    experiments whose always-valid relative / absolute interval ever excludes the truth
    at a look where the smaller arm has ``burn_in`` units (where lift_table calls),
    tuned for the planned n_t + n_c — :func:`bandit.stats.sequential_bounds`."""
    rng = np.random.default_rng(seed)
    arms = []
    for n, arm_lift in ((n_t, lift), (n_c, 0.0)):
        sizes = _day_sizes(n, DAYS)
        nn = np.cumsum(sizes).astype(np.float64)
        mean, var, _k3, _m4 = _moments(_draw(dist, rng, sims, sizes, arm_lift), nn)
        arms.append((mean, var, nn[None, :]))
    (mt, vt, nt), (mc, vc, nc) = arms
    small = np.minimum(nt, nc)
    f = stats.mixture_radius_factor((nt + nc)[0].astype(np.int64), alpha,
                                    planned_n=n_t + n_c)[None, :]
    lo, hi, se = stats.sequential_bounds(mt, vt, nt, mc, vc, nc, f)
    live = small >= burn_in
    ok = _has_interval(mt, vt, mc, vc, small)
    truth = true_mean(dist) * lift
    rel = (live & ok & ((hi < lift) | (lo > lift))).any(axis=1)
    absolute = (live & (se > 0) & (np.abs(mt - mc - truth) > f * se)).any(axis=1)
    return float(rel.mean()), float(absolute.mean())


# ---------------------------------------------------------------------- widths


def width_comparison(dist: str, n: int, lift: float, sims: int,
                     seed: np.random.SeedSequence, *, alpha: float = 0.05) -> dict[str, float]:
    """Median widths (in relative-lift units) of the new intervals and the references
    at one fixed look of ``n`` units per arm: the fixed-horizon interval (new: Fieller; the
    score interval for 0/1 outcomes), delta method
    (the previous interval), delta method on the log ratio, and the always-valid ones
    (new: Fieller set with the mixture factor; previous: delta ± factor · se), the
    always-valid ones tuned for ``2n`` units (their tightest point)."""
    lk = simulate(dist, n, lift, sims, seed, days=1)
    mt, vt, mc, vc = lk.mean_t[:, 0], lk.var_t[:, 0], lk.mean_c[:, 0], lk.var_c[:, 0]
    ok = _has_interval(mt, vt, mc, vc, np.full(sims, n))
    lo, hi = fixed_bounds(dist, n, n, mt[ok], vt[ok], mc[ok], vc[ok],
                          (lk.k3_t[ok, 0], lk.k3_c[ok, 0]), (lk.m4_t[ok, 0], lk.m4_c[ok, 0]),
                          alpha)[:2]
    mt, vt, mc, vc = mt[ok], vt[ok] / n, mc[ok], vc[ok] / n
    f = float(stats.mixture_radius_factor(2 * n, alpha, planned_n=2 * n))
    slo, shi = stats.fieller_bounds(mt, vt, mc, vc, f)
    se_delta = np.sqrt(vt / mc**2 + mt**2 * vc / mc**4)
    z = 1.959963984540054
    se_log = np.sqrt(vt / mt**2 + vc / mc**2)
    ratio = mt / mc
    return {
        "fixed (new)": float(np.median(hi - lo)),
        "delta": float(np.median(2 * z * se_delta)),
        "log-delta": float(np.median(ratio * (np.exp(z * se_log) - np.exp(-z * se_log)))),
        "always-valid (new)": float(np.median(shi - slo)),
        "always-valid (previous)": float(np.median(2 * f * se_delta)),
        "unbounded share": float(np.mean(~np.isfinite(hi))),
    }


# ---------------------------------------------------------------------- report


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def markdown(cells: list[Cell]) -> str:
    aa = [c for c in cells if c.lift == 0]
    lines = [
        f"A/A ({aa[0].sims:,} experiments per cell; % of experiments):",
        "",
        "| distribution | n per arm | relative FPR (below / above) | absolute FPR (below / "
        "above) | always-valid relative, ever crossed (30 looks) | always-valid absolute, "
        "ever crossed | no interval |",
        "|---|---:|---|---|---:|---:|---:|",
    ]
    for c in aa:
        lines.append(
            f"| {c.dist} | {c.n:,} | {_pct(c.rel_miss)} ({_pct(c.rel_below)} / "
            f"{_pct(c.rel_above)}) | {_pct(c.abs_miss)} ({_pct(c.abs_below)} / "
            f"{_pct(c.abs_above)}) | {_pct(c.seq_rel_cross)} | {_pct(c.seq_abs_cross)} | "
            f"{_pct(c.no_interval)} |")
    lines += [
        "",
        "Planted lifts, fixed-horizon relative coverage (% ; interval below / above the "
        "truth) and always-valid relative interval ever excluding the truth:",
        "",
        "| distribution | n per arm | +5 % | +20 % | +68 % | always-valid miss (+5 / +20 / "
        "+68 %) | absolute coverage (below / above): +5 / +20 / +68 % |",
        "|---|---:|---|---|---|---|---|",
    ]
    by = {(c.dist, c.n, c.lift): c for c in cells}
    for d in DISTRIBUTIONS:
        for n in SIZES:
            row = [by[(d, n, lift)] for lift in LIFTS[1:] if (d, n, lift) in by]
            if not row:
                continue
            cov = " | ".join(f"{_pct(1 - c.rel_miss)} ({_pct(c.rel_below)} / "
                             f"{_pct(c.rel_above)})" for c in row)
            seq = " / ".join(_pct(c.seq_rel_cross) for c in row)
            ab = " / ".join(f"{_pct(1 - c.abs_miss)} ({_pct(c.abs_below)} / "
                            f"{_pct(c.abs_above)})" for c in row)
            lines.append(f"| {d} | {n:,} | {cov} | {seq} | {ab} |")
    return "\n".join(lines)


def width_markdown(sims_by_n: dict[int, int]) -> str:
    seeds = np.random.SeedSequence(ROOT_SEED + 1).spawn(64)
    lines = ["| distribution | n per arm | fixed horizon (new) | delta | log-delta | always-valid "
             "(new) | always-valid (previous) | unbounded |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    i = 0
    for d in ("p=0.3", "p=0.02", "log-normal", "zero-inflated"):
        for n, sims in sims_by_n.items():
            w = width_comparison(d, n, 0.20, sims, seeds[i])
            i += 1
            lines.append(
                f"| {d} | {n:,} | {w['fixed (new)']:.4g} | {w['delta']:.4g} | "
                f"{w['log-delta']:.4g} | {w['always-valid (new)']:.4g} | "
                f"{w['always-valid (previous)']:.4g} | {_pct(w['unbounded share'])} % |")
    return "\n".join(lines)


def diff_width_markdown(sims_by_n: dict[int, int]) -> str:
    """Median ratio of the width of :func:`bandit.stats.diff_bounds` to Welch's on the
    skewed distributions, one fixed look of ``n`` units per arm."""
    seeds = np.random.SeedSequence(ROOT_SEED + 2).spawn(64)
    lines = ["| distribution | lift | " + " | ".join(f"n = {n:,}" for n in sims_by_n) + " |",
             "|---|---:|" + "---:|" * len(sims_by_n)]
    i = 0
    for d in ("log-normal", "zero-inflated"):
        for lift in (0.20, 0.68):
            ratios = []
            for n, sims in sims_by_n.items():
                lk = simulate(d, n, lift, sims, seeds[i], days=1)
                i += 1
                mt, mc = lk.mean_t[:, 0], lk.mean_c[:, 0]
                vt, vc = lk.var_t[:, 0] / n, lk.var_c[:, 0] / n
                q = stats.welch_quantile(vt, vc, n, n, 0.975)
                lo, hi = stats.diff_bounds(mt, vt, mc, vc, n, n, q, lk.k3_t[:, 0],
                                           lk.k3_c[:, 0], lk.m4_t[:, 0], lk.m4_c[:, 0])
                ratios.append(float(np.median((hi - lo) / (2 * q * np.sqrt(vt + vc)))))
            lines.append(f"| {d} | {100 * lift:+.0f} % | " + " | ".join(f"{r:.3f}" for r in ratios)
                         + " |")
    return "\n".join(lines)


def unequal_markdown(sims: int) -> str:
    """The unequal-arm fixed-horizon cells (:func:`run_unequal_cell`), % below / above the
    truth, relative then absolute."""
    lines = ["| distribution | arms | lift | relative (below / above) | absolute (below / above) |",
             "|---|---|---:|---|---|"]
    for (d, nt, nc, lift), seed in unequal_seeds().items():
        rb, ra, db, da = run_unequal_cell(d, nt, nc, lift, sims, seed)
        lines.append(f"| {d} | {nt:,} / {nc:,} | {100 * lift:+.0f} % | "
                     f"{_pct(rb + ra)} ({100 * rb:.2f} / {100 * ra:.2f}) | "
                     f"{_pct(db + da)} ({100 * db:.2f} / {100 * da:.2f}) |")
    return "\n".join(lines)


#: effects off the scale model, on unequal arms (name -> treatment and control draws):
#: equal means with a 4:1 variance ratio, and a log-normal treatment with σ = 1.8
OFF_MODEL: Final = ("normal, variance 4:1", "log-normal, σ 1.8 vs 1.5")


def off_model_markdown(sims: int) -> str:
    """Cases where the treatment is not R × control in distribution, unequal arms, % of
    experiments whose fixed-horizon intervals miss the truth (below / above): what the
    guard (:func:`bandit.stats.guard_se2`) buys."""
    seeds = np.random.SeedSequence(ROOT_SEED + 6).spawn(16)
    lines = ["| case | arms | relative (below / above) | absolute (below / above) "
             "| Welch: relative, absolute |", "|---|---|---|---|---|"]
    i = 0
    for case in OFF_MODEL:
        for nt, nc in ((100, 900), (900, 100), (200, 2_000)):
            rng = np.random.default_rng(seeds[i])
            i += 1
            if case.startswith("normal"):
                yt, yc = rng.normal(10, 2, (sims, nt)), rng.normal(10, 1, (sims, nc))
                truth_r, truth_d = 0.0, 0.0
            else:
                yt, yc = rng.lognormal(0, 1.8, (sims, nt)), rng.lognormal(0, 1.5, (sims, nc))
                mu_t, mu_c = math.exp(1.8**2 / 2), math.exp(1.5**2 / 2)
                truth_r, truth_d = mu_t / mu_c - 1, mu_t - mu_c
            (mt, vt, kt, qt), (mc, vc, kc, qc) = (
                (x[:, 0] for x in _moments(tuple(np.sum(y**k, axis=1, keepdims=True)
                                                 for k in (1, 2, 3, 4)), np.array([float(n)])))
                for y, n in ((yt, nt), (yc, nc)))
            lo, hi, _ok, dlo, dhi, _has = fixed_bounds("off-model", nt, nc, mt, vt, mc, vc,
                                                       (kt, kc), (qt, qc))
            rb, ra = float((hi < truth_r).mean()), float((lo > truth_r).mean())
            db, da = float((dhi < truth_d).mean()), float((dlo > truth_d).mean())
            q = stats.welch_quantile(vt / nt, vc / nc, nt, nc, 0.975)
            wlo, whi = stats.fieller_bounds(mt, vt / nt, mc, vc / nc, q)
            half = q * np.sqrt(vt / nt + vc / nc)
            welch_r = float(((whi < truth_r) | (wlo > truth_r)).mean())
            welch_d = float((np.abs(mt - mc - truth_d) > half).mean())
            lines.append(f"| {case} | {nt:,} / {nc:,} | {_pct(rb + ra)} ({_pct(rb)} / {_pct(ra)}) "
                         f"| {_pct(db + da)} ({_pct(db)} / {_pct(da)}) "
                         f"| {_pct(welch_r)}, {_pct(welch_d)} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sims", type=int, default=2000, help="experiments per cell")
    args = ap.parse_args()
    t0 = time.perf_counter()
    print(markdown(run_grid(args.sims)))
    print()
    print("Median width of the relative-lift interval, planted lift +20 %:")
    print()
    print(width_markdown({100: 2000, 1_000: 2000, 100_000: 100}))
    print()
    print("Width of the difference interval against Welch's (median ratio):")
    print()
    print(diff_width_markdown({100: 2000, 1_000: 2000, 100_000: 100}))
    print()
    print("Unequal arms, fixed horizon:")
    print()
    print(unequal_markdown(args.sims))
    print()
    print("Unequal arms, off the scale model:")
    print()
    print(off_model_markdown(args.sims))
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
