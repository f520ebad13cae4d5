"""Replay (Li et al. 2011) and its rejection-sampling generalisation against ground truth."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

from bandit.arms import Arm, ArmRegistry
from bandit.config import PolicyConfig
from bandit.errors import InvalidInputError
from bandit.policies import make_policy
from simulations.logs import LoggedData
from simulations.replay import FixedLinearPolicy, _Chooser, _Draws, replay, replay_many
from simulations.world import make_world, simulate_log

SEED = 4242


def _target(world):  # type: ignore[no-untyped-def]
    return FixedLinearPolicy(np.random.default_rng(11).standard_normal((world.n_arms, world.dim)))


def test_replay_uniform_log_ci_covers_true_value_in_90_of_100_seeds() -> None:
    world = make_world("small", 0)
    target = _target(world)
    covered = 0
    for seq in np.random.SeedSequence(SEED).spawn(100):
        rng = np.random.default_rng(seq)
        data, mu = simulate_log(world, rng, 3000)
        truth = float((target.probabilities(data.contexts) * mu).sum(axis=1).mean())
        res = replay(data, target, rng=rng, learn=False)
        assert res.method == "replay" and 0 < res.events_used < data.n
        covered += int(res.ci_low <= truth <= res.ci_high)
    # Nominal 95%: P(covered < 90 | calibrated) ≈ 1.6%.
    assert covered >= 90, covered


def test_replay_rejection_sampling_is_unbiased_for_nonuniform_logger() -> None:
    world = make_world("small", 0)
    target = _target(world)
    w = np.random.default_rng(3).standard_normal((world.n_arms, world.dim))

    def logger(x: np.ndarray) -> np.ndarray:
        return 0.8 * softmax(x @ w.T, axis=1) + 0.2 / world.n_arms

    covered, runs = 0, 40
    for seq in np.random.SeedSequence(SEED + 1).spawn(runs):
        rng = np.random.default_rng(seq)
        data, mu = simulate_log(world, rng, 6000, logger=logger)
        truth = float((target.probabilities(data.contexts) * mu).sum(axis=1).mean())
        res = replay(data, target, rng=rng, learn=False)
        assert res.method == "rejection"
        covered += int(res.ci_low <= truth <= res.ci_high)
    assert covered >= 33, covered  # nominal 38/40; P(< 33) < 0.5% if calibrated


def test_replay_learning_policy_learns_and_uses_events() -> None:
    world = make_world("default", 0)
    rng = np.random.default_rng(np.random.SeedSequence(SEED + 2))
    data, mu = simulate_log(world, rng, 25_000)
    reg = ArmRegistry([Arm(a) for a in data.arm_ids])
    df = replay_many(data, {
        "linucb": make_policy(PolicyConfig(name="linucb", dim=data.dim, alpha=0.3), reg),
        "uniform": make_policy(PolicyConfig(name="uniform", dim=data.dim), reg),
    }, seed=1, batch_size=50).set_index("policy")
    assert df.loc["linucb", "value"] > df.loc["uniform", "ci_high"]
    assert abs(df.loc["uniform", "value"] - mu.mean()) < 4 * df.loc["uniform", "se"]
    assert df.loc["linucb", "events_used"] > 0.05 * data.n


def _fast_choices(pol, data, x, rng):  # type: ignore[no-untyped-def]
    """20,000 replay choices for one context through the block chooser."""
    rep = LoggedData(data.arm_ids, np.repeat(x, 20_000, axis=0), np.zeros(20_000, np.int64),
                     np.full(20_000, 1 / data.n_arms), np.zeros(20_000))
    chooser = _Chooser(pol, rep, None, rng)
    stop = chooser.window(0, 20_000)
    assert stop == 20_000
    return chooser(0, stop)


def test_replay_fast_path_matches_policy_choose_distribution() -> None:
    world = make_world("small", 0)
    rng = np.random.default_rng(np.random.SeedSequence(SEED + 3))
    data, _ = simulate_log(world, rng, 2000)
    reg = ArmRegistry([Arm(a) for a in data.arm_ids])
    pol = make_policy(PolicyConfig(name="linucb", dim=data.dim, alpha=0.5,
                                   probability_floor=0.02), reg)
    pol.update_batch([data.arm_ids[i] for i in data.arm_index], data.contexts, data.reward)
    x = data.contexts[:1]
    fast = _fast_choices(pol, data, x, rng)
    choice = pol.choose(x[0], rng, list(data.arm_ids))
    expected = np.array([choice.probabilities[choice.arms.index(a)] for a in data.arm_ids])
    freq = np.bincount(fast, minlength=data.n_arms) / fast.size
    np.testing.assert_allclose(freq, expected, atol=5 * np.sqrt(0.9 * 0.1 / fast.size))


def test_replay_refuses_bad_input() -> None:
    world = make_world("small", 0)
    rng = np.random.default_rng(0)
    data, _ = simulate_log(world, rng, 200, logger=lambda x: np.tile(
        np.r_[0.5, np.full(world.n_arms - 1, 0.5 / (world.n_arms - 1))], (x.shape[0], 1)))
    target = _target(world)
    with pytest.raises(InvalidInputError, match="uniformly"):
        replay(data, target, rng=rng, method="replay")
    with pytest.raises(InvalidInputError):
        replay(data, target, rng=rng, method="magic")
    with pytest.raises(InvalidInputError):
        replay(data, target, rng=rng, batch_size=0)


def test_replay_thompson_fast_path_matches_policy_choose_distribution() -> None:
    world = make_world("small", 0)
    rng = np.random.default_rng(np.random.SeedSequence(SEED + 4))
    data, _ = simulate_log(world, rng, 300)
    reg = ArmRegistry([Arm(a) for a in data.arm_ids])
    pol = make_policy(PolicyConfig(name="linear_thompson", dim=data.dim, thompson_v=0.5,
                                   probability_floor=0.02), reg)
    pol.update_batch([data.arm_ids[i] for i in data.arm_index], data.contexts, data.reward)
    x = data.contexts[:1]
    fast = _fast_choices(pol, data, x, rng)
    slow = np.array([data.arm_ids.index(pol.choose(x[0], rng, list(data.arm_ids)).arm_id)
                     for _ in range(4000)])
    f_fast = np.bincount(fast, minlength=data.n_arms) / fast.size
    f_slow = np.bincount(slow, minlength=data.n_arms) / slow.size
    # Two independent samples of one distribution: 5 SE of the difference per arm.
    se = np.sqrt(0.25 / fast.size + 0.25 / slow.size)
    np.testing.assert_allclose(f_fast, f_slow, atol=5 * se)


def _event_by_event(data, pol, seed, batch_size, method, allowed):  # type: ignore[no-untyped-def]
    """The reference: for each event in order, choose (score_batch of that one event), match,
    and learn after every ``batch_size`` accepted events — with replay's random stream."""
    rng = np.random.default_rng(seed)
    coin = rng.random(data.n) if method == "rejection" else None
    accept_p = data.propensity.min() / data.propensity
    thompson = pol.name == "linear_thompson"
    draws = _Draws(rng, len(allowed), thompson)
    used, pending = [], []
    for i in range(data.n):
        sc = pol.score_batch(data.contexts[i:i + 1], allowed)
        u, z = draws.take(i, i + 1)
        if thompson:
            k = len(allowed)
            f = min(pol.config.probability_floor, 1.0 / k)
            draw = sc.means[0] + pol.config.thompson_v * sc.widths[0] * z[0]
            j = min(int(u[0] / f), k - 1) if u[0] < k * f else int(np.argmax(draw))
        else:
            p = pol.probabilities_from_scores(sc)[0]
            j = min(int((u[0] > np.cumsum(p)).sum()), len(p) - 1)
        if sc.arms[j] != data.arm_ids[data.arm_index[i]]:
            continue
        if coin is not None and not coin[i] < accept_p[i]:
            continue
        used.append(i)
        pending.append(i)
        if len(pending) == batch_size:
            if batch_size == 1:
                pol.update(sc.arms[j], data.contexts[i], float(data.reward[i]))
            else:
                pol.update_batch([data.arm_ids[data.arm_index[e]] for e in pending],
                                 data.contexts[pending], data.reward[pending])
            pending = []
    return used


@pytest.mark.parametrize(("name", "batch_size", "logger"), [
    ("linucb", 1, False), ("linear_thompson", 1, False), ("epsilon_greedy", 1, True),
    ("linucb", 3, True), ("hybrid_linucb", 1, False),
])
def test_replay_in_blocks_equals_the_event_by_event_loop(name, batch_size, logger) -> None:  # type: ignore[no-untyped-def]
    """Scoring stretches of events at once (one-arm re-scoring after an update for the
    separable policies) gives exactly the per-event loop's accepted events and state."""
    world = make_world("small", 0)
    w = np.random.default_rng(3).standard_normal((world.n_arms, world.dim))
    data, _ = simulate_log(world, np.random.default_rng(SEED + 5), 1500, logger=(
        (lambda x: 0.7 * softmax(x @ w.T, axis=1) + 0.3 / world.n_arms) if logger else None))
    allowed = list(data.arm_ids[1:])  # a subset: columns of the log are not the policy's
    arms = [Arm(a, features=[float(i % 3), 1.0]) for i, a in enumerate(data.arm_ids)]
    reg = ArmRegistry(arms, feature_dim=2)

    def fresh():  # type: ignore[no-untyped-def]
        return make_policy(PolicyConfig(name=name, dim=data.dim, alpha=0.5, thompson_v=0.3,
                                        epsilon=0.1, probability_floor=0.02,
                                        arm_feature_dim=2 if name == "hybrid_linucb" else 0), reg)

    ref_pol, pol = fresh(), fresh()
    method = "rejection" if logger else "replay"
    used = _event_by_event(data, ref_pol, 9, batch_size, method, allowed)
    res = replay(data, pol, rng=np.random.default_rng(9), batch_size=batch_size, method=method,
                 eligible_arms=allowed, min_events=1)
    assert pol.separable == (name != "hybrid_linucb")
    assert res.events_used == len(used) > 20
    assert res.value == pytest.approx(float(data.reward[used].mean()), rel=1e-12)
    done = len(used) - len(used) % batch_size  # the reference leaves a last partial batch out
    if done < len(used):
        tail = used[done:]
        ref_pol.update_batch([data.arm_ids[data.arm_index[e]] for e in tail], data.contexts[tail],
                             data.reward[tail])
    np.testing.assert_array_equal(pol.statistics.S, ref_pol.statistics.S)
    np.testing.assert_array_equal(pol.statistics.b, ref_pol.statistics.b)
