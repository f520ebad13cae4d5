"""The user-level metrics an experiment read-out can be asked for (no numpy, no I/O).

A catalogue, kept apart from :mod:`bandit.analysis.lift` so that listing the metrics (the
``switchboard lift`` options, the dashboard's menus) imports neither pandas nor scipy.
"""

from __future__ import annotations

from typing import Final

__all__ = ["METRICS"]

#: metric name -> (unit_metrics column, CUPED covariate column)
METRICS: Final[dict[str, tuple[str, str]]] = {
    **{f"day{n}_retention": (f"retained_d{n}", "pre_engagement") for n in (1, 7, 14, 30)},
    **{f"day{n}_engagement": (f"engagement_d{n}", "pre_engagement") for n in (1, 7, 14, 30)},
    **{f"day{n}_messages": (f"messages_d{n}", "pre_messages") for n in (1, 7, 14, 30)},
    "cum30_engagement": ("cum_engagement_30", "pre_engagement"),
    "cum30_messages": ("cum_messages_30", "pre_messages"),
}
