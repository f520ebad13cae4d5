"""End-to-end lift through a real chdb store and the ``switchboard lift`` CLI.

Synthetic experiments (``bandit.store.synthetic``) plant a known relative lift of
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

from bandit.cli import main
from bandit.config import ExperimentConfig, VariantConfig
from bandit.errors import InvalidInputError
from bandit.lift import METRICS, guardrail_table, lift_table
from bandit.store import ClickHouseStore, open_store
from bandit.store.synthetic import DAY_MS, SyntheticExperiment, insert_experiment


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


def test_lift_uses_configured_split_for_srm(store: ClickHouseStore,
                                           synthetic_68: SyntheticExperiment) -> None:
    _loaded(store, synthetic_68)
    skewed = ExperimentConfig(id="exp-68", variants=(
        VariantConfig("gpt35", 0.8, "fixed", ("baseline",)),
        VariantConfig("bandit", 0.2, "linucb")))
    row = lift_table(store, skewed, as_of_ms=synthetic_68.end_ms).iloc[0]
    assert row["srm_flag"] and row["srm_p"] < 1e-3
    assert "mismatch" in row["verdict"]


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
    rel = stats.relative_lift(adj.treatment, adj.control)
    assert (row["n"], row["n_control"]) == (len(t), len(c))
    assert row["mean"] == pytest.approx(t[col].mean(), rel=1e-9)
    assert row["variance_reduction"] == pytest.approx(adj.variance_reduction, rel=1e-6, abs=1e-9)
    assert (row["rel_lift"], row["rel_ci_low"], row["rel_ci_high"]) == pytest.approx(
        (rel.estimate, rel.ci_low, rel.ci_high), rel=1e-6)
