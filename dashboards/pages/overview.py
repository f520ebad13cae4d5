"""Experiment overview: lift per variant vs the control, verdicts and health banners."""

from __future__ import annotations

import streamlit as st

from dashboards import analysis, charts, transforms, ui
from dashboards.transforms import METRICS

ctx = ui.context()
st.title("Experiment overview")
if not ui.empty_state(ctx, "Lift figures"):
    s = ctx.settings
    st.caption(
        f"Experiment **{ctx.experiment}** · control **{s.control}** · as of "
        f"{analysis.fmt_time(ctx.as_of_ms)} (the data's clock) · store `{ctx.dsn}`"
    )
    # the CUPED switch's value is in session state before the widget is drawn below
    view = analysis.overview(ctx, st.session_state.get("ov_cuped", "on") == "on")
    ui.show_banners(view.banners)
    labels = [label for _, label in METRICS]
    c1, c2 = st.columns([2, 1])
    metric_pick = c1.multiselect("Metrics", labels, default=labels, key="ov_metrics")
    cuped = c2.radio(
        "CUPED",
        ["on", "off"],
        horizontal=True,
        key="ov_cuped",
        help="Variance reduction with each unit's pre-exposure engagement "
        "(Deng et al. 2013). Same estimand, narrower intervals.",
    )
    if view.lift.empty:
        st.info("No unit has a complete day-1 yet: lift appears once the first cohort matures.")
    else:
        table = analysis.lift_view(view.lift, metric_pick, cuped == "on", ctx.variants)
        if not table.empty:
            st.table(ui.lift_results(table))
            if table["lift"].notna().any():
                st.altair_chart(charts.lift_forest_chart(table), width="stretch")
        st.caption(
            "Lift is relative: (variant − control) / control. Always-valid 95%: Fieller's "
            "set with the normal-mixture boundary (Howard et al. 2021), correct however "
            "often you look; the verdict beside it is decided by it (±∞: unbounded, the "
            "control mean is not yet clear of zero). 95% CI: fixed-horizon Fieller "
            "interval at the Welch t quantile, valid for one look only. Chart: thick bar "
            "the fixed-horizon interval, thin line the always-valid one. "
            "P(better): posterior probability the variant beats control (green ≥ 95 %, red ≤ 5 %)."
        )
        with st.expander("Sample sizes"):
            st.dataframe(view.sizes, hide_index=True, width="stretch")

    # --- the early read: a projection from the first week, beside the measurement
    st.subheader("Early read: projected day-30 engagement lift")
    projected, why = analysis.early_read(ctx.key, ctx.experiment, s.control, ctx.as_of_ms)
    rows = transforms.early_read_rows(projected, view.lift, cuped == "on")
    if ctx.variants and not rows.empty:
        rows = rows[rows["variant"].isin(list(ctx.variants))].reset_index(drop=True)
    if why is not None:
        st.info(f"**No projection yet.** {why}")
    if not rows.empty:
        st.table(ui.projection_results(rows))
    st.caption(
        "A **projection, not a measurement**: the surrogate index (Athey, Chetty, Imbens & "
        "Kang 2019) calibrated on the users whose day 30 has already passed predicts each "
        "user's day-30 engagement from their retries, ratings and conversation lengths in "
        "days 0-6, and the lift is that of the predictions. It holds only if the variant "
        "changes day-30 engagement through what those first-week signals show "
        "(surrogacy): a change they cannot see is missed. The 95% interval is for the lift "
        "these users will measure on day 30. Measured − projected shows how far the "
        "projection was once day 30 has matured; the Projection history page checks it "
        "on every past experiment."
    )
