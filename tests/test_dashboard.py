"""Dashboard pages under ``streamlit.testing.v1.AppTest`` on a chdb store of simulated data.

The numbers the pages show are compared with ``bandit.analysis.lift`` / ``bandit.stats`` computed
directly on the same store. chdb allows one data directory per process, so every test
here shares one directory (``chdb_dir``), isolates itself by database name and closes
every store it opened after each test.
"""

from __future__ import annotations

import json
import math
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bandit.arms import Arm, ArmRegistry
from bandit.config import PolicyConfig, RewardConfig
from bandit.events import DecisionEvent, FeedbackEvent
from bandit.formats.calibration import append_version
from bandit.formats.paths import calibration_path
from bandit.formats.snapshot import save_policy_snapshot
from bandit.policies import make_policy
from bandit.reward import reward_from_proxies
from bandit.store import ExposureRow, RewardRow, open_store
from bandit.store.queries import MOMENT_SUMS
from bandit.testing.synthetic import DAY_MS, generate_experiment, insert_experiment

APP = str(Path(__file__).resolve().parent.parent / "dashboards" / "app.py")
SEEDS = np.random.SeedSequence(20261123).spawn(4)
EXPERIMENT = "exp-default"
ARMS = ("gpt35", "roleplay-7b", "creative-13b", "informative-7b", "fresh-expert")
DIM = 8


def fill_store(dsn: str, database: str, snapshot_dir: Path, results_dir: Path, n_users: int = 1500) -> dict:
    """A store with one experiment (exposures, engagement, decisions, feedback), a
    LinUCB snapshot (``fresh-expert`` never served: cold start) and one offline run."""
    store = open_store(dsn, database)
    try:
        return _fill(store, snapshot_dir, results_dir, n_users)
    finally:
        store.close()


def _fill(store: Any, snapshot_dir: Path, results_dir: Path, n_users: int) -> dict:
    data = generate_experiment(n_users, 0.1, SEEDS[0], experiment_id=EXPERIMENT)
    insert_experiment(store, data)
    rng = np.random.default_rng(SEEDS[1])
    ex = data.exposures
    decisions, feedback = [], []
    served = ARMS[:4]
    for i, row in enumerate(ex.itertuples()):
        for j in range(2):
            variant = str(row.variant)
            if variant == "gpt35":
                arm, p = "gpt35", 1.0
            else:
                k = int(rng.integers(0, len(served)))
                arm, p = served[k], float(rng.choice([0.2, 0.4]))
            did = f"d-{i}-{j}"
            ts = int(row.ts_ms) + j * 3_600_000
            decisions.append(
                DecisionEvent(
                    event_id=f"e-{did}",
                    decision_id=did,
                    ts_ms=ts,
                    unit_id=str(row.unit_id),
                    conversation_id=f"c-{i}",
                    experiment_id=EXPERIMENT,
                    variant=variant,
                    arm_id=arm,
                    propensity=p,
                    policy_version="v1",
                    context=tuple(float(x) for x in rng.normal(size=DIM)),
                )
            )
            feedback.append(
                FeedbackEvent(
                    event_id=f"f-{did}",
                    decision_id=did,
                    ts_ms=ts + 1000,
                    unit_id=str(row.unit_id),
                    conversation_id=f"c-{i}",
                    retried=bool(rng.random() < 0.3),
                    rating=int(rng.integers(1, 6)),
                    conversation_length=int(rng.integers(1, 30)),
                )
            )
    store.insert_decisions(decisions)
    store.insert_feedback(feedback)
    # rewards: the config's α's until a calibration published for the second half of the
    # decisions takes effect (the learner's rule: the version in force at decision time)
    switch_ms = int(np.median([d.ts_ms for d in decisions]))
    calibrated = RewardConfig(alpha_retry=0.2, alpha_rating=0.1, alpha_length=0.7)
    version = append_version(
        calibration_path(snapshot_dir), calibrated, effective_from_ms=switch_ms,
        source={"outcome": "day30_engagement", "n_units": 1234, "r2_oof": 0.41},
    )
    rewards = []
    for d, f in zip(decisions, feedback, strict=True):
        vid, rc = (version.id, calibrated) if d.ts_ms >= switch_ms else ("config", RewardConfig())
        rewards.append(RewardRow(
            d.decision_id, d.experiment_id, d.variant, d.arm_id, d.unit_id,
            reward_from_proxies(rc, retried=f.retried, rating=f.rating,
                                conversation_length=f.conversation_length),
            d.propensity, True, False, d.ts_ms, d.policy_version, vid,
            f.retried, f.rating, f.conversation_length,
        ))
    store.insert_rewards(rewards)
    # every 25th unit also got a fallback allocation (server unreachable) half an hour in
    # (a share under the warning threshold: the overview still reads healthy)
    store.insert_exposures(
        [ExposureRow(str(r.unit_id), EXPERIMENT, str(r.variant), int(r.ts_ms) + 1_800_000)
         for r in ex.iloc[::25].itertuples()],
        source="fallback",
    )
    # a snapshot: LinUCB over five arms, four of them updated
    reg = ArmRegistry([Arm("gpt35", kind="baseline")] + [Arm(a, kind="expert") for a in ARMS[1:]])
    policy = make_policy(PolicyConfig(name="linucb", dim=DIM), reg)
    X = rng.normal(size=(400, DIM))
    ids = [served[int(k)] for k in rng.integers(0, len(served), size=400)]
    policy.update_batch(ids, X, rng.random(400))
    snapshot_dir.mkdir(parents=True, exist_ok=True)
    save_policy_snapshot(snapshot_dir / "policy-000001.snap", policy, reg)
    # an offline run
    run = results_dir / "simulate-001"
    run.mkdir(parents=True, exist_ok=True)
    (run / "summary.json").write_text(
        json.dumps(
            {
                "command": "simulate",
                "policy": "linucb",
                "regret": 12.5,
                "policies": [{"policy": "linucb", "regret": 12.5}, {"policy": "uniform", "regret": 40.0}],
            }
        )
    )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 2], [0, 1, 4])
    fig.savefig(run / "regret.png")
    plt.close(fig)
    return {"as_of_ms": data.end_ms, "data": data, "switch_ms": switch_ms, "calibration": version,
            "reward_versions": Counter(r.reward_version for r in rewards)}


@pytest.fixture(scope="module")
def chdb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One chdb directory for this module (chdb serves one directory per process)."""
    return tmp_path_factory.mktemp("dash-chdb")


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory, chdb_dir: Path) -> dict:
    root = tmp_path_factory.mktemp("dash")
    database = f"dash_{uuid.uuid4().hex[:8]}"
    dsn = f"chdb://{chdb_dir}"
    info = fill_store(dsn, database, root / "snapshots", root / "results")
    env = {
        "SWITCHBOARD_STORE__DSN": dsn,
        "SWITCHBOARD_STORE__DATABASE": database,
        "SWITCHBOARD_MODEL__DIR": str(root / "snapshots"),
        "SWITCHBOARD_DASHBOARD__RESULTS_DIR": str(root / "results"),
        "SWITCHBOARD_DASHBOARD__AS_OF_MS": str(info["as_of_ms"]),
        # the synthetic data ends in the past: do not flag it stale
        "SWITCHBOARD_DASHBOARD__STALE_AFTER_S": str(10 * 365 * 86400),
        "SWITCHBOARD_DASHBOARD__LAG_AFTER_S": str(10 * 365 * 86400),
    }
    return {"dsn": dsn, "database": database, "env": env, **info}


@pytest.fixture
def reader(filled: dict) -> Iterator[Any]:
    """The filled store, read-only, for computing expected figures; closed after the test."""
    store = open_store(filled["dsn"], filled["database"], read_only=True)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture(autouse=True)
def _release_dashboard_stores() -> Iterator[None]:
    """chdb serves one directory per process: let go of the dashboard's after each test."""
    yield
    from dashboards.data import close_stores

    close_stores()


def _app(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]):
    from streamlit.testing.v1 import AppTest

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    import streamlit as st

    from dashboards.data import close_stores

    close_stores()
    st.cache_data.clear()
    at = AppTest.from_file(APP, default_timeout=60)
    return at


def _page(at, name: str):
    at.switch_page(str(Path(APP).parent / "pages" / f"{name}.py"))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_overview_lift_table_matches_bandit_lift(
    filled: dict, reader: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bandit.analysis.lift import lift_table

    at = _app(monkeypatch, filled["env"])
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    shown = at.table[0].value
    store = reader
    expected = lift_table(store, EXPERIMENT, "day30_engagement", filled["as_of_ms"], True)
    row = shown[(shown["Metric"] == "Day-30 engagement") & (shown["Variant"] == "bandit")]
    assert len(row) == 1
    e = expected[expected["variant"] == "bandit"].iloc[0]
    # control and variant values and sample sizes beside the lift, both intervals
    assert row["Lift"].iloc[0] == f"{e['rel_lift']:+.1%}"
    assert row["95% CI"].iloc[0] == f"{e['rel_ci_low']:+.1%} … {e['rel_ci_high']:+.1%}"
    assert row["Always-valid 95%"].iloc[0] == f"{e['seq_ci_low']:+.1%} … {e['seq_ci_high']:+.1%}"
    assert row["P(better)"].iloc[0] == f"{e['prob_better']:.0%}"
    assert row["Control value"].iloc[0] == f"{e['mean_control']:,.1f}"
    assert row["Variant value"].iloc[0] == f"{e['mean']:,.1f}"
    assert row["Units (control / variant)"].iloc[0] == f"{int(e['n_control']):,} / {int(e['n']):,}"
    assert row["Verdict"].iloc[0] == e["verdict"]
    # the page is as of the data's clock (the latest decision), not the wall clock
    assert any("the data's clock" in c.value for c in at.caption)
    # CUPED off shows the unadjusted figures
    at.radio(key="ov_cuped").set_value("off").run()
    shown = at.table[0].value
    e = lift_table(store, EXPERIMENT, "day7_retention", filled["as_of_ms"], False)
    e = e[e["variant"] == "bandit"].iloc[0]
    row = shown[(shown["Metric"] == "Day-7 retention") & (shown["Variant"] == "bandit")]
    assert row["Lift"].iloc[0] == f"{e['rel_lift']:+.1%}"
    assert row["Control value"].iloc[0] == f"{e['mean_control']:.1%}"


@pytest.mark.parametrize(
    ("p", "meaning"), [(0.97, "better"), (0.95, "better"), (0.5, "undecided"), (0.05, "worse"),
                       (0.01, "worse"), (float("nan"), "undecided")])
def test_p_better_coloured_by_meaning(p: float, meaning: str) -> None:
    from dashboards.ui import P_BETTER_COLOURS, p_better_style

    assert P_BETTER_COLOURS[meaning] in p_better_style(p)


def test_overview_health_banners_report_healthy_store(
    filled: dict, reader: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _app(monkeypatch, filled["env"])
    at.run()
    assert not at.exception
    texts = [s.value for s in at.success] + [e.value for e in at.error]
    assert any("Healthy" in t for t in texts) or any("Guardrail" in t or "Sample-ratio" in t for t in texts)


def test_overview_counts_fallback_allocations(
    filled: dict, reader: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _app(monkeypatch, filled["env"])
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    src = reader.exposure_sources(EXPERIMENT, filled["as_of_ms"])
    n, m = int(src["fallbacks"].sum()), int(src["exposures"].sum())
    assert 0 < n < m
    want = f"{n:,} of {m:,} exposures ({n / m:.1%}) were fallback allocations"
    texts = [b.value for b in (*at.info, *at.warning)]
    assert any(want in t for t in texts), texts
    bandit = src.set_index("variant").loc["bandit"]
    assert any(f"bandit {int(bandit.fallbacks):,} of {int(bandit.exposures):,}" in t for t in texts)


@pytest.mark.parametrize(("clock", "stale"), [("simulated", False), ("wall", True)])
def test_stale_banner_follows_the_configured_clock(
    filled: dict, monkeypatch: pytest.MonkeyPatch, clock: str, stale: bool
) -> None:
    """Live view (no as-of) of data whose calendar lies in the past, default threshold:
    stale against the wall clock, not against a simulated calendar's own clock."""
    env = {k: v for k, v in filled["env"].items()
           if k not in ("SWITCHBOARD_DASHBOARD__AS_OF_MS", "SWITCHBOARD_DASHBOARD__STALE_AFTER_S")}
    monkeypatch.delenv("SWITCHBOARD_DASHBOARD__AS_OF_MS", raising=False)
    monkeypatch.delenv("SWITCHBOARD_DASHBOARD__STALE_AFTER_S", raising=False)
    at = _app(monkeypatch, {**env, "SWITCHBOARD_DASHBOARD__CLOCK": clock})
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Stale decisions" in w.value for w in at.warning) is stale


def test_simulated_clock_flags_decisions_that_stopped_while_fallbacks_went_on(
    chdb_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a simulated calendar, fallback allocations two days past the last decision
    (the allocation server down) make the decisions stale against the data's own clock."""
    dsn, database = f"chdb://{chdb_dir}", f"dash_{uuid.uuid4().hex[:8]}"
    fill_store(dsn, database, tmp_path / "snapshots", tmp_path / "results", n_users=300)
    store = open_store(dsn, database)
    try:
        last = int(store.decision_span(EXPERIMENT)["last_ms"].max())
        store.insert_exposures([ExposureRow(f"late-{i}", EXPERIMENT, "bandit", last + 2 * DAY_MS + i)
                                for i in range(5)], source="fallback")
    finally:
        store.close()
    monkeypatch.delenv("SWITCHBOARD_DASHBOARD__AS_OF_MS", raising=False)
    monkeypatch.delenv("SWITCHBOARD_DASHBOARD__STALE_AFTER_S", raising=False)
    at = _app(monkeypatch, {
        "SWITCHBOARD_STORE__DSN": dsn, "SWITCHBOARD_STORE__DATABASE": database,
        "SWITCHBOARD_MODEL__DIR": str(tmp_path / "snapshots"),
        "SWITCHBOARD_DASHBOARD__RESULTS_DIR": str(tmp_path / "results"),
        "SWITCHBOARD_DASHBOARD__LAG_AFTER_S": str(10 * 365 * 86400),
        "SWITCHBOARD_DASHBOARD__CLOCK": "simulated",
    })
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    stale = [w.value for w in at.warning if "Stale decisions" in w.value]
    assert stale and "2.0 days old" in stale[0], [w.value for w in at.warning]


def test_freshness_reference_rule() -> None:
    from dashboards.data import DashboardSettings, freshness_reference

    base = DashboardSettings("chdb:///x", "db", "s", "r", "gpt35", (), (), 0.0, 1.0, 1.0)
    wall = base.now_ms()
    # configured as-of wins, whatever the clock
    assert freshness_reference(
        DashboardSettings(**{**base.__dict__, "as_of_ms": 123, "clock": "simulated"}), 99) == 123
    # simulated calendar: the newest allocation of any source (fallbacks included)
    sim = DashboardSettings(**{**base.__dict__, "clock": "simulated"})
    assert freshness_reference(sim, 5_000) == 5_000
    assert freshness_reference(sim, None) >= wall
    # production: the wall clock, never the data
    assert freshness_reference(base, 5_000) >= wall


def test_clock_setting_is_validated() -> None:
    from bandit.errors import ConfigError
    from dashboards.data import settings_from_env

    assert settings_from_env({}).clock == "wall"
    assert settings_from_env({"SWITCHBOARD_DASHBOARD__CLOCK": "simulated"}).clock == "simulated"
    with pytest.raises(ConfigError, match=r"dashboard\.clock.*'sim'"):
        settings_from_env({"SWITCHBOARD_DASHBOARD__CLOCK": "sim"})


def test_retention_page_draws_curves_and_lift_over_time(
    filled: dict, reader: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bandit import stats

    at = _page(_app(monkeypatch, filled["env"]), "retention")
    at.run()
    assert not at.exception
    table = at.dataframe[0].value
    last = table[table["variant"] == "bandit"].sort_values("date").iloc[-1]
    store = reader
    units = store.unit_metrics(EXPERIMENT, filled["as_of_ms"])
    ok = units[units["retained_d30"].notna()]
    full = units[
        units["retained_d30"].notna()
        & (units["exposure_ts"] + 31 * DAY_MS <= int(last["date"].value // 1_000_000))
    ]
    x = full.loc[full.variant == "bandit", "retained_d30"].to_numpy(float)
    c = full.loc[full.variant == "gpt35", "retained_d30"].to_numpy(float)
    r = stats.relative_lift(x, c)
    assert math.isclose(last["lift"], 100 * r.estimate, rel_tol=1e-9)
    # the band is the always-valid interval (peeking date after date), not the one-look CI
    av = stats.sequential_lift(x, c)
    assert math.isclose(last["av_low"], 100 * av.ci_low, rel_tol=1e-9)
    assert math.isclose(last["av_high"], 100 * av.ci_high, rel_tol=1e-9)
    assert av.ci_low < r.ci_low and av.ci_high > r.ci_high
    assert any("always-valid 95% interval" in cap.value for cap in at.caption)
    # no point before each arm has the units a call needs
    assert (table["n_treatment"] >= stats.MIN_UNITS).all() and (table["n_control"] >= stats.MIN_UNITS).all()
    assert int(last["n_treatment"]) <= int((ok.variant == "bandit").sum())


def test_allocation_page_shows_shares_and_cold_start(
    filled: dict, reader: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _page(_app(monkeypatch, filled["env"]), "allocation")
    totals = at.dataframe[0].value
    store = reader
    share = store.traffic_share(EXPERIMENT, "day")
    expected = share.groupby(["variant", "arm_id"])["decisions"].sum()
    for r in totals.itertuples():
        assert int(r.decisions) == int(expected[(r.variant, r.arm_id)])
    assert math.isclose(totals.loc[totals.variant == "bandit", "share"].sum(), 100.0)
    policy = next(d.value for d in at.dataframe if "cold_start" in d.value.columns)
    cold = set(policy.loc[policy["cold_start"], "arm_id"])
    assert cold == {"fresh-expert"}
    assert any("Cold-start" in w.value for w in at.warning)


def test_allocation_page_shows_the_reward_weights_switch(
    filled: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A published calibration that took effect mid-experiment: the page names the switch
    and lists each version's α's and the decisions it rewarded, as the store holds them."""
    at = _page(_app(monkeypatch, filled["env"]), "allocation")
    cal = filled["calibration"]
    table = next(d.value for d in at.dataframe if "Version" in d.value.columns)
    assert list(table["Version"]) == ["config", cal.id]
    want = filled["reward_versions"]
    assert list(table["Decisions rewarded"]) == [f"{want['config']:,}", f"{want[cal.id]:,}"]
    assert list(table["α retry / rating / length"]) == ["0.500 / 0.300 / 0.200",
                                                       "0.200 / 0.100 / 0.700"]
    assert "1,234 users" in table["Fitted on"].iloc[1]
    switched = [i.value for i in at.info if "Reward weights switched" in i.value]
    assert switched and cal.id in switched[0]


def test_allocation_page_says_when_the_calibration_file_is_unreadable(
    filled: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = calibration_path(filled["env"]["SWITCHBOARD_MODEL__DIR"])
    good = path.read_bytes()
    try:
        path.write_bytes(good.replace(b'"alpha_length"', b'"alpha_lenght"', 1))
        at = _page(_app(monkeypatch, filled["env"]), "allocation")
        assert any("calibration file could not be read" in w.value for w in at.warning)
        table = next(d.value for d in at.dataframe if "Version" in d.value.columns)
        # the store still says which versions rewarded decisions; their α's are unknown
        assert list(table["Version"]) == ["config", filled["calibration"].id]
        assert table["α retry / rating / length"].iloc[1] == "? / ? / ?"
    finally:
        path.write_bytes(good)


def test_leaderboard_page_matches_store_proxies_and_filters_kind(
    filled: dict, reader: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _page(_app(monkeypatch, filled["env"]), "leaderboard")
    board = at.dataframe[0].value
    store = reader
    prox = store.arm_proxies(EXPERIMENT).set_index(["arm_id", "variant"])
    for r in board.itertuples():
        assert math.isclose(
            r.retry_rate, 100 * prox.loc[(r.arm_id, r.variant), "retry_rate_ips"], rel_tol=1e-9
        )
    assert board["retry_rate"].is_monotonic_increasing
    at.multiselect(key="lb_kind").set_value(["baseline"]).run()
    assert set(at.dataframe[0].value["arm_id"]) == {"gpt35"}


def test_offline_page_lists_runs_with_plots(filled: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    at = _page(_app(monkeypatch, filled["env"]), "offline")
    runs = at.dataframe[0].value
    assert list(runs["run"]) == ["simulate-001"]
    assert int(runs["plots"].iloc[0]) == 1
    summary = at.dataframe[1].value
    assert dict(zip(summary["key"], summary["value"], strict=True))["regret"] == "12.5"
    per_policy = at.dataframe[2].value
    assert per_policy["policy"].tolist() == ["linucb", "uniform"]


def _texts(at: Any) -> list[str]:
    return [str(getattr(el, "value", "")) for el in _elements(at)]


def test_overview_early_read_is_bandit_early_read_beside_the_measurement(
    filled: dict, reader: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The overview's projected day-30 lift is ``bandit.analysis.calibration.early_read``
    on the same store (or its reason in words), labelled as a projection with the
    surrogacy assumption, beside the measured day-30 lift and measured − projected."""
    from bandit.analysis.calibration import early_read
    from bandit.analysis.lift import lift_table
    from bandit.errors import InvalidInputError

    at = _app(monkeypatch, filled["env"])
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Early read" in h.value for h in at.subheader)
    assert any("projection, not a measurement" in c.value and "surrogacy" in c.value
               for c in at.caption)
    try:
        expected = early_read(reader, EXPERIMENT, "gpt35", as_of_ms=filled["as_of_ms"])
    except InvalidInputError as exc:
        assert any(str(exc) in t for t in _texts(at)), _texts(at)
        return
    shown = next(t.value for t in at.table if "Projected day-30 lift (from days 0-6)" in t.value.columns)
    row = shown[shown["Variant"] == "bandit"].iloc[0]
    e = expected[expected["variant"] == "bandit"].iloc[0]
    assert row["Projected day-30 lift (from days 0-6)"] == f"{e['projected_lift']:+.1%}"
    assert row["Projection 95% interval"] == f"{e['ci_low']:+.1%} … {e['ci_high']:+.1%}"
    measured = lift_table(reader, EXPERIMENT, "day30_engagement", filled["as_of_ms"], True)
    m = float(measured[measured["variant"] == "bandit"]["rel_lift"].iloc[0])
    assert row["Measured day-30 lift"] == f"{m:+.1%}"
    assert row["Measured − projected"] == f"{m - e['projected_lift']:+.1%}"


def test_overview_early_read_too_early_is_words(
    filled: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three days into the experiment no user has matured nor finished days 0-6: the
    overview says there is no projection yet, in words, and the history page says
    nothing has matured."""
    start = int(filled["data"].exposures["ts_ms"].min())
    env = {**filled["env"], "SWITCHBOARD_DASHBOARD__AS_OF_MS": str(start + 3 * DAY_MS)}
    at = _app(monkeypatch, env)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("No projection yet" in i.value for i in at.info), [i.value for i in at.info]
    _page(at, "history")
    assert any("No projection to check yet" in i.value or "No experiment has matured" in i.value
               for i in at.info), [i.value for i in at.info]


def test_history_page_is_bandit_projection_history(
    filled: dict, reader: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The history page shows ``projection_history`` of the store: per matured experiment
    the day-7 projection, the measured day-30 lift and the coverage, with the scatter."""
    from bandit.analysis.calibration import projection_history

    expected = projection_history(reader, "gpt35", as_of_ms=filled["as_of_ms"])
    at = _page(_app(monkeypatch, filled["env"]), "history")
    if expected.rows.empty:
        assert any("No experiment has matured" in i.value for i in at.info)
        return
    k, covered = len(expected.rows), int(expected.rows["covered"].sum())
    assert at.metric[0].value == f"{covered} of {k}"
    shown = at.table[0].value
    e = expected.rows.iloc[0]
    assert shown["Projected at day 7"].iloc[0] == f"{e['projected_lift']:+.1%}"
    assert shown["Measured day-30 lift"].iloc[0] == f"{e['measured_lift']:+.1%}"
    assert shown["Index fitted on"].iloc[0] == e["calibrated_on"]
    assert any("surrogacy" in c.value for c in at.caption)


@pytest.mark.parametrize(
    "page", ["overview", "retention", "allocation", "leaderboard", "offline", "history"]
)
def test_pages_show_friendly_empty_state_on_empty_store(
    page: str, tmp_path: Path, chdb_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {
        "SWITCHBOARD_STORE__DSN": f"chdb://{chdb_dir}",
        "SWITCHBOARD_STORE__DATABASE": f"empty_{uuid.uuid4().hex[:8]}",
        "SWITCHBOARD_MODEL__DIR": str(tmp_path / "none"),
        "SWITCHBOARD_DASHBOARD__RESULTS_DIR": str(tmp_path / "none"),
    }
    at = _app(monkeypatch, env)
    at.run()
    if page != "overview":
        _page(at, page)
    assert not at.exception, [e.value for e in at.exception]
    assert at.info, "an empty store shows a friendly message"


def test_cli_builds_headless_streamlit_command_without_telemetry() -> None:
    from dashboards.cli import build_command, free_port

    port = free_port()
    cmd = build_command("127.0.0.1", port)
    joined = " ".join(cmd)
    assert "--server.headless true" in joined
    assert "--browser.gatherUsageStats false" in joined
    assert f"--server.port {port}" in joined
    assert "--server.address 127.0.0.1" in joined
    # the server entry point preloads the pages' libraries, then runs `streamlit run`
    assert cmd[1:4] == ["-m", "dashboards.server", "run"]


def test_server_preload_imports_the_pages_libraries() -> None:
    import sys

    from dashboards.server import PRELOAD, preload

    preload()
    assert all(name in sys.modules for name in PRELOAD)


def test_overview_pairs_cover_overview_metrics_and_guardrails() -> None:
    from bandit.analysis.lift import METRICS as LIFT_METRICS
    from bandit.config import ExperimentConfig
    from dashboards.analysis import overview_pairs
    from dashboards.transforms import METRICS

    cfg = ExperimentConfig(id="e", guardrails=("cum30_messages",))
    pairs = overview_pairs(cfg)
    assert len(pairs) == len(set(pairs)) == len(METRICS) + 1
    assert {LIFT_METRICS[m] for m, _ in METRICS} <= set(pairs)
    assert ("cum_messages_30", "pre_messages") in pairs
    # a bare id: the default guardrails (what bandit.analysis.lift.guardrail_table reads for it)
    defaults = ExperimentConfig(id="x").guardrails
    assert {LIFT_METRICS[g] for g in defaults} <= set(overview_pairs("x"))


@pytest.mark.parametrize(
    ("metric", "covariate"),
    [
        ("retained_d7", "pre_engagement"),
        ("engagement_d30", "pre_engagement"),
        ("cum_messages_30", "pre_messages"),
    ],
)
def test_cohort_view_moments_equal_store_cohort_moments(
    filled: dict, reader: Any, metric: str, covariate: str
) -> None:
    from dashboards.analysis import CohortView

    as_of = filled["as_of_ms"]
    view = CohortView(reader.unit_metrics(EXPERIMENT, as_of), [EXPERIMENT])
    got = view.cohort_moments(EXPERIMENT, metric, covariate, as_of).set_index("variant")
    want = reader.cohort_moments(EXPERIMENT, metric, covariate, as_of).set_index("variant")
    assert list(got.index) == sorted(want.index)
    for col in ("n_exposed", "n"):
        assert got[col].to_dict() == want[col].to_dict()
    for col in MOMENT_SUMS:
        for v in want.index:
            assert math.isclose(got.loc[v, col], want.loc[v, col], rel_tol=1e-9, abs_tol=1e-9)


def test_live_view_reads_as_of_the_data_clock(filled: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no configured as-of, "now" is the latest decision's time: a simulated calendar
    in the past is read as of its end, so its complete cohorts show (not the wall clock)."""
    env = {k: v for k, v in filled["env"].items() if k != "SWITCHBOARD_DASHBOARD__AS_OF_MS"}
    monkeypatch.delenv("SWITCHBOARD_DASHBOARD__AS_OF_MS", raising=False)
    at = _app(monkeypatch, env)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    from dashboards.ui import _KEY

    ctx = at.session_state[_KEY]
    store = open_store(filled["dsn"], filled["database"], read_only=True)
    try:
        last = int(store.decision_span(EXPERIMENT)["last_ms"].max())
    finally:
        store.close()
    assert ctx.as_of_ms == last


_OWNER = """
import sys, time
from bandit.store import open_store
from bandit.testing.synthetic import generate_experiment, insert_experiment
import numpy as np
store = open_store(sys.argv[1], "owned")
insert_experiment(store, generate_experiment(200, 0.1, np.random.SeedSequence(7), experiment_id="owned-exp"))
print("ready", flush=True)
sys.stdin.read()
store.close()
"""


def test_store_reopens_after_ttl_while_another_process_owns_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The learner owns the embedded store; every reopen after the TTL reads a new private
    snapshot (a new directory), and once the owner is gone the live directory: chdb serves
    one directory per process, so each reopen must release the previous one first."""
    import subprocess
    import sys
    import time

    from dashboards import data

    data.close_stores()
    dsn = f"chdb://{tmp_path / 'owned'}"
    owner = subprocess.Popen([sys.executable, "-c", _OWNER, dsn], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        assert owner.stdout.readline().strip() == "ready"
        monkeypatch.setenv("SWITCHBOARD_DASHBOARD__STORE_TTL_S", "0.05")
        key = (dsn, "owned")
        seen = []
        for _ in range(3):
            store = data.get_store(*key)
            assert store.experiments() == ["owned-exp"]
            seen.append(store)
            time.sleep(0.1)
        assert len({id(s) for s in seen}) == 3, "each call after the TTL reopened the store"
    finally:
        assert owner.stdin is not None
        owner.stdin.close()
        owner.wait(60)
    store = data.get_store(*key)  # the live directory, now free
    assert store.experiments() == ["owned-exp"]
    data.close_stores()


def test_store_ttl_setting_is_validated() -> None:
    from bandit.errors import ConfigError
    from dashboards.data import store_ttl_s

    assert store_ttl_s({"SWITCHBOARD_DASHBOARD__STORE_TTL_S": "2.5"}) == 2.5
    for bad in ("soon", "0", "-1"):
        with pytest.raises(ConfigError, match=r"dashboard\.store_ttl_s"):
            store_ttl_s({"SWITCHBOARD_DASHBOARD__STORE_TTL_S": bad})


PLANTED = "pl4nted-Pw-7731"


def test_pages_never_show_a_dsn_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unreachable store whose DSN carries a password: every page says there is no store
    to read, in words, and no element anywhere on the page holds the password."""
    from bandit.embedded.broker import free_port

    env = {
        "SWITCHBOARD_STORE__DSN": f"http://reader:{PLANTED}@127.0.0.1:{free_port()}/",
        "SWITCHBOARD_MODEL__DIR": str(tmp_path / "none"),
        "SWITCHBOARD_DASHBOARD__RESULTS_DIR": str(tmp_path / "none"),
    }
    at = _app(monkeypatch, env)
    at.run()
    for page in ("overview", "retention", "allocation", "leaderboard", "offline", "history"):
        if page != "overview":
            _page(at, page)
        assert not at.exception, [e.value for e in at.exception]
        texts = [str(getattr(el, "value", "")) + str(getattr(el, "body", "")) for el in _elements(at)]
        assert texts and not [t for t in texts if PLANTED in t], page
        if page != "offline":
            assert any("No store to read yet" in t and "***" in t for t in texts), page


def _elements(at: Any) -> list[Any]:
    out = []
    for name in ("info", "caption", "markdown", "error", "warning", "title", "text", "success"):
        out.extend(getattr(at, name))
        out.extend(getattr(at.sidebar, name))
    return out


def test_fallback_banner_levels() -> None:
    import pandas as pd

    from dashboards.analysis import fallback_banner

    def frame(rows: list[tuple[str, int, int]]) -> pd.DataFrame:
        return pd.DataFrame(rows, columns=["variant", "exposures", "fallbacks"]).assign(last_ms=0)

    assert fallback_banner(frame([])) is None
    none = fallback_banner(frame([("bandit", 100, 0), ("gpt35", 100, 0)]))
    assert none is not None and none.level == "info"
    assert "0 of 200 exposures (0.0%) were fallback allocations" in none.detail
    many = fallback_banner(frame([("bandit", 100, 30), ("gpt35", 100, 0)]))
    assert many is not None and many.level == "warning"
    assert "30 of 200 exposures (15.0%)" in many.detail and "bandit 30 of 100" in many.detail
