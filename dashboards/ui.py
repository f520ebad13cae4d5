"""Shared page furniture: the sidebar filters and the context every page reads.

``app.py`` calls :func:`sidebar` once per run, before the selected page runs, and keeps
the result in ``st.session_state``; pages call :func:`context` to read it (or build it
themselves when a page script is run on its own).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import streamlit as st

from dashboards import analysis, data
from dashboards.transforms import Banner

__all__ = ["Context", "context", "empty_state", "show_banners", "sidebar"]

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


def _date_to_ms(d: dt.date) -> int:
    return int(dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC).timestamp() * 1000)


def sidebar() -> Context:
    """Draw the filters (experiment, date range, variant, arm) and return the context."""
    settings = data.settings_from_env()
    now_ms = settings.now_ms()
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
    pairs = analysis.overview_pairs(analysis.experiment_arg(settings, exp))
    exposed = analysis.moment_counts(data.cohort_moments(key, exp, settings.as_of_ms, pairs))
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
    # a range ending today is "live": queries run as of now (cache key without a time)
    end_ms = None if end >= today else _date_to_ms(end) + _DAY_MS
    if settings.as_of_ms is not None:
        end_ms = min(settings.as_of_ms, end_ms) if end_ms is not None else settings.as_of_ms
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
            f"`{ctx.settings.dsn}` (database `{ctx.settings.database}`)."
            + (f"\n\nDetails: {ctx.store_error}" if ctx.store_error else "")
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
