"""Calibration in the ground-truth simulator: the misaligned scenario (length bait).

In ``misaligned`` the true long-term value weighs retry and rating, not conversation
length, and three chatty experts inflate length; the default α's reward them. Calibrating
on matured users of past variants must give α's whose reward serves higher true value.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from scipy.stats import kendalltau

from bandit.analysis.calibration import Calibration, ProjectionHistory, calibrate
from bandit.config import RewardConfig
from simulations.world import (
    CohortRouter,
    PolicyRouter,
    World,
    baseline_cohort_router,
    make_world,
    oracle_cohort_router,
    random_router,
    simulate_cohort,
)

SEED = 20261202


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


class _GreedyDefault:
    """What a converged bandit on the default α's serves: the best expected default reward."""

    def choose(self, world: World, x: np.ndarray, topics: np.ndarray, day: int,
               rng: np.random.Generator) -> np.ndarray:
        mu = np.where(world.active_mask(day), world.expected_rewards(topics, day), -np.inf)
        return np.asarray(np.argmax(mu, axis=1), dtype=np.int64)

    def learn(self, *args: object) -> None:
        return None


def history(world: World, seq: np.random.SeedSequence, n: int) -> pd.DataFrame:
    """Matured users of four past variants: GPT-3.5 only, uniform, the expert mixture and
    a default-α bandit (where the bait shows)."""
    routers: list[CohortRouter] = [baseline_cohort_router, random_router,
                                   oracle_cohort_router, _GreedyDefault()]
    seqs = seq.spawn(len(routers))
    return pd.concat([simulate_cohort(world, np.random.default_rng(s), n, r,
                                      conversations_per_day=3).units(f"h{i}-")
                      for i, (s, r) in enumerate(zip(seqs, routers, strict=True))],
                     ignore_index=True)


def reward_of(cal: Calibration) -> RewardConfig:
    a = cal.reward_alphas()
    return RewardConfig(alpha_retry=max(a["alpha_retry"], 1e-4),
                        alpha_rating=a["alpha_rating"], alpha_length=a["alpha_length"])


def test_misaligned_default_alphas_reward_the_bait() -> None:
    world = make_world("misaligned", 0)
    _, _, topics = world.sample_contexts(np.random.default_rng(SEED), 2000)
    value = world.true_values(topics, 0)
    reward = world.expected_rewards(topics, 0)
    chatty = [i for i, a in enumerate(world.arms) if a.kind == "chatty"]
    assert np.isin(reward.argmax(axis=1), chatty).mean() > 0.2
    assert np.isin(value.argmax(axis=1), chatty).mean() < 0.05
    # the bait raises the length proxy's expectation, not the value
    assert (world.bait[chatty] > 0).all() and world.scenario.value_weights == (0.5, 0.5, 0.0)


def test_calibrated_alphas_rank_experts_by_true_value() -> None:
    """Calibrated on 4 × 2500 matured users (sampled day-30 screen time), the reward puts
    ~no weight on length and serves, context by context, arms of higher true value than
    the default α's, ranking the arms closer to their true order (Kendall τ)."""
    world = make_world("misaligned", 0)
    cal = calibrate(history(world, np.random.SeedSequence(SEED), 2500), seed=0,
                    flexible=False)
    assert cal.alpha["length"] < 0.15 < min(cal.alpha["retry"], cal.alpha["rating"])
    _, _, topics = world.sample_contexts(np.random.default_rng(SEED + 1), 2000)
    value = world.true_values(topics, 0)
    rows = np.arange(len(topics))
    served = {}
    tau = {}
    for name, rc in (("default", RewardConfig()), ("calibrated", reward_of(cal))):
        r = world.expected_rewards_under(topics, 0, rc)
        served[name] = value[rows, r.argmax(axis=1)].mean()
        tau[name] = np.mean([kendalltau(value[i], r[i])[0] for i in range(200)])
    assert served["calibrated"] > served["default"] + 0.03, served
    assert tau["calibrated"] > tau["default"], tau


@pytest.mark.validation
def test_bandit_with_calibrated_alphas_beats_default_on_day30_lift() -> None:
    """LinUCB with calibrated α's vs with the default α's, each against GPT-3.5, on 6000
    users each: the measured day-30 lift of calibrated over default has a 95% interval
    above 0; both lifts are printed beside the simulator's planted truth."""
    from bandit.stats import relative_lift

    world = make_world("misaligned", 0)
    seqs = np.random.SeedSequence(SEED + 2).spawn(4)
    cal = calibrate(history(world, seqs[0], 4000), seed=0, flexible=False)
    n = 6000
    control = simulate_cohort(world, np.random.default_rng(seqs[1]), n, baseline_cohort_router)
    runs = {name: simulate_cohort(world, np.random.default_rng(s), n, PolicyRouter(world, rc))
            for name, s, rc in (("default", seqs[2], RewardConfig()),
                                ("calibrated", seqs[3], reward_of(cal)))}
    for name, c in runs.items():
        lift = relative_lift(c.screen_time_d30, control.screen_time_d30)
        truth = c.expected_d30.mean() / control.expected_d30.mean() - 1
        print(f"{name}: measured {lift.estimate:+.3f} [{lift.ci_low:+.3f}, {lift.ci_high:+.3f}]"
              f", planted truth {truth:+.3f}")
    diff = relative_lift(runs["calibrated"].screen_time_d30, runs["default"].screen_time_d30)
    print(f"calibrated over default: {diff.estimate:+.3f} [{diff.ci_low:+.3f}, {diff.ci_high:+.3f}]")
    assert diff.ci_low > 0
    assert runs["calibrated"].expected_d30.mean() > runs["default"].expected_d30.mean()


def _projection_run(scenario: str, seeds: int, *, history_n: int = 2500,
                    cohort_n: int = 1500) -> tuple[ProjectionHistory, list[float]]:
    """The expert mixture over GPT-3.5 projected from days 0-6, one experiment per seed,
    with the index calibrated on the scenario's history: the rows ``projection_history``
    would give (projection, interval, measured day-30 lift, gap, covered) and, per seed,
    the planted truth (the cohorts' expected day-30 lift)."""
    from bandit.analysis.calibration import HISTORY_COLUMNS, project_lift
    from bandit.stats import relative_lift

    world = make_world(scenario, 0)
    cal = calibrate(history(world, np.random.SeedSequence(SEED + 5), history_n), seed=0,
                    flexible=False)
    rows, truths = [], []
    for s, seq in enumerate(np.random.SeedSequence(SEED + 9).spawn(seeds)):
        a, b = seq.spawn(2)
        t = simulate_cohort(world, np.random.default_rng(a), cohort_n, oracle_cohort_router,
                            conversations_per_day=3)
        c = simulate_cohort(world, np.random.default_rng(b), cohort_n, baseline_cohort_router,
                            conversations_per_day=3)
        p = project_lift(cal, t.units(), c.units(), seed=s)
        m = relative_lift(t.screen_time_d30, c.screen_time_d30)
        rows.append({"experiment_id": f"seed-{s}", "variant": "mixture", "n": p.n,
                     "n_control": p.n_control, "projected_lift": p.lift, "ci_low": p.ci_low,
                     "ci_high": p.ci_high, "measured_lift": m.estimate,
                     "measured_ci_low": m.ci_low, "measured_ci_high": m.ci_high,
                     "gap": m.estimate - p.lift,
                     "covered": p.ci_low <= m.estimate <= p.ci_high,
                     "calibrated_on": "history", "calibration_units": cal.n_units})
        truths.append(float(t.expected_d30.mean() / c.expected_d30.mean() - 1))
    return ProjectionHistory(pd.DataFrame(rows, columns=list(HISTORY_COLUMNS)), ()), truths


def _show(name: str, h: ProjectionHistory, truths: list[float]) -> None:
    r = h.rows
    print(f"{name}: coverage of the measured lift {h.coverage:.0%} over {len(r)} seeds; "
          f"mean measured - projected {h.mean_gap()[0]:+.3f} "
          f"[{h.mean_gap()[1]:+.3f}, {h.mean_gap()[2]:+.3f}]")
    print(r[["projected_lift", "ci_low", "ci_high", "measured_lift"]].assign(truth=truths)
          .round(3).to_string())


def test_projection_from_day7_covers_the_measured_day30_lift() -> None:
    """Light version of the coverage grid (small cohorts, three seeds): the day-7
    projection's 95% interval holds the lift day 30 then measures in >= 2 of 3 seeds (a
    false failure <1% at the nominal level) and it projects a positive lift."""
    h, truths = _projection_run("lift20", 3, history_n=500, cohort_n=400)
    _show("lift20 (light)", h, truths)
    assert h.rows["covered"].sum() >= 2
    assert (h.rows["projected_lift"] > 0).all()


def test_projection_refuses_thin_cohorts() -> None:
    from bandit.analysis.calibration import project_lift
    from bandit.errors import InvalidInputError

    world = make_world("lift20", 0)
    cal = calibrate(history(world, np.random.SeedSequence(SEED), 300), seed=0, flexible=False,
                    min_units=200)
    units = simulate_cohort(world, np.random.default_rng(SEED), 10, random_router).units()
    with pytest.raises(InvalidInputError, match="too few users"):
        project_lift(cal, units, units)


@pytest.mark.validation
def test_projection_covers_measured_day30_lift_where_surrogacy_holds() -> None:
    """lift20 (value = what the proxies measure), 20 seeds of 1,500 users a side: the
    day-7 projection's 95% interval covers the measured day-30 lift in >= 90% of seeds
    (the interval carries the index weights' uncertainty and the day-30 outcome's noise
    around the index), and the mean measured − projected over the 20 experiments has an
    interval that holds 0: this history check does not flag the projection. The planted
    truth (the cohorts' expected day-30 lift) is covered as often."""
    h, truths = _projection_run("lift20", 20)
    _show("lift20", h, truths)
    assert h.coverage >= 0.9
    r = h.rows
    assert np.mean((r["ci_low"] <= truths) & (np.asarray(truths) <= r["ci_high"])) >= 0.9
    _, lo, hi = h.mean_gap()
    assert lo <= 0 <= hi


@pytest.mark.validation
def test_history_check_flags_value_the_proxies_miss() -> None:
    """hidden (specialists carry value no proxy shows, same planted lift): each
    experiment's interval still covers its measurement (day-30 noise is larger than the
    miss) — the known failure, documented — but over 20 experiments the history check's
    mean measured − projected is clear of 0: the projection runs low."""
    h, truths = _projection_run("hidden", 20)
    _show("hidden", h, truths)
    _, lo, _ = h.mean_gap()
    assert lo > 0
