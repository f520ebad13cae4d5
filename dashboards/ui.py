"""Shared page furniture: the sidebar filters and the context every page reads.

``app.py`` calls :func:`sidebar` once per run, before the selected page runs, and keeps
the result in ``st.session_state``; pages call :func:`context` to read it (or build it
themselves when a page script is run on its own).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import streamlit as st

from bandit.cli.redaction import redact
from dashboards import analysis, data
from dashboards.transforms import Banner

__all__ = [
    "P_BETTER_COLOURS",
    "Context",
    "context",
    "empty_state",
    "lift_results",
    "p_better_style",
    "projection_results",
    "reward_versions_table",
    "show_banners",
    "sidebar",
]

_KEY = "_switchboard_ctx"
_DAY_MS = 86_400_000


@dataclass(frozen=True)
class Context:
    settings: data.DashboardSettings
    store: Any | None
    store_error: str | None
    experiment: str | None
    experiments: tuple[str, ...]
    variants: tuple[str, ...]
    arms: tuple[str, ...]
    start_ms: int | None
    #: end of the date range (epoch ms), None = live ("now", refreshed in the background)
    end_ms: int | None
    #: every variant / arm of the experiment (the filter's options)
    all_variants: tuple[str, ...] = ()
    all_arms: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return (self.settings.dsn, self.settings.database)

    @property
    def as_of_ms(self) -> int | None:
        return self.end_ms

    @property
    def dsn(self) -> str:
        """The store's DSN as displayed (password redacted)."""
        return redact(self.settings.dsn)


def _date_to_ms(d: dt.date) -> int:
    return int(dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC).timestamp() * 1000)


def sidebar() -> Context:
    """Draw the filters (experiment, date range, variant, arm) and return the context."""
    settings = data.settings_from_env()
    store, err = data.open_or_none(settings)
    exps: list[str] = data.experiments((settings.dsn, settings.database)) if store is not None else []
    st.sidebar.title("Switchboard")
    if not exps:
        st.sidebar.caption("No experiment in the store yet.")
        ctx = Context(settings, store, err, None, (), (), (), None, settings.as_of_ms)
        st.session_state[_KEY] = ctx
        return ctx
    exp = st.sidebar.selectbox("Experiment", exps, key="f_experiment")
    key = (settings.dsn, settings.database)
    span = data.decision_span(key, exp)
    # "now" is the data's clock: a simulated calendar reads as of its last simulated moment
    now_ms = data.data_clock(settings, int(span["last_ms"].max()) if len(span) else None)
    pairs = analysis.overview_pairs(analysis.experiment_arg(settings, exp))
    exposed = analysis.moment_counts(data.cohort_moments(key, exp, now_ms, pairs))
    all_variants = sorted(set(exposed["variant"]) | set(span["variant"]))
    all_arms = sorted(set(span["arm_id"]))
    # first decision day (exposures without decisions: the last 45 days)
    first_ms = int(span["first_ms"].min()) if len(span) else now_ms - 45 * _DAY_MS
    first = dt.datetime.fromtimestamp(first_ms / 1000, dt.UTC).date()
    today = dt.datetime.fromtimestamp(now_ms / 1000, dt.UTC).date()
    picked = st.sidebar.date_input(
        "Date range (UTC)",
        value=(first, today),
        min_value=first,
        max_value=today,
        key="f_dates",
        help="Units exposed in this range; lift and retention are computed as of its end.",
    )
    start, end = _range(picked, first, today)
    # a range ending on the data's last day runs as of the data's clock
    end_ms = now_ms if end >= today else min(_date_to_ms(end) + _DAY_MS, now_ms)
    variants = st.sidebar.multiselect("Variant", all_variants, default=all_variants, key="f_variants")
    arms = st.sidebar.multiselect("Arm", all_arms, default=[], key="f_arms", placeholder="all arms")
    ctx = Context(
        settings,
        store,
        err,
        exp,
        tuple(exps),
        tuple(variants or all_variants),
        tuple(arms),
        _date_to_ms(start) if start > first else None,
        end_ms,
        tuple(all_variants),
        tuple(all_arms),
    )
    st.session_state[_KEY] = ctx
    return ctx


def _range(picked: Any, first: dt.date, today: dt.date) -> tuple[dt.date, dt.date]:
    if isinstance(picked, Sequence) and not isinstance(picked, str):
        vals = list(picked)
        if len(vals) == 2:
            return vals[0], vals[1]
        if len(vals) == 1:
            return vals[0], today
        return first, today
    if isinstance(picked, dt.date):
        return picked, today
    return first, today


def context() -> Context:
    """The context ``app.py`` built this run (or a fresh one for a page run on its own)."""
    ctx = st.session_state.get(_KEY)
    return ctx if isinstance(ctx, Context) else sidebar()


def empty_state(ctx: Context, what: str) -> bool:
    """Show a friendly message and return True when there is nothing to show yet."""
    if ctx.store is None:
        st.info(
            f"**No store to read yet.** {what} appear once the learner has written to "
            f"`{ctx.dsn}` (database `{ctx.settings.database}`)."
            + (f"\n\nDetails: {redact(ctx.store_error)}" if ctx.store_error else "")
        )
        return True
    if ctx.experiment is None:
        st.info(
            f"**No experiment data yet.** {what} appear once units have been exposed to an "
            "experiment. Start the stack with `switchboard demo`, or point the dashboard at "
            "another store with `switchboard dashboard --dsn ...`."
        )
        return True
    return False


def show_banners(banners: Sequence[Banner]) -> None:
    for b in banners:
        fn = {"error": st.error, "warning": st.warning, "success": st.success}.get(b.level, st.info)
        fn(f"**{b.title}** — {b.detail}")


# --------------------------------------------------------------------------- lift results

#: P(better) colours by meaning (GrowthBook / Eppo convention): likely better, likely worse,
#: undecided; the theme's primary red would read as "bad" whatever the value
P_BETTER_COLOURS = {"better": "#1a7f37", "worse": "#cf222e", "undecided": "#6e7781"}


def p_better_style(p: float | None) -> str:
    """CSS for a P(better) cell (``p`` a fraction): green >= 95 %, red <= 5 %, grey between."""
    if p is None or pd.isna(p):
        return f"color: {P_BETTER_COLOURS['undecided']}"
    if p >= 0.95:
        return f"color: {P_BETTER_COLOURS['better']}; font-weight: 600"
    if p <= 0.05:
        return f"color: {P_BETTER_COLOURS['worse']}; font-weight: 600"
    return f"color: {P_BETTER_COLOURS['undecided']}"


def _value(metric_key: str, v: Any) -> str:
    if v is None or pd.isna(v):
        return "—"
    if "retention" in str(metric_key) or "retained" in str(metric_key):
        return f"{min(max(float(v), 0.0), 1.0):.1%}"
    return f"{float(v):,.1f}"


def _pct(v: Any) -> str:
    if v is None or pd.isna(v):
        return "—"
    if math.isinf(float(v)):
        return "+∞" if float(v) > 0 else "−∞"
    return f"{float(v):+.1%}"


def _interval(low: Any, high: Any) -> str:
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return "—"
    return f"{_pct(low)} … {_pct(high)}"


def _count(v: Any) -> str:
    return "—" if v is None or pd.isna(v) else f"{int(v):,}"


def lift_results(table: pd.DataFrame) -> pd.io.formats.style.Styler:
    """The overview's results table as shown: per metric and variant the verdict first,
    beside the always-valid interval it is decided by, then the lift and its fixed-horizon
    interval, the control's and the variant's values and sample sizes, and P(better)
    coloured by meaning. Numbers come from ``analysis.overview`` (``lift_display``
    columns); this only formats them, as text a static table wraps instead of cutting."""
    def col(name: str) -> list[Any]:
        return list(table[name]) if name in table.columns else [None] * len(table)

    keys = col("metric_key")
    rows = pd.DataFrame(
        {
            "Metric": table["metric"].astype(str),
            "Variant": table["variant"].astype(str),
            "Verdict": ["" if v is None or (isinstance(v, float) and pd.isna(v)) else str(v)
                        for v in col("verdict")],
            "Always-valid 95%": [
                _interval(lo, hi) for lo, hi in zip(col("av_low"), col("av_high"), strict=True)
            ],
            "Lift": [_pct(v) for v in col("lift")],
            "95% CI": [_interval(lo, hi) for lo, hi in zip(col("ci_low"), col("ci_high"), strict=True)],
            "Control value": [_value(k, v) for k, v in zip(keys, col("mean_control"), strict=True)],
            "Variant value": [_value(k, v) for k, v in zip(keys, col("mean_treatment"), strict=True)],
            "Units (control / variant)": [
                f"{_count(c)} / {_count(t)}"
                for c, t in zip(col("n_control"), col("n_treatment"), strict=True)
            ],
            "P(better)": ["—" if p is None or pd.isna(p) else f"{float(p):.0%}" for p in col("p_better")],
        }
    )
    p = col("p_better")
    return rows.style.hide(axis="index").apply(
        lambda col: [p_better_style(v) for v in p], subset=["P(better)"]
    )


# --------------------------------------------------------------------------- early read


def projection_results(rows: pd.DataFrame) -> pd.DataFrame:
    """The early read as shown (``transforms.early_read_rows``): the projection, labelled
    as one, beside the measured day-30 lift where it exists and how far apart they are."""
    def col(name: str) -> list[Any]:
        return list(rows[name]) if name in rows.columns else [None] * len(rows)

    return pd.DataFrame(
        {
            "Variant": rows["variant"].astype(str),
            "Projected day-30 lift (from days 0-6)": [_pct(v) for v in col("projected_lift")],
            "Projection 95% interval": [
                _interval(lo, hi) for lo, hi in zip(col("ci_low"), col("ci_high"), strict=True)
            ],
            "Users projected (control / variant)": [
                f"{_count(c)} / {_count(t)}" for c, t in zip(col("n_control"), col("n"), strict=True)
            ],
            "Measured day-30 lift": [
                _pct(v) if v is not None and not pd.isna(v) else "not yet: day 30 not matured"
                for v in col("measured_lift")
            ],
            "Measured 95% CI": [
                _interval(lo, hi)
                for lo, hi in zip(col("measured_ci_low"), col("measured_ci_high"), strict=True)
            ],
            "Measured − projected": [_pct(v) for v in col("gap")],
        }
    )


def reward_versions_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The reward versions as shown (``transforms.reward_version_rows``)."""
    def when(v: Any) -> str:
        return "—" if v is None or pd.isna(v) else analysis.fmt_time(int(v))

    def alpha(v: Any) -> str:
        return "?" if v is None or pd.isna(v) else f"{float(v):.3f}"

    def fitted(n: Any, r2: Any) -> str:
        if n is None or pd.isna(n):
            return "—"
        return f"{_count(n)} users, out-of-fold R² {float(r2):.2f}" if _finite(r2) else f"{_count(n)} users"

    return pd.DataFrame(
        {
            "Version": rows["version"].astype(str),
            "α retry / rating / length": [
                f"{alpha(a)} / {alpha(b)} / {alpha(c)}"
                for a, b, c in zip(rows["alpha_retry"], rows["alpha_rating"],
                                   rows["alpha_length"], strict=True)
            ],
            "Effective from": [when(v) for v in rows["effective_from_ms"]],
            "First decision": [when(v) for v in rows["first_decision_ms"]],
            "Last decision": [when(v) for v in rows["last_decision_ms"]],
            "Decisions rewarded": [_count(v) for v in rows["decisions"]],
            "Fitted on": [fitted(n, r) for n, r in zip(rows["fitted_on_users"], rows["r2_oof"],
                                                       strict=True)],
        }
    )


def _finite(v: Any) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False
