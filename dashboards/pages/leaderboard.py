"""Expert leaderboard: propensity-weighted message-level proxies per arm, with intervals."""

from __future__ import annotations

import streamlit as st

from dashboards import charts, data, transforms, ui

ctx = ui.context()
st.title("Expert leaderboard")
if not ui.empty_state(ctx, "Per-expert proxies"):
    exp = ctx.experiment or ""
    proxies = data.arm_proxies(ctx.key, exp)
    kinds = data.arm_kinds(ctx.settings.snapshot_dir, ctx.settings.control)
    c1, c2 = st.columns([2, 1])
    all_kinds = ["expert", "baseline", "unknown"]
    kind_pick = c1.multiselect("Kind", all_kinds, default=all_kinds, key="lb_kind")
    weighted = c2.toggle(
        "Propensity-weighted",
        value=True,
        key="lb_weighted",
        help="Self-normalised inverse-propensity means (Swaminathan & Joachims 2015): "
        "corrects for the contexts an adaptive policy sent each arm.",
    )
    board = transforms.leaderboard(proxies, kinds, kind_pick, weighted)
    board = transforms.filter_frame(board, variants=ctx.variants, arms=ctx.arms or None)
    if board.empty:
        st.info("No feedback on any decision of this experiment yet.")
    else:
        # a rate's interval is shown within [0, 1]
        rate_cols = ["retry_rate", "retry_rate_low", "retry_rate_high"]
        board = board.assign(**{c: board[c].clip(0.0, 1.0) for c in rate_cols if c in board.columns})
        fmt = st.column_config.NumberColumn
        st.dataframe(
            transforms.to_percent(board, ["retry_rate", "retry_rate_low", "retry_rate_high"]),
            hide_index=True,
            width="stretch",
            key="lb_table",
            column_config={
                "label": None,
                "decisions": fmt(format="localized"),
                "feedback": fmt(format="localized"),
                "retry_rate": fmt("retry rate", format="%.1f%%"),
                "retry_rate_low": fmt("low", format="%.1f%%"),
                "retry_rate_high": fmt("high", format="%.1f%%"),
                "mean_rating": fmt("rating", format="%.2f"),
                "mean_rating_low": fmt("low", format="%.2f"),
                "mean_rating_high": fmt("high", format="%.2f"),
                "mean_length": fmt("conv. length", format="%.1f"),
                "mean_length_low": fmt("low", format="%.1f"),
                "mean_length_high": fmt("high", format="%.1f"),
            },
        )
        st.caption(
            "Click a column header to sort. Intervals: 95% normal, "
            + (
                "mean ± 1.96 × the delta-method standard error of the self-normalised "
                "IPS mean"
                if weighted
                else "mean ± 1.96 × sd/√n"
            )
            + "; rates clipped to [0, 1]. Lower retry rate, higher rating and longer "
            "conversations are better."
        )
        metric = st.selectbox(
            "Chart",
            [m for m, _ in transforms.PROXIES],
            key="lb_chart",
            format_func=dict(transforms.PROXIES).get,
        )
        st.altair_chart(
            charts.leaderboard_chart(board, metric, dict(transforms.PROXIES)[metric]),
            width="stretch",
        )
