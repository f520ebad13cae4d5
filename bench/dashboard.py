"""Benchmark: the dashboard's overview page load, server side, over 10 million engagement rows.

Fills an embedded chdb store server-side (``INSERT ... SELECT FROM numbers()``: no Python
row generation) with ``--users`` exposed units (default 1,000,000), ``--rows`` engagement
events (default 10,000,000, each on a day in [-7, 31) around the unit's exposure, screen
time scaled by the unit's engagement level, +10 % for ``bandit``), ``--decisions``
decisions (default 1,000,000) and feedback on 90 % of them (retry, rating, conversation
length: better for more engaged units, and a little better for ``bandit``; what the early
read's surrogate index is fitted on), then lets the parts merge (``OPTIMIZE ...
FINAL``: the state of a store whose background merges have caught up; ``--no-settle``
measures straight after the bulk insert instead, while the engine is still merging 10^7
rows on the same cores). Then times, with empty caches (what a first visitor waits for):

* ``overview_s``: ``dashboards.analysis.overview`` — one aggregate query of the overview
  metrics' per-variant sums (``Store.cohort_moments_many`` for
  ``analysis.overview_pairs``), unit counts, 8 ``bandit.analysis.lift.lift_table`` calls answered
  from those sums (the CUPED setting on screen), the guardrail table, SRM, the
  first/last decision (``Store.decision_span``) for staleness, the banners;
* ``cohort_query_s``: that aggregate query alone, run again right after (engine warm);
* ``per_unit_cohort_query_s``: for comparison, ``Store.unit_metrics`` (one row per unit,
  used by the Retention page's lift-over-time and by the early read);
* ``early_read_s``: ``dashboards.analysis.early_read``, the overview's early read — one
  aggregate query (``Store.early_moments``: per-group, per-hash-block moments of the
  users' window proxies and outcome), the surrogate index's cross-fitted least squares
  and bootstrap from them, the projection's interval (the bench fails if it makes no
  projection: that would time a one-line message, not what users wait for);
* ``overview_page_s``: the whole overview page under ``streamlit.testing.v1.AppTest``
  (sidebar queries, the page, the lift table and chart, the early read's projection
  table), store opened read-only, in a new ``AppTest`` — which also pays AppTest's
  one-off scan of installed packages for Streamlit components (≈ 0.3 s here; a
  ``streamlit run`` server does it once at start);
* ``apptest_component_scan_s``: that scan alone (``BidiComponentManager``), timed apart
  so that it can be subtracted from ``overview_page_s``;
* ``overview_page_warm_s``: the same page again, caches warm — what every later visitor
  waits for, also after the TTL (queries refresh in the background). (On a rerun
  ``AppTest`` runs only the page script, not ``app.py``'s sidebar, so a rerun with
  emptied caches would not be a whole cold page: only the first run is timed cold.)

The server's start-up imports (``dashboards.server.preload``: pandas, Altair, scipy via
``bandit.analysis.lift``, the store's client and engine) are done first and reported as
``server_start_preload_s``: ``switchboard dashboard`` does them before any visitor
arrives, so they are not part of a page load.

Each ``*_s`` wall figure has a ``*_cpu_s`` beside it: CPU seconds of this process, engine
threads included — steadier than wall time when other jobs share the machine (on 2 idle
cores wall ≈ CPU / 2 for the engine-bound parts). ``machine.loadavg`` is the 1-minute
load average at the start. Prints one JSON object; target: < 2 s.

    python bench/dashboard.py [--users N] [--rows N] [--decisions N] [--no-settle]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

DAY_MS = 86_400_000
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
EXPERIMENT = "exp-default"
CONTROL = "gpt35"
#: the tables filled
TABLES = ("exposures", "engagement", "decisions", "feedback")

# exposure time of unit u: day 7..13 after START, uniform time of day
_EXPOSURE = (
    "toInt64({start:Int64} + (7 + cityHash64(u, 1) % 7) * {day:Int64} "
    "+ cityHash64(u, 2) % {day:Int64})"
)
_VARIANT = "if(cityHash64(u, 0) % 2 = 0, 'gpt35', 'bandit')"
# how engaged unit u is, in [0, 1): scales its screen time (x 0.5 .. 1.5) and shows in its
# feedback, so that the early proxies say something about day-30 engagement, as the
# surrogate index assumes (with no such link the index is refused: nothing to time)
_LEVEL = "(cityHash64(u, 16) % 1000 / 1000)"
# time of decision n: on one of the 30 days from its unit's exposure
_DECISION_TS = _EXPOSURE + " + toInt64(cityHash64(n, 7) % 30) * {day:Int64}"

FILL_EXPOSURES = f"""
INSERT INTO exposures (unit_id, experiment_id, variant, ts_ms)
SELECT concat('u', toString(u)), {{experiment:String}}, {_VARIANT}, {_EXPOSURE}
FROM (SELECT number AS u FROM numbers({{users:UInt64}}))
"""

FILL_ENGAGEMENT = f"""
INSERT INTO engagement (event_id, ts_ms, unit_id, screen_time_s, messages)
SELECT concat('e', toString(n)),
       {_EXPOSURE} + (toInt64(cityHash64(n, 3) % 38) - 7) * {{day:Int64}}
           + toInt64(cityHash64(n, 4) % {{day:Int64}}),
       concat('u', toString(u)),
       (60 + cityHash64(n, 5) % 1200) * (0.5 + {_LEVEL}) * if({_VARIANT} = 'bandit', 1.1, 1.0),
       toUInt32(cityHash64(n, 6) % 12)
FROM (SELECT number AS n, number % {{users:UInt64}} AS u FROM numbers({{rows:UInt64}}))
"""

FILL_DECISIONS = f"""
INSERT INTO decisions (event_id, decision_id, ts_ms, unit_id, conversation_id, experiment_id,
                       variant, arm_id, propensity, policy_version, context, eligible)
SELECT concat('de', toString(n)), concat('d', toString(n)),
       {_DECISION_TS},
       concat('u', toString(u)), concat('c', toString(n)), {{experiment:String}},
       {_VARIANT},
       if({_VARIANT} = 'gpt35', 'gpt35',
          arrayElement(['roleplay-7b', 'creative-13b', 'informative-7b', 'gpt35'],
                       toUInt32(1 + cityHash64(n, 8) % 4))),
       if({_VARIANT} = 'gpt35', 1.0, 0.25), 'bench', [], []
FROM (SELECT number AS n, number % {{users:UInt64}} AS u FROM numbers({{decisions:UInt64}}))
"""

# Feedback on 90 % of the decisions, within 10 minutes of each; the more engaged the unit,
# the fewer retries (45 % down to 15 %), the higher its ratings (1-5, on 40 % of them) and
# the longer its conversations (1-19 messages); bandit's a little better on each. The early
# read's surrogate index is fitted on these proxies: without feedback it has nothing to fit
# and the page only says "No projection yet".
FILL_FEEDBACK = f"""
INSERT INTO feedback (event_id, decision_id, ts_ms, unit_id, conversation_id, retried, rating,
                      conversation_length)
SELECT concat('fb', toString(n)), concat('d', toString(n)),
       {_DECISION_TS} + toInt64(cityHash64(n, 9) % 600000),
       concat('u', toString(u)), concat('c', toString(n)),
       toUInt8(cityHash64(n, 10) % 1000 < 450 - 300 * {_LEVEL} - if({_VARIANT} = 'bandit', 50, 0)),
       if(cityHash64(n, 11) % 10 < 4,
          toNullable(toUInt8(least(5, 1 + cityHash64(n, 12) % 3 + floor(3 * {_LEVEL})
                                   + ({_VARIANT} = 'bandit' AND cityHash64(n, 13) % 5 = 0)))),
          NULL),
       toUInt32(1 + cityHash64(n, 14) % 10 + floor(10 * {_LEVEL})
                + if({_VARIANT} = 'bandit', 2, 0))
FROM (SELECT number AS n, number % {{users:UInt64}} AS u FROM numbers({{decisions:UInt64}}))
WHERE cityHash64(n, 15) % 10 < 9
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--rows", type=int, default=10_000_000, help="engagement rows")
    ap.add_argument("--decisions", type=int, default=1_000_000)
    ap.add_argument("--no-settle", action="store_true",
                    help="measure straight after the bulk insert (merges still running)")
    args = ap.parse_args(argv)
    loadavg = round(os.getloadavg()[0], 2)
    logging.getLogger("streamlit").setLevel(logging.ERROR)

    from bandit.store import open_store

    tmp = tempfile.mkdtemp(prefix="switchboard-bench-dash-")
    dsn = f"chdb://{tmp}/chdb"
    as_of = START_MS + 46 * DAY_MS
    out: dict[str, object] = {"bench": "dashboard"}
    try:
        store = open_store(dsn)
        params = {
            "start": START_MS,
            "day": DAY_MS,
            "users": args.users,
            "rows": args.rows,
            "decisions": args.decisions,
            "experiment": EXPERIMENT,
        }
        t0 = time.perf_counter()
        for sql in (FILL_EXPOSURES, FILL_ENGAGEMENT, FILL_DECISIONS, FILL_FEEDBACK):
            store._command(sql, params)
        fill_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        if not args.no_settle:
            for table in TABLES:
                store._command(f"OPTIMIZE TABLE {table} FINAL")
        settle_s = time.perf_counter() - t0
        counts = {t: store.count(t) for t in TABLES}
        store.close()

        os.environ.update(
            {
                "SWITCHBOARD_STORE__DSN": dsn,
                "SWITCHBOARD_DASHBOARD__AS_OF_MS": str(as_of),
                "SWITCHBOARD_MODEL__DIR": str(Path(tmp) / "snapshots"),
                "SWITCHBOARD_DASHBOARD__RESULTS_DIR": str(Path(tmp) / "results"),
            }
        )
        import streamlit as st

        from dashboards import analysis, data, server, ui

        # what `switchboard dashboard` imports when its server starts (dashboards.server)
        t0 = time.perf_counter()
        server.preload()
        preload_s = time.perf_counter() - t0

        # --- overview numbers, cold caches (queries + statistics + banners)
        data.close_stores()
        st.cache_data.clear()
        settings = data.settings_from_env()
        key = (settings.dsn, settings.database)
        t0 = time.perf_counter()
        store = data.get_store(*key)
        open_s = time.perf_counter() - t0
        ctx = ui.Context(
            settings, store, None, EXPERIMENT, (EXPERIMENT,), ("gpt35", "bandit"), (), None, as_of
        )
        t0, c0 = time.perf_counter(), time.process_time()
        view = analysis.overview(ctx)
        overview_s, overview_cpu_s = time.perf_counter() - t0, time.process_time() - c0
        row = view.lift[(view.lift["metric_key"] == "day30_engagement") & view.lift["cuped"]]
        pairs = analysis.overview_pairs(analysis.experiment_arg(settings, EXPERIMENT))
        t0, c0 = time.perf_counter(), time.process_time()
        data.get_store(*key).cohort_moments_many(EXPERIMENT, pairs, as_of)
        cohort_query_s, cohort_query_cpu_s = time.perf_counter() - t0, time.process_time() - c0
        t0 = time.perf_counter()
        data.get_store(*key).unit_metrics(EXPERIMENT, as_of)
        unit_query_s = time.perf_counter() - t0
        # --- the early read, cold (its per-user queries, the index's fit and bootstrap)
        st.cache_data.clear()
        t0, c0 = time.perf_counter(), time.process_time()
        projected, why = analysis.early_read(key, EXPERIMENT, CONTROL, as_of)
        early_read_s, early_read_cpu_s = time.perf_counter() - t0, time.process_time() - c0
        if why is not None:
            raise RuntimeError(f"the early read made no projection: {why}")

        # --- the whole page under AppTest, cold then warm
        from streamlit.testing.v1 import AppTest

        app = str(Path(__file__).resolve().parent.parent / "dashboards" / "app.py")
        data.close_stores()
        st.cache_data.clear()
        at = AppTest.from_file(app, default_timeout=120)
        t0, c0 = time.perf_counter(), time.process_time()
        at.run()
        page_s, page_cpu_s = time.perf_counter() - t0, time.process_time() - c0
        if at.exception:
            raise RuntimeError(f"overview page raised: {[e.value for e in at.exception]}")
        if any("No projection yet" in i.value for i in at.info):
            raise RuntimeError("the overview page showed no early read: nothing of it was timed")
        t0 = time.perf_counter()
        at.run()
        warm_s = time.perf_counter() - t0
        data.close_stores()
        from streamlit.components.v2.component_manager import BidiComponentManager

        t0 = time.perf_counter()
        BidiComponentManager().discover_and_register_components(start_file_watching=False)
        scan_s = time.perf_counter() - t0
        out.update(
            {
                "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                            "loadavg": loadavg},
                "users": counts["exposures"],
                "engagement_rows": counts["engagement"],
                "decisions": counts["decisions"],
                "feedback": counts["feedback"],
                "fill_s": round(fill_s, 3),
                "settle_s": None if args.no_settle else round(settle_s, 3),
                "server_start_preload_s": round(preload_s, 3),
                "store_open_s": round(open_s, 3),
                "overview_s": round(overview_s, 3),
                "overview_cpu_s": round(overview_cpu_s, 3),
                "cohort_query_s": round(cohort_query_s, 3),
                "cohort_query_cpu_s": round(cohort_query_cpu_s, 3),
                "per_unit_cohort_query_s": round(unit_query_s, 3),
                "early_read_s": round(early_read_s, 3),
                "early_read_cpu_s": round(early_read_cpu_s, 3),
                "overview_page_s": round(page_s, 3),
                "overview_page_cpu_s": round(page_cpu_s, 3),
                "overview_page_warm_s": round(warm_s, 3),
                "apptest_component_scan_s": round(scan_s, 3),
                "target_s": 2.0,
                "lift_rows": len(view.lift),
                "day30_engagement_lift_cuped": round(float(row["lift"].iloc[0]), 4)
                if len(row)
                else None,
                "planted_screen_time_lift": 0.10,
                "early_read_projected_lift": round(float(projected["projected_lift"].iloc[0]), 4),
                "early_read_calibration_units": int(projected["calibration_units"].iloc[0]),
            }
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
