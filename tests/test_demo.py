"""The demo as people run it: the whole loop on the embedded stack.

Real tansu broker, real learner / allocation server subprocesses, real chdb store.

* Headless, as CI runs it (``switchboard demo --headless --duration ... --json``), while
  every core is kept busy by processes the test starts: the simulated platform's ground
  truth is compared with the lift table the store and the stats module produce, and the
  simulated calendar must not depend on the machine's speed.
* Live, with its dashboard open in headless Chromium at every moment of a run
  (``tests/test_dashboard_browser.py`` holds the browser driver).

Both demos live in this one module so that a parallel run (``make test``: pytest-xdist,
``--dist loadfile``) gives them to one worker, one after the other: the cores the first
keeps busy must not slow the second into missing its mid-run moments.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simulations.demo import DAY_MS, EPOCH_MS, DemoOptions, _pace
from tests.fixtures.terminal import as_from_a_terminal
from tests.test_dashboard_browser import ARTIFACTS, CHROMIUM, PAGES, Browser, _switchboard

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
@pytest.mark.timeout(1500)  # a bound, not a speed claim: the run takes 3-6 min on 2 busy cores
def test_demo_headless_on_busy_cores_simulates_every_day(tmp_path: Path, busy_cores: int) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bandit.cli", "demo", "--headless", "--duration", "90", "--json",
         "--users", str(USERS), "--days", str(DAYS), "--workdir", str(tmp_path / "demo")],
        cwd=ROOT, capture_output=True, text=True, timeout=1200,
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
    assert result["failed_requests"] == 0, result["last_failure"]
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
    # ClickHouse holds complete day-30 cohorts, and the measured lift agrees with the truth
    (row,) = [r for r in result["lift_table"] if r["variant"] == "bandit"]
    assert row["n"] + row["n_control"] == USERS
    truth = result["true_lift_day30"]
    assert not math.isnan(truth)
    assert truth > 0.1 and row["rel_lift"] > 0
    # One run is one draw: its 95 % interval misses the truth in 1 run in 20 by design
    # (the intervals' coverage is validated over thousands of experiments in
    # tests/test_lift_validation.py). What this run must show is that the whole pipeline
    # measures the lift it simulated: the truth within 3.29 standard errors of the
    # estimate (a 99.9 % interval; a correct pipeline fails this 1 run in 1,000), each
    # side's standard error read off that side of the (asymmetric) 95 % interval.
    side = row["rel_ci_high"] - row["rel_lift"] if truth > row["rel_lift"] else (
        row["rel_lift"] - row["rel_ci_low"])
    z = abs(truth - row["rel_lift"]) / (side / 1.959964)
    assert z <= 3.290527, (truth, row)


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


# --- the live demo in a browser ---------------------------------------------------------

DEMO_ARTIFACTS = ARTIFACTS.parent / "demo"
_NO_EXCEPTION = "!document.querySelector('[data-testid=\"stException\"]')"
#: every static table fits its container (nothing cut off or scrolled away)
_NOTHING_CUT = (
    "[...document.querySelectorAll('[data-testid=\"stTable\"]')]"
    ".every(t => t.scrollWidth <= t.clientWidth + 1)"
)


def _offline_run(results: Path) -> None:
    """One offline run for the offline page (a summary and a plot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = results / "simulate-e2e"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"command": "simulate", "regret": 1.0}))
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1], [0, 1])
    fig.savefig(run / "regret.png")
    plt.close(fig)


class _Lines:
    """The demo's output lines, read by a thread (the test polls them)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        import threading

        self.lines: list[str] = []
        self._t = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._t.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def day(self) -> int:
        import re

        days = [int(m.group(1)) for line in self.lines if (m := re.search(r"day (\d+)/\d+ ·", line))]
        return max(days, default=0)

    def has(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def wait(self, cond: Any, timeout_s: float, proc: subprocess.Popen[str]) -> None:
        deadline = time.monotonic() + timeout_s
        while not cond():
            if proc.poll() is not None:
                raise AssertionError("demo exited early:\n" + "\n".join(self.lines[-30:]))
            if time.monotonic() > deadline:
                raise AssertionError("demo too slow:\n" + "\n".join(self.lines[-30:]))
            time.sleep(0.5)


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(1500)  # a bound, not a speed claim: 3-5 min alone, more beside other tests
def test_live_demo_pages_render_at_every_moment(tmp_path: Path) -> None:
    """``switchboard demo`` with a 5 s store TTL: every page in headless Chromium at the
    start (empty store), at two moments mid-run (partial cohorts, reopened snapshots of
    the store the learner owns) and after the last simulated day — never an exception box,
    and from mid-run on the chart each page exists for."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} missing: run .ci/ensure-test-tools")
    DEMO_ARTIFACTS.mkdir(parents=True, exist_ok=True)
    _offline_run(tmp_path / "results")
    env = {
        **os.environ,
        "SWITCHBOARD_DASHBOARD__STORE_TTL_S": "5",
        "SWITCHBOARD_DASHBOARD__RESULTS_DIR": str(tmp_path / "results"),
        "SWITCHBOARD_DASHBOARD__STALE_AFTER_S": str(10 * 365 * 86400),
        "SWITCHBOARD_DASHBOARD__LAG_AFTER_S": str(10 * 365 * 86400),
    }
    proc = subprocess.Popen(
        as_from_a_terminal([_switchboard(), "demo", "--users", "120", "--days", "10",
                            "--seconds-per-day", "15", "--workdir", str(tmp_path / "demo")]),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    out = _Lines(proc)
    started: dict[str, int] = {}
    try:
        out.wait(lambda: out.has("dashboard http://") and out.has("experiment id"), 240, proc)
        line = next(x for x in out.lines if "dashboard http://" in x)
        url = line.split("dashboard ", 1)[1].split()[0]
        with tempfile.TemporaryDirectory(prefix="sb-chromium-") as profile:
            browser = Browser(Path(profile))
            try:
                browser.call("Page.enable")
                # a 1280 px wide laptop screen: no column of the results may be cut off
                browser.call("Emulation.setDeviceMetricsOverride", width=1280, height=1600,
                             deviceScaleFactor=1, mobile=False)
                last_day = -1
                for moment in ("start", "mid-1", "mid-2", "after"):
                    if moment == "after":
                        out.wait(lambda: out.has("done simulating"), 600, proc)
                    elif moment != "start":
                        out.wait(lambda d=last_day: out.day() > d or out.has("done simulating"), 300, proc)
                    last_day = out.day()
                    started[moment] = -1 if out.has("done simulating") else last_day
                    for name, (path, selector) in PAGES.items():
                        browser.call("Page.navigate", url=f"{url}/{path}")
                        # after the run every page has its chart. Mid-run, how much the learner
                        # has stored depends on the machine's speed, not the simulated day: at
                        # mid-2 a page shows its chart or says in words why not yet (st.info)
                        if moment == "after":
                            want = selector
                        elif moment == "mid-2" and name != "overview":
                            want = f'{selector}, [data-testid="stAlert"], [data-testid="stAlertContainer"]'
                        else:
                            want = "h1"
                        loaded = browser.wait_for(want, timeout_s=90)
                        browser.screenshot(DEMO_ARTIFACTS / f"{moment}-{name}.png")
                        assert browser.evaluate(_NO_EXCEPTION), f"{moment}/{name}: exception box"
                        assert loaded, f"{moment}/{name}: no {want} (see test-artifacts/demo)"
                        assert browser.evaluate(_NOTHING_CUT), f"{moment}/{name}: a table is cut off"
                        if moment == "after" and name == "overview":
                            assert browser.evaluate(
                                "!!document.querySelector('[data-testid=\"stTable\"]')"
                            ), "after/overview: no results table"
            finally:
                browser.close()
        # three moments began while days were still being simulated
        assert all(started[m] >= 0 for m in ("start", "mid-1", "mid-2")), started
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # one Ctrl-C stops the demo and its services
            try:
                # stopping includes every service's shutdown and the final lift, on a
                # machine whose other test workers may leave this one a small share
                proc.wait(timeout=600)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert proc.returncode == 0, "\n".join(out.lines[-30:])
    assert "Traceback" not in "\n".join(out.lines)
