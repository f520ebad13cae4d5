"""The overview's numbers: ``bandit.analysis.lift`` / ``bandit.stats`` results, cached per query.

The statistics are never re-implemented here: lift rows come from
``bandit.analysis.lift.lift_table``, sample-ratio mismatch and guardrails from ``bandit.stats``.
This module caches them (``st.cache_data``), assembles the health banners and shapes the
tables for display.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from bandit.store.queries import MOMENT_POWERS, MOMENT_SUMS
from dashboards import data
from dashboards.transforms import (
    METRICS,
    Banner,
    health_banners,
    lift_display,
    staleness_banner,
)

__all__ = [
    "LIFT_COLUMN_CONFIG",
    "MomentsView",
    "OverviewView",
    "early_read",
    "fallback_banner",
    "fmt_time",
    "lift_table_for_display",
    "lift_view",
    "overview",
    "overview_pairs",
    "projection_history",
]


def fmt_time(ms: int | None) -> str:
    if ms is None:
        return "now (live)"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True)
class OverviewView:
    lift: pd.DataFrame
    sizes: pd.DataFrame
    banners: list[Banner] = field(default_factory=list)
    guardrails: pd.DataFrame | None = None
    skipped: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- cached stats


class CohortView:
    """The slice of the store ``bandit.analysis.lift`` reads, answered from per-unit rows.

    The overview now uses :class:`MomentsView` (one aggregate query); this adapter stays
    for callers that already hold ``Store.unit_metrics`` rows (the Retention page).

    ``lift_table`` asks ``Store.cohort_moments`` per metric, each a scan of the
    engagement table in the engine. The overview needs eight metrics plus guardrails, so
    on an embedded store one per-unit query (``Store.unit_metrics``, shared with the
    sidebar and the Retention page through the cache) and per-variant sums in pandas are
    several times faster than eight scans. The sums are the ones ``cohort_moments``
    defines: per variant, exposed units; units whose horizon is complete (metric not
    null); Σy, Σy², Σx, Σx², Σxy over those (x the CUPED covariate). The test suite checks
    the lift table built on this view against ``lift_table`` on the store itself.
    """

    def __init__(self, units: pd.DataFrame, experiments: Sequence[str]) -> None:
        self._units = units
        self._experiments = list(experiments)

    def cohort_moments(
        self,
        experiment_id: str,
        metric: str,
        covariate: str,
        as_of_ms: int | None = None,
        *,
        include_cross_exposed: bool = False,
    ) -> pd.DataFrame:
        # per-unit rows come from Store.unit_metrics, which leaves cross-exposed units out
        u = self._units
        exposed = u.groupby("variant", sort=True).size().rename("n_exposed")
        ok = u[u[metric].notna()]
        y = ok[metric].astype("float64")
        x = ok[covariate].astype("float64").fillna(0.0)
        parts = pd.DataFrame(
            {"variant": ok["variant"], **{k: y**a * x**b for k, (a, b) in MOMENT_POWERS.items()}}
        )
        sums = parts.groupby("variant", sort=True).sum()
        sums["n"] = ok.groupby("variant", sort=True).size()
        out = pd.concat([exposed, sums], axis=1).fillna(0.0).reset_index(names="variant")
        out["variant"] = out["variant"].astype(str)
        for col in ("n_exposed", "n"):
            out[col] = out[col].astype("int64")
        return out[["variant", "n_exposed", "n", *MOMENT_POWERS]]

    def unit_metrics(self, experiment_id: str, as_of_ms: int | None = None) -> pd.DataFrame:
        return self._units

    def experiments(self) -> list[str]:
        return self._experiments


class MomentsView:
    """The slice of the store ``bandit.analysis.lift`` reads, answered from one aggregate query.

    ``moments`` is ``Store.cohort_moments_many`` (per metric, covariate and variant:
    exposed units, units with a complete horizon and the power sums of
    ``bandit.store.queries.MOMENT_SUMS``), fetched once per
    (experiment, as-of) and cached: every ``cohort_moments`` call of ``lift_table`` /
    ``guardrail_table`` is a filter of those few rows, with the store's own numbers.
    """

    _COLS = ("variant", "n_exposed", "n", *MOMENT_SUMS)

    def __init__(self, moments: pd.DataFrame, experiments: Sequence[str]) -> None:
        self._moments = moments
        self._experiments = list(experiments)

    def cohort_moments(
        self,
        experiment_id: str,
        metric: str,
        covariate: str,
        as_of_ms: int | None = None,
        *,
        include_cross_exposed: bool = False,
    ) -> pd.DataFrame:
        if include_cross_exposed:
            from bandit.errors import InvalidInputError

            raise InvalidInputError(
                "include_cross_exposed", True, "is not available on the fetched moments"
            )
        m = self._moments
        sel = m[(m["metric"] == metric) & (m["covariate"] == covariate)]
        if sel.empty and not m.empty:
            from bandit.errors import InvalidInputError

            raise InvalidInputError("metric", (metric, covariate), "not in the fetched moments")
        return sel[list(self._COLS)].sort_values("variant").reset_index(drop=True)

    def experiments(self) -> list[str]:
        return self._experiments


def overview_pairs(experiment: Any) -> tuple[tuple[str, str], ...]:
    """The (metric, covariate) pairs the overview reads: its lift metrics and the
    experiment's guardrails (``experiment``: an ExperimentConfig or an id, as handed to
    ``bandit.analysis.lift``), so the cohort query computes only those."""
    from bandit.analysis.lift import METRICS as LIFT_METRICS
    from bandit.config import ExperimentConfig

    cfg = experiment if isinstance(experiment, ExperimentConfig) else ExperimentConfig(id=str(experiment))
    names = [m for m, _ in METRICS] + list(cfg.guardrails)
    return tuple(dict.fromkeys(LIFT_METRICS[n] for n in names if n in LIFT_METRICS))


def moment_counts(moments: pd.DataFrame) -> pd.DataFrame:
    """:func:`unit_counts` from ``Store.cohort_moments_many`` rows (no per-unit fetch)."""
    cols = ["variant", "units", "day-1 complete", "day-30 complete"]
    if moments.empty:
        return pd.DataFrame(columns=cols)
    d1 = moments[moments["metric"] == "retained_d1"].drop_duplicates("variant")
    d30 = moments[moments["metric"] == "retained_d30"].drop_duplicates("variant")
    out = pd.DataFrame(
        {
            "units": d1.set_index("variant")["n_exposed"],
            "day-1 complete": d1.set_index("variant")["n"],
            "day-30 complete": d30.set_index("variant")["n"],
        }
    ).sort_index().reset_index(names="variant")
    out["variant"] = out["variant"].astype(str)
    for c in cols[1:]:
        out[c] = out[c].astype("int64")
    return out[cols]


def unit_counts(units: pd.DataFrame) -> pd.DataFrame:
    """Per variant: units exposed, and units whose day 1 / day 30 is complete."""
    cols = ["variant", "units", "day-1 complete", "day-30 complete"]
    if units.empty:
        return pd.DataFrame(columns=cols)
    g = units.groupby("variant", sort=True)
    out = pd.DataFrame(
        {
            "units": g.size(),
            "day-1 complete": g["retained_d1"].count(),
            "day-30 complete": g["retained_d30"].count(),
        }
    ).reset_index(names="variant")
    out["variant"] = out["variant"].astype(str)
    return out[cols]


def experiment_arg(settings: Any, experiment_id: str) -> Any:
    """The configured ExperimentConfig when it describes ``experiment_id``, else the id."""
    cfg = settings.experiment
    return cfg if cfg is not None and cfg.id == experiment_id else experiment_id


@st.cache_data(ttl=data.QUERY_TTL_S, refresh_mode="background", show_spinner=False)
def experiment_health(
    key: tuple[str, str], experiment_id: str, as_of_ms: int | None, _experiment: Any = None
) -> Any:
    """``bandit.analysis.lift.experiment_health``: the sample ratio per recorded design period and
    the cross-exposed count, read from the store (no config file needed)."""
    from bandit.analysis.lift import experiment_health as health

    exp = _experiment if _experiment is not None else experiment_id
    return health(data.get_store(*key), exp, as_of_ms)


@st.cache_data(ttl=data.QUERY_TTL_S, refresh_mode="background", show_spinner="Computing lift…")
def lift_tables(
    key: tuple[str, str],
    experiment_id: str,
    as_of_ms: int | None,
    cuped: bool,
    _experiment: Any = None,
) -> tuple[dict[tuple[str, bool], pd.DataFrame], dict[str, str]]:
    """``bandit.analysis.lift.lift_table`` for every overview metric, with or without CUPED.

    One CUPED setting per call (the one on screen; the other is computed when the
    reader flips the switch, and then cached too).

    Returns (tables, skipped) where ``skipped`` maps a metric to why it has no table yet
    (typically: no complete day-N cohort).
    """
    from bandit.analysis.lift import lift_table
    from bandit.errors import InvalidInputError

    exp = _experiment if _experiment is not None else experiment_id
    moments = data.cohort_moments(key, experiment_id, as_of_ms, overview_pairs(exp))
    store = MomentsView(moments, [experiment_id])
    health = experiment_health(key, experiment_id, as_of_ms, exp)
    out: dict[tuple[str, bool], pd.DataFrame] = {}
    skipped: dict[str, str] = {}
    for metric, _ in METRICS:
        try:
            out[(metric, cuped)] = lift_table(
                store, exp, metric, as_of_ms, cuped, health=health
            )
        except InvalidInputError as exc:
            skipped[metric] = str(exc)
    return out, skipped


@st.cache_data(ttl=data.QUERY_TTL_S, refresh_mode="background", show_spinner=False)
def guardrail_rows(
    key: tuple[str, str],
    experiment_id: str,
    as_of_ms: int | None,
    _experiment: Any = None,
) -> pd.DataFrame:
    """``bandit.analysis.lift.guardrail_table`` over the cached per-variant moments."""
    from bandit.analysis.lift import GUARDRAIL_COLUMNS, guardrail_table
    from bandit.errors import InvalidInputError

    exp = _experiment if _experiment is not None else experiment_id
    moments = data.cohort_moments(key, experiment_id, as_of_ms, overview_pairs(exp))
    try:
        return guardrail_table(MomentsView(moments, [experiment_id]), exp, as_of_ms)
    except InvalidInputError:
        return pd.DataFrame(columns=list(GUARDRAIL_COLUMNS))


def guardrail_banners(guards: pd.DataFrame) -> list[Banner]:
    """Banners of ``bandit.analysis.lift.guardrail_table`` rows: an error per breached guardrail, a
    note per inconclusive one (its one-sided level and the drop it would detect now).
    An empty frame — no guardrail configured, or columns missing — gives none."""
    if guards is None or guards.empty or "status" not in guards.columns:
        return []
    out: list[Banner] = []
    for g in guards.itertuples():
        if g.status == "degraded":
            out.append(Banner("error", f"Guardrail breached: {g.metric}",
                              f"Variant {g.variant}: lift {g.estimate:+.1%}, {g.detail}."))
        elif g.status == "inconclusive":
            out.append(Banner("info", f"Guardrail not settled: {g.metric}",
                              f"Variant {g.variant}: lift {g.estimate:+.1%}, {g.detail}."))
    return out


#: share of fallback allocations above which the fallback banner is a warning
FALLBACK_WARN_SHARE = 0.05


def fallback_banner(sources: pd.DataFrame) -> Banner | None:
    """"N of M exposures (x %) were fallback allocations", per variant in the detail, from
    ``Store.exposure_sources`` rows; a warning above :data:`FALLBACK_WARN_SHARE` (those
    units got the fallback arm, not their variant's policy), else a note. None when
    there are no exposures."""
    if sources is None or sources.empty:
        return None
    total, falls = int(sources["exposures"].sum()), int(sources["fallbacks"].sum())
    if total == 0:
        return None
    share = falls / total
    per_variant = ", ".join(
        f"{r.variant} {int(r.fallbacks):,} of {int(r.exposures):,}"
        for r in sources.itertuples()
        if int(r.exposures) > 0
    )
    detail = (
        f"{falls:,} of {total:,} exposures ({share:.1%}) were fallback allocations "
        f"(the serving tier answered without the allocation server): {per_variant}."
    )
    level = "warning" if share > FALLBACK_WARN_SHARE else "info"
    return Banner(level, "Fallback allocations", detail)


def lift_over_time(units: pd.DataFrame, metric: str, control: str, points: int = 12) -> pd.DataFrame:
    """Relative lift of ``metric`` as it would have read on past dates, with the
    always-valid interval (``av_low``/``av_high``, ±inf where unbounded).

    Looking at the lift date after date is peeking, so each point's interval is
    ``bandit.stats.sequential_lift`` (time-uniform, tuned by the same fixed planned size
    as the overview's, :data:`bandit.stats.DEFAULT_PLANNED_N`), not the one-look
    Fieller interval; the estimate is ``bandit.stats.relative_lift``'s. A date whose
    cohorts ``bandit.stats.degenerate_reason`` cannot call yet (fewer than
    :data:`bandit.stats.MIN_UNITS` per arm, all zero, no variation) has no point, as
    the overview reads "too early to call" then.

    At date t the units counted are those whose day N had completed by t, so each point is
    what the overview would have shown then. Up to ``points`` dates, evenly spaced.
    """
    from bandit import stats
    from bandit.errors import InvalidInputError
    from dashboards.transforms import matured_mask

    cols = ["date", "variant", "lift", "av_low", "av_high", "n_treatment", "n_control"]
    if units.empty or metric not in units.columns:
        return pd.DataFrame(columns=cols)
    day = 86_400_000
    digits = "".join(ch for ch in metric.rsplit("_", 1)[-1] if ch.isdigit())
    n = int(digits) if digits else 30
    done = units["exposure_ts"].astype("int64") + (n + 1) * day
    valid = units[metric].notna()
    if not valid.any():
        return pd.DataFrame(columns=cols)
    lo, hi = int(done[valid].min()), int(done[valid].max())
    lo = (lo // day + 1) * day
    hi = (hi // day + 1) * day
    if hi < lo:
        return pd.DataFrame(columns=cols)
    step = max(day, ((hi - lo) // max(points - 1, 1)) // day * day)
    rows = []
    for t in range(lo, hi + 1, step):
        m = matured_mask(units["exposure_ts"], metric, t) & valid
        sub = units[m]
        c = sub.loc[sub["variant"] == control, metric].to_numpy(dtype=float)
        for variant in sorted(set(sub["variant"]) - {control}):
            x = sub.loc[sub["variant"] == variant, metric].to_numpy(dtype=float)
            try:
                if stats.degenerate_reason(stats.Summary.of(x), stats.Summary.of(c)) is not None:
                    continue
                r = stats.relative_lift(x, c)
                av = stats.sequential_lift(x, c)
            except InvalidInputError:
                continue
            rows.append(
                (
                    pd.Timestamp(t, unit="ms", tz="UTC"),
                    variant,
                    r.estimate,
                    av.ci_low,
                    av.ci_high,
                    len(x),
                    len(c),
                )
            )
    return pd.DataFrame(rows, columns=cols)


def overview(ctx: Any, cuped: bool = True) -> OverviewView:
    """Lift rows, sample sizes and health banners for the context's experiment."""
    s = ctx.settings
    key, exp = ctx.key, ctx.experiment
    exp_cfg = experiment_arg(s, exp)
    sizes = moment_counts(data.cohort_moments(key, exp, ctx.as_of_ms, overview_pairs(exp_cfg)))
    banners: list[Banner] = []
    if sizes.empty or int(sizes["units"].sum()) == 0:
        return OverviewView(lift_display({}, s.control), sizes, banners)
    tables, skipped = lift_tables(key, exp, ctx.as_of_ms, cuped, exp_cfg)
    lift = lift_display(tables, s.control)
    # --- sample-ratio mismatch per recorded design period, cross-exposed units
    h = experiment_health(key, exp, ctx.as_of_ms, exp_cfg)
    banners.extend(
        health_banners(h.srm_flag, h.srm_detail, math.isfinite(h.srm_p), h.cross_exposed)
    )
    # --- guardrails
    guards = guardrail_rows(key, exp, ctx.as_of_ms, exp_cfg)
    banners.extend(guardrail_banners(guards))
    # --- fallback allocations (the serving tier answered without a decision)
    sources = data.exposure_sources(key, exp, ctx.as_of_ms)
    fallback = fallback_banner(sources)
    if fallback:
        banners.append(fallback)
    # --- stale data and learner lag
    span = data.decision_span(key, exp)
    last_decision = None if span.empty else int(span["last_ms"].max())
    newest_exposure = None
    if s.as_of_ms is None and s.clock == "simulated":
        # the simulated calendar's own clock: the newest allocation of any source
        everything = data.exposure_sources(key, exp, None)
        newest_exposure = None if everything.empty else int(everything["last_ms"].max())
    reference = data.freshness_reference(s, newest_exposure)
    stale = staleness_banner("decisions", last_decision, reference, s.stale_after_s)
    if stale:
        banners.append(stale)
    snap = data.latest_snapshot(s.snapshot_dir)
    if snap is not None and last_decision is not None:
        snap_ms = int(snap.stat().st_mtime * 1000)
        lag_s = (last_decision - snap_ms) / 1000.0
        if lag_s > s.lag_after_s:
            banners.append(
                Banner(
                    "warning",
                    "Learner lag",
                    f"The newest model snapshot ({Path(snap).name}, {fmt_time(snap_ms)}) "
                    "is older than "
                    f"the newest decisions by {lag_s / 60:.0f} min: the learner is behind or down.",
                )
            )
    if not any(b.level in ("error", "warning") for b in banners):
        banners.append(
            Banner("success", "Healthy", "No sample-ratio mismatch, no guardrail breach, data fresh.")
        )
    return OverviewView(lift, sizes, banners, guards, skipped)


# --------------------------------------------------------------------------- display


def lift_view(
    lift: pd.DataFrame, labels: Sequence[str], cuped: bool, variants: Sequence[str]
) -> pd.DataFrame:
    if lift.empty:
        return lift
    m = lift["metric"].isin(list(labels)) & (lift["cuped"] == cuped)
    if variants:
        m &= lift["variant"].isin(list(variants))
    return lift[m].reset_index(drop=True)


_PP = "%+.1f%%"
LIFT_COLUMN_CONFIG = {
    "Verdict": st.column_config.TextColumn(
        "Verdict", width="medium", help="decided by the always-valid interval beside it"
    ),
    "AV low": st.column_config.NumberColumn(
        "AV low",
        format=_PP,
        help="always-valid 95% interval of the relative lift (Fieller set, mixture "
        "boundary): safe under daily peeking; the verdict is decided by it",
    ),
    "AV high": st.column_config.NumberColumn(
        "AV high", format=_PP, help="empty: unbounded (control mean not yet clear of zero)"
    ),
    "Lift": st.column_config.NumberColumn("Lift", format=_PP, help="relative lift vs control"),
    "CI low": st.column_config.NumberColumn(
        "CI low", format=_PP, help="fixed-horizon 95% Fieller interval: valid for one look only"
    ),
    "CI high": st.column_config.NumberColumn("CI high", format=_PP),
    "Control": st.column_config.NumberColumn("Control", format="%.4g", help="control mean"),
    "Variant mean": st.column_config.NumberColumn("Variant mean", format="%.4g"),
    "P(better)": st.column_config.ProgressColumn(
        "P(better)", format="%.0f%%", min_value=0.0, max_value=100.0
    ),
    "n control": st.column_config.NumberColumn("n control", format="localized"),
    "n variant": st.column_config.NumberColumn("n variant", format="localized"),
}


def lift_table_for_display(table: pd.DataFrame) -> pd.DataFrame:
    """The lift rows as shown: verdict up front, fractions as percentage points."""
    from dashboards.transforms import to_percent

    cols = {
        "metric": "Metric",
        "variant": "Variant",
        "verdict": "Verdict",
        "av_low": "AV low",
        "av_high": "AV high",
        "lift": "Lift",
        "ci_low": "CI low",
        "ci_high": "CI high",
        "mean_control": "Control",
        "mean_treatment": "Variant mean",
        "p_better": "P(better)",
        "n_control": "n control",
        "n_treatment": "n variant",
        "cuped": "CUPED",
    }
    present = [c for c in cols if c in table.columns]
    pct = ("lift", "ci_low", "ci_high", "av_low", "av_high", "p_better")
    out = to_percent(table[present], pct).rename(columns=cols)
    # an unbounded end shows as an empty cell (its help text says so), not as "inf"
    return out.replace([math.inf, -math.inf], math.nan)


# --------------------------------------------------------------------------- early read


@st.cache_data(ttl=data.QUERY_TTL_S, refresh_mode="background", show_spinner="Projecting day-30 lift…")
def early_read(
    key: tuple[str, str], experiment_id: str, control: str, as_of_ms: int | None
) -> tuple[pd.DataFrame, str | None]:
    """``bandit.analysis.calibration.early_read`` (the CLI's ``lift --projection``): the
    projected day-30 engagement lift per variant from the users' first seven days, or
    (empty, why) when there is none yet — no matured users to calibrate on, no user past
    day 7, proxies that do not point at the goal. Never raises for a young store."""
    from bandit.analysis.calibration import early_read as read
    from bandit.errors import InvalidInputError

    try:
        rows = read(data.get_store(*key), experiment_id, control, as_of_ms=as_of_ms)
    except InvalidInputError as exc:
        return pd.DataFrame(), str(exc)
    if rows.empty:
        return rows, f"no variant besides {control} has users past their first seven days"
    return rows, None


@st.cache_data(ttl=data.QUERY_TTL_S, refresh_mode="background", show_spinner="Checking projections…")
def projection_history(
    key: tuple[str, str], control: str, as_of_ms: int | None
) -> tuple[Any, str | None]:
    """``bandit.analysis.calibration.projection_history``: every experiment's day-7
    projection against its measured day-30 lift, or (None, why) when the store cannot
    give one (no experiment, no user with an early window)."""
    from bandit.analysis.calibration import projection_history as history
    from bandit.errors import InvalidInputError

    try:
        return history(data.get_store(*key), control, as_of_ms=as_of_ms), None
    except InvalidInputError as exc:
        return None, str(exc)
