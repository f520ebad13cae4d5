"""Ground-truth world: reward semantics, churn, planted day-30 lift."""

from __future__ import annotations

import numpy as np
import pytest

from bandit.errors import InvalidInputError
from bandit.reward import reward_from_proxies
from simulations.world import SCENARIOS, Scenario, World, make_world, planted_lift

SEED = 20261123


def test_world_sampled_reward_equals_reward_from_proxies() -> None:
    world = make_world("default", 0)
    rng = np.random.default_rng(np.random.SeedSequence(SEED))
    _, _, topics = world.sample_contexts(rng, 300)
    arms = rng.integers(0, world.n_arms, 300)
    prox = world.sample_proxies(rng, topics, arms, day=3)
    for i in range(300):
        rating = int(prox.rating[i]) or None
        expected = reward_from_proxies(
            world.reward_config, retried=bool(prox.retried[i]), rating=rating,
            conversation_length=int(prox.conversation_length[i]),
        )
        assert prox.reward[i] == pytest.approx(expected)


def test_world_expected_reward_is_mean_of_sampled_reward() -> None:
    world = make_world("default", 0)
    rng = np.random.default_rng(np.random.SeedSequence(SEED + 1))
    _, _, topics = world.sample_contexts(rng, 1)
    topics = np.repeat(topics, 40_000, axis=0)
    mu = world.expected_rewards(topics[:1], day=5)[0]
    for arm in (0, 1, world.n_arms - 1):
        r = world.sample_proxies(rng, topics, np.full(40_000, arm), day=5).reward
        # 5 standard errors: false-failure rate < 1e-6 per arm.
        assert abs(r.mean() - mu[arm]) < 5 * r.std() / np.sqrt(r.size)


def test_world_experts_arrive_and_retire() -> None:
    world = make_world("default", 0)
    masks = np.array([world.active_mask(d) for d in range(world.scenario.horizon_days)])
    assert masks[:, world.baseline_index].all()
    changes = (masks[1:] != masks[:-1]).any(axis=0)
    assert changes.any(), "some expert must arrive or retire within the horizon"
    reg = world.registry(day=0)
    assert {a.arm_id for a in reg.active()} == {
        a for a, m in zip(world.arm_ids, masks[0], strict=True) if m
    }


@pytest.mark.parametrize("name,target", [("lift20", 0.20), ("lift68", 0.68)])
def test_world_planted_lift_matches_scenario_target(name: str, target: float) -> None:
    assert planted_lift(name) == pytest.approx(target, abs=1e-6)


def test_world_lift68_measured_day30_lift_covers_planted() -> None:
    from bandit.stats import relative_lift

    world = make_world("lift68", 0)
    planted = planted_lift(world)
    rng = np.random.default_rng(np.random.SeedSequence(SEED + 2))
    treat = world.simulate_engagement(rng, 6000, lambda w, x, t, d: w.oracle_router(x, t, d))
    ctrl = world.simulate_engagement(rng, 6000, lambda w, x, t, d: w.baseline_router(x, t, d))
    assert treat["screen_time"].shape == (6000, 31)
    lift = relative_lift(treat["screen_time"][:, 30], ctrl["screen_time"][:, 30], alpha=0.01)
    assert lift.ci_low <= planted <= lift.ci_high
    assert lift.ci_low > 0.2


def test_world_engagement_retention_declines_over_days() -> None:
    world = make_world("small", 0)
    rng = np.random.default_rng(np.random.SeedSequence(SEED + 3))
    eng = world.simulate_engagement(rng, 3000, lambda w, x, t, d: w.baseline_router(x, t, d),
                                    days=31)
    active = (eng["screen_time"] > 0).mean(axis=0)
    assert active[0] > active[30]


@pytest.mark.parametrize(
    "make,field",
    [
        (lambda: make_world("nope"), "scenario"),
        (lambda: Scenario(dim=3), "dim"),
        (lambda: Scenario(rating_rate=1.5), "rating_rate"),
        (lambda: Scenario(horizon_days=10), "horizon_days"),
        (lambda: Scenario(target_lift=-0.1), "target_lift"),
        (lambda: make_world("small").sample_proxies(
            np.random.default_rng(0), np.zeros((2, 6)), [0, 99], 0), "arm_index"),
        (lambda: make_world("small").simulate_engagement(
            np.random.default_rng(0), 0, lambda w, x, t, d: w.baseline_router(x, t, d)),
         "n_users"),
    ],
)
def test_world_bad_input_is_refused(make, field: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInputError) as err:
        make()
    assert err.value.field == field


def test_world_scenarios_are_named() -> None:
    assert {"default", "lift20", "lift68"} <= set(SCENARIOS)


def test_world_step_api_produces_engagement_events() -> None:
    world = make_world("lift20", 0)
    rng = np.random.default_rng(np.random.SeedSequence(SEED + 4))
    prefs = world.sample_users(rng, 50)
    x, topics = world.sample_conversations(rng, prefs)
    assert x.shape == (50, world.dim)
    arms = world.oracle_router(x, topics, 0)
    quality = world.expected_rewards(topics, 0)[np.arange(50), arms]
    base, activity = world.sample_user_traits(rng, 50)
    events = world.engagement_events(rng, [f"u{i}" for i in range(50)], base, activity,
                                     quality, day=1, ts_ms=1_790_000_000_000)
    assert 0 < len(events) <= 50
    assert all(e.screen_time_s >= 0 and e.messages >= 0 for e in events)
    assert len({e.event_id for e in events}) == len(events)


def test_demo_same_seed_same_simulated_world() -> None:
    """``switchboard demo --seed S``: the users (preferences, activity, join days), the
    experts (arrivals, true qualities) and the planted truth are the seed's alone."""
    from simulations.demo import TrafficGenerator, demo_world

    def world_of(seed: int) -> tuple[World, TrafficGenerator]:
        w = demo_world("lift68", seed)
        return w, TrafficGenerator(w, server_url="", token="", experiment_id="demo", users=50, seed=seed)

    (w1, g1), (w2, g2), (_, g3) = world_of(11), world_of(11), world_of(12)
    topics = np.arange(w1.scenario.n_dims) % w1.scenario.n_dims
    np.testing.assert_array_equal(w1.expected_rewards(topics, 0), w2.expected_rewards(topics, 0))
    assert [(a.arm_id, a.arrive_day, a.retire_day) for a in w1.arms] == \
        [(a.arm_id, a.arrive_day, a.retire_day) for a in w2.arms]
    assert planted_lift(w1) == planted_lift(w2)
    for name in ("prefs", "base", "activity", "join_day"):
        np.testing.assert_array_equal(getattr(g1, name), getattr(g2, name))
    assert not np.array_equal(g1.base, g3.base)
