"""One conformance suite run over every policy (vw included), plus policy specifics."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bandit.arms import Arm, ArmRegistry
from bandit.config import (
    POLICY_PARAMS,
    EpsilonGreedyParams,
    FixedParams,
    GreedyParams,
    HybridParams,
    LinUCBParams,
    PolicyConfig,
    ThompsonParams,
)
from bandit.errors import ConfigError, InvalidInputError, UnknownArmError
from bandit.formats.snapshot import load_policy_snapshot, save_policy_snapshot
from bandit.linear import RidgeStatistics
from bandit.policies import (
    POLICY_NAMES,
    AdditivePolicy,
    Greedy,
    LinUCB,
    Policy,
    floored_argmax,
    make_policy,
)

D = 4
M = 2
SEEDS = np.random.SeedSequence(20240611)


def _registry() -> ArmRegistry:
    return ArmRegistry(
        [
            Arm("gpt35", kind="baseline", features=(0.0, 0.0)),
            Arm("roleplay", features=(1.0, 0.2)),
            Arm("creative", features=(0.1, 0.9)),
            Arm("informative", features=(-0.5, 0.5)),
        ],
        feature_dim=M,
    )


def _policy(name: str, **overrides: Any) -> tuple[Any, ArmRegistry]:
    reg = _registry()
    cfg = PolicyConfig(name=name, dim=D, arm_feature_dim=M, thompson_propensity_draws=64,
                       **overrides)
    return make_policy(cfg, reg), reg


def _train(pol: Any, n: int = 30, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(n):
        x = rng.normal(size=D)
        choice = pol.choose(x, rng)
        pol.update(choice.arm_id, x, float(np.tanh(x[0])))


ALL = list(POLICY_NAMES)


# --------------------------------------------------------------------------- conformance


@pytest.mark.parametrize("name", ALL)
def test_policy_conforms_to_protocol(name: str) -> None:
    pol, _ = _policy(name)
    assert isinstance(pol, Policy)
    assert pol.name == name and pol.dim == D


@pytest.mark.parametrize("name", ALL)
def test_policy_choice_is_consistent(name: str) -> None:
    pol, reg = _policy(name)
    _train(pol)
    rng = np.random.default_rng(SEEDS.spawn(1)[0])
    for _ in range(20):
        c = pol.choose(rng.normal(size=D), rng)
        assert c.arms == tuple(reg.ids())
        assert c.arm_id in c.arms
        assert c.probabilities.shape == c.scores.shape == (len(c.arms),)
        assert np.all(c.probabilities >= 0) and math.isclose(c.probabilities.sum(), 1.0)
        assert 0 < c.propensity <= 1
        assert c.propensity == c.probabilities[c.arms.index(c.arm_id)]
        assert np.all(np.isfinite(c.scores))
        assert isinstance(c.policy_version, str) and c.policy_version.startswith(name)
        if name != "fixed":
            floor = min(pol.config.probability_floor, 1 / len(c.arms))
            assert np.all(c.probabilities >= floor - 1e-12)


@pytest.mark.parametrize("name", ALL)
def test_policy_eligible_restricts_choice(name: str) -> None:
    pol, _ = _policy(name)
    _train(pol)
    rng = np.random.default_rng(3)
    eligible = ["gpt35", "creative"]
    for _ in range(10):
        c = pol.choose(rng.normal(size=D), rng, eligible=eligible)
        assert c.arms == ("gpt35", "creative") and c.arm_id in eligible


@pytest.mark.parametrize("name", ALL)
def test_policy_eligible_errors(name: str) -> None:
    pol, reg = _policy(name)
    rng = np.random.default_rng(0)
    x = np.zeros(D)
    with pytest.raises(UnknownArmError, match="nope"):
        pol.choose(x, rng, eligible=["gpt35", "nope"])
    reg.retire("creative")
    with pytest.raises(UnknownArmError, match="creative"):
        pol.choose(x, rng, eligible=["creative"])
    with pytest.raises(InvalidInputError, match="eligible"):
        pol.choose(x, rng, eligible=[])


@pytest.mark.parametrize("name", ALL)
def test_policy_choose_does_not_mutate_inputs(name: str) -> None:
    pol, _ = _policy(name)
    _train(pol, 10)
    x = np.array([0.5, -1.0, 2.0, 0.1])
    x_before = x.copy()
    eligible = ["roleplay", "gpt35"]
    stats_before = None if name == "vw" else pol.statistics.copy()
    pol.choose(x, np.random.default_rng(0), eligible=eligible)
    assert np.array_equal(x, x_before) and eligible == ["roleplay", "gpt35"]
    if stats_before is not None:
        assert stats_before.allclose(pol.statistics, rtol=0, atol=0)


@pytest.mark.parametrize("name", ALL)
def test_policy_same_seed_same_choices(name: str) -> None:
    runs = []
    for _ in range(2):
        pol, _ = _policy(name)
        _train(pol, 20, seed=5)
        rng = np.random.default_rng(9)
        runs.append([pol.choose(rng.normal(size=D), rng).arm_id for _ in range(10)])
    assert runs[0] == runs[1]


@pytest.mark.parametrize("name", ALL)
def test_policy_update_advances_version(name: str) -> None:
    pol, _ = _policy(name)
    v0 = pol.version
    pol.update("roleplay", np.ones(D), 1.0)
    pol.update_batch(["gpt35", "creative"], np.ones((2, D)), [0.0, 1.0])
    assert pol.version != v0 and pol.version.endswith(":3")


@pytest.mark.parametrize("name", ALL)
def test_policy_picks_up_runtime_arm_and_keeps_retired_stats(name: str) -> None:
    pol, reg = _policy(name)
    _train(pol, 10)
    reg.add(Arm("newcomer", features=(0.3, 0.3)))
    c = pol.choose(np.ones(D), np.random.default_rng(0))
    assert "newcomer" in c.arms
    if name != "fixed":  # fixed serves only its own arm
        c = pol.choose(np.ones(D), np.random.default_rng(0), eligible=["newcomer"])
        assert c.arm_id == "newcomer" and c.propensity == 1.0
    pol.update("newcomer", np.ones(D), 1.0)
    reg.retire("newcomer")
    assert "newcomer" not in pol.choose(np.ones(D), np.random.default_rng(0)).arms
    pol.update("newcomer", np.ones(D), 0.5)  # late feedback for a retired arm still counts
    if name != "vw":
        stats = pol.statistics
        assert stats.n[stats.slot("newcomer")] == 2.0


@pytest.mark.parametrize("name", ALL)
def test_policy_snapshot_round_trip(name: str, tmp_path: Path) -> None:
    pol, reg = _policy(name)
    _train(pol, 25)
    path = tmp_path / "policy.swb"
    save_policy_snapshot(path, pol, reg, extra={"offsets": {"0": 42}})
    back, reg2, meta = load_policy_snapshot(path)
    assert meta["extra"] == {"offsets": {"0": 42}} and meta["policy"] == name
    assert back.version == pol.version and reg2.to_list() == reg.to_list()
    rng = np.random.default_rng(4)
    for _ in range(5):
        x = rng.normal(size=D)
        a = pol.choose(x, np.random.default_rng(1))
        b = back.choose(x, np.random.default_rng(1))
        assert a.arm_id == b.arm_id
        np.testing.assert_allclose(a.probabilities, b.probabilities, rtol=1e-12, atol=1e-12)
    if name != "vw":
        for key, arr in pol.statistics.to_arrays().items():
            assert np.array_equal(arr, back.statistics.to_arrays()[key])


BAD_INPUTS = [
    # (call, error, field fragment, description)
    (lambda p: p.choose([np.nan, 0, 0, 0], np.random.default_rng(0)), InvalidInputError,
     "context[0]", "NaN in context"),
    (lambda p: p.choose([0, 0, np.inf, 0], np.random.default_rng(0)), InvalidInputError,
     "context[2]", "inf in context"),
    (lambda p: p.choose([0.0, 1.0], np.random.default_rng(0)), InvalidInputError,
     "len(context)", "context too short"),
    (lambda p: p.choose(np.zeros((2, D)), np.random.default_rng(0)), InvalidInputError,
     "len(context)", "matrix instead of vector"),
    (lambda p: p.choose(["a", "b", "c", "d"], np.random.default_rng(0)), InvalidInputError,
     "context", "strings in context"),
    (lambda p: p.update("ghost", np.zeros(D), 1.0), UnknownArmError, "arm_id",
     "update for an unknown arm"),
    (lambda p: p.update("gpt35", np.zeros(D), float("nan")), InvalidInputError, "reward",
     "NaN reward"),
    (lambda p: p.update("gpt35", np.zeros(D), float("inf")), InvalidInputError, "reward",
     "infinite reward"),
    (lambda p: p.update("gpt35", np.zeros(D), "1.0"), InvalidInputError, "reward",
     "string reward"),
    (lambda p: p.update_batch(["gpt35", "ghost"], np.zeros((2, D)), [1, 1]), UnknownArmError,
     "arm_ids[1]", "unknown arm in a batch"),
    (lambda p: p.update_batch(["gpt35"], np.zeros((1, D)), [np.nan]), InvalidInputError,
     "rewards[0]", "NaN reward in a batch"),
    (lambda p: p.update_batch(["gpt35"], np.zeros((1, D + 1)), [1.0]), InvalidInputError,
     "contexts.shape", "wrong context width in a batch"),
    (lambda p: p.update_batch(["gpt35", "gpt35"], np.zeros((2, D)), [1.0]), InvalidInputError,
     "len(rewards)", "rewards shorter than arm ids"),
]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize(("call", "error", "field", "description"), BAD_INPUTS,
                         ids=[row[3] for row in BAD_INPUTS])
def test_policy_rejects_bad_input(name: str, call: Any, error: type[Exception], field: str,
                                  description: str) -> None:
    pol, _ = _policy(name)
    version = pol.version
    with pytest.raises(error) as info:
        call(pol)
    assert field in str(info.value), description
    assert pol.version == version  # nothing half-applied


# --------------------------------------------------------------------------- specifics


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(-5, 5, allow_nan=False), min_size=D, max_size=D),
    st.sampled_from([n for n in ALL if n != "vw"]),
    st.integers(0, 2**32 - 1),
)
def test_policy_propensities_are_probabilities(x: list[float], name: str, seed: int) -> None:
    pol = _TRAINED[name]
    c = pol.choose(np.array(x), np.random.default_rng(seed))
    assert 0 < c.propensity <= 1 and math.isclose(float(c.probabilities.sum()), 1.0)


_TRAINED: dict[str, Any] = {}
for _name in ALL:
    if _name != "vw":
        _TRAINED[_name] = _policy(_name)[0]
        _train(_TRAINED[_name], 40)


def test_floored_argmax_exact_probabilities_with_ties() -> None:
    scores = np.array([1.0, 3.0, 3.0, 0.0, 2.0])
    probs, _ = floored_argmax(scores, 0.05, np.random.default_rng(0))
    np.testing.assert_allclose(probs, [0.05, 0.425, 0.425, 0.05, 0.05])
    # empirical frequencies match (binomial 5σ tolerance: false failure < 1e-5)
    rng = np.random.default_rng(np.random.SeedSequence(77))
    n = 20_000
    counts = np.bincount([floored_argmax(scores, 0.05, rng)[1] for _ in range(n)], minlength=5)
    sigma = np.sqrt(probs * (1 - probs) / n)
    assert np.all(np.abs(counts / n - probs) < 5 * sigma)


def test_floored_argmax_clamps_floor_to_uniform() -> None:
    probs, _ = floored_argmax(np.array([0.0, 1.0]), 0.9, np.random.default_rng(0))
    np.testing.assert_allclose(probs, [0.5, 0.5])


def test_floored_argmax_returns_a_fresh_row_each_call() -> None:
    """The floor row is copied from a cache: what a caller keeps (Choice.probabilities)
    is never shared with, or changed by, a later choice."""
    rng = np.random.default_rng(0)
    first, _ = floored_argmax(np.array([0.0, 1.0, 0.5]), 0.1, rng)
    first[:] = -1.0
    second, pos = floored_argmax(np.array([2.0, 1.0, 0.5]), 0.1, rng)
    np.testing.assert_allclose(second, [0.8, 0.1, 0.1])
    assert second is not first and 0 <= pos < 3


class _FixedU:
    """An rng whose ``random()`` is a given number: floored_argmax's one draw, pinned."""

    def __init__(self, u: float) -> None:
        self.u = u

    def random(self) -> float:
        return self.u


@pytest.mark.parametrize("scores", [[1.0, 3.0, 3.0, 0.0, 2.0], [0.5, 2.0, 1.0, 2.0 - 1e-12],
                                    [4.0], [1.0, 1.0, 1.0], [-np.inf, 0.0, np.nan]])
@pytest.mark.parametrize("floor", [0.0, 0.05, 0.3])
def test_floored_argmax_maps_its_uniform_to_the_inverse_cdf(scores: list[float],
                                                            floor: float) -> None:
    """The draw is the inverse CDF of the distribution in a fixed order (ties at the
    maximum first, in index order, then the others): for u on a fine grid the arm drawn
    is the one whose cumulative interval holds u. NaN is never the maximum."""
    s = np.array(scores)
    K = s.shape[0]
    f = min(floor, 1.0 / K)
    top = np.nanmax(s)
    is_top = s == top
    T = int(is_top.sum())
    order = np.concatenate([np.flatnonzero(is_top), np.flatnonzero(~is_top)])
    want = np.where(is_top, (1.0 - (K - T) * f) / T, f)
    cdf = np.cumsum(want[order])
    for u in np.linspace(0.0, 1.0, 997, endpoint=False):
        probs, pos = floored_argmax(s, floor, _FixedU(u))  # type: ignore[arg-type]
        np.testing.assert_allclose(probs, want, rtol=1e-12)
        k = min(int(np.searchsorted(cdf, u, side="right")), K - 1)
        if want[order[k]] == 0.0 or abs(cdf[k] - u) < 1e-9 or (k and abs(cdf[k - 1] - u) < 1e-9):
            continue  # on a boundary the rounding of the cumulative sum decides
        assert pos == order[k], (u, pos, order[k])


def test_floored_argmax_of_all_nan_scores_is_uniform() -> None:
    probs, pos = floored_argmax(np.full(4, np.nan), 0.1, np.random.default_rng(0))
    np.testing.assert_allclose(probs, 0.25)
    assert 0 <= pos < 4


def test_linucb_fresh_arms_tie_uniformly() -> None:
    pol, reg = _policy("linucb")
    c = pol.choose(np.ones(D), np.random.default_rng(0))
    np.testing.assert_allclose(c.probabilities, 1 / len(reg))


def test_thompson_propensity_estimate_matches_large_draw_estimate() -> None:
    """D-draw Monte-Carlo propensities are within 4 standard errors of a 200k-draw estimate.

    Per arm the error of p̂ is binomial with sd sqrt(p(1-p)/D); a 4σ bound per arm over
    4 arms × 5 contexts has a false-failure rate below 1e-3.
    """
    small_cfg = PolicyConfig(name="linear_thompson", dim=D, probability_floor=0.0,
                             thompson_propensity_draws=256)
    big_cfg = PolicyConfig(name="linear_thompson", dim=D, probability_floor=0.0,
                           thompson_propensity_draws=200_000)
    pol = make_policy(small_cfg, _registry())
    _train(pol, 60)
    big = make_policy(big_cfg, pol.arms)
    big.set_statistics(pol.statistics)
    rng = np.random.default_rng(np.random.SeedSequence(5150))
    for _ in range(5):
        x = rng.normal(size=D)
        small = pol.choose(x, rng).probabilities
        exact = big.choose(x, rng).probabilities
        tol = 4 * np.sqrt(exact * (1 - exact) / 256) + 1e-3
        assert np.all(np.abs(small - exact) <= tol), (small, exact)


def test_fixed_policy_requires_eligible_fixed_arm() -> None:
    pol, reg = _policy("fixed")
    c = pol.choose(np.zeros(D), np.random.default_rng(0))
    assert c.arm_id == "gpt35" and c.propensity == 1.0
    with pytest.raises(InvalidInputError, match="fixed_arm"):
        pol.choose(np.zeros(D), np.random.default_rng(0), eligible=["roleplay"])
    other = make_policy(PolicyConfig(name="fixed", dim=D, fixed_arm="absent"), reg)
    with pytest.raises(UnknownArmError, match=r"policy\.fixed_arm"):
        other.choose(np.zeros(D), np.random.default_rng(0))


def test_hybrid_requires_arm_features() -> None:
    with pytest.raises(InvalidInputError, match="arm_feature_dim"):
        make_policy(PolicyConfig(name="hybrid_linucb", dim=D), _registry())


def test_linear_policy_accumulate_apply_equals_updates() -> None:
    rng = np.random.default_rng(np.random.SeedSequence(8))
    ids = list(rng.choice(["gpt35", "roleplay", "creative"], 50))
    X, r = rng.normal(size=(50, D)), rng.normal(size=50)
    direct, _ = _policy("linucb", half_life_events=20.0)
    direct.update_batch(ids[:20], X[:20], r[:20])
    direct.update_batch(ids[20:], X[20:], r[20:])
    learner, _ = _policy("linucb", half_life_events=20.0)
    learner.update_batch(ids[:20], X[:20], r[:20])
    delta = learner.accumulate(learner.empty_statistics(), ids[20:], X[20:], r[20:])
    learner.apply(delta)
    assert learner.statistics.allclose(direct.statistics)
    x = np.ones(D)
    assert learner.choose(x, np.random.default_rng(0)).scores == pytest.approx(
        direct.choose(x, np.random.default_rng(0)).scores)


def test_linear_policy_set_statistics_replaces_state() -> None:
    src, _ = _policy("linucb")
    _train(src, 30)
    dst, _ = _policy("linucb")
    dst.set_statistics(src.statistics)
    assert dst.version == src.version
    x = np.ones(D)
    assert dst.choose(x, np.random.default_rng(0)).scores == pytest.approx(
        src.choose(x, np.random.default_rng(0)).scores)
    with pytest.raises(InvalidInputError, match="dim"):
        dst.set_statistics(RidgeStatistics.empty(D + 1))


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_policy_protocols_split_by_capability(name: str) -> None:
    """Every policy is a Policy; the additive ones (all but vw) the AdditivePolicy too,
    and a non-additive one has none of the additive methods (no half-implementation)."""
    pol, _ = _policy(name)
    assert isinstance(pol, Policy)
    additive = name != "vw"
    assert isinstance(pol, AdditivePolicy) is additive
    if not additive:
        for attr in ("empty_statistics", "accumulate", "apply", "set_statistics", "statistics"):
            assert not hasattr(pol, attr), attr


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_policy_config_yields_the_named_policy_spec(name: str) -> None:
    cfg = PolicyConfig(name=name, dim=D, alpha=0.3, arm_feature_dim=2, epsilon=0.2)  # type: ignore[arg-type]
    spec = cfg.params()
    assert isinstance(spec, POLICY_PARAMS[name])
    assert spec.dim == D
    pol, _ = _policy(name)
    assert type(pol.params) is POLICY_PARAMS[name]  # type: ignore[attr-defined]
    assert pol.config.name == name  # type: ignore[attr-defined]  # what snapshots record
    assert PolicyConfig.from_params(name, spec).params() == spec


@pytest.mark.parametrize(
    ("make", "field", "description"),
    [
        (lambda: LinUCBParams(alpha=-1.0), "policy.alpha", "negative exploration width"),
        (lambda: LinUCBParams(dim=0), "policy.dim", "empty context"),
        (lambda: LinUCBParams(dim=2.5), "policy.dim", "non-integer dimension"),  # type: ignore[arg-type]
        (lambda: LinUCBParams(ridge_lambda=0.0), "policy.ridge_lambda", "no prior"),
        (lambda: LinUCBParams(probability_floor=1.5), "policy.probability_floor", "floor > 1"),
        (lambda: ThompsonParams(thompson_v="x"), "policy.thompson_v", "a string"),  # type: ignore[arg-type]
        (lambda: EpsilonGreedyParams(epsilon=2.0), "policy.epsilon", "epsilon > 1"),
        (lambda: HybridParams(arm_feature_dim=0), "policy.arm_feature_dim", "hybrid without features"),
        (lambda: FixedParams(fixed_arm=""), "policy.fixed_arm", "no fixed arm"),
        (lambda: PolicyConfig(name="hybrid_linucb").params(), "policy.arm_feature_dim",
         "the [policy] section names hybrid_linucb but gives no arm_feature_dim"),
    ],
)
def test_policy_params_reject_invalid_values_naming_the_field(make, field: str, description: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as info:
        make()
    assert info.value.field == field, description


def test_make_policy_takes_a_spec_and_policies_refuse_another_spec() -> None:
    reg = ArmRegistry([Arm("a"), Arm("b")])
    pol = make_policy(LinUCBParams(dim=3, alpha=0.0), reg)
    assert isinstance(pol, LinUCB) and pol.params.alpha == 0.0
    assert isinstance(make_policy(GreedyParams(dim=3), reg), Greedy)
    with pytest.raises(ConfigError, match="LinUCBParams"):
        LinUCB(ThompsonParams(dim=3), reg)  # type: ignore[arg-type]


def test_vw_policy_learns_with_logged_propensity() -> None:
    pol, _ = _policy("vw")
    x = np.array([1.0, 0.0, 0.0, 0.0])
    for _ in range(200):
        pol.update("roleplay", x, 1.0, propensity=0.25, eligible=["roleplay", "gpt35"])
        pol.update("gpt35", x, 0.0, propensity=0.25, eligible=["roleplay", "gpt35"])
    c = pol.choose(x, np.random.default_rng(0), eligible=["roleplay", "gpt35"])
    assert c.scores[0] > c.scores[1]
    with pytest.raises(InvalidInputError, match="propensity"):
        pol.update("gpt35", x, 0.0, propensity=0.0)


@pytest.mark.parametrize("name", ["linucb", "hybrid_linucb", "vw"])
def test_policy_concurrent_choose_and_update_lose_nothing(name: str) -> None:
    import threading

    pol, reg = _policy(name)
    ids = reg.ids()
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            for _ in range(100):
                x = rng.normal(size=D)
                c = pol.choose(x, rng)
                assert math.isclose(c.probabilities.sum(), 1.0) and c.arm_id in ids
                pol.update(c.arm_id, x, 0.5)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert pol.version == f"{name}:400"
    if name != "vw":
        assert pol.statistics.n.sum() == 400


# --------------------------------------------------------------------------- batches

LINEAR = [n for n in ALL if n != "vw"]


@pytest.mark.parametrize("name", LINEAR)
def test_policy_score_batch_matches_choose(name: str) -> None:
    """score_batch / probabilities_batch are what choose computes, row by row."""
    pol, _ = _policy(name, fixed_arm="gpt35", probability_floor=0.05)
    _train(pol, 60)
    rng = np.random.default_rng(np.random.SeedSequence(3))
    X = rng.normal(size=(7, D))
    eligible = ["creative", "gpt35", "informative"]
    version = pol.version
    batch = pol.score_batch(X, eligible)
    arms, P = pol.probabilities_batch(X, np.random.default_rng(4), eligible)
    assert pol.version == version  # scoring does not learn
    assert batch.arms == arms == tuple(eligible)
    assert batch.means.shape == batch.widths.shape == batch.scores.shape == P.shape == (7, 3)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=1e-12)
    for i, x in enumerate(X):
        choice = pol.choose(x, np.random.default_rng(5), eligible)
        assert choice.arms == batch.arms
        np.testing.assert_allclose(batch.scores[i], choice.scores, rtol=1e-9, atol=1e-10)
        if name != "linear_thompson":
            np.testing.assert_allclose(P[i], choice.probabilities, atol=1e-12)
        else:  # both Monte-Carlo estimates of the same probabilities (64 draws each)
            np.testing.assert_allclose(P[i], choice.probabilities, atol=0.35)
            assert P[i].min() >= 0.05 - 1e-12


def test_linucb_score_batch_closed_form() -> None:
    pol, _ = _policy("linucb", alpha=0.5, ridge_lambda=2.0)
    pol.update("roleplay", [1.0, 0.0, 0.0, 0.0], 1.0)
    x = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    b = pol.score_batch(x, ["roleplay"])
    # A = 2I + e1e1ᵀ: θ = e1/3; widths sqrt(1/3) and sqrt(1/2)
    np.testing.assert_allclose(b.means[:, 0], [1 / 3, 0.0], atol=1e-12)
    # widths from the float32 packed A⁻¹ (accumulated in float64): ≈ 6e-8 relative here
    np.testing.assert_allclose(b.widths[:, 0], [math.sqrt(1 / 3), math.sqrt(1 / 2)], rtol=1e-7)
    np.testing.assert_allclose(b.scores, b.means + 0.5 * b.widths, rtol=1e-12)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda p: p.score_batch(np.ones((2, D + 1))), "contexts.shape"),
        (lambda p: p.score_batch([[1.0, 2.0, float("nan"), 0.0]]), "contexts[0][2]"),
        (lambda p: p.score_batch(np.ones((1, D)), ["nope"]), "eligible[0]"),
        (lambda p: p.probabilities_batch(np.ones((1, D))), "rng"),
    ],
)
def test_policy_score_batch_rejects_bad_input(call: Any, field: str) -> None:
    pol, _ = _policy("linear_thompson")
    with pytest.raises((InvalidInputError, UnknownArmError), match=field.replace("[", r"\[")):
        call(pol)
