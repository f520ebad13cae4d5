"""Offline evaluation: runs of ``switchboard simulate`` / ``replay`` / ``evaluate`` on disk."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import streamlit as st

from dashboards import transforms, ui

ctx = ui.context()
st.title("Offline evaluation")
root = ctx.settings.results_dir
runs = transforms.discover_results(root)
if not runs:
    st.info(
        f"**No offline runs in `{root}` yet.** Run `switchboard simulate`, `switchboard replay` "
        "or `switchboard evaluate` with an output folder there (each run writes a summary JSON "
        "and PNG plots), or start the dashboard with `--results DIR`."
    )
else:
    listing = pd.DataFrame(
        {
            "run": [r.name for r in runs],
            "written": [dt.datetime.fromtimestamp(r.mtime, dt.UTC).strftime("%Y-%m-%d %H:%M") for r in runs],
            "plots": [len(r.plots) for r in runs],
            "kind": [str(r.summary.get("command", r.summary.get("kind", ""))) for r in runs],
        }
    )
    st.dataframe(listing, hide_index=True, width="stretch", key="of_runs")
    names = [r.name for r in runs]
    pick = st.selectbox("Run", names, key="of_run")
    run = runs[names.index(pick)]
    st.caption(f"`{run.path}`")
    c1, c2 = st.columns([1, 2])
    c1.dataframe(transforms.flatten_summary(run.summary), hide_index=True, width="stretch", key="of_summary")
    for title, frame in transforms.summary_tables(run.summary).items():
        st.markdown(f"**{title}**")
        st.dataframe(frame, hide_index=True, width="stretch")
    with c2:
        if not run.plots:
            st.info("This run wrote no plots.")
        for p in run.plots:
            st.image(str(p), caption=p.name, width="stretch")
