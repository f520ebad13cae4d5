"""The headless demo, as CI runs it: the whole loop on the embedded stack.

Real tansu broker, real learner / allocation server subprocesses, real chdb store; the
simulated platform's ground truth is compared with the lift table the store and the
stats module produce.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from simulations.demo import DemoOptions, run_demo


@pytest.mark.integration
@pytest.mark.slow
def test_demo_headless_runs_the_whole_loop(tmp_path: Path) -> None:
    opts = DemoOptions(workdir=tmp_path / "demo", users=800, days=36, seconds_per_day=0.0,
                       duration_s=170.0, dashboard=False)
    result = run_demo(opts)

    # decisions were served and every process exited cleanly
    assert result.failed_requests == 0
    assert result.decisions >= 800 * 30
    assert result.exit_codes == {"server": 0, "learner": 0}
    # feedback was joined: rewards exist for (almost) every decision whose window closed
    counts = result.store_counts
    assert counts["decisions"] == result.decisions
    # feedback that arrives before its decision is held (in the learner's snapshotted
    # state) until the decisions stream passes its time; only the stream's tail stays held
    assert result.feedback - 20 <= counts["feedback"] <= result.feedback
    assert counts["engagement"] == result.engagement
    assert counts["rewards"] >= 0.95 * result.decisions
    # the model snapshot advanced while traffic flowed
    versions = [v for v in result.snapshot_versions if v.startswith("linucb:")]
    assert len(set(versions)) >= 10
    assert int(versions[-1].split(":")[1]) >= 0.9 * result.decisions
    # ClickHouse holds complete day-30 cohorts, and the lift interval covers the truth
    (row,) = [r for r in result.lift_table if r["variant"] == "bandit"]
    assert row["n"] + row["n_control"] == 800
    assert not math.isnan(result.true_lift_day30)
    assert row["rel_ci_low"] <= result.true_lift_day30 <= row["rel_ci_high"]
    # the expert mixture is ahead of GPT-3.5 (truth of this run and the estimate)
    assert result.true_lift_day30 > 0.1
    assert row["rel_lift"] > 0
