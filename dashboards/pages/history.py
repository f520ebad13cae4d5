"""Projection history: every experiment's day-7 projection of its day-30 engagement lift
against the lift its matured day 30 measured, and the coverage of the projection's intervals."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboards import analysis, charts, ui

ctx = ui.context()
st.title("Projection history")
if not ui.empty_state(ctx, "Projection checks"):
    s = ctx.settings
    st.caption(
        f"Control **{s.control}** · as of {analysis.fmt_time(ctx.as_of_ms)} (the data's "
        f"clock) · every experiment in the store"
    )
    history, why = analysis.projection_history(ctx.key, s.control, ctx.as_of_ms)
    rows = history.rows if history is not None else pd.DataFrame()
    if why is not None:
        st.info(f"**No projection to check yet.** {why}")
    elif rows.empty:
        st.info(
            "**No experiment has matured yet.** A projection is checked once the users it "
            "was made for have reached day 30: then their measured day-30 lift stands beside "
            "the lift projected from their first seven days."
        )
    else:
        k = len(rows)
        covered = int(rows["covered"].sum())
        gap, gap_lo, gap_hi = history.mean_gap()
        c1, c2 = st.columns(2)
        c1.metric("Intervals covering the measurement", f"{covered} of {k}",
                  help="share of projections whose 95% interval held the measured day-30 lift; "
                  "about 95% is what a trustworthy projection earns")
        c2.metric("Mean measured − projected", f"{gap:+.1%}",
                  help="average miss over the experiments; far from 0 means the projection "
                  "runs high or low")
        if k >= 2:
            st.caption(
                f"Mean measured − projected {gap:+.1%}, 95% interval {gap_lo:+.1%} … "
                f"{gap_hi:+.1%}: an interval clear of 0 says the projection is biased on this "
                "history, even where each experiment's own interval covers its measurement."
            )
        st.altair_chart(charts.projection_history_chart(rows), width="stretch")
        st.table(
            pd.DataFrame(
                {
                    "Experiment": rows["experiment_id"].astype(str),
                    "Variant": rows["variant"].astype(str),
                    "Projected at day 7": [f"{v:+.1%}" for v in rows["projected_lift"]],
                    "Projection 95% interval": [
                        f"{lo:+.1%} … {hi:+.1%}"
                        for lo, hi in zip(rows["ci_low"], rows["ci_high"], strict=True)
                    ],
                    "Measured day-30 lift": [f"{v:+.1%}" for v in rows["measured_lift"]],
                    "Measured − projected": [f"{v:+.1%}" for v in rows["gap"]],
                    "Covered": ["yes" if c else "no" for c in rows["covered"]],
                    "Index fitted on": rows["calibrated_on"].astype(str),
                }
            )
        )
    if history is not None and history.notes:
        with st.expander("Experiments not checked"):
            for note in history.notes:
                st.markdown(f"- {note}")
    st.caption(
        "Each point: the users of an experiment whose day 30 has passed; x the lift of "
        "their surrogate index (their day-30 engagement predicted from days 0-6, the index "
        "fitted on the other experiments' matured users, or in-sample where they are too "
        "few, as *Index fitted on* says), y the lift they measured. The "
        "dashed line is a projection that came true. A projection holds only under "
        "surrogacy — the variant moves day-30 engagement only through what the first week's "
        "retries, ratings and conversation lengths show; a variant that changes day 30 some "
        "other way is missed here, and only measurements like these can reveal it "
        "(docs/calibration.md)."
    )
