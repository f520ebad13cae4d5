"""The early read from the store's moments (``Store.early_moments``) is the projection of
``calibrate`` + ``project_lift`` on ``load_units``' per-user rows: same users, same sums,
same index and estimate; its bootstraps resample hash blocks of users."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest

from bandit.analysis import calibration as C
from bandit.errors import InvalidInputError
from bandit.events import DecisionEvent, EngagementEvent, FeedbackEvent
from bandit.store import ClickHouseStore, open_store
from tests.test_calibration import DAY_MS, SEED, START_MS, linear_users, write_store


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


def _unrated(store: ClickHouseStore, n: int = 40) -> None:
    """Users whose window has feedback without a rating (their rating mean is filled with
    the other users' mean) and users with a decision but no feedback at all."""
    decisions, feedback, engagement = [], [], []
    for u in range(n):
        uid = f"nr{u:03d}"
        ts = START_MS + (u % 4) * DAY_MS + 1000
        did = f"d-{uid}"
        decisions.append(DecisionEvent(
            event_id=f"e-{did}", decision_id=did, ts_ms=ts, unit_id=uid,
            conversation_id=f"c-{uid}", experiment_id="exp-cal",
            variant="bandit" if u % 2 else "gpt35", arm_id="gpt35", propensity=1.0,
            policy_version="v1", context=(1.0, 0.0)))
        if u % 4:
            feedback.append(FeedbackEvent(event_id=f"f-{did}", decision_id=did,
                                          ts_ms=ts + 60_000, unit_id=uid,
                                          conversation_id=f"c-{uid}", retried=bool(u % 3),
                                          rating=None, conversation_length=u % 15))
        engagement.append(EngagementEvent(event_id=f"g-{uid}", ts_ms=ts + 30 * DAY_MS,
                                          unit_id=uid, screen_time_s=100.0 + u, messages=2))
    store.insert_decisions(decisions)
    store.insert_feedback(feedback)
    store.insert_engagement(engagement)


@pytest.fixture(scope="module")
def early_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, int]:
    dsn = f"chdb://{tmp_path_factory.mktemp('early') / 'chdb'}"
    with open_store(dsn) as s:
        as_of = write_store(s, np.random.SeedSequence(SEED + 20), 600)
        _unrated(s)
    return dsn, as_of


def _vv(frame: pd.DataFrame, cols: list[str]) -> np.ndarray:
    v = np.column_stack([np.ones(len(frame)), frame[cols].to_numpy(dtype=float)])
    return v.T @ v


def test_early_moments_sum_the_rows_load_units_reads(early_store: tuple[str, int]) -> None:
    """Per variant and maturity, n, Σv and Σv·vᵀ of the moments (unobserved proxies
    filled) are those of ``load_units``' rows (outcome 0 until matured)."""
    dsn, as_of = early_store
    with open_store(dsn, read_only=True) as s:
        units = C.load_units(s, ["exp-cal"], as_of_ms=as_of)
        mom = s.early_moments("exp-cal", "engagement_d30", "pre_engagement", as_of,
                              blocks=16)
    assert not mom["has_rating"].all() and not mom["has_retry"].all()  # both fills exercised
    assert mom["block"].between(0, 15).all()
    M = C._early_matrices(mom)
    C._fill_unobserved_moments(mom, M)
    df = units.frame.copy()
    df["day30_engagement"] = df["day30_engagement"].where(df["matured"], 0.0)
    cols = [C.proxy_column(p) for p in C.PROXIES] + ["pre_engagement", "day30_engagement"]
    for (variant, matured), rows in df.groupby(["variant", "matured"]):
        sel = ((mom["variant"] == variant) & (mom["matured"] == matured)).to_numpy()
        np.testing.assert_allclose(M[sel].sum(axis=0), _vv(rows, cols), rtol=1e-9, atol=1e-6)
    assert int(mom["n"].sum()) == len(df)
    assert int(mom.loc[mom["window_complete"], "n"].sum()) == int(df["window_complete"].sum())


def test_early_read_is_calibrate_and_project_lift_on_the_rows(
        early_store: tuple[str, int]) -> None:
    """Same users, index and estimate as the per-user path; the interval (hash blocks of
    users resampled, folds by block) as wide as the users' bootstrap within its noise."""
    dsn, as_of = early_store
    with open_store(dsn, read_only=True) as s:
        fast = C.early_read(s, "exp-cal", "gpt35", as_of_ms=as_of)
        units = C.load_units(s, ["exp-cal"], as_of_ms=as_of)
    cal = C.calibrate(units.matured, outcome="day30_engagement", covariates=units.covariates,
                      flexible=False)
    df = units.frame[units.frame["window_complete"]]
    slow = C.project_lift(cal, df[df["variant"] == "bandit"], df[df["variant"] == "gpt35"])
    (row,) = fast.to_dict("records")
    assert (row["n"], row["n_control"]) == (slow.n, slow.n_control)
    assert row["calibration_units"] == cal.n_units
    assert row["projected_lift"] == pytest.approx(slow.lift, rel=1e-9)
    assert row["ci_low"] < row["projected_lift"] < row["ci_high"]
    ratio = (row["ci_high"] - row["ci_low"]) / (slow.ci_high - slow.ci_low)
    assert 0.6 < ratio < 1.6, ratio


def test_early_read_block_fit_is_the_least_squares_index() -> None:
    """The index fitted from block moments has calibrate's coefficients; its out-of-fold
    residual sd (folds by block) is calibrate's within a percent."""
    seq = np.random.SeedSequence(SEED + 21)
    users = linear_users(seq, 3000)
    cal = C.calibrate(users, flexible=False, n_bootstrap=50)
    cols = [C.proxy_column(p) for p in C.PROXIES] + ["outcome"]
    v = np.column_stack([np.ones(len(users)), users[cols].to_numpy()])
    blocks = np.arange(len(users)) % 257
    ids, Mb = C._by_block(blocks, v[:, :, None] * v[:, None, :])
    index = C._fit_blocks(Mb, ids, outcome="outcome", names=cols[:-1], proxies=C.PROXIES,
                          n_bootstrap=50)
    np.testing.assert_allclose(index.params, cal.params, rtol=1e-7)
    assert index.residual_sd == pytest.approx(cal.residual_sd, rel=0.01)
    assert index.boot.shape == (50, 4) and index.n_units == 3000
    sd_blocks, sd_users = index.boot.std(axis=0), cal.boot_params.std(axis=0)
    assert np.all((sd_blocks > 0.6 * sd_users) & (sd_blocks < 1.6 * sd_users))


def test_early_read_refuses_in_calibrate_words(early_store: tuple[str, int]) -> None:
    dsn, _ = early_store
    with open_store(dsn, read_only=True) as s:
        with pytest.raises(InvalidInputError, match="too few matured users"):
            C.early_read(s, "exp-cal", "gpt35", as_of_ms=START_MS + 20 * DAY_MS)
        with pytest.raises(InvalidInputError, match="outcome must be one of"):
            C.early_read(s, "exp-cal", "gpt35", outcome="day99_engagement")
        with pytest.raises(InvalidInputError, match="no user with a decision"):
            C.early_read(s, "exp-none", "gpt35", calibration_experiments=["exp-none"])


def test_a_covariate_no_user_has_is_left_out_of_the_index(
        early_store: tuple[str, int]) -> None:
    """Every user new (no activity before exposure: the demo's users): the pre-exposure
    covariate is 0 for all, so the early read and load_units leave it out of the index —
    as ``calibrate --no-covariates`` — instead of refusing the projection."""
    dsn, _ = early_store
    with open_store(dsn, "all_new") as s:
        as_of = write_store(s, np.random.SeedSequence(SEED + 21), 400, pre_period=False)
    with open_store(dsn, "all_new", read_only=True) as s:
        fast = C.early_read(s, "exp-cal", "gpt35", as_of_ms=as_of)
        units = C.load_units(s, ["exp-cal"], as_of_ms=as_of)
    assert units.covariates == ()
    assert any("left out of the index" in n for n in units.notes), units.notes
    cal = C.calibrate(units.matured, outcome="day30_engagement", covariates=(), flexible=False)
    df = units.frame[units.frame["window_complete"]]
    slow = C.project_lift(cal, df[df["variant"] == "bandit"], df[df["variant"] == "gpt35"])
    (row,) = fast.to_dict("records")
    assert row["projected_lift"] == pytest.approx(slow.lift, rel=1e-9)


def _block_run(seeds: int, *, history_n: int, cohort_n: int, blocks: int) -> list[bool]:
    """tests/test_calibration_sim.py's projection run (lift20: surrogacy holds) through
    the early read's moments path: the index fitted from block moments of the history,
    each cohort resampled by blocks (users assigned to ``blocks`` blocks at random, as a
    hash does); per seed, whether the interval covered the measured day-30 lift."""
    from bandit.stats import relative_lift
    from simulations.world import (
        baseline_cohort_router,
        make_world,
        oracle_cohort_router,
        simulate_cohort,
    )
    from tests.test_calibration_sim import SEED as SIM_SEED
    from tests.test_calibration_sim import history

    cols = [C.proxy_column(p) for p in C.PROXIES]
    rng = np.random.default_rng(SEED + 22)

    def moments(frame: pd.DataFrame, with_y: bool) -> tuple[np.ndarray, np.ndarray]:
        names = cols + (["outcome"] if with_y else [])
        v = np.column_stack([np.ones(len(frame)), frame[names].to_numpy(dtype=float)])
        return C._by_block(rng.integers(0, blocks, len(v)), v[:, :, None] * v[:, None, :])

    world = make_world("lift20", 0)
    ids, Mb = moments(history(world, np.random.SeedSequence(SIM_SEED + 5), history_n), True)
    index = C._fit_blocks(Mb, ids, outcome="outcome", names=cols, proxies=C.PROXIES)
    covered = []
    for s, seq in enumerate(np.random.SeedSequence(SIM_SEED + 9).spawn(seeds)):
        a, b = seq.spawn(2)
        t = simulate_cohort(world, np.random.default_rng(a), cohort_n, oracle_cohort_router,
                            conversations_per_day=3)
        c = simulate_cohort(world, np.random.default_rng(b), cohort_n, baseline_cohort_router,
                            conversations_per_day=3)
        (_, Mt), (_, Mc) = moments(t.units(), False), moments(c.units(), False)
        p = C._project(index.params, index.boot, index.residual_sd, index.level,
                       (Mt[:, 0, 1:], Mt[:, 0, 0]), (Mc[:, 0, 1:], Mc[:, 0, 0]), seed=s)
        m = relative_lift(t.screen_time_d30, c.screen_time_d30)
        covered.append(bool(p.ci_low <= m.estimate <= p.ci_high))
    return covered


def test_early_read_blocks_cover_the_measured_lift_on_linear_users() -> None:
    """Light: users with a linear truth (surrogacy holds), index on 1,000 of them and two
    cohorts of 400 from the same population, all in random blocks of ~10 users: the
    interval covers the measured lift in >= 7 of 10 seeds (a false failure ≈ 0.1 % at the
    nominal 95 %)."""
    cols = [C.proxy_column(p) for p in C.PROXIES]
    rng = np.random.default_rng(SEED + 23)

    def moments(frame: pd.DataFrame, n_blocks: int) -> tuple[np.ndarray, np.ndarray]:
        v = np.column_stack([np.ones(len(frame)),
                             frame[[*cols, "outcome"]].to_numpy(dtype=float)])
        return C._by_block(rng.integers(0, n_blocks, len(v)), v[:, :, None] * v[:, None, :])

    covered = 0
    for s, seq in enumerate(np.random.SeedSequence(SEED + 24).spawn(10)):
        h, a, b = seq.spawn(3)
        ids, Mb = moments(linear_users(h, 1000), 100)
        index = C._fit_blocks(Mb, ids, outcome="outcome", names=cols, proxies=C.PROXIES)
        t, c = linear_users(a, 400), linear_users(b, 400)
        (_, Mt), (_, Mc) = moments(t, 40), moments(c, 40)
        p = C._project(index.params, index.boot, index.residual_sd, index.level,
                       (Mt[:, 0, 1:-1], Mt[:, 0, 0]), (Mc[:, 0, 1:-1], Mc[:, 0, 0]), seed=s)
        measured = t["outcome"].mean() / c["outcome"].mean() - 1
        covered += p.ci_low <= measured <= p.ci_high
    assert covered >= 7, covered


@pytest.mark.validation
def test_early_read_blocks_cover_where_surrogacy_holds() -> None:
    """20 seeds of 1,500 users a side in 128 blocks (~12 users a block): the cluster
    bootstrap's interval covers the measured day-30 lift in >= 90 % of seeds, as the
    users' bootstrap does (tests/test_calibration_sim.py)."""
    covered = _block_run(20, history_n=2500, cohort_n=1500, blocks=128)
    print(f"blocks: coverage {np.mean(covered):.0%} over {len(covered)} seeds")
    assert np.mean(covered) >= 0.9
