"""Pure dashboard transforms on small hand-made frames (no Streamlit, no store)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dashboards import transforms as T


def test_lift_display_renames_lift_table_columns_and_drops_control() -> None:
    table = pd.DataFrame(
        {
            "variant": ["bandit", "gpt35"],
            "rel_lift": [0.1, 0.0],
            "rel_ci_low": [0.05, 0.0],
            "rel_ci_high": [0.15, 0.0],
            "seq_ci_low": [0.01, 0.0],
            "seq_ci_high": [0.2, 0.0],
            "prob_better": [0.99, 0.5],
            "n": [500, 500],
            "n_control": [480, 480],
            "verdict": ["better than control", "-"],
            "metric": ["day7_retention"] * 2,
        }
    )
    out = T.lift_display({("day7_retention", True): table}, control="gpt35")
    assert list(out["variant"]) == ["bandit"]
    r = out.iloc[0]
    assert (r["metric"], r["lift"], r["av_high"], r["p_better"], r["n_treatment"]) == (
        "Day-7 retention",
        0.1,
        0.2,
        0.99,
        500,
    )
    assert r["cuped"] and r["verdict"] == "better than control"


def test_lift_display_keeps_the_tables_verdict_and_never_decides_one() -> None:
    table = pd.DataFrame({"variant": ["bandit"], "rel_lift": [0.3], "rel_ci_low": [0.1],
                          "rel_ci_high": [0.5], "seq_ci_low": [-0.1], "seq_ci_high": [0.8],
                          "verdict": ["no detectable difference yet (always-valid 95% "
                                      "interval includes 0)"]})
    out = T.lift_display({("day7_retention", False): table}, control="gpt35")
    assert out.iloc[0]["verdict"] == table.iloc[0]["verdict"]
    bare = T.lift_display({("day7_retention", False): table.drop(columns="verdict")}, "gpt35")
    assert bare.iloc[0]["verdict"].startswith("no verdict")


def test_lift_display_empty_has_columns() -> None:
    out = T.lift_display({}, control="gpt35")
    assert out.empty and {"lift", "ci_low", "verdict"} <= set(out.columns)


def test_traffic_share_sums_to_one_per_bucket() -> None:
    df = pd.DataFrame(
        {
            "bucket": ["d1", "d1", "d1", "d2"],
            "arm_id": ["a", "b", "a", "b"],
            "n": [1, 3, 4, 2],
        }
    )
    out = T.traffic_share(df, "arm_id")
    assert out.groupby("bucket")["share"].sum().tolist() == [1.0, 1.0]
    d1 = out[out.bucket == "d1"].set_index("arm_id")["share"]
    assert d1["a"] == 5 / 8 and d1["b"] == 3 / 8


def test_arm_estimates_marks_cold_start_and_width() -> None:
    out = T.arm_estimates(["a", "b"], np.array([0.5, 0.0]), np.array([0.04, 1.0]), [10, 0], 2.0)
    a = out.set_index("arm_id")
    assert a.loc["a", "width"] == pytest.approx(0.4)
    assert a.loc["b", "cold_start"] and not a.loc["a", "cold_start"]
    assert list(out["arm_id"]) == ["a", "b"]


def test_leaderboard_uses_ips_columns_and_filters_kind() -> None:
    prox = pd.DataFrame(
        {
            "arm_id": ["x", "g"],
            "variant": ["bandit", "gpt35"],
            "n": [10, 20],
            "n_feedback": [9, 20],
        }
    )
    for name, vals in (
        ("retry_rate", (0.2, 0.1)),
        ("mean_rating", (4.0, 3.0)),
        ("mean_length", (9.0, 5.0)),
    ):
        prox[name] = [vals[0] + 1, vals[1] + 1]
        prox[f"{name}_se"] = [0.0, 0.0]
        prox[f"{name}_ips"] = list(vals)
        prox[f"{name}_ips_se"] = [0.01, 0.02]
    out = T.leaderboard(prox, {"x": "expert", "g": "baseline"})
    assert list(out["arm_id"]) == ["g", "x"]  # lowest retry rate first
    assert out.set_index("arm_id").loc["x", "retry_rate_high"] == pytest.approx(
        0.2 + 1.959963984540054 * 0.01
    )
    plain = T.leaderboard(prox, {}, weighted=False)
    assert set(plain["kind"]) == {"unknown"} and plain["retry_rate"].min() == pytest.approx(1.1)
    assert list(T.leaderboard(prox, {"x": "expert", "g": "baseline"}, ["expert"])["arm_id"]) == ["x"]
    assert T.leaderboard(pd.DataFrame(), {}).empty


def test_retention_bands_clip_and_drop_empty_days() -> None:
    curve = pd.DataFrame(
        {
            "variant": ["a", "a", "a"],
            "day": [0, 1, 2],
            "units": [10, 10, 0],
            "retained": [10, 5, 0],
            "retention": [1.0, 0.5, math.nan],
            "se": [0.0, 0.158, math.nan],
        }
    )
    out = T.retention_bands(curve)
    assert list(out["day"]) == [0, 1]
    assert out["high"].max() <= 1.0 and out["low"].min() >= 0.0


def test_matured_mask_counts_whole_days() -> None:
    day = 86_400_000
    ts = pd.Series([0, day])
    assert T.matured_mask(ts, "retained_d1", 2 * day).tolist() == [True, False]
    assert T.matured_mask(ts, "cum_engagement_30", 31 * day).tolist() == [True, False]


def test_filter_frame_by_variant_arm_and_time() -> None:
    df = pd.DataFrame({"variant": ["a", "b", "a"], "arm_id": ["x", "x", "y"], "ts": [1, 2, 3]})
    assert len(T.filter_frame(df, variants=["a"])) == 2
    assert len(T.filter_frame(df, arms=["y"])) == 1
    assert T.filter_frame(df, ts_col="ts", start_ms=2, end_ms=3)["ts"].tolist() == [2]


def test_discover_results_finds_summaries_and_plots(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "summary.json").write_text(json.dumps({"regret": 1.0, "nested": {"k": 2}}))
    (tmp_path / "a" / "p.png").write_bytes(b"\x89PNG")
    (tmp_path / "b" / "deep").mkdir(parents=True)
    (tmp_path / "b" / "deep" / "summary.json").write_text("{not json")
    runs = T.discover_results(tmp_path)
    by = {r.name: r for r in runs}
    assert set(by) == {"a", "b/deep"}
    assert len(by["a"].plots) == 1 and "error" in by["b/deep"].summary
    flat = T.flatten_summary(by["a"].summary)
    assert dict(zip(flat["key"], flat["value"], strict=True)) == {"regret": "1", "nested.k": "2"}
    assert T.discover_results(tmp_path / "missing") == []


def test_health_and_staleness_banners() -> None:
    assert T.health_banners(False, "sample ratio as designed", True, 0) == []
    (srm,) = T.health_banners(True, "sample-ratio mismatch since 2026-01-01", True, 0)
    assert srm.level == "error" and srm.detail.startswith("Sample-ratio mismatch since")
    (untested, cross) = T.health_banners(False, "sample ratio not tested: no design", False, 12)
    assert untested.level == "info" and cross.level == "warning"
    assert "12 units" in cross.detail and "left out" in cross.detail
    assert T.staleness_banner("data", None, 0, 10).title == "No data yet"
    assert T.staleness_banner("data", 0, 5_000, 10) is None
    assert "Stale" in T.staleness_banner("data", 0, 50_000, 10).title


def test_to_percent_scales_copy() -> None:
    df = pd.DataFrame({"share": [0.25], "n": [3]})
    out = T.to_percent(df, ["share", "absent"])
    assert out["share"].iloc[0] == 25.0 and df["share"].iloc[0] == 0.25


def test_summary_tables_pick_lists_of_records() -> None:
    summary = {
        "policies": [{"policy": "linucb", "regret": 1.5}, {"policy": "uniform", "regret": 9.0}],
        "seed": 3,
        "curve": [1, 2, 3],
    }
    tables = T.summary_tables(summary)
    assert list(tables) == ["policies"]
    assert tables["policies"]["regret"].tolist() == [1.5, 9.0]
    flat = dict(zip(*T.flatten_summary(summary).to_dict("list").values(), strict=True))
    assert flat["policies"] == "[table of 2 rows below]" and flat["seed"] == "3"


def test_guardrail_banners_with_no_guardrails_configured_is_empty_not_a_keyerror() -> None:
    from dashboards.analysis import guardrail_banners

    assert guardrail_banners(pd.DataFrame()) == []  # a table with no columns at all
    rows = pd.DataFrame({"metric": ["day7_retention", "day30_messages"],
                         "variant": ["bandit", "bandit"], "status": ["degraded", "inconclusive"],
                         "estimate": [-0.1, -0.01],
                         "detail": ["degraded: upper one-sided 95% bound -5.0% is below the "
                                    "-2.0% margin", "inconclusive (one-sided 95%): would "
                                    "detect a 6.0% drop at n = 300 per variant"]})
    err, info = guardrail_banners(rows)
    assert err.level == "error" and "one-sided 95%" in err.detail
    assert info.level == "info" and "would detect a 6.0% drop" in info.detail


def _lift_rows() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "metric": ["Day-30 engagement"] * 3 + ["Day-7 retention"],
            "metric_key": ["day30_engagement"] * 3 + ["day7_retention"],
            "variant": ["bandit", "bandit", "uniform", "bandit"],
            "cuped": [True, False, True, True],
            "lift": [0.10, 0.12, -0.02, 0.5],
            "ci_low": [0.02, 0.01, -0.1, 0.4],
            "ci_high": [0.18, 0.23, 0.06, 0.6],
        }
    )


def test_early_read_rows_put_projection_beside_measured_day30_lift() -> None:
    proj = pd.DataFrame({"variant": ["bandit", "uniform"], "n": [700, 650],
                         "n_control": [690, 690], "projected_lift": [0.07, 0.01],
                         "ci_low": [-0.05, -0.1], "ci_high": [0.2, 0.12]})
    out = T.early_read_rows(proj, _lift_rows(), cuped=True)
    b = out.set_index("variant").loc["bandit"]
    assert b["measured_lift"] == pytest.approx(0.10)
    assert b["gap"] == pytest.approx(0.10 - 0.07)
    assert b["n"] == 700 and b["ci_high"] == pytest.approx(0.2)
    # the CUPED setting on screen picks the measurement; other metrics never leak in
    off = T.early_read_rows(proj, _lift_rows(), cuped=False).set_index("variant")
    assert off.loc["bandit", "measured_lift"] == pytest.approx(0.12)
    assert math.isnan(off.loc["uniform", "measured_lift"]) and math.isnan(off.loc["uniform", "gap"])


def test_early_read_rows_keep_either_side_alone() -> None:
    # a projection before day 30 matured: no measurement, no gap
    proj = pd.DataFrame({"variant": ["bandit"], "n": [50], "n_control": [40],
                         "projected_lift": [0.03], "ci_low": [-0.2], "ci_high": [0.3]})
    only = T.early_read_rows(proj, pd.DataFrame(), cuped=True)
    assert only["variant"].tolist() == ["bandit"] and only["gap"].isna().all()
    # a measurement without a projection (no calibration): the measurement stays
    meas = T.early_read_rows(pd.DataFrame(), _lift_rows(), cuped=True)
    assert meas["variant"].tolist() == ["bandit", "uniform"]
    assert meas["projected_lift"].isna().all() and meas["measured_lift"].notna().all()
    assert T.early_read_rows(pd.DataFrame(), pd.DataFrame(), cuped=True).empty
