"""Retention: day-0..30 retention curves per variant with 95% bands; lift over calendar time
with its always-valid interval."""

from __future__ import annotations

import math

import streamlit as st

from bandit.analysis.lift import METRICS as LIFT_METRICS
from bandit.stats import MIN_UNITS
from dashboards import analysis, charts, data, transforms, ui
from dashboards.transforms import METRICS

ctx = ui.context()
st.title("Retention")
if not ui.empty_state(ctx, "Retention curves"):
    exp = ctx.experiment or ""
    curve = data.retention_curve(ctx.key, exp, ctx.as_of_ms)
    curve = transforms.retention_bands(transforms.filter_frame(curve, variants=ctx.variants))
    if curve.empty:
        st.info("No unit has a complete day 0 yet.")
    else:
        st.altair_chart(charts.retention_curve_chart(curve), width="stretch")
        st.caption(
            "Share of units active on day N after first exposure, among units whose day N "
            "is complete; band: 95% normal (Wald) interval of the share, clipped to [0, 1]."
        )
    st.subheader("Lift over calendar time")
    labels = dict(METRICS)
    metric = st.selectbox("Metric", list(labels), index=3, format_func=labels.get, key="rt_metric")
    units = data.unit_metrics(ctx.key, exp, ctx.as_of_ms)
    over_time = analysis.lift_over_time(units, LIFT_METRICS[metric][0], ctx.settings.control)
    over_time = transforms.filter_frame(over_time, variants=ctx.variants)
    if over_time.empty:
        st.info("Not enough matured units yet to draw lift over time.")
    else:
        st.altair_chart(charts.lift_over_time_chart(over_time, labels[metric]), width="stretch")
        st.caption(
            "Each point: lift on the units whose day N had completed by that date "
            "(what the dashboard would have shown then), from the first date with "
            f"{MIN_UNITS} such units per arm. Band: always-valid 95% interval (Fieller set, "
            "mixture boundary), which stays valid however many of these dates you look "
            "at; a fixed-horizon interval would not. An unbounded end is not drawn."
        )
        with st.expander("Table"):
            shown = transforms.to_percent(over_time, ["lift", "av_low", "av_high"])
            st.dataframe(
                shown.replace([math.inf, -math.inf], math.nan),
                hide_index=True,
                width="stretch",
                column_config={
                    "lift": st.column_config.NumberColumn("lift", format="%+.1f%%"),
                    "av_low": st.column_config.NumberColumn(
                        "always-valid low", format="%+.1f%%",
                        help="always-valid 95% interval of the relative lift",
                    ),
                    "av_high": st.column_config.NumberColumn(
                        "always-valid high", format="%+.1f%%",
                        help="empty: unbounded (control mean not yet clear of zero)",
                    ),
                },
            )
