"""The store contract suite: the behaviour every :class:`bandit.store.Store` owes, run over
the embedded chdb engine and, when ``SWITCHBOARD_TEST_CLICKHOUSE_DSN`` names one (e.g.
``http://default:@localhost:8123``), over a ClickHouse server — each server test in a
database of its own, dropped afterwards. Without the variable the server cases are
skipped, saying so. Embedded-store specifics (read-only snapshots, process locks,
migrations of old stores) are in ``tests/test_store.py``.
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bandit.errors import InvalidInputError
from bandit.events import DecisionEvent, EngagementEvent, FeedbackEvent
from bandit.store import ClickHouseStore, ExposureRow, RewardRow, Store, open_store
from bandit.store.queries import MOMENT_SUMS
from bandit.store.schema import MIGRATIONS
from bandit.testing.synthetic import DAY_MS

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
EXP = "exp-store"


def _decision(i: int, *, unit: str = "u1", arm: str = "a", variant: str = "bandit",
              p: float = 0.5, ts: int = T0, exp: str = EXP) -> DecisionEvent:
    return DecisionEvent(
        event_id=f"d-ev-{i}", decision_id=f"d{i}", ts_ms=ts, unit_id=unit,
        conversation_id=f"c{i}", experiment_id=exp, variant=variant, arm_id=arm,
        propensity=p, policy_version="v1", context=(0.5, -1.0), eligible=("a", "b"),
    )


def _feedback(i: int, **kw: object) -> FeedbackEvent:
    return FeedbackEvent(event_id=f"f-ev-{i}", decision_id=f"d{i}", ts_ms=T0 + 1000,
                         unit_id="u1", conversation_id=f"c{i}", **kw)  # type: ignore[arg-type]


def _engagement(i: int, unit: str, ts: int, screen: float = 60.0, msgs: int = 3) -> EngagementEvent:
    return EngagementEvent(event_id=f"e{i}", ts_ms=ts, unit_id=unit, screen_time_s=screen,
                           messages=msgs)


def _reward(i: int) -> RewardRow:
    return RewardRow(decision_id=f"d{i}", experiment_id=EXP, variant="bandit", arm_id="a",
                     unit_id="u1", reward=0.5, propensity=0.5, joined=True, late=False,
                     ts_ms=T0, policy_version="v1")

SERVER_DSN_ENV = "SWITCHBOARD_TEST_CLICKHOUSE_DSN"


@pytest.fixture(params=["chdb", "server"])
def store_any(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ClickHouseStore]:
    """The contract-suite store: chdb always, a ClickHouse server when configured."""
    if request.param == "chdb":
        s = open_store(f"chdb://{tmp_path / 'chdb'}")
        assert isinstance(s, ClickHouseStore)
        try:
            yield s
        finally:
            s.close()
        return
    dsn = os.environ.get(SERVER_DSN_ENV)
    if not dsn:
        pytest.skip(f"{SERVER_DSN_ENV} is not set: no ClickHouse server to run the contract "
                    "suite against (the chdb case ran it)")
    db = f"switchboard_test_{uuid.uuid4().hex[:12]}"
    s = open_store(dsn, db)
    assert isinstance(s, ClickHouseStore)
    try:
        yield s
    finally:
        s._command("DROP DATABASE IF EXISTS {db:Identifier}", {"db": db})
        s.close()


# ---------------------------------------------------------------------- contract


def test_store_migrate_is_idempotent(store_any: ClickHouseStore) -> None:
    assert store_any.migrate() == []
    assert store_any.schema_version() == max(v for v, _, _ in MIGRATIONS)


@pytest.mark.parametrize("table", ["decisions", "feedback", "rewards", "engagement", "exposures"])
def test_store_insert_replay_leaves_no_duplicates(store_any: ClickHouseStore, table: str) -> None:
    batches = {
        "decisions": lambda: store_any.insert_decisions([_decision(i) for i in range(5)]),
        "feedback": lambda: store_any.insert_feedback([_feedback(i, rating=4) for i in range(5)]),
        "rewards": lambda: store_any.insert_rewards([_reward(i) for i in range(5)]),
        "engagement": lambda: store_any.insert_engagement(
            [_engagement(i, "u1", T0 + i) for i in range(5)]),
        "exposures": lambda: store_any.insert_exposures(
            [ExposureRow(f"u{i}", EXP, "bandit", T0) for i in range(5)]),
    }
    assert batches[table]() == 5
    batches[table]()  # a replay after a crash
    batches[table]()
    assert store_any.count(table) == 5


def test_store_count_unknown_table_raises(store_any: ClickHouseStore) -> None:
    with pytest.raises(InvalidInputError, match="table"):
        store_any.count("decisions; DROP TABLE decisions")


def test_store_values_are_bound_parameters(store_any: ClickHouseStore) -> None:
    nasty = "x' OR 1=1 --{experiment_id:String}\\"
    store_any.insert_exposures([ExposureRow("u'1", nasty, "bandit", T0),
                                ExposureRow("u2", EXP, "gpt35", T0)])
    assert nasty in store_any.experiments()
    m = store_any.unit_metrics(nasty, T0 + DAY_MS)
    assert list(m["unit_id"]) == ["u'1"]
    assert store_any.unit_metrics("' OR ''='", T0 + DAY_MS).empty


def test_store_empty_queries_return_typed_frames(store_any: ClickHouseStore) -> None:
    assert store_any.experiments() == []
    um = store_any.unit_metrics("none", T0)
    assert um.empty and "engagement_d30" in um.columns and "pre_engagement" in um.columns
    assert store_any.traffic_share("none").empty
    assert store_any.arm_proxies("none").empty
    assert store_any.retention_curve("none", T0).empty
    many = store_any.cohort_moments_many("none", None, T0)
    assert many.empty and list(many.columns) == [
        "metric", "covariate", "variant", "n_exposed", "n", *MOMENT_SUMS]
    assert store_any.decision_span("none").empty


def test_store_unit_metrics_day_windows(store_any: ClickHouseStore) -> None:
    t = T0 + 10 * DAY_MS + 3_600_000
    store_any.insert_exposures([ExposureRow("u1", EXP, "bandit", t),
                                ExposureRow("u1", EXP, "bandit", t + DAY_MS)])  # later: ignored
    store_any.insert_engagement([
        _engagement(1, "u1", t - DAY_MS // 2, screen=50, msgs=1),  # day -1: pre-period
        _engagement(2, "u1", t - 8 * DAY_MS - 1, screen=999, msgs=9),  # day -9: too early
        _engagement(3, "u1", t + DAY_MS + 5, screen=30, msgs=2),  # day 1
        _engagement(4, "u1", t + DAY_MS + 7, screen=20, msgs=1),  # day 1 again
        _engagement(5, "u1", t + 30 * DAY_MS + 5, screen=70, msgs=4),  # day 30
        _engagement(6, "u1", t + 31 * DAY_MS + 5, screen=5, msgs=5),  # day 31: not in cum 30
    ])
    m = store_any.unit_metrics(EXP, t + 31 * DAY_MS).set_index("unit_id").loc["u1"]
    assert m["variant"] == "bandit" and m["exposure_ts"] == t
    assert (m["retained_d1"], m["retained_d7"], m["retained_d30"]) == (1.0, 0.0, 1.0)
    assert m["engagement_d1"] == pytest.approx(50.0) and m["messages_d1"] == 3
    assert m["engagement_d30"] == pytest.approx(70.0)
    assert m["cum_engagement_30"] == pytest.approx(120.0) and m["cum_messages_30"] == 7
    assert m["pre_engagement"] == pytest.approx(50.0) and m["pre_messages"] == 1
    # day 30 not yet over: no partial cohort
    early = store_any.unit_metrics(EXP, t + 30 * DAY_MS + 10).set_index("unit_id").loc["u1"]
    assert math.isnan(early["retained_d30"]) and math.isnan(early["cum_engagement_30"])
    assert early["retained_d14"] == 0.0


def test_store_cohort_moments_many_day_windows(store_any: ClickHouseStore) -> None:
    """The per-unit array form reads the same day windows as ``unit_metrics``."""
    t = T0 + 10 * DAY_MS + 3_600_000
    store_any.insert_exposures([ExposureRow("u1", EXP, "bandit", t),
                                ExposureRow("u2", EXP, "bandit", t + 5)])  # u2: no engagement
    store_any.insert_engagement([
        _engagement(1, "u1", t - DAY_MS // 2, screen=50, msgs=1),  # day -1: pre-period
        _engagement(2, "u1", t - 7 * DAY_MS - 1, screen=999, msgs=9),  # day -8: too early
        _engagement(3, "u1", t + DAY_MS + 5, screen=30, msgs=2),  # day 1
        _engagement(4, "u1", t + DAY_MS + 7, screen=20, msgs=1),  # day 1 again
        _engagement(5, "u1", t + 2 * DAY_MS - 1, screen=0, msgs=0),  # day 1, inactive
        _engagement(6, "u1", t + 30 * DAY_MS + 5, screen=70, msgs=4),  # day 30
        _engagement(7, "u1", t + 31 * DAY_MS + 5, screen=5, msgs=5),  # day 31: not in cum 30
    ])
    as_of = t + 31 * DAY_MS + 10
    m = store_any.cohort_moments_many(EXP, None, as_of).set_index(["metric", "covariate"])
    units = store_any.unit_metrics(EXP, as_of)
    for (metric, cov), row in m.iterrows():
        y = units[metric].fillna(0.0).to_numpy()
        x = units[cov].to_numpy()
        assert (row["n_exposed"], row["n"]) == (2, 2), metric
        assert row["sy"] == pytest.approx(y.sum()) and row["syy"] == pytest.approx((y * y).sum())
        assert row["sx"] == pytest.approx(x.sum()) and row["sxy"] == pytest.approx((x * y).sum())
    assert m.loc[("engagement_d1", "pre_engagement"), "sxy"] == pytest.approx(50.0 * 50.0)
    assert m.loc[("cum_messages_30", "pre_messages"), "sy"] == pytest.approx(7.0)
    # a subset of pairs, in the order asked, repeated pairs included
    pairs = [("retained_d30", "pre_messages"), ("engagement_d1", "pre_engagement"),
             ("retained_d30", "pre_messages")]
    sub = store_any.cohort_moments_many(EXP, pairs, as_of)
    assert list(zip(sub["metric"], sub["covariate"], strict=True)) == pairs
    for metric, cov in pairs:
        got = sub[(sub["metric"] == metric) & (sub["covariate"] == cov)].iloc[0]
        cols = ["n_exposed", "n", *MOMENT_SUMS]
        assert got[cols].tolist() == pytest.approx(m.loc[(metric, cov), cols].tolist())
    assert store_any.cohort_moments_many(EXP, [], as_of).empty


def test_store_decision_span_per_variant_and_arm(store_any: ClickHouseStore) -> None:
    store_any.insert_decisions([_decision(1, arm="a", ts=T0 + 5), _decision(2, arm="a", ts=T0 + 9),
                                _decision(3, arm="b", ts=T0 + 7, variant="gpt35"),
                                _decision(4, arm="a", ts=T0 + 1, exp="other")])
    store_any.insert_decisions([_decision(2, arm="a", ts=T0 + 9)])  # a replay
    span = store_any.decision_span(EXP)
    assert span.to_dict("records") == [
        {"variant": "bandit", "arm_id": "a", "first_ms": T0 + 5, "last_ms": T0 + 9},
        {"variant": "gpt35", "arm_id": "b", "first_ms": T0 + 7, "last_ms": T0 + 7},
    ]


def test_store_exposure_derived_from_first_decision(store_any: ClickHouseStore) -> None:
    store_any.insert_decisions([_decision(1, unit="u9", ts=T0 + 500, variant="gpt35"),
                                _decision(2, unit="u9", ts=T0 + 900, variant="gpt35")])
    store_any.insert_exposures([ExposureRow("u9", EXP, "gpt35", T0 + 700)])
    m = store_any.unit_metrics(EXP, T0 + DAY_MS)
    assert list(m["exposure_ts"]) == [T0 + 500] and list(m["variant"]) == ["gpt35"]


def test_store_retention_curve_matches_unit_metrics(store_any: ClickHouseStore) -> None:
    rows, eng = [], []
    for u in range(40):
        rows.append(ExposureRow(f"u{u}", EXP, "bandit" if u % 2 else "gpt35", T0 + u * 3_600_000))
        for d in range(0, 20, 1 + u % 3):
            eng.append(_engagement(u * 100 + d, f"u{u}", T0 + u * 3_600_000 + d * DAY_MS + 60_000))
    store_any.insert_exposures(rows)
    store_any.insert_engagement(eng)
    as_of = T0 + 15 * DAY_MS
    curve = store_any.retention_curve(EXP, as_of, max_day=14).set_index(["variant", "day"])
    um = store_any.unit_metrics(EXP, as_of)
    for variant in ("bandit", "gpt35"):
        for day in (1, 7, 14):
            col = um.loc[um["variant"] == variant, f"retained_d{day}"].dropna()
            assert curve.loc[(variant, day), "units"] == len(col)
            assert curve.loc[(variant, day), "retained"] == int(col.sum())


def test_store_traffic_share_shares_sum_to_one(store_any: ClickHouseStore) -> None:
    ds = [_decision(i, unit=f"u{i % 7}", arm="ab"[i % 2], variant=("gpt35", "bandit")[i % 3 == 0],
                    ts=T0 + (i % 3) * DAY_MS) for i in range(60)]
    store_any.insert_decisions(ds)
    ts = store_any.traffic_share(EXP, bucket="day")
    assert ts["decisions"].sum() == 60
    for _, g in ts.groupby("bucket_start"):
        assert g.groupby("variant")["arm_share"].sum().to_numpy() == pytest.approx(1.0)
        assert g.drop_duplicates("variant")["variant_share"].sum() == pytest.approx(1.0)
    with pytest.raises(InvalidInputError, match="bucket"):
        store_any.traffic_share(EXP, bucket="minute; DROP")


def test_store_arm_proxies_self_normalised_ips(store_any: ClickHouseStore) -> None:
    props = [0.2, 0.8, 0.5, 0.5, 0.25]
    ratings = [5, 1, 3, None, 2]
    store_any.insert_decisions([_decision(i, p=p) for i, p in enumerate(props)])
    store_any.insert_feedback([_feedback(i, rating=r, retried=bool(i % 2)) for i, r in
                               enumerate(ratings)])
    row = store_any.arm_proxies(EXP).set_index("arm_id").loc["a"]
    obs = [(p, r) for p, r in zip(props, ratings, strict=True) if r is not None]
    w = np.array([1 / p for p, _ in obs])
    y = np.array([r for _, r in obs], dtype=float)
    snips = (w * y).sum() / w.sum()
    assert row["n"] == 5 and row["n_feedback"] == 5 and bool(row["adaptive"])
    assert row["mean_rating"] == pytest.approx(y.mean())
    assert row["mean_rating_ips"] == pytest.approx(snips)
    assert row["mean_rating_ips_se"] == pytest.approx(
        math.sqrt((w**2 * (y - snips) ** 2).sum()) / w.sum())
    assert row["retry_rate_n"] == 5 and row["retry_rate"] == pytest.approx(0.4)


def test_store_decision_fields_roundtrip(store_any: ClickHouseStore) -> None:
    store_any.insert_decisions([_decision(1)])
    df = store_any._query_df("SELECT * FROM decisions FINAL", {})
    r = df.iloc[0]
    assert list(r["context"]) == pytest.approx([0.5, -1.0]) and list(r["eligible"]) == ["a", "b"]
    assert r["propensity"] == 0.5 and r["ts_ms"] == T0


def test_store_is_the_protocol(store_any: ClickHouseStore) -> None:
    """open_store returns a Store: every member of the protocol is there."""
    assert isinstance(store_any, Store)
    members = [m for m in dir(Store) if not m.startswith("_")]
    assert {"cohort_moments", "record_design", "insert_decisions"} <= set(members)
    for name in members:
        assert hasattr(store_any, name), name


def test_store_design_roundtrip_is_idempotent_and_periods_split_units(
        store_any: ClickHouseStore) -> None:
    assert store_any.experiment_design(EXP).empty
    store_any.record_design(EXP, {"gpt35": 0.9, "bandit": 0.1}, T0)
    store_any.record_design(EXP, {"gpt35": 0.9, "bandit": 0.1}, T0)  # a replay collapses
    store_any.record_design(EXP, {"gpt35": 0.5, "bandit": 0.5}, T0 + DAY_MS)
    d = store_any.experiment_design(EXP)
    assert list(d.columns) == ["since_ms", "variant", "weight"]
    assert sorted(d["since_ms"].unique()) == [T0, T0 + DAY_MS] and len(d) == 4
    rows = [ExposureRow("u1", EXP, "gpt35", T0 + 1), ExposureRow("u2", EXP, "bandit", T0 + 2),
            ExposureRow("u3", EXP, "gpt35", T0 + DAY_MS + 1),
            ExposureRow("u4", EXP, "gpt35", T0 + 5), ExposureRow("u4", EXP, "bandit", T0 + 6)]
    store_any.insert_exposures(rows)
    p = store_any.exposure_periods(EXP, [T0 + DAY_MS], T0 + 2 * DAY_MS)
    units = {(int(r.period), r.variant): int(r.units) for r in p.itertuples()}
    assert units == {(0, "gpt35"): 1, (0, "bandit"): 1, (1, "gpt35"): 1}
    assert int(p["cross_exposed"].sum()) == 1  # u4, counted apart
    assert EXP in store_any.experiments()


def test_store_exposure_sources_and_mean_rewards(store_any: ClickHouseStore) -> None:
    store_any.insert_decisions([_decision(1), _decision(2, unit="u2")])
    store_any.insert_exposures([ExposureRow("u3", EXP, "bandit", T0 + 5)], source="fallback")
    store_any.insert_rewards([_reward(1)])
    src = store_any.exposure_sources(EXP, T0 + DAY_MS).set_index("variant")
    # decisions are not exposures by themselves (the learner writes both)
    assert (int(src.loc["bandit", "exposures"]), int(src.loc["bandit", "fallbacks"])) == (1, 1)
    mr = store_any.mean_rewards(EXP)
    assert mr["n"].sum() == 1 and mr["mean_reward"].iloc[0] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda s: s.record_design(EXP, {}, T0), "weights"),
        (lambda s: s.record_design(EXP, {"a": -1.0}, T0), "weights[a]"),
        (lambda s: s.record_design("", {"a": 1.0}, T0), "experiment_id"),
        (lambda s: s.cohort_moments(EXP, "nope", "pre_engagement"), "metric"),
        (lambda s: s.retention_curve(EXP, max_day=-1), "max_day"),
        (lambda s: s.traffic_share(EXP, "year"), "bucket"),
        (lambda s: s.unit_metrics(EXP, as_of_ms=-5), "as_of_ms"),
        (lambda s: s.insert_exposures([], source="guess"), "source"),
    ],
    ids=["empty-weights", "negative-weight", "empty-experiment", "unknown-metric",
         "negative-max-day", "unknown-bucket", "negative-as-of", "unknown-source"],
)
def test_store_bad_arguments_name_the_field(store_any: ClickHouseStore, call: Any,
                                            field: str) -> None:
    with pytest.raises(InvalidInputError) as exc:
        call(store_any)
    assert exc.value.field == field
