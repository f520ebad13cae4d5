"""Altair chart builders: a DataFrame in, an ``alt.Chart`` out; no Streamlit, no store."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import altair as alt
import numpy as np
import pandas as pd

__all__ = [
    "arm_estimates_chart",
    "leaderboard_chart",
    "lift_forest_chart",
    "lift_over_time_chart",
    "projection_history_chart",
    "retention_curve_chart",
    "traffic_share_chart",
    "with_switches",
]

_PCT = ".1%"
#: categorical colours far apart in hue and lightness (Tableau 10): the control, the bandit
#: and any further variant never look alike, and none is the theme's alarm red
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f",
           "#bab0ac", "#ff9da7", "#e15759")


def _variant_colour(field: str = "variant:N", title: str = "variant") -> alt.Color:
    return alt.Color(field, title=title, scale=alt.Scale(range=list(PALETTE)))


def _unbounded_undrawn(df: pd.DataFrame, cols: Iterable[str]) -> pd.DataFrame:
    """``df`` with ±inf in ``cols`` (an unbounded interval end) as missing, so it is left
    undrawn rather than stretching the axis."""
    return df.assign(**{c: df[c].astype(float).where(np.isfinite(df[c].astype(float)))
                        for c in cols})


def _pct_tooltip(*fields: str) -> list[str | alt.Tooltip]:
    """Tooltip fields in order; the quantitative ones (``name:Q``) read as percentages."""
    return [alt.Tooltip(f, format=_PCT) if f.endswith(":Q") else f for f in fields]


def _estimate_layers(
    base: alt.Chart,
    intervals: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]],
    point: Mapping[str, Any],
    *,
    size: int,
    tooltip: Sequence[str | alt.Tooltip],
) -> list[alt.Chart]:
    """Estimates with their intervals, the shape of the lift forest and of the projection
    history: one rule layer per ``(mark properties, encoding)`` in ``intervals``, under a
    filled point of ``size`` encoded by ``point`` with ``tooltip``."""
    layers = [base.mark_rule(**mark).encode(**encoding) for mark, encoding in intervals]
    layers.append(base.mark_point(filled=True, size=size).encode(**point, tooltip=list(tooltip)))
    return layers


def lift_forest_chart(df: pd.DataFrame) -> alt.Chart:
    """Relative lift per variant and metric: point, fixed CI (thick) and always-valid CI (thin).

    An unbounded interval end (±inf) is left undrawn rather than stretching the axis."""
    df = _unbounded_undrawn(df, [c for c in ("lift", "ci_low", "ci_high", "av_low", "av_high")
                                 if c in df.columns])
    base = alt.Chart(df).encode(
        y=alt.Y("metric:N", title=None, sort=None),
        yOffset=alt.YOffset("variant:N"),
        color=_variant_colour(),
    )
    zero = alt.Chart(pd.DataFrame({"x": [0.0]})).mark_rule(strokeDash=[4, 4], color="gray").encode(x="x:Q")

    def x(field: str) -> alt.X:
        return alt.X(field, title="relative lift vs control", axis=alt.Axis(format="%"))

    intervals: list[tuple[Mapping[str, Any], Mapping[str, Any]]] = []
    if "av_low" in df.columns and df["av_low"].notna().any():
        intervals.append(({"strokeWidth": 1, "opacity": 0.6}, {"x": x("av_low:Q"), "x2": "av_high:Q"}))
    intervals.append(({"strokeWidth": 4}, {"x": x("ci_low:Q"), "x2": "ci_high:Q"}))
    layers = _estimate_layers(
        base, intervals, {"x": "lift:Q"}, size=60,
        tooltip=_pct_tooltip("metric:N", "variant:N", "lift:Q", "ci_low:Q", "ci_high:Q", "verdict:N"),
    )
    return alt.layer(zero, *layers).properties(
        height=alt.Step(14), title="Lift vs control (95% CI; thin = always-valid)"
    )


def retention_curve_chart(df: pd.DataFrame) -> alt.LayerChart:
    """Retention by day since exposure per variant, with a 95% band.

    Expects ``variant``, ``day``, ``rate``, ``low``, ``high``.
    """
    base = alt.Chart(df).encode(
        x=alt.X("day:Q", title="days since exposure", scale=alt.Scale(domain=[0, 30])),
        color=_variant_colour(),
    )
    band = base.mark_area(opacity=0.2).encode(
        y=alt.Y("low:Q", axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1])), y2="high:Q"
    )
    line = base.mark_line(point=True).encode(
        y=alt.Y("rate:Q", title="retained", axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1])),
        tooltip=["variant:N", "day:Q", alt.Tooltip("rate:Q", format=_PCT), "n:Q"],
    )
    return alt.layer(band, line).properties(height=320, title="Retention curve")


def lift_over_time_chart(df: pd.DataFrame, metric_label: str) -> alt.LayerChart:
    """Cumulative lift as data accrued (one point per calendar day), with the always-valid
    95% band (``av_low``/``av_high``; an unbounded end is left undrawn)."""
    df = _unbounded_undrawn(df, ("lift", "av_low", "av_high"))
    base = alt.Chart(df).encode(
        x=alt.X("date:T", title="as of"),
        color=_variant_colour(),
    )
    band = base.mark_area(opacity=0.2).encode(
        y=alt.Y("av_low:Q", axis=alt.Axis(format="%")), y2="av_high:Q"
    )
    line = base.mark_line(point=True).encode(
        y=alt.Y("lift:Q", title=f"lift in {metric_label}", axis=alt.Axis(format="%")),
        tooltip=["variant:N", "date:T", alt.Tooltip("lift:Q", format=_PCT)],
    )
    zero = alt.Chart(pd.DataFrame({"y": [0.0]})).mark_rule(strokeDash=[4, 4], color="gray").encode(y="y:Q")
    return alt.layer(band, line, zero).properties(height=280, title="Lift over calendar time")


def traffic_share_chart(df: pd.DataFrame, by: str, title: str) -> alt.Chart:
    """Stacked share of traffic per ``by`` (variant or arm_id) per time bucket."""
    return (
        alt.Chart(df)
        .mark_area()
        .encode(
            x=alt.X("bucket:T", title=None),
            y=alt.Y("share:Q", stack="normalize", title="share of decisions", axis=alt.Axis(format="%")),
            color=_variant_colour(f"{by}:N", by.replace("_id", "")),
            tooltip=[
                "bucket:T",
                f"{by}:N",
                alt.Tooltip("share:Q", format=_PCT),
                alt.Tooltip("n:Q", format=","),
            ],
        )
        .properties(height=260, title=title)
    )


def with_switches(chart: alt.Chart, switches: pd.DataFrame) -> alt.Chart | alt.LayerChart:
    """``chart`` (a time on x) with a dashed rule at each reward-weights switch
    (``switches``: ``version``, ``ts_ms``); the chart itself when there is none."""
    if switches.empty:
        return chart
    rules = pd.DataFrame({"at": pd.to_datetime(switches["ts_ms"].astype("int64"), unit="ms", utc=True),
                          "reward version": switches["version"].astype(str)})
    rule = (
        alt.Chart(rules)
        .mark_rule(strokeDash=[5, 4], color="#333333")
        .encode(x="at:T", tooltip=[alt.Tooltip("at:T", title="reward weights switched"),
                                   "reward version:N"])
    )
    return alt.layer(chart, rule)


def arm_estimates_chart(df: pd.DataFrame) -> alt.LayerChart:
    """Policy's per-arm estimate at the mean context ± its width; cold-start arms in red."""
    base = alt.Chart(df).encode(
        y=alt.Y("arm_id:N", sort="-x", title=None),
        color=alt.Color(
            "cold_start:N",
            title="cold start",
            scale=alt.Scale(domain=[False, True], range=["#1f77b4", "#d62728"]),
        ),
    )
    rule = base.mark_rule(strokeWidth=3).encode(x=alt.X("low:Q", title="estimated reward"), x2="high:Q")
    point = base.mark_point(filled=True, size=70).encode(
        x="estimate:Q",
        tooltip=[
            "arm_id:N",
            alt.Tooltip("estimate:Q", format=".3f"),
            alt.Tooltip("width:Q", format=".3f"),
            alt.Tooltip("n:Q", format=",.0f"),
            "cold_start:N",
        ],
    )
    return alt.layer(rule, point).properties(
        height=alt.Step(24), title="Current policy: per-arm estimate ± width"
    )


def leaderboard_chart(df: pd.DataFrame, metric: str, label: str) -> alt.LayerChart:
    """One proxy per arm with its 95% interval."""
    base = alt.Chart(df).encode(
        y=alt.Y(
            "label:N",
            sort=alt.EncodingSortField(field=metric, order="descending"),
            title=None,
            axis=alt.Axis(labelLimit=260),
        ),
        color=alt.Color("kind:N"),
    )
    rule = base.mark_rule(strokeWidth=3).encode(
        x=alt.X(f"{metric}_low:Q", title=label), x2=f"{metric}_high:Q"
    )
    point = base.mark_point(filled=True, size=60).encode(
        x=f"{metric}:Q",
        tooltip=[
            "arm_id:N",
            "variant:N",
            "kind:N",
            alt.Tooltip(f"{metric}:Q", format=".3f"),
            "decisions:Q",
        ],
    )
    return alt.layer(rule, point).properties(
        height=alt.Step(26), title=f"{label} per expert (propensity-weighted)"
    )


def projection_history_chart(df: pd.DataFrame) -> alt.LayerChart:
    """Projected lift at day 7 (x) against measured day-30 lift (y), one point per
    experiment and variant, with both intervals as whiskers and the line y = x: a point
    on the line is a projection that came true; colour says whether the projection's
    interval covered the measurement. ``df``: ``ProjectionHistory.rows``."""
    cols = ("projected_lift", "ci_low", "ci_high", "measured_lift", "measured_ci_low",
            "measured_ci_high")
    d = _unbounded_undrawn(df, cols)
    d = d.assign(covered=np.where(d["covered"].astype(bool), "covered", "missed"))
    values = d[list(cols)].to_numpy(dtype=float)
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    diagonal = alt.Chart(pd.DataFrame({"x": [lo, hi], "y": [lo, hi]})).mark_line(
        strokeDash=[4, 4], color="gray"
    ).encode(x="x:Q", y="y:Q")
    colour = alt.Color("covered:N", title="projection interval",
                       scale=alt.Scale(domain=["covered", "missed"], range=[PALETTE[2], PALETTE[9]]))
    base = alt.Chart(d).encode(color=colour)
    x = alt.X("projected_lift:Q", title="projected lift at day 7", axis=alt.Axis(format="%"))
    y = alt.Y("measured_lift:Q", title="measured day-30 lift", axis=alt.Axis(format="%"))
    layers = _estimate_layers(
        base,
        [({"opacity": 0.6}, {"x": alt.X("ci_low:Q"), "x2": "ci_high:Q", "y": y}),  # projection's
         ({"opacity": 0.6}, {"x": x, "y": alt.Y("measured_ci_low:Q"),  # measurement's
                             "y2": "measured_ci_high:Q"})],
        {"x": x, "y": y, "shape": alt.Shape("variant:N")},
        size=70,
        tooltip=_pct_tooltip("experiment_id:N", "variant:N", "projected_lift:Q", "ci_low:Q",
                             "ci_high:Q", "measured_lift:Q", "covered:N", "calibrated_on:N"),
    )
    return alt.layer(diagonal, *layers).properties(
        height=360, title="Projected at day 7 vs measured at day 30 (95% intervals)"
    )
