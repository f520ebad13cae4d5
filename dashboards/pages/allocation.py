"""Allocation: traffic share per variant and arm over time; the current policy's per-arm view."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from bandit.errors import SwitchboardError
from dashboards import analysis, charts, data, transforms, ui

ctx = ui.context()
st.title("Allocation")
if not ui.empty_state(ctx, "Allocation charts"):
    exp = ctx.experiment or ""
    bucket = st.radio("Time bucket", ["hour", "day", "week"], index=1, horizontal=True, key="al_bucket")
    raw = data.traffic_share(ctx.key, exp, bucket)
    raw = transforms.filter_frame(
        raw,
        variants=ctx.variants,
        arms=ctx.arms or None,
        ts_col="bucket_start",
        start_ms=ctx.start_ms,
        end_ms=ctx.end_ms,
    )
    if raw.empty:
        st.info("No decisions logged for this experiment in the selected range yet.")
    else:
        counts = raw.rename(columns={"bucket_start": "bucket", "decisions": "n"})
        c1, c2 = st.columns(2)
        by_variant = transforms.traffic_share(counts, "variant")
        c1.altair_chart(
            charts.traffic_share_chart(by_variant, "variant", "Traffic share per variant"),
            width="stretch",
        )
        variant = c2.selectbox("Arms within variant", sorted(counts["variant"].unique()), key="al_variant")
        by_arm = transforms.traffic_share(counts[counts["variant"] == variant], "arm_id")
        c2.altair_chart(
            charts.traffic_share_chart(by_arm, "arm_id", f"Traffic share per arm ({variant})"),
            width="stretch",
        )
        totals = transforms.arm_totals(raw)
        st.dataframe(
            transforms.to_percent(totals, ["share"]),
            hide_index=True,
            width="stretch",
            key="al_totals",
            column_config={
                "share": st.column_config.NumberColumn("share", format="%.1f%%"),
                "decisions": st.column_config.NumberColumn("decisions", format="localized"),
            },
        )

    st.subheader("Current policy")
    snap = data.latest_snapshot(ctx.settings.snapshot_dir)
    if snap is None:
        st.info(
            f"No model snapshot in `{ctx.settings.snapshot_dir}` yet: the learner publishes one "
            "after its first batch."
        )
    else:
        try:
            view = data.load_policy_view(
                str(snap),
                int(snap.stat().st_mtime * 1000),
                ctx.settings.alpha,
                ctx.settings.ridge_lambda,
            )
        except (SwitchboardError, OSError, ValueError) as exc:
            st.warning(f"Could not read snapshot `{Path(snap).name}`: {exc}")
        else:
            st.caption(
                f"Snapshot `{Path(view.path).name}` · policy **{view.policy_name}** "
                f"{view.version} · written {analysis.fmt_time(view.mtime_ms)}"
            )
            est = view.estimates
            if ctx.arms:
                est = est[est["arm_id"].isin(ctx.arms)]
            cold = est[est["cold_start"]]
            if len(cold):
                st.warning(f"Cold-start arms (no observations yet): {', '.join(cold['arm_id'])}")
            if est["estimate"].notna().any():
                st.altair_chart(charts.arm_estimates_chart(est.dropna(subset=["estimate"])), width="stretch")
            st.dataframe(
                est,
                hide_index=True,
                width="stretch",
                key="al_policy",
                column_config={
                    "estimate": st.column_config.NumberColumn(format="%.3f"),
                    "width": st.column_config.NumberColumn(format="%.3f"),
                    "low": st.column_config.NumberColumn(format="%.3f"),
                    "high": st.column_config.NumberColumn(format="%.3f"),
                    "n": st.column_config.NumberColumn("observations", format="%.0f"),
                },
            )
            st.caption("estimate = θ·x̄ at the mean context, width = α·sqrt(x̄ᵀA⁻¹x̄) (LinUCB bonus).")
