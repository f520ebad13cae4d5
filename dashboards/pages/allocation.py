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
    # the reward versions first: their switches are marked on the traffic charts
    history, history_error = data.calibration_history(ctx.settings.snapshot_dir)
    versions = transforms.reward_version_rows(
        data.reward_versions(ctx.key, exp), history, ctx.settings.reward
    )
    used = versions[versions["decisions"] > 0]
    switches = used.iloc[1:][["version", "first_decision_ms"]].rename(
        columns={"first_decision_ms": "ts_ms"}
    )
    if raw.empty:
        st.info("No decisions logged for this experiment in the selected range yet.")
    else:
        counts = raw.rename(columns={"bucket_start": "bucket", "decisions": "n"})
        c1, c2 = st.columns(2)
        by_variant = transforms.traffic_share(counts, "variant")
        c1.altair_chart(
            charts.with_switches(
                charts.traffic_share_chart(by_variant, "variant", "Traffic share per variant"),
                switches,
            ),
            width="stretch",
        )
        variant = c2.selectbox("Arms within variant", sorted(counts["variant"].unique()), key="al_variant")
        by_arm = transforms.traffic_share(counts[counts["variant"] == variant], "arm_id")
        c2.altair_chart(
            charts.with_switches(
                charts.traffic_share_chart(by_arm, "arm_id", f"Traffic share per arm ({variant})"),
                switches,
            ),
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

    st.subheader("Reward weights")
    if history_error is not None:
        st.warning(
            f"The published calibration file could not be read, so the α's of its versions "
            f"are not shown: {history_error}"
        )
    if not switches.empty:
        last = switches.iloc[-1]
        st.info(
            f"Reward weights switched to **{last['version']}** at "
            f"{analysis.fmt_time(int(last['ts_ms']))}: decisions from then on are rewarded "
            "with its α's, and the policy moves as the learner learns them "
            "(dashed lines on the traffic charts)."
        )
    if versions.empty:
        st.info("No decision of this experiment has been rewarded yet.")
    else:
        st.dataframe(
            ui.reward_versions_table(versions),
            hide_index=True,
            width="stretch",
            key="al_rewards",
        )
    st.caption(
        "Each decision's reward is Σ α·proxy over its retry, rating and conversation "
        "length, with the α's in force at the decision's time: the config's `[reward]` "
        "(**config**) until a published calibration (`switchboard calibrate --publish`) "
        "takes effect. The allocation servers stamp each decision's policy version with "
        "the calibration its model was trained under. A version with 0 decisions is "
        "published but not yet in force."
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
