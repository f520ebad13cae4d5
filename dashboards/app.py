"""Switchboard dashboard entry point: ``switchboard dashboard`` runs ``streamlit run`` on it.

The sidebar (experiment, date range, variant and arm filters) is built here once per run;
the selected page then reads it through :func:`dashboards.ui.context`.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboards import ui

_HERE = Path(__file__).parent

st.set_page_config(page_title="Switchboard", page_icon=":material/alt_route:", layout="wide")

PAGES = [
    st.Page(
        str(_HERE / "pages" / "overview.py"),
        title="Experiment overview",
        icon=":material/monitoring:",
        default=True,
    ),
    st.Page(str(_HERE / "pages" / "retention.py"), title="Retention", icon=":material/timeline:"),
    st.Page(str(_HERE / "pages" / "allocation.py"), title="Allocation", icon=":material/call_split:"),
    st.Page(
        str(_HERE / "pages" / "leaderboard.py"),
        title="Expert leaderboard",
        icon=":material/leaderboard:",
    ),
    st.Page(str(_HERE / "pages" / "offline.py"), title="Offline evaluation", icon=":material/science:"),
    st.Page(str(_HERE / "pages" / "history.py"), title="Projection history", icon=":material/fact_check:"),
]

nav = st.navigation(PAGES)
ui.sidebar()
nav.run()
