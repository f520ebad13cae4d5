"""Pure transforms behind the dashboard pages: DataFrames in, DataFrames out.

Nothing here touches Streamlit or the store, so every function is unit-tested on small
hand-made frames. The statistics themselves (lift CIs, SRM, P(better), ...) come from
``bandit.stats`` / ``bandit.analysis.lift``, verdicts included; this module only reshapes and
labels them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "METRICS",
    "PROJECTED_METRIC",
    "PROXIES",
    "Banner",
    "OfflineRun",
    "arm_estimates",
    "arm_totals",
    "canonical_lift_columns",
    "discover_results",
    "early_read_rows",
    "filter_frame",
    "flatten_summary",
    "health_banners",
    "leaderboard",
    "lift_display",
    "matured_mask",
    "retention_bands",
    "staleness_banner",
    "summary_tables",
    "to_percent",
    "traffic_share",
]

#: Metrics on the overview: (key used by the store and ``bandit.analysis.lift``, label).
METRICS: tuple[tuple[str, str], ...] = (
    ("day1_retention", "Day-1 retention"),
    ("day7_retention", "Day-7 retention"),
    ("day14_retention", "Day-14 retention"),
    ("day30_retention", "Day-30 retention"),
    ("day1_engagement", "Day-1 engagement"),
    ("day7_engagement", "Day-7 engagement"),
    ("day14_engagement", "Day-14 engagement"),
    ("day30_engagement", "Day-30 engagement"),
)

_Z95 = 1.959963984540054


@dataclass(frozen=True)
class Banner:
    """A health message for the top of a page. ``level`` is error, warning, info or success."""

    level: str
    title: str
    detail: str


def _finite(v: float | None) -> bool:
    return v is not None and isinstance(v, int | float | np.floating) and math.isfinite(float(v))


# Column aliases: ``bandit.analysis.lift.lift_table`` is the source; accept its spelling variants.
_ALIASES: dict[str, tuple[str, ...]] = {
    "variant": ("variant", "treatment"),
    "lift": ("rel_lift", "lift", "relative_lift", "estimate"),
    "ci_low": ("rel_ci_low", "ci_low", "lift_ci_low", "lo", "low"),
    "ci_high": ("rel_ci_high", "ci_high", "lift_ci_high", "hi", "high"),
    "av_low": ("seq_ci_low", "av_low", "cs_low", "always_valid_low", "av_ci_low"),
    "av_high": ("seq_ci_high", "av_high", "cs_high", "always_valid_high", "av_ci_high"),
    "p_better": ("prob_better", "p_better", "p_treatment_better"),
    "n_control": ("n_control", "control_n", "n_c"),
    "n_treatment": ("n", "n_treatment", "n_variant", "treatment_n", "n_t"),
    "mean_control": ("mean_control", "control_mean"),
    "mean_treatment": ("mean_treatment", "treatment_mean", "mean_variant", "mean"),
    "p_value": ("p_value", "pvalue", "p"),
}


def canonical_lift_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Rename a lift table's columns to the dashboard's canonical names (see ``_ALIASES``)."""
    rename: dict[str, str] = {}
    for canon, names in _ALIASES.items():
        if canon in df.columns:
            continue
        for n in names:
            if n in df.columns and n not in rename:
                rename[n] = canon
                break
    return df.rename(columns=rename)


def lift_display(tables: Mapping[tuple[str, bool], pd.DataFrame], control: str) -> pd.DataFrame:
    """One row per (metric, variant, CUPED) from ``bandit.analysis.lift.lift_table`` outputs.

    ``tables`` maps (metric, cuped) to that metric's lift table. The control's own row, if
    the table has one, is dropped: lift is always "vs control". Verdicts are the table's
    own (``bandit.analysis.lift``), never re-decided here.
    """
    labels = dict(METRICS)
    rows: list[pd.DataFrame] = []
    for (metric, cuped), table in tables.items():
        if table is None or len(table) == 0:
            continue
        t = canonical_lift_columns(table)
        if "variant" in t.columns:
            t = t[t["variant"] != control]
        t = t.copy()
        t = t.drop(columns=[c for c in ("metric", "metric_key") if c in t.columns])
        t.insert(0, "metric", labels.get(metric, metric))
        t.insert(1, "metric_key", metric)
        t["cuped"] = bool(cuped)
        rows.append(t)
    if not rows:
        return pd.DataFrame(
            columns=[
                "metric",
                "metric_key",
                "variant",
                "cuped",
                "lift",
                "ci_low",
                "ci_high",
                "av_low",
                "av_high",
                "p_better",
                "n_control",
                "n_treatment",
                "verdict",
            ]
        )
    out = pd.concat(rows, ignore_index=True)
    for col in ("av_low", "av_high", "p_better", "n_control", "n_treatment"):
        if col not in out.columns:
            out[col] = np.nan
    # the verdict is ``bandit.analysis.lift``'s, decided by the always-valid interval shown beside
    # it; a table without one is not judged here (a second rule would be a second truth)
    if "verdict" not in out.columns:
        out["verdict"] = "no verdict: the lift table has none"
    out["verdict"] = out["verdict"].fillna("no verdict: the lift table has none")
    return out


# --------------------------------------------------------------------------- health


def health_banners(srm_flag: bool, srm_detail: str, srm_tested: bool, cross_exposed: int,
                   cross_excluded: bool = True) -> list[Banner]:
    """Banners of an experiment's health (``bandit.analysis.lift.experiment_health``): a
    sample-ratio mismatch (error), a ratio that could not be tested (info), and units
    exposed to more than one variant (warning, with the count and what the lift did)."""
    out: list[Banner] = []
    if srm_flag:
        out.append(Banner("error", "Sample-ratio mismatch",
                          f"{srm_detail[:1].upper()}{srm_detail[1:]}. Assignment or logging is "
                          "broken; do not trust the lift until it is explained."))
    elif not srm_tested:
        out.append(Banner("info", "Sample ratio not tested", srm_detail[:1].upper()
                          + srm_detail[1:] + " (Store.record_design records one)."))
    if cross_exposed > 0:
        how = ("left out of every lift figure" if cross_excluded
               else "counted in the variant of their first exposure")
        out.append(Banner("warning", "Cross-exposed units",
                          f"{cross_exposed:,} units were exposed to more than one variant: "
                          f"{how}."))
    return out


def staleness_banner(what: str, last_ms: int | None, now_ms: int, max_age_s: float) -> Banner | None:
    """A banner when the newest ``what`` is older than ``max_age_s`` (or there is none)."""
    if last_ms is None:
        return Banner("warning", f"No {what} yet", f"The store holds no {what}.")
    age_s = (now_ms - int(last_ms)) / 1000.0
    if age_s <= max_age_s:
        return None
    return Banner(
        "warning",
        f"Stale {what}",
        f"The newest {what} is {_human_age(age_s)} old (threshold {_human_age(max_age_s)}).",
    )


def _human_age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


# --------------------------------------------------------------------------- filters


def filter_frame(
    df: pd.DataFrame,
    *,
    variants: Sequence[str] | None = None,
    arms: Sequence[str] | None = None,
    ts_col: str | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> pd.DataFrame:
    """Rows of ``df`` in the chosen variants / arms and time window [start, end)."""
    mask = pd.Series(True, index=df.index)
    if variants and "variant" in df.columns:
        mask &= df["variant"].isin(list(variants))
    if arms and "arm_id" in df.columns:
        mask &= df["arm_id"].isin(list(arms))
    if ts_col and ts_col in df.columns:
        ts = _to_ms(df[ts_col])
        if start_ms is not None:
            mask &= ts >= start_ms
        if end_ms is not None:
            mask &= ts < end_ms
    return df[mask]


def _to_ms(s: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(s):
        return pd.Series(pd.to_datetime(s, utc=True).astype("int64") // 1_000_000, index=s.index)
    return s.astype("int64")


# --------------------------------------------------------------------------- allocation


def traffic_share(df: pd.DataFrame, by: str) -> pd.DataFrame:
    """Share of decisions per ``by`` (variant or arm_id) in each time bucket.

    Input: columns ``bucket``, ``by`` and ``n`` (count). Output adds ``share`` (0..1) that
    sums to 1 within each bucket.
    """
    if df.empty:
        return pd.DataFrame(columns=["bucket", by, "n", "share"])
    g = df.groupby(["bucket", by], as_index=False)["n"].sum()
    total = g.groupby("bucket")["n"].transform("sum")
    g["share"] = g["n"] / total.where(total > 0, 1)
    return g.sort_values(["bucket", by], ignore_index=True)


def arm_estimates(
    arm_ids: Sequence[str],
    theta: np.ndarray,
    a_inv_diag_quad: np.ndarray | None,
    counts: Sequence[float],
    alpha: float,
) -> pd.DataFrame:
    """Per-arm score at the mean context with its uncertainty width.

    ``theta`` holds θ_m · x̄ per arm (already reduced to the mean context);
    ``a_inv_diag_quad`` holds x̄ᵀ A_m⁻¹ x̄, so the width is α·sqrt(x̄ᵀA⁻¹x̄), the LinUCB
    bonus (Li et al. 2010, eq. 4). Arms with no observations are marked cold-start.
    """
    est = np.asarray(theta, dtype=float)
    width = (
        alpha * np.sqrt(np.maximum(np.asarray(a_inv_diag_quad, dtype=float), 0.0))
        if a_inv_diag_quad is not None
        else np.full(len(arm_ids), np.nan)
    )
    n = np.asarray(counts, dtype=float)
    out = pd.DataFrame(
        {
            "arm_id": list(arm_ids),
            "estimate": est,
            "width": width,
            "low": est - width,
            "high": est + width,
            "n": n,
            "cold_start": n <= 0,
        }
    )
    return out.sort_values("estimate", ascending=False, ignore_index=True)


# --------------------------------------------------------------------------- leaderboard


PROXIES: tuple[tuple[str, str], ...] = (
    ("retry_rate", "Retry rate"),
    ("mean_rating", "Mean rating"),
    ("mean_length", "Conversation length"),
)


def leaderboard(
    proxies: pd.DataFrame,
    kinds: Mapping[str, str] | None = None,
    kind_filter: Iterable[str] | None = None,
    weighted: bool = True,
) -> pd.DataFrame:
    """Per-arm message-level proxies with 95% intervals, from ``Store.arm_proxies``.

    ``weighted`` picks the self-normalised inverse-propensity means (``*_ips``, ``*_ips_se``)
    over the plain means, so an arm's figures are not flattered by the contexts an
    adaptive policy chose to send it. ``kinds`` maps arm id to kind (expert/baseline);
    arms it does not know are "unknown". Sorted by retry rate, lowest (best) first.
    """
    cols = ["arm_id", "variant", "kind", "decisions", "feedback"]
    for name, _ in PROXIES:
        cols += [name, f"{name}_low", f"{name}_high"]
    if proxies is None or proxies.empty:
        return pd.DataFrame(columns=cols)
    kinds = kinds or {}
    out = pd.DataFrame(
        {
            "arm_id": proxies["arm_id"].astype(str),
            "variant": proxies["variant"].astype(str),
            "kind": [kinds.get(a, "unknown") for a in proxies["arm_id"].astype(str)],
            "decisions": proxies["n"].astype("int64"),
            "feedback": proxies["n_feedback"].astype("int64"),
        }
    )
    for name, _ in PROXIES:
        m = proxies[f"{name}_ips" if weighted else name].astype(float)
        se = proxies[f"{name}_ips_se" if weighted else f"{name}_se"].astype(float)
        out[name] = m
        out[f"{name}_low"] = m - _Z95 * se
        out[f"{name}_high"] = m + _Z95 * se
    out["label"] = out["arm_id"] + " · " + out["variant"]
    cols.append("label")
    if kind_filter is not None:
        out = out[out["kind"].isin(list(kind_filter))]
    return out[cols].sort_values(["retry_rate", "arm_id"], ignore_index=True, na_position="last")


# --------------------------------------------------------------------------- offline runs


@dataclass(frozen=True)
class OfflineRun:
    """One offline run found on disk: its folder, its summary and its plots."""

    name: str
    path: Path
    summary: Mapping[str, Any]
    plots: tuple[Path, ...]
    mtime: float


def discover_results(root: str | Path, max_runs: int = 200) -> list[OfflineRun]:
    """Every ``summary*.json`` under ``root`` with the PNGs beside it, newest first.

    Written by ``switchboard simulate`` / ``replay`` / ``evaluate``; a run is a folder
    holding a summary JSON and any number of plots. Unreadable summaries are listed with
    an ``error`` entry instead of failing the page.
    """
    base = Path(root)
    if not base.is_dir():
        return []
    runs: list[OfflineRun] = []
    for summary in sorted(base.rglob("summary*.json")):
        try:
            data: Any = json.loads(summary.read_text())
        except (OSError, ValueError) as exc:
            data = {"error": f"unreadable summary: {exc}"}
        if not isinstance(data, Mapping):
            data = {"value": data}
        folder = summary.parent
        rel = folder.relative_to(base)
        name = str(rel) if str(rel) != "." else folder.name
        if summary.stem != "summary":
            name = f"{name}/{summary.stem}"
        plots = tuple(sorted(folder.glob("*.png")))
        runs.append(OfflineRun(name, folder, data, plots, summary.stat().st_mtime))
    runs.sort(key=lambda r: r.mtime, reverse=True)
    return runs[:max_runs]


def flatten_summary(summary: Mapping[str, Any], prefix: str = "") -> pd.DataFrame:
    """A nested summary as a two-column (key, value) table, scalars only, lists as text."""
    items: list[tuple[str, str]] = []

    def walk(obj: Any, key: str) -> None:
        if isinstance(obj, Mapping):
            for k, v in obj.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(obj, float):
            items.append((key, f"{obj:.6g}"))
        elif isinstance(obj, list) and obj and all(isinstance(x, Mapping) for x in obj):
            items.append((key, f"[table of {len(obj)} rows below]"))
        elif isinstance(obj, list) and len(obj) > 10:
            items.append((key, f"[{len(obj)} values]"))
        else:
            items.append((key, str(obj)))

    walk(summary, prefix)
    return pd.DataFrame(items, columns=["key", "value"])


# --------------------------------------------------------------------------- retention


def retention_bands(curve: pd.DataFrame) -> pd.DataFrame:
    """The store's retention curve (variant, day, units, retention, se) with a 95% band.

    Output columns: variant, day, n, rate, low, high (band clipped to [0, 1]); days
    with no complete unit are dropped.
    """
    if curve is None or curve.empty:
        return pd.DataFrame(columns=["variant", "day", "n", "rate", "low", "high"])
    c = curve[curve["units"] > 0]
    rate = c["retention"].astype(float)
    se = c["se"].astype(float).fillna(0.0)
    return pd.DataFrame(
        {
            "variant": c["variant"].astype(str),
            "day": c["day"].astype(int),
            "n": c["units"].astype(int),
            "rate": rate,
            "low": (rate - _Z95 * se).clip(0.0, 1.0),
            "high": (rate + _Z95 * se).clip(0.0, 1.0),
        }
    ).sort_values(["variant", "day"], ignore_index=True)


def matured_mask(exposure_ts: pd.Series, metric: str, as_of_ms: int, day_ms: int = 86_400_000) -> pd.Series:
    """Units whose day N of ``metric`` was complete at ``as_of_ms`` (``*_dN``; ``*_30``)."""
    digits = "".join(ch for ch in metric.rsplit("_", 1)[-1] if ch.isdigit())
    n = int(digits) if digits else 30
    return (exposure_ts.astype("int64") + (n + 1) * day_ms) <= as_of_ms


def arm_totals(shares: pd.DataFrame) -> pd.DataFrame:
    """Decisions per variant and arm over the whole range, with the arm's share in its variant."""
    if shares.empty:
        return pd.DataFrame(columns=["variant", "arm_id", "decisions", "share"])
    g = shares.groupby(["variant", "arm_id"], as_index=False)["decisions"].sum()
    g["share"] = g["decisions"] / g.groupby("variant")["decisions"].transform("sum")
    return g.sort_values(["variant", "decisions"], ascending=[True, False], ignore_index=True)


def to_percent(df: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """A copy of ``df`` with the fraction ``columns`` (0.25) as percentage points (25.0).

    Streamlit's number formats are printf-style and do not scale, so tables show
    ``%.1f%%`` over percentage points for one consistent number of decimals.
    """
    out = df.copy()
    for c in columns:
        if c in out.columns:
            out[c] = out[c].astype(float) * 100.0
    return out


def summary_tables(summary: Mapping[str, Any]) -> dict[str, pd.DataFrame]:
    """Top-level entries of a summary that are lists of records (e.g. one row per
    policy), as DataFrames, for display as tables."""
    out: dict[str, pd.DataFrame] = {}
    for k, v in summary.items():
        if isinstance(v, list) and v and all(isinstance(x, Mapping) for x in v):
            out[str(k)] = pd.DataFrame(list(v))
    return out


#: the lift metric the early read projects (``bandit.analysis.calibration.early_read``)
PROJECTED_METRIC = "day30_engagement"


def early_read_rows(projection: pd.DataFrame, lift: pd.DataFrame, cuped: bool) -> pd.DataFrame:
    """The early read beside the measurement: per variant, the projected day-30 lift and
    its interval (``bandit.analysis.calibration.early_read`` rows), the measured day-30
    lift of the overview's table (``lift_display`` rows of :data:`PROJECTED_METRIC`, the
    CUPED setting on screen) where its day 30 has matured, and measured − projected.
    A variant with a measurement but no projection keeps its row (projection NaN)."""
    cols = ["variant", "projected_lift", "ci_low", "ci_high", "n", "n_control",
            "measured_lift", "measured_ci_low", "measured_ci_high", "gap"]
    proj = projection if projection is not None else pd.DataFrame()
    meas = pd.DataFrame(columns=["variant", "measured_lift", "measured_ci_low", "measured_ci_high"])
    if lift is not None and not lift.empty and "metric_key" in lift.columns:
        m = lift[(lift["metric_key"] == PROJECTED_METRIC) & (lift["cuped"] == cuped)]
        meas = pd.DataFrame({"variant": m["variant"].astype(str),
                             "measured_lift": m["lift"].astype(float),
                             "measured_ci_low": m["ci_low"].astype(float),
                             "measured_ci_high": m["ci_high"].astype(float)})
    if proj.empty and meas.empty:
        return pd.DataFrame(columns=cols)
    if proj.empty:
        proj = pd.DataFrame(columns=["variant", "projected_lift", "ci_low", "ci_high", "n",
                                     "n_control"])
    p = proj[["variant", "projected_lift", "ci_low", "ci_high", "n", "n_control"]].copy()
    p["variant"] = p["variant"].astype(str)
    out = p.merge(meas, on="variant", how="outer").sort_values("variant", ignore_index=True)
    for c in ("projected_lift", "ci_low", "ci_high", "measured_lift", "measured_ci_low",
              "measured_ci_high"):
        out[c] = pd.to_numeric(out[c], errors="coerce").astype("float64")
    out["gap"] = out["measured_lift"] - out["projected_lift"]
    return out[cols]


def reward_version_rows(versions: pd.DataFrame, history: Any, config_reward: Any) -> pd.DataFrame:
    """One row per reward version: the α's (``config``: the config's ``[reward]``; a
    calibration id: its published block), when it took effect, the decisions it scored
    (``versions``, from ``Store.reward_versions``) and what it was fitted on. Published
    versions that have not scored a decision yet are listed with 0 decisions, after the
    used ones; rows come in order of taking effect."""
    cols = ["version", "alpha_retry", "alpha_rating", "alpha_length", "effective_from_ms",
            "first_decision_ms", "last_decision_ms", "decisions", "fitted_on_users", "r2_oof"]
    used = {str(r.reward_version): r for r in versions.itertuples()} if not versions.empty else {}
    rows: list[dict[str, Any]] = []
    published = {v.id: v for v in getattr(history, "versions", ())}

    def _row(vid: str) -> dict[str, Any]:
        v = published.get(vid)
        reward = v.reward if v is not None else (config_reward if vid == "config" else None)
        r = used.get(vid)
        src = dict(v.source) if v is not None else {}
        return {
            "version": vid,
            "alpha_retry": getattr(reward, "alpha_retry", math.nan),
            "alpha_rating": getattr(reward, "alpha_rating", math.nan),
            "alpha_length": getattr(reward, "alpha_length", math.nan),
            "effective_from_ms": v.effective_from_ms if v is not None else None,
            "first_decision_ms": int(r.since_ms) if r is not None else None,
            "last_decision_ms": int(r.until_ms) if r is not None else None,
            "decisions": int(r.decisions) if r is not None else 0,
            "fitted_on_users": src.get("n_units"),
            "r2_oof": src.get("r2_oof"),
        }

    for vid in used:
        rows.append(_row(vid))
    rows += [_row(vid) for vid in published if vid not in used]
    return pd.DataFrame(rows, columns=cols)
