"""Lift of a user-level metric, each variant vs control (the ``switchboard lift`` CLI is
:mod:`bandit.cli.lift`).

:func:`lift_table` reads per-variant sums of the metric and its pre-exposure covariate
from the store (:meth:`Store.cohort_moments`, computed in the engine) and applies
:mod:`bandit.stats`: Welch difference, Fieller relative lift, always-valid intervals,
CUPED, P(better). :func:`experiment_health` checks the sample ratio against the weights
the store recorded for each period of the experiment (:meth:`Store.record_design`) and
counts cross-exposed units (left out of the lift by default). Only complete cohorts
count: a unit enters the day-N metric once its day N is entirely in the past. See
docs/statistics.md.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import pandas as pd

from bandit import stats
from bandit.analysis.metrics import METRICS
from bandit.config import ExperimentConfig, VariantConfig
from bandit.errors import InvalidInputError, StoreError
from bandit.events import design_version
from bandit.store.queries import MOMENT_SUMS

if TYPE_CHECKING:
    from collections.abc import Mapping

    from bandit.store.protocol import CohortSource, DesignSource, Store

__all__ = ["BINARY", "GUARDRAIL_COLUMNS", "METRICS", "DesignPeriod", "ExperimentHealth",
           "decided_by", "experiment_health", "guardrail_table", "lift_table",
           "record_design_change"]

def _experiment_config(experiment: ExperimentConfig | str, observed: list[str]) -> ExperimentConfig:
    """The configured experiment, or for a bare id its variants as observed (the
    default control when it is one of them). Weights here are placeholders: the sample
    ratio is tested against the recorded design (:func:`experiment_health`), never
    against an assumed split."""
    if isinstance(experiment, ExperimentConfig):
        return experiment
    cfg = ExperimentConfig(id=experiment)
    control = cfg.control if cfg.control in observed else sorted(observed)[0]
    variants = tuple(VariantConfig(v, 1.0, "fixed") for v in sorted(observed))
    return dataclasses.replace(cfg, control=control, variants=variants)


# ---------------------------------------------------------------------- health


@dataclass(frozen=True)
class DesignPeriod:
    """One weight set of an experiment: in force from ``since_ms`` (None: throughout)."""

    since_ms: int | None
    weights: dict[str, float]


@dataclass(frozen=True)
class ExperimentHealth:
    """Sample ratio and cross-exposure of an experiment, as of a time."""

    experiment_id: str
    #: where the weights came from: "store" (recorded design), "config", or "none"
    source: str
    periods: tuple[DesignPeriod, ...]
    #: units per variant (first exposure before as_of; cross-exposed not included)
    units: dict[str, int]
    #: units seen in more than one variant
    cross_exposed: int
    #: SRM p-value, Bonferroni-combined over the periods tested; NaN when not tested
    srm_p: float
    srm_flag: bool
    #: the SRM finding in words
    srm_detail: str


def _recorded_periods(design: pd.DataFrame) -> tuple[DesignPeriod, ...]:
    """The periods of :meth:`Store.experiment_design`'s rows, in time order."""
    return tuple(
        DesignPeriod(int(since), {str(v): float(w) for v, w in
                                  zip(g["variant"], g["weight"], strict=True)})
        for since, g in design.groupby("since_ms", sort=True))


def _design_periods(store: DesignSource, experiment: ExperimentConfig | str,
                    exp_id: str) -> tuple[str, tuple[DesignPeriod, ...]]:
    try:
        design = store.experiment_design(exp_id)
    except StoreError:  # a store from before the designs table: nothing recorded
        design = pd.DataFrame()
    if not design.empty:
        return "store", _recorded_periods(design)
    if isinstance(experiment, ExperimentConfig):
        return "config", (DesignPeriod(None, {v.name: v.weight for v in experiment.variants}),)
    return "none", ()


def record_design_change(store: Store, experiment_id: str, weights: Mapping[str, float],
                         since_ms: int) -> bool:
    """Record ``weights`` as ``experiment_id``'s design from ``since_ms`` on, unless the
    recorded design already says so. Returns whether a period was recorded.

    The period in force at ``since_ms`` (the latest recorded at or before it; before
    every recorded period, the first, which covers earlier units anyway) is compared by
    :func:`bandit.events.design_version` (the normalised shares): the same shares add
    nothing, so an allocation server's restart, a second server with the same weights
    and a replay of the design events write nothing new, while a weight change opens a
    new period at ``since_ms``. Called by the learner's sink for each
    :class:`bandit.events.DesignEvent`, in topic order.
    """
    design = store.experiment_design(experiment_id)
    if not design.empty:
        periods = _recorded_periods(design)
        before = [p for p in periods if p.since_ms is not None and p.since_ms <= since_ms]
        current = (before or [periods[0]])[-1]
        if design_version(experiment_id, current.weights.items()) == design_version(
                experiment_id, weights.items()):
            return False
    store.record_design(experiment_id, weights, since_ms)
    return True


def _when(ms: int | None) -> str:
    if ms is None:
        return "throughout"
    when = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    return f"since {when:%Y-%m-%d %H:%M} UTC"


def experiment_health(store: DesignSource, experiment: ExperimentConfig | str,
                      as_of_ms: int | None = None) -> ExperimentHealth:
    """Sample-ratio mismatch per design period, and cross-exposed units.

    The weights are those the store recorded for the experiment
    (:meth:`Store.record_design`), else those of ``experiment`` when it is a
    configuration; with neither the ratio is not tested (never an assumed equal split).
    Each unit belongs to the period of its first exposure; each period's counts are
    tested against that period's weights (Pearson χ², :func:`bandit.stats.srm_test`)
    and the smallest p-value is Bonferroni-corrected for the number of periods, so a
    mid-experiment weight change is no alarm while a broken split within any period
    is.
    """
    exp_id = experiment.id if isinstance(experiment, ExperimentConfig) else experiment
    source, periods = _design_periods(store, experiment, exp_id)
    bounds = [p.since_ms for p in periods[1:] if p.since_ms is not None]
    counts = store.exposure_periods(exp_id, bounds, as_of_ms)
    units = {str(v): int(n) for v, n in counts.groupby("variant")["units"].sum().items()}
    cross = int(counts["cross_exposed"].sum()) if not counts.empty else 0
    if not periods:
        return ExperimentHealth(exp_id, source, periods, units, cross, math.nan, False,
                                "sample ratio not tested: no design recorded for this "
                                "experiment")
    ps: list[tuple[float, int]] = []
    for k, period in enumerate(periods):
        part = counts[counts["period"] == k]
        observed = {str(v): int(n) for v, n in zip(part["variant"], part["units"], strict=True)}
        if sum(observed.values()) == 0:
            continue
        weights = {**dict.fromkeys(observed, 0.0), **period.weights}
        ps.append((stats.srm_test(observed, weights).p_value, k))
    if not ps:
        return ExperimentHealth(exp_id, source, periods, units, cross, math.nan, False,
                                "sample ratio not tested yet: no exposed unit")
    p_min, k_min = min(ps)
    p = min(1.0, p_min * len(ps))
    flag = p < stats.SRM_ALPHA
    n_p = f"{len(ps)} weight period{'s' if len(ps) > 1 else ''}"
    if flag:
        per = periods[k_min]
        part = counts[counts["period"] == k_min]
        seen = ", ".join(f"{v}: {n:,}" for v, n in zip(part["variant"], part["units"],
                                                         strict=True))
        want = ", ".join(f"{v}: {w:g}" for v, w in per.weights.items())
        detail = (f"sample-ratio mismatch {_when(per.since_ms)} (χ² p = {p:.2g} over {n_p}): "
                  f"units {seen} do not match the weights {want}")
    else:
        detail = f"sample ratio as designed (χ² p = {p:.2g} over {n_p}, weights from {source})"
    return ExperimentHealth(exp_id, source, periods, units, cross, p, flag, detail)


@dataclass(frozen=True)
class _Cohorts:
    config: ExperimentConfig
    #: variant -> units exposed before as_of (for SRM)
    exposed: dict[str, int]
    #: variant -> sums over units whose horizon is complete
    sums: dict[str, stats.CovSums]


def _cohorts(store: CohortSource, experiment: ExperimentConfig | str, metric: str,
             as_of_ms: int | None, include_cross_exposed: bool = False) -> _Cohorts:
    if metric not in METRICS:
        raise InvalidInputError("metric", metric, f"must be one of {sorted(METRICS)}")
    exp_id = experiment.id if isinstance(experiment, ExperimentConfig) else experiment
    col, cov = METRICS[metric]
    m = store.cohort_moments(exp_id, col, cov, as_of_ms,
                             include_cross_exposed=include_cross_exposed)
    m = m[m["n_exposed"] > 0]
    if m.empty:
        known = store.experiments()
        raise InvalidInputError("experiment", exp_id,
                                f"has no exposed units (known experiments: {known or 'none'})")
    cfg = _experiment_config(experiment, sorted(m["variant"]))
    exposed = {str(r.variant): int(r.n_exposed) for r in m.itertuples()}
    sums = {str(r.variant): stats.CovSums(int(r.n), **{k: float(getattr(r, k)) for k in MOMENT_SUMS})
            for r in m.itertuples()}
    return _Cohorts(cfg, exposed, sums)


#: metrics whose per-unit values are 0/1 (their means and intervals live in [0, 1])
BINARY: Final = frozenset(m for m in METRICS if m.endswith("_retention"))


def decided_by(alpha: float) -> str:
    """The interval every lift verdict is decided by, in words (shown beside it)."""
    return f"always-valid {1 - alpha:.0%} interval of the relative lift"


def _verdict(seq_low: float, seq_high: float, alpha: float) -> str:
    """The call, from the always-valid relative interval alone (see :func:`decided_by`)."""
    lvl = f"{1 - alpha:.0%}"
    if seq_low > 0:
        return f"better than control (always-valid {lvl} interval excludes 0)"
    if seq_high < 0:
        return f"worse than control (always-valid {lvl} interval excludes 0)"
    return f"no detectable difference yet (always-valid {lvl} interval includes 0)"


def _summary(s: stats.CovSums | None, binary: bool = False) -> stats.Summary | None:
    """The cohort's summary; ``binary`` (a 0/1 metric) marks it so when its sums are those
    of 0/1 values (Σy = Σy²), which selects the score intervals for proportions."""
    if s is None or s.n < 2:
        return None
    return stats.Summary.from_sums(s.n, s.sy, s.syy, s.syyy, s.syyyy,
                                   binary=binary and s.sy == s.syy)


_NAN = math.nan
_NUMBERS: Final = ("abs_diff", "abs_ci_low", "abs_ci_high", "seq_abs_ci_low", "seq_abs_ci_high",
                   "rel_lift", "rel_ci_low", "rel_ci_high", "seq_ci_low", "seq_ci_high",
                   "p_value", "prob_better")


def _matured(metric: str) -> str:
    """What a unit needs for ``metric``, in words: "day-30 in the past"."""
    days = METRICS[metric][0].rsplit("_", 1)[-1].lstrip("d")
    return f"day-{days} in the past"


#: the fixed-horizon columns (from the raw 0/1 counts for a 0/1 metric)
_FIXED: Final = ("abs_diff", "abs_ci_low", "abs_ci_high", "rel_lift", "rel_ci_low",
                 "rel_ci_high", "p_value")


def _row_numbers(fixed: tuple[stats.Summary, stats.Summary],
                 seq: tuple[stats.Summary, stats.Summary], *, alpha: float,
                 planned_n: int, binary: bool) -> dict[str, float]:
    """Every interval of one comparison; NaN where the data give none (never raises).

    ``fixed`` gives the estimates and fixed-horizon intervals (for a 0/1 metric the raw
    counts, whose score intervals hold at small counts), ``seq`` the always-valid
    intervals and P(better) (CUPED-adjusted when asked for).
    """
    out = dict.fromkeys(_NUMBERS, _NAN)
    (ft, fc), (st, sc) = fixed, seq
    out["abs_diff"] = ft.mean - fc.mean
    if fc.mean != 0:
        out["rel_lift"] = ft.mean / fc.mean - 1
    try:
        diff = stats.absolute_diff(ft, fc, alpha=alpha)
        out.update(abs_ci_low=diff.ci_low, abs_ci_high=diff.ci_high, p_value=diff.p_value)
        rel = stats.relative_lift(ft, fc, alpha=alpha)
        out.update(rel_ci_low=rel.ci_low, rel_ci_high=rel.ci_high)
    except InvalidInputError:
        pass
    try:
        seq_d = stats.sequential_diff(st, sc, alpha=alpha, planned_n=planned_n)
    except InvalidInputError:
        return out
    slo, shi = seq_d.ci_low, seq_d.ci_high
    if binary:  # a difference of two proportions lies in [-1, 1]
        slo, shi = min(max(slo, -1.0), 1.0), min(max(shi, -1.0), 1.0)
    out.update(seq_abs_ci_low=slo, seq_abs_ci_high=shi, prob_better=stats.prob_better(st, sc))
    try:
        seq_r = stats.sequential_lift(st, sc, alpha=alpha, planned_n=planned_n)
    except InvalidInputError:
        return out
    out.update(seq_ci_low=seq_r.ci_low, seq_ci_high=seq_r.ci_high)
    return out


def lift_table(
    store: CohortSource,
    experiment: ExperimentConfig | str,
    metric: str = "day30_engagement",
    as_of_ms: int | None = None,
    cuped: bool = True,
    *,
    alpha: float = 0.05,
    planned_n: int | None = None,
    min_units: int = stats.MIN_UNITS,
    include_cross_exposed: bool = False,
    health: ExperimentHealth | None = None,
) -> pd.DataFrame:
    """One row per non-control variant: the metric vs control with every interval.

    Computed from per-variant sums (:meth:`Store.cohort_moments`) — identical to the
    per-unit computation of :mod:`bandit.stats` on :meth:`Store.unit_metrics`.

    Every row has a ``verdict`` in words, decided by the interval named in
    ``decided_by`` (the always-valid relative interval ``seq_ci_low``/``seq_ci_high``,
    which excludes 0 exactly when the always-valid difference interval does) — or, when
    the cohorts cannot be compared yet (empty, all zero, no variation, fewer than
    ``min_units`` per arm), a sentence saying so, with ``status`` ``"too early"`` and the
    intervals NaN where none exists. ``planned_n`` (total units) tunes the always-valid
    interval; it must be fixed in advance, and defaults to
    :data:`bandit.stats.DEFAULT_PLANNED_N`, never to the data. Relative columns
    (``rel_*``, ``seq_*``) are fractions (0.2 = +20 %); ``rel_ci_high`` is inf when the
    control mean is not yet distinguishable from zero. Raises
    :class:`InvalidInputError` only for a wrong request (unknown metric, experiment
    with no exposure at all).

    ``store`` is a :class:`~bandit.store.protocol.Store` or any
    :class:`~bandit.store.protocol.CohortSource` (then ``health`` must be given). The
    sample ratio is tested per design period (:func:`experiment_health`, or the
    ``health`` given); a mismatch makes the verdict "do not trust". Units exposed to more
    than one variant are left out (``cross_exposed`` counts them) unless
    ``include_cross_exposed``, where they count in their first variant.
    """
    c = _cohorts(store, experiment, metric, as_of_ms, include_cross_exposed)
    cfg = c.config
    if health is None:
        from bandit.store.protocol import DesignSource

        if not isinstance(store, DesignSource):
            raise InvalidInputError("health", None, "must be given when the store is a view "
                                    "without the recorded design (experiment_health)")
        health = experiment_health(store, experiment, as_of_ms)
    h = health
    n_plan = planned_n if planned_n is not None else stats.DEFAULT_PLANNED_N
    if n_plan < 2:
        raise InvalidInputError("planned_n", n_plan, "must be >= 2 units")
    control = c.sums.get(cfg.control)
    rows: list[dict[str, Any]] = []
    for v in cfg.variants:
        if v.name == cfg.control:
            continue
        treat = c.sums.get(v.name)
        binary = metric in BINARY
        raw_t, raw_c = _summary(treat, binary), _summary(control, binary)
        why = stats.degenerate_reason(raw_t, raw_c, min_units=min_units,
                                      what=_matured(metric))
        reduction = 0.0
        numbers = dict.fromkeys(_NUMBERS, _NAN)
        if raw_t is not None and raw_c is not None and treat is not None and control is not None:
            at, ac = raw_t, raw_c
            if cuped:
                at, ac, _theta, reduction = stats.cuped_sums(treat, control)
            # a 0/1 metric's fixed-horizon intervals come from its raw counts (an adjusted
            # 0/1 outcome is no longer a count); the always-valid ones take CUPED's gain
            fixed = (raw_t, raw_c) if raw_t.binary and raw_c.binary else (at, ac)
            numbers = _row_numbers(fixed, (at, ac), alpha=alpha, planned_n=n_plan,
                                   binary=binary)
        if why is not None and stats.degenerate_reason(raw_t, raw_c, min_units=2) is not None:
            # nothing to call (empty, all zero, no variation): no always-valid figure,
            # even if the CUPED adjustment would manufacture some spread; a 0/1 metric
            # keeps its score intervals (0 of 100 against 5 of 100 has one)
            keep = _FIXED if raw_t is not None and raw_t.binary else ()
            numbers = {k: (numbers[k] if k in keep else _NAN) for k in _NUMBERS}
        if why is None and not math.isfinite(numbers["seq_ci_low"]):
            why = "no interval yet: the cohorts are too thin for a relative lift"
        if h.srm_flag:
            status, verdict = "srm", f"{h.srm_detail}: do not trust this comparison"
        elif why is not None:
            status, verdict = "too early", why
        else:
            status = "called"
            verdict = _verdict(numbers["seq_ci_low"], numbers["seq_ci_high"], alpha)
        rows.append({
            "experiment_id": cfg.id, "metric": metric, "variant": v.name,
            "control": cfg.control,
            "n": 0 if raw_t is None else raw_t.n, "n_control": 0 if raw_c is None else raw_c.n,
            "mean": _NAN if raw_t is None else raw_t.mean,
            "mean_control": _NAN if raw_c is None else raw_c.mean,
            **numbers, "cuped": bool(cuped), "variance_reduction": reduction,
            "srm_p": h.srm_p, "srm_flag": h.srm_flag, "srm_detail": h.srm_detail,
            "design_source": h.source, "weight_periods": len(h.periods),
            "cross_exposed": h.cross_exposed,
            "cross_exposed_excluded": not include_cross_exposed, "planned_n": n_plan,
            "status": status, "verdict": verdict, "decided_by": decided_by(alpha),
        })
    return pd.DataFrame(rows)


GUARDRAIL_COLUMNS: Final = ("metric", "variant", "status", "estimate", "ci_low", "ci_high",
                            "margin", "level", "detectable_drop", "n", "n_for_margin",
                            "detail")


def guardrail_table(store: CohortSource, experiment: ExperimentConfig | str,
                    as_of_ms: int | None = None, *, alpha: float = 0.05) -> pd.DataFrame:
    """Each configured guardrail metric of each variant vs control (non-inferiority).

    A one-sided test at level ``alpha`` (``level`` = 1-α, stated in ``detail``), with
    the drop it would detect at the current size; a metric whose cohorts cannot be
    compared yet has status ``"no data"`` and the reason in ``detail``. The frame has
    its columns (:data:`GUARDRAIL_COLUMNS`) even when there is no guardrail.
    """
    exp_id = experiment.id if isinstance(experiment, ExperimentConfig) else experiment
    cfg = experiment if isinstance(experiment, ExperimentConfig) else None
    rows: list[dict[str, Any]] = []
    guard_names = (cfg or ExperimentConfig(id=exp_id)).guardrails
    for metric in guard_names:
        if metric not in METRICS:
            raise InvalidInputError("experiment.guardrails", metric,
                                    f"must be one of {sorted(METRICS)}")
        c = _cohorts(store, experiment, metric, as_of_ms)
        margin = c.config.guardrail_margin
        for v in c.config.variants:
            if v.name == c.config.control:
                continue
            binary = metric in BINARY
            t = _summary(c.sums.get(v.name), binary)
            k = _summary(c.sums.get(c.config.control), binary)
            why = stats.degenerate_reason(t, k, min_units=2, what=_matured(metric))
            if why is None and t is not None and k is not None:
                try:
                    g = stats.guardrail(metric, t, k, margin=margin, alpha=alpha)
                except InvalidInputError as exc:
                    why = str(exc)
            if why is not None or t is None or k is None:
                rows.append({"metric": metric, "variant": v.name, "status": "no data",
                             "estimate": _NAN, "ci_low": _NAN, "ci_high": _NAN,
                             "margin": margin, "level": 1 - alpha, "detectable_drop": _NAN,
                             "n": 0 if t is None or k is None else min(t.n, k.n),
                             "n_for_margin": 0, "detail": why})
                continue
            rows.append({"metric": metric, "variant": v.name, "status": g.status,
                         "estimate": g.estimate, "ci_low": g.ci_low, "ci_high": g.ci_high,
                         "margin": g.margin, "level": g.level,
                         "detectable_drop": g.detectable_drop, "n": g.n,
                         "n_for_margin": g.n_for_margin, "detail": g.describe()})
    return pd.DataFrame(rows, columns=list(GUARDRAIL_COLUMNS))
