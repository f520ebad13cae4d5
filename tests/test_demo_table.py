"""The demo's final lift table: unbounded ends in words, the verdict beside its interval."""

from __future__ import annotations

import math

from rich.console import Console

from simulations.demo import DemoResult, _print_result, _table_rows

ROW = {"variant": "bandit", "n": 420, "n_control": 410, "mean": 1234.0, "mean_control": 1100.0,
       "rel_lift": 0.122, "rel_ci_low": -0.05, "rel_ci_high": 0.31, "seq_ci_low": -0.4,
       "seq_ci_high": math.inf, "prob_better": 0.91,
       "verdict": "no detectable difference yet (always-valid 95% interval includes 0)"}


def test_unbounded_end_reads_unbounded_and_verdict_follows_its_interval() -> None:
    (cells,) = _table_rows([ROW])
    assert cells[-2] == "[-40.0%, unbounded]"  # the always-valid interval ...
    assert cells[-1] == ROW["verdict"]  # ... and, right beside it, what it decided
    assert cells[-3] == "[-5.0%, +31.0%]"
    assert "inf" not in " ".join(cells)
    # a row with no lift yet (cohort too young) prints dashes, never an error
    (young,) = _table_rows([{"variant": "bandit", "verdict": "no lift yet: too early"}])
    assert young[-2] == "—" and young[-1] == "no lift yet: too early"


def test_printed_table_puts_the_verdict_after_the_always_valid_interval() -> None:
    result = DemoResult(days=36, days_simulated=36, as_of_ms=0, wall_s=1.0, users=830,
                        decisions=1, feedback=1, engagement=1, failed_requests=0, last_failure="",
                        true_lift_day30=0.1, oracle_planted_lift=0.2, lift_table=[ROW],
                        exit_codes={}, snapshot_versions=[], store_counts={})
    console = Console(record=True, width=400)
    _print_result(console, result)
    text = console.export_text()
    header = next(line for line in text.splitlines() if "verdict" in line)
    assert header.index("P(better)") < header.index("one-look") < header.index(
        "always-valid") < header.index("verdict")
    body = next(line for line in text.splitlines() if "bandit" in line)
    assert body.index("unbounded") < body.index("no detectable difference")
    assert "+inf" not in text
