"""The headless demo, as CI runs it: the whole loop on the embedded stack.

Real tansu broker, real learner / allocation server subprocesses, real chdb store; the
simulated platform's ground truth is compared with the lift table the store and the
stats module produce. It runs as a person runs it (``switchboard demo --headless
--duration ... --json``) while every core is kept busy by processes the test starts:
the simulated calendar must not depend on the machine's speed.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulations.demo import DAY_MS, EPOCH_MS, DemoOptions, _pace

ROOT = Path(__file__).resolve().parent.parent
#: enough for complete day-30 cohorts (users join over 3 days) at a cost a loaded machine bears
USERS, DAYS = 300, 34


@pytest.fixture
def busy_cores() -> Iterator[int]:
    """One spinning process per core for the duration of the test (stopped afterwards)."""
    n = os.cpu_count() or 2
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield n
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait(10)


@pytest.mark.integration
@pytest.mark.slow
# one worker runs both demos, one after the other: the cores this test keeps busy must not
# slow the live browser demo into missing its mid-run moments
@pytest.mark.xdist_group("demo")
def test_demo_headless_on_busy_cores_simulates_every_day(tmp_path: Path, busy_cores: int) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bandit.cli", "demo", "--headless", "--duration", "90", "--json",
         "--users", str(USERS), "--days", str(DAYS), "--workdir", str(tmp_path / "demo")],
        cwd=ROOT, capture_output=True, text=True, timeout=540,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)  # stdout holds the JSON document and nothing else
    # status lines went to stderr: the token and experiment id it uses, no dashboard URL
    assert "API token demo-token" in proc.stderr and "experiment id demo" in proc.stderr
    assert "dashboard" not in proc.stderr
    assert "Traceback" not in proc.stderr

    # every configured day was simulated, however slow the machine; figures as of the last
    assert result["days_simulated"] == result["days"] == DAYS
    assert result["as_of_ms"] == EPOCH_MS + DAYS * DAY_MS
    # decisions were served and every process exited cleanly
    assert result["failed_requests"] == 0
    assert result["decisions"] >= USERS * (DAYS - 2)
    assert result["exit_codes"] == {"server": 0, "learner": 0}
    counts = result["store_counts"]
    assert counts["decisions"] == result["decisions"]
    # feedback that arrives before its decision is held (in the learner's snapshotted
    # state) until the decisions stream passes its time; only the stream's tail stays held
    assert result["feedback"] - 20 <= counts["feedback"] <= result["feedback"]
    assert counts["engagement"] == result["engagement"]
    assert counts["rewards"] >= 0.95 * result["decisions"]
    versions = [v for v in result["snapshot_versions"] if v.startswith("linucb:")]
    assert len(set(versions)) >= 10
    # ClickHouse holds complete day-30 cohorts, and the lift interval covers the truth
    (row,) = [r for r in result["lift_table"] if r["variant"] == "bandit"]
    assert row["n"] + row["n_control"] == USERS
    truth = result["true_lift_day30"]
    assert not math.isnan(truth)
    assert row["rel_ci_low"] <= truth <= row["rel_ci_high"]
    assert truth > 0.1 and row["rel_lift"] > 0


def test_pace_fits_the_remaining_days_in_the_budget() -> None:
    opts = DemoOptions(workdir=Path("."), days=10, seconds_per_day=3.0, duration_s=40.0)
    # on time: the configured pace, shrunk to fit 75 % of the budget over the days left
    assert _pace(opts, 0, elapsed_s=1.0, day_s=0.5) == pytest.approx(min(2.5, 29.0 / 9))
    # over budget: the remaining days run unpaced, never skipped
    assert _pace(opts, 4, elapsed_s=35.0, day_s=0.5) == 0.0
    # the last day never waits
    assert _pace(opts, 9, elapsed_s=1.0, day_s=0.0) == 0.0
    # interactive runs keep the configured pace
    live = DemoOptions(workdir=Path("."), days=10, seconds_per_day=3.0)
    assert _pace(live, 0, elapsed_s=100.0, day_s=1.0) == 2.0
