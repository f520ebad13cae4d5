"""End-to-end lift through a real chdb store and the ``switchboard lift`` CLI.

Synthetic experiments (``bandit.testing.synthetic``) plant a known relative lift of
screen-time engagement for ``bandit`` over ``gpt35``; the lift table must recover it
inside its interval. Fixed seeds; a fresh seed would fail a 95 % coverage check 5 % of
the time, which is why they are fixed and why the assertions are "within interval".
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bandit.analysis.lift import METRICS, guardrail_table, lift_table
from bandit.cli import main
from bandit.config import ExperimentConfig, VariantConfig
from bandit.errors import InvalidInputError
from bandit.store import ClickHouseStore, open_store
from bandit.testing.synthetic import DAY_MS, SyntheticExperiment, insert_experiment


def _loaded(store: ClickHouseStore, data: SyntheticExperiment) -> ClickHouseStore:
    insert_experiment(store, data)
    return store


def test_lift_recovers_planted_20_percent(store: ClickHouseStore,
                                          synthetic_20: SyntheticExperiment) -> None:
    _loaded(store, synthetic_20)
    table = lift_table(store, synthetic_20.experiment_id, "day30_engagement",
                       as_of_ms=synthetic_20.end_ms)
    row = table.set_index("variant").loc["bandit"]
    assert row["n"] + row["n_control"] == 6000
    assert row["rel_ci_low"] <= 0.20 <= row["rel_ci_high"]
    assert row["seq_ci_low"] <= 0.20 <= row["seq_ci_high"]
    assert row["rel_ci_low"] > 0  # detected at this sample size
    assert row["seq_ci_low"] <= row["rel_ci_low"] and row["seq_ci_high"] >= row["rel_ci_high"]
    assert row["variance_reduction"] > 0.05
    assert not row["srm_flag"] and row["prob_better"] > 0.99
    assert "better" in row["verdict"]


def test_lift_recovers_planted_68_percent_on_every_engagement_metric(
        store: ClickHouseStore, synthetic_68: SyntheticExperiment) -> None:
    """Four checks at once, so each uses a 99 % interval (≈ 4 % family-wise miss rate)."""
    _loaded(store, synthetic_68)
    for metric in ("day1_engagement", "day7_engagement", "day30_engagement", "cum30_engagement"):
        row = lift_table(store, "exp-68", metric, as_of_ms=synthetic_68.end_ms,
                         alpha=0.01).iloc[0]
        assert row["rel_ci_low"] <= 0.68 <= row["rel_ci_high"], metric
        assert row["rel_ci_low"] > 0.3, metric


def test_lift_cuped_narrows_interval(store: ClickHouseStore,
                                     synthetic_20: SyntheticExperiment) -> None:
    _loaded(store, synthetic_20)
    on = lift_table(store, synthetic_20.experiment_id, "cum30_engagement",
                    as_of_ms=synthetic_20.end_ms, cuped=True).iloc[0]
    off = lift_table(store, synthetic_20.experiment_id, "cum30_engagement",
                     as_of_ms=synthetic_20.end_ms, cuped=False).iloc[0]
    assert on["rel_ci_high"] - on["rel_ci_low"] < off["rel_ci_high"] - off["rel_ci_low"]
    assert off["variance_reduction"] == 0.0 and on["variance_reduction"] > 0.2


def test_lift_every_metric_computes(store: ClickHouseStore,
                                    synthetic_68: SyntheticExperiment) -> None:
    _loaded(store, synthetic_68)
    for metric in METRICS:
        row = lift_table(store, "exp-68", metric, as_of_ms=synthetic_68.end_ms).iloc[0]
        assert all(math.isfinite(row[k]) for k in ("rel_lift", "rel_ci_low", "seq_ci_high"))
    guards = guardrail_table(store, "exp-68", synthetic_68.end_ms)
    assert set(guards["metric"]) == {"day7_retention", "day30_messages"}
    assert set(guards["status"]) <= {"ok", "inconclusive", "degraded"}


def test_lift_uses_configured_split_for_srm_when_no_design_is_recorded(
        store: ClickHouseStore, synthetic_68: SyntheticExperiment) -> None:
    insert_experiment(store, synthetic_68, record_design=False)
    skewed = ExperimentConfig(id="exp-68", variants=(
        VariantConfig("gpt35", 0.8, "fixed", ("baseline",)),
        VariantConfig("bandit", 0.2, "linucb")))
    row = lift_table(store, skewed, as_of_ms=synthetic_68.end_ms).iloc[0]
    assert row["srm_flag"] and row["srm_p"] < 1e-3 and row["design_source"] == "config"
    assert "mismatch" in row["verdict"] and row["status"] == "srm"
    # the store's recorded design, when there is one, is what the ratio is tested against
    store.record_design("exp-68", {"gpt35": 0.5, "bandit": 0.5}, synthetic_68.start_ms)
    row = lift_table(store, skewed, as_of_ms=synthetic_68.end_ms).iloc[0]
    assert not row["srm_flag"] and row["design_source"] == "store"


def test_lift_no_complete_cohort_is_a_row_in_words(store: ClickHouseStore,
                                                   synthetic_68: SyntheticExperiment) -> None:
    _loaded(store, synthetic_68)
    early = synthetic_68.start_ms + 20 * DAY_MS  # nobody's day 30 is over yet
    (row,) = lift_table(store, "exp-68", "day30_engagement", as_of_ms=early).to_dict("records")
    assert row["status"] == "too early" and row["n"] == 0
    assert row["verdict"].startswith("not enough data yet: 0 treatment and 0 control units "
                                     "have day-30 in the past")
    assert math.isnan(row["seq_ci_low"]) and math.isnan(row["rel_lift"])


def test_lift_unknown_experiment_or_metric_raises(store: ClickHouseStore,
                                                 synthetic_68: SyntheticExperiment) -> None:
    _loaded(store, synthetic_68)
    with pytest.raises(InvalidInputError, match="no exposed units"):
        lift_table(store, "exp-nope")
    with pytest.raises(InvalidInputError, match="metric"):
        lift_table(store, "exp-68", "day31_engagement")


# ---------------------------------------------------------------------- CLI


def _write(store_dsn: str, data: SyntheticExperiment) -> None:
    s = open_store(store_dsn)
    try:
        insert_experiment(s, data)
    finally:
        s.close()


def test_lift_cli_json_recovers_lift(store_dsn: str, synthetic_20: SyntheticExperiment,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    _write(store_dsn, synthetic_20)
    rc = main(["lift", "--experiment", synthetic_20.experiment_id, "--json", "--dsn", store_dsn,
               "--as-of-ms", str(synthetic_20.end_ms)])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    (row,) = out["lift"]
    assert row["variant"] == "bandit" and row["rel_ci_low"] <= 0.2 <= row["rel_ci_high"]
    assert {g["metric"] for g in out["guardrails"]} == {"day7_retention", "day30_messages"}


def test_lift_cli_table_output(store_dsn: str, synthetic_68: SyntheticExperiment,
                               capsys: pytest.CaptureFixture[str]) -> None:
    _write(store_dsn, synthetic_68)
    rc = main(["lift", "--experiment", "exp-68", "--metric", "day7_retention", "--dsn", store_dsn,
               "--as-of-ms", str(synthetic_68.end_ms)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "day7_retention" in out and "always-valid" in out and "guardrails" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--experiment", "exp-nope"], "no exposed units"),
        (["--experiment", "exp-68", "--metric", "bogus"], "metric must be one of"),
        (["--experiment", "exp-68", "--as-of-ms", "1767225600000"], "no exposed units"),
    ],
    ids=["unknown-experiment", "unknown-metric", "before-start"],
)
def test_lift_cli_bad_input_exits_2_without_traceback(
        store_dsn: str, synthetic_68: SyntheticExperiment, capsys: pytest.CaptureFixture[str],
        args: list[str], message: str) -> None:
    _write(store_dsn, synthetic_68)
    rc = main(["lift", *args, "--dsn", store_dsn])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err and "Traceback" not in err


def test_lift_cli_missing_store_exits_2(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["lift", "--experiment", "x", "--dsn", f"chdb://{tmp_path}/absent"])
    assert rc == 2 and "no store" in capsys.readouterr().err


def test_lift_cli_reads_store_owned_by_another_process(
        store: ClickHouseStore, store_dsn: str, synthetic_68: SyntheticExperiment) -> None:
    """The real entry point in a subprocess, while this process owns the store."""
    insert_experiment(store, synthetic_68)
    out = subprocess.run(
        [sys.executable, "-m", "bandit.cli", "lift", "--experiment", "exp-68", "--json",
         "--dsn", store_dsn, "--as-of-ms", str(synthetic_68.end_ms)],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    row = json.loads(out.stdout)["lift"][0]
    assert row["rel_ci_low"] <= 0.68 <= row["rel_ci_high"]


@pytest.mark.parametrize("metric", ["day30_engagement", "day7_retention", "cum30_messages"])
def test_lift_from_engine_sums_equals_per_unit_statistics(
        store: ClickHouseStore, synthetic_68: SyntheticExperiment, metric: str) -> None:
    """The lift computed from in-engine sums equals bandit.stats on unit_metrics rows."""
    from bandit import stats

    _loaded(store, synthetic_68)
    row = lift_table(store, "exp-68", metric, as_of_ms=synthetic_68.end_ms).iloc[0]
    col, cov = METRICS[metric]
    um = store.unit_metrics("exp-68", synthetic_68.end_ms).dropna(subset=[col])
    t, c = um[um["variant"] == "bandit"], um[um["variant"] == "gpt35"]
    adj = stats.cuped(t[col], c[col], t[cov], c[cov])
    # a 0/1 metric's fixed-horizon interval is the score interval of its raw counts
    binary = metric.endswith("_retention")
    rel = (stats.relative_lift(t[col], c[col]) if binary
           else stats.relative_lift(adj.treatment, adj.control))
    seq = stats.sequential_lift(adj.treatment, adj.control)
    assert (row["seq_ci_low"], row["seq_ci_high"]) == pytest.approx(
        (seq.ci_low, seq.ci_high), rel=1e-6)
    assert (row["n"], row["n_control"]) == (len(t), len(c))
    assert row["mean"] == pytest.approx(t[col].mean(), rel=1e-9)
    assert row["variance_reduction"] == pytest.approx(adj.variance_reduction, rel=1e-6, abs=1e-9)
    assert (row["rel_lift"], row["rel_ci_low"], row["rel_ci_high"]) == pytest.approx(
        (rel.estimate, rel.ci_low, rel.ci_high), rel=1e-6)


# ---------------------------------------------------------------------- design, health


def test_lift_90_10_no_lift_is_not_an_srm_alarm_without_config(store_dsn: str,
                                                              capsys: pytest.CaptureFixture[str]
                                                              ) -> None:
    """A real 90/10 split read through the CLI with no config describing it: the recorded
    design is the reference (previously an assumed 50/50 read p = 0.0); with no design
    recorded the ratio is not tested, never tested against an assumed split."""
    from bandit.testing.synthetic import generate_experiment

    s = open_store(store_dsn)
    try:
        insert_experiment(s, generate_experiment(3000, 0.0, seed=9010, experiment_id="exp-9010",
                                                 treatment_share=0.1))
        insert_experiment(s, generate_experiment(3000, 0.0, seed=9011, experiment_id="exp-bare",
                                                 treatment_share=0.1), record_design=False)
        end = generate_experiment(10, 0.0, seed=1).end_ms
    finally:
        s.close()
    for exp, source, tested in (("exp-9010", "store", True), ("exp-bare", "none", False)):
        rc = main(["lift", "--experiment", exp, "--json", "--dsn", store_dsn,
                   "--as-of-ms", str(end)])
        out = json.loads(capsys.readouterr().out)
        assert rc == 0
        (row,) = out["lift"]
        assert not row["srm_flag"] and "mismatch" not in row["verdict"], row
        assert out["health"]["design_source"] == source
        assert (out["health"]["srm_p"] is not None) == tested
        if tested:
            assert out["health"]["design"][0]["weights"] == {"bandit": 0.1, "gpt35": 0.9}


def test_lift_weight_change_mid_experiment_is_tested_per_period(store: ClickHouseStore) -> None:
    """50/50, then 80/20 from day 18: no alarm with both periods recorded; recording only
    the first weight set (what a pooled test against one split sees) is an alarm."""
    from bandit.analysis.lift import experiment_health
    from bandit.testing.synthetic import generate_experiment

    data = generate_experiment(4000, 0.0, seed=5080, days=60, experiment_id="exp-change",
                               weight_change=(18, 0.2))
    insert_experiment(store, data)
    h = experiment_health(store, "exp-change", data.end_ms)
    assert len(h.periods) == 2 and not h.srm_flag and h.srm_p > 0.01, h
    row = lift_table(store, "exp-change", as_of_ms=data.end_ms).iloc[0]
    assert not row["srm_flag"] and row["weight_periods"] == 2
    one = generate_experiment(4000, 0.0, seed=5080, days=60, experiment_id="exp-change-1",
                              weight_change=(18, 0.2))
    insert_experiment(store, one, record_design=False)
    store.record_design("exp-change-1", one.design[0][1], one.design[0][0])
    h1 = experiment_health(store, "exp-change-1", one.end_ms)
    assert h1.srm_flag and "mismatch" in h1.srm_detail
    assert "do not trust" in lift_table(store, "exp-change-1", as_of_ms=one.end_ms).iloc[0][
        "verdict"]


def test_lift_cross_exposed_units_are_counted_and_left_out(store: ClickHouseStore) -> None:
    from bandit.testing.synthetic import generate_experiment

    data = generate_experiment(2000, 0.2, seed=4242, experiment_id="exp-cross",
                               cross_exposed=150)
    insert_experiment(store, data)
    row = lift_table(store, "exp-cross", "day1_retention", as_of_ms=data.end_ms).iloc[0]
    assert row["cross_exposed"] == 150 and row["cross_exposed_excluded"]
    assert row["n"] + row["n_control"] == 2000 - 150
    both = lift_table(store, "exp-cross", "day1_retention", as_of_ms=data.end_ms,
                      include_cross_exposed=True).iloc[0]
    assert both["n"] + both["n_control"] == 2000 and not both["cross_exposed_excluded"]
    assert len(store.unit_metrics("exp-cross", data.end_ms)) == 2000 - 150


def test_lift_all_zero_cohorts_give_a_clear_row_through_the_cli(
        store_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Exposures with no engagement at all, and a treatment arm with none: rows in words,
    exit 0, for every metric and the guardrails (a ZeroDivisionError used to end the
    command for every metric)."""
    import dataclasses

    from bandit.testing.synthetic import generate_experiment

    data = generate_experiment(400, 0.0, seed=77, experiment_id="exp-zero")
    treated = set(data.exposures.loc[data.exposures["variant"] == "bandit", "unit_id"])
    data = dataclasses.replace(  # the treatment arm has no engagement at all
        data, engagement=data.engagement[~data.engagement["unit_id"].isin(treated)])
    s = open_store(store_dsn)
    try:
        insert_experiment(s, data)
        silent = generate_experiment(400, 0.0, seed=78, experiment_id="exp-silent",
                                     first_unit=10_000)
        insert_experiment(s, dataclasses.replace(silent, engagement=silent.engagement.iloc[:0]))
    finally:
        s.close()
    for exp, words in (("exp-silent", "no activity at all yet"),
                       ("exp-zero", "treatment is all zero")):
        for metric in ("day7_retention", "day30_engagement"):
            rc = main(["lift", "--experiment", exp, "--metric", metric, "--json", "--dsn",
                       store_dsn, "--as-of-ms", str(data.end_ms)])
            captured = capsys.readouterr()
            assert rc == 0, captured.err
            out = json.loads(captured.out)
            (row,) = out["lift"]
            assert row["status"] == "too early" and words in row["verdict"], row
            assert row["seq_ci_low"] is None
            assert all(g["status"] == "no data" for g in out["guardrails"])
    rc = main(["lift", "--experiment", "exp-zero", "--dsn", store_dsn,
               "--as-of-ms", str(data.end_ms)])
    text = capsys.readouterr().out
    assert rc == 0 and "treatment is all zero" in text and "n/a" in text


def test_cuped_reduction_reported_on_data_with_new_users(store: ClickHouseStore) -> None:
    """30 % of units have no pre-period activity: the reported variance reduction equals
    1 - var(adjusted) / var(raw) computed here from the unit rows, and is smaller than on
    the same world without new users."""
    from bandit.testing.synthetic import generate_experiment

    reductions = {}
    for share, exp in ((0.3, "exp-new"), (0.0, "exp-old")):
        data = generate_experiment(3000, 0.2, seed=303, experiment_id=exp,
                                   new_user_share=share)
        assert (data.new_users > 0) == (share > 0)
        insert_experiment(store, data)
        row = lift_table(store, exp, "cum30_engagement", as_of_ms=data.end_ms).iloc[0]
        um = store.unit_metrics(exp, data.end_ms).dropna(subset=["cum_engagement_30"])
        y, x = um["cum_engagement_30"], um["pre_engagement"]
        g = um["variant"]
        yc = y - y.groupby(g).transform("mean")
        xc = x - x.groupby(g).transform("mean")
        theta = (xc * yc).sum() / (xc * xc).sum()
        expected = 1 - ((yc - theta * xc) ** 2).sum() / (yc**2).sum()
        assert row["variance_reduction"] == pytest.approx(expected, rel=1e-6)
        reductions[share] = row["variance_reduction"]
        if share > 0:
            assert (um["pre_engagement"] == 0).mean() >= 0.3
    assert 0 < reductions[0.3] < reductions[0.0]


def test_record_design_change_opens_a_period_only_when_the_weights_change(
        store: ClickHouseStore) -> None:
    from bandit.analysis.lift import record_design_change

    even = {"gpt35": 0.5, "bandit": 0.5}
    assert record_design_change(store, "exp-cfg", even, 1_000)
    assert not record_design_change(store, "exp-cfg", even, 2_000)  # a restart, same weights
    assert not record_design_change(store, "exp-cfg", {"gpt35": 3, "bandit": 3}, 2_500)  # shares
    assert record_design_change(store, "exp-cfg", {"gpt35": 0.9, "bandit": 0.1}, 3_000)
    # a replay of every event in order adds nothing
    assert not record_design_change(store, "exp-cfg", even, 1_000)
    assert not record_design_change(store, "exp-cfg", even, 2_000)
    assert not record_design_change(store, "exp-cfg", {"gpt35": 0.9, "bandit": 0.1}, 3_000)
    # a late event of the first weights, stamped before every period, is the first period
    assert not record_design_change(store, "exp-cfg", even, 500)
    # back to the first weights: a third period
    assert record_design_change(store, "exp-cfg", even, 4_000)
    d = store.experiment_design("exp-cfg")
    assert sorted(set(d["since_ms"])) == [1_000, 3_000, 4_000]
    with pytest.raises(InvalidInputError, match="weights"):
        record_design_change(store, "exp-cfg", {"gpt35": -1.0}, 5_000)
