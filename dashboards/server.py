"""The dashboard's Streamlit server: ``streamlit run`` with the heavy imports done at start.

``python -m dashboards.server run dashboards/app.py [streamlit options]`` behaves exactly
like ``python -m streamlit run ...`` (``switchboard dashboard`` launches it), after first
importing the libraries the pages need — pandas, Altair, and scipy through
``bandit.lift`` / ``bandit.stats``. Streamlit runs every page script inside this process,
so the modules stay loaded: the first visitor after a start no longer waits for about a
second of imports on top of the cohort query (measured in ``bench/dashboard.py``). Only
third-party and core modules are preloaded; the dashboard's own modules (which declare
Streamlit caches) are imported by the first script run, inside the Streamlit runtime.
"""

from __future__ import annotations

import importlib

__all__ = ["PRELOAD", "main", "preload"]

#: modules imported at server start (what the overview's first run would import)
PRELOAD: tuple[str, ...] = ("pandas", "altair", "bandit.lift", "bandit.stats")


def preload() -> None:
    """Import :data:`PRELOAD` (idempotent)."""
    for name in PRELOAD:
        importlib.import_module(name)


def main() -> None:
    preload()
    from streamlit.web.cli import main as streamlit_main

    streamlit_main(prog_name="streamlit")


if __name__ == "__main__":
    main()
