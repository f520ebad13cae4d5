"""Embedded-store specifics: read-only snapshots, process locks, replays in any order,
the learner sink's exposures and migrations of old stores. The behaviour every store owes
(chdb and a ClickHouse server alike) is the contract suite, ``tests/test_store_contract.py``."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bandit.errors import InvalidInputError, StoreError
from bandit.events import EngagementEvent
from bandit.store import ClickHouseStore, ExposureRow, open_store
from bandit.store.schema import MIGRATIONS
from bandit.testing.synthetic import DAY_MS
from tests.test_store_contract import EXP, T0, _decision, _engagement

# ---------------------------------------------------------------------- embedded specifics


def test_store_read_only_refuses_writes(store_dsn: str) -> None:
    open_store(store_dsn).close()
    ro = open_store(store_dsn, read_only=True)
    try:
        with pytest.raises(StoreError, match="read-only"):
            ro.insert_exposures([ExposureRow("u", EXP, "bandit", T0)])
        assert ro.count("exposures") == 0
    finally:
        ro.close()


def test_store_read_only_missing_store_raises(tmp_path: object) -> None:
    with pytest.raises(StoreError, match="no store"):
        open_store(f"chdb://{tmp_path}/absent", read_only=True)


def test_store_bad_dsn_or_database_raises() -> None:
    with pytest.raises(InvalidInputError, match=r"store\.database"):
        open_store("chdb://memory", "bad-name; DROP")
    with pytest.raises(InvalidInputError, match=r"store\.dsn"):
        open_store("")


def test_store_read_only_reader_in_other_process_sees_snapshot(store: ClickHouseStore,
                                                               store_dsn: str) -> None:
    """The writer (this process) owns the directory; another process reads a snapshot."""
    store.insert_exposures([ExposureRow(f"u{i}", EXP, "bandit", T0) for i in range(4)])
    store.insert_exposures([ExposureRow(f"u{i}", EXP, "bandit", T0) for i in range(4, 7)])
    code = (
        "import json, sys\n"
        "from bandit.errors import StoreError\n"
        "from bandit.store import open_store\n"
        "s = open_store(sys.argv[1], read_only=True)\n"
        "try:\n"
        "    s._command('OPTIMIZE TABLE exposures FINAL')\n"
        "    merges = True\n"
        "except StoreError:\n"
        "    merges = False\n"
        "print(json.dumps({'n': s.count('exposures'), 'ro': s.read_only,"
        " 'snap': s._snapshot_dir is not None, 'merges': merges}))\n"
        "s.close()\n"
    )
    out = subprocess.run([sys.executable, "-c", code, store_dsn], capture_output=True,
                         text=True, timeout=120, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    # a snapshot reader never merges its private copy (CPU for nothing)
    assert got == {"n": 7, "ro": True, "snap": True, "merges": False}
    store.insert_exposures([ExposureRow("u99", EXP, "bandit", T0)])  # writer unaffected
    assert store.count("exposures") == 8


def test_store_closed_store_raises(store_dsn: str) -> None:
    s = open_store(store_dsn)
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.count("decisions")


def _replay_event(i: int, unit: str) -> EngagementEvent:
    """Event i of the replay property: on day i - 8 after exposure at T0 (days -8..32),
    screen time 10 + i, i % 4 messages."""
    return _engagement(i, unit, T0 + (i - 8) * DAY_MS + 1000 * i, screen=10.0 + i, msgs=i % 4)


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(st.integers(0, 40), max_size=12), min_size=1, max_size=4))
def test_store_replays_in_any_order_count_each_event_once(store: ClickHouseStore,
                                                          batches: list[list[int]]) -> None:
    """Property: however batches repeat and overlap, each event id counts once — in the
    table and in the cohort aggregates (``cohort_moments_many``, ``cohort_moments``),
    which must equal the same sums computed here from the distinct events."""
    unit = f"p{uuid.uuid4().hex[:10]}"
    exp = f"exp-{unit}"
    store.insert_exposures([ExposureRow(unit, exp, "bandit", T0)])
    for batch in batches:
        store.insert_engagement([_replay_event(i, unit) for i in batch])
        store.insert_exposures([ExposureRow(unit, exp, "bandit", T0)])  # replayed too
    (n,), = store._rows("SELECT count() FROM engagement FINAL WHERE unit_id = {u:String}",
                        {"u": unit})
    distinct = {i for b in batches for i in b}
    assert n == len(distinct)
    # expected per-unit values from the distinct events: day d = i - 8
    day = {i: i - 8 for i in distinct}
    def window(lo: int, hi: int, what: str) -> float:
        return float(sum((10.0 + i) if what == "st" else float(i % 4)
                         for i in distinct if lo <= day[i] <= hi))
    y = {f"retained_d{n}": float(any(d == n for d in day.values())) for n in (1, 7, 14, 30)}
    y.update({f"engagement_d{n}": window(n, n, "st") for n in (1, 7, 14, 30)})
    y.update({f"messages_d{n}": window(n, n, "msg") for n in (1, 7, 14, 30)})
    y.update(cum_engagement_30=window(0, 30, "st"), cum_messages_30=window(0, 30, "msg"))
    x = {"pre_engagement": window(-7, -1, "st"), "pre_messages": window(-7, -1, "msg")}
    as_of = T0 + 40 * DAY_MS
    many = store.cohort_moments_many(exp, None, as_of)
    assert len(many) == 28 and set(many["variant"]) == {"bandit"}
    for r in many.itertuples():
        want = (1, 1, y[r.metric], y[r.metric] ** 2, x[r.covariate], x[r.covariate] ** 2,
                y[r.metric] * x[r.covariate])
        got = (r.n_exposed, r.n, r.sy, r.syy, r.sx, r.sxx, r.sxy)
        assert got == pytest.approx(want), (r.metric, r.covariate)
    one = store.cohort_moments(exp, "engagement_d7", "pre_messages", as_of).iloc[0]
    assert (one["sy"], one["sxy"]) == pytest.approx((y["engagement_d7"],
                                                     y["engagement_d7"] * x["pre_messages"]))


# ---------------------------------------------------------------------- exposure sources


def test_store_counts_fallback_exposures_written_by_the_learner_sink(
        store: ClickHouseStore) -> None:
    """Decisions give 'decision' exposures, fallback exposures from the exposures topic
    'fallback' ones (both through the learner's sink); counted per variant up to as-of."""
    from bandit.events import ExposureEvent
    from consumers.join import Outbox
    from consumers.sink import StoreSink

    decisions = [_decision(i, unit=f"u{i}", variant="bandit" if i % 2 else "gpt35",
                           ts=T0 + i * 1000) for i in range(6)]
    fallbacks = [ExposureEvent(event_id=f"x{i}", ts_ms=T0 + 10_000 + i * 1000, unit_id=f"f{i}",
                               conversation_id=f"c{i}", experiment_id=EXP,
                               variant="bandit" if i < 3 else "gpt35", arm_id="gpt35",
                               reason="timeout") for i in range(4)]
    sink = StoreSink(store)
    assert sink.write(Outbox(decisions=decisions, exposures=fallbacks)) == []
    assert sink.write(Outbox(exposures=fallbacks[:2])) == []  # a replay counts once
    got = store.exposure_sources(EXP, T0 + DAY_MS).set_index("variant")
    assert got.loc["bandit", ["exposures", "fallbacks"]].tolist() == [6, 3]
    assert got.loc["gpt35", ["exposures", "fallbacks"]].tolist() == [4, 1]
    assert int(got["last_ms"].max()) == T0 + 13_000
    # as of just before the fallbacks: decisions only
    early = store.exposure_sources(EXP, T0 + 9_999)
    assert early["exposures"].sum() == 6 and early["fallbacks"].sum() == 0
    assert store.exposure_sources("no-such-exp", T0 + DAY_MS).empty
    with pytest.raises(InvalidInputError, match="source"):
        store.insert_exposures([ExposureRow("u", EXP, "bandit", T0)], source="guess")


def test_store_migration_4_marks_existing_exposures_as_decisions(
        store_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store created before migration 4 keeps its exposure rows, which read 'decision'."""
    import bandit.store.clickhouse as ch

    monkeypatch.setattr(ch, "MIGRATIONS", tuple(m for m in MIGRATIONS if m[0] < 4))
    old = open_store(store_dsn)
    assert old.schema_version() == 3
    old._insert("exposures", {"unit_id": ["u1", "u2"], "experiment_id": [EXP, EXP],
                              "variant": ["bandit", "gpt35"], "ts_ms": [T0, T0]})
    old.close()
    monkeypatch.setattr(ch, "MIGRATIONS", MIGRATIONS)
    store = open_store(store_dsn)
    try:
        assert store.schema_version() == max(v for v, _, _ in MIGRATIONS)
        store.insert_exposures([ExposureRow("u3", EXP, "bandit", T0 + 1)], source="fallback")
        got = store.exposure_sources(EXP, T0 + DAY_MS)
        assert (got["exposures"].sum(), got["fallbacks"].sum()) == (3, 1)
    finally:
        store.close()
