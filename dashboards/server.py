"""The dashboard's Streamlit server: ``streamlit run`` with the heavy imports done at start.

``python -m dashboards.server run dashboards/app.py [streamlit options]`` behaves exactly
like ``python -m streamlit run ...`` (``switchboard dashboard`` launches it), after first
importing the libraries the pages need — pandas, Altair, scipy through ``bandit.analysis.lift`` /
``bandit.stats``, the store's client and engine modules. Streamlit runs every page script inside this process,
so the modules stay loaded: the first visitor after a start no longer waits for about a
second of imports on top of the cohort query (measured in ``bench/dashboard.py``). Only
third-party and core modules are preloaded; the dashboard's own modules (which declare
Streamlit caches) are imported by the first script run, inside the Streamlit runtime.
"""

from __future__ import annotations

import importlib

__all__ = ["PRELOAD", "PRELOAD_OPTIONAL", "main", "preload"]

#: modules imported at server start (what the overview's first run would import)
PRELOAD: tuple[str, ...] = (
    "pandas",
    "pyarrow",
    "altair",
    "bandit.analysis.lift",
    "bandit.stats",
    "bandit.store",
    "clickhouse_connect",
    "clickhouse_connect.driver",
)
#: imported too when present: the embedded engine (absent where only a server is used) and
#: Streamlit internals the first alert / icon imports (regex compilation at first import)
PRELOAD_OPTIONAL: tuple[str, ...] = ("chdb", "streamlit.emojis", "streamlit.material_icon_names")


def preload() -> None:
    """Import :data:`PRELOAD` and what exists of :data:`PRELOAD_OPTIONAL` (idempotent)."""
    for name in PRELOAD:
        importlib.import_module(name)
    for name in PRELOAD_OPTIONAL:
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def main() -> None:
    preload()
    from streamlit.web.cli import main as streamlit_main

    streamlit_main(prog_name="streamlit")


if __name__ == "__main__":
    main()
