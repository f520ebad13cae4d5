"""The Vowpal Wabbit policy learnt by partitions: model deltas merged as VW merges models.

Closed form (VW's model merge, as ``merge_deltas`` does it from a common base): each
weight of the merged model is the average of the partitions' weights, weighted by their
adaptive (AdaGrad) accumulators, ``w = Σ_p g_p w_p / Σ_p g_p``.
"""

from __future__ import annotations

import numpy as np
import pytest

vw = pytest.importorskip("vowpal_wabbit_next")

from bandit.adapters.vw import PartitionedVWPolicy, VWDelta, VWPolicy, make_vw_policy  # noqa: E402
from bandit.arms import Arm, ArmRegistry  # noqa: E402
from bandit.config import VWParams  # noqa: E402
from bandit.errors import ConfigError, InvalidInputError  # noqa: E402
from bandit.policies import AdditivePolicy, Policy, make_policy  # noqa: E402

D = 4
ARMS = ["roleplay", "creative", "gpt35"]


def _stream(seed: int, n: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    X = rng.normal(size=(n, D))
    arms = [ARMS[i] for i in rng.integers(0, len(ARMS), n)]
    reward = np.array([x[0] if a == "roleplay" else x[1] if a == "creative" else 0.1
                       for a, x in zip(arms, X, strict=True)])
    return arms, X, reward


def _policy(exploration: str = "epsilon") -> VWPolicy:
    return make_vw_policy(VWParams(dim=D, vw_exploration=exploration),
                          ArmRegistry([Arm(a) for a in ARMS]))


def _weights(policy: VWPolicy) -> np.ndarray:
    """(weight, adaptive accumulator) of every slot, read back from the policy's snapshot."""
    model = bytes(policy.snapshot_arrays()["vw_model"].tobytes())
    ws = vw.Workspace(policy._args, model_data=model)  # the policy's own command line
    return np.asarray(ws.weights())[:, 0, :2].astype(np.float64)


def test_make_vw_policy_is_additive_only_where_a_delta_carries_the_exploration() -> None:
    assert isinstance(_policy("epsilon"), PartitionedVWPolicy)
    assert isinstance(_policy("epsilon"), AdditivePolicy)
    for name in ("squarecb", "cover"):  # their exploration counter is not in a delta
        pol = _policy(name)
        assert isinstance(pol, Policy) and not isinstance(pol, AdditivePolicy)
    with pytest.raises(ConfigError) as info:
        PartitionedVWPolicy(VWParams(dim=D, vw_exploration="squarecb"),
                            ArmRegistry([Arm(a) for a in ARMS]))
    assert info.value.field == "policy.vw_exploration"
    assert isinstance(make_policy(VWParams(dim=D, vw_exploration="bag"),
                                  ArmRegistry([Arm(a) for a in ARMS])), PartitionedVWPolicy)


def test_vw_partition_deltas_merge_to_the_adaptive_weighted_average() -> None:
    arms, X, r = _stream(11, 200)
    p = np.full(200, 1.0 / len(ARMS))
    learner = _policy()
    assert isinstance(learner, PartitionedVWPolicy)
    d1 = learner.accumulate(learner.empty_statistics(), arms[:100], X[:100], r[:100],
                            propensities=p[:100])
    d2 = learner.accumulate(learner.empty_statistics(), arms[100:], X[100:], r[100:],
                            propensities=p[100:])
    # each partition alone: the base (untrained) model plus its delta
    alone = []
    for d in (d1, d2):
        one = _policy()
        assert isinstance(one, PartitionedVWPolicy)
        one.apply(d)
        alone.append(_weights(one))
    learner.apply(d1.merge(d2))
    assert learner.version == "vw:200"
    got = _weights(learner)
    (w1, g1), (w2, g2) = ((a[:, 0], a[:, 1]) for a in alone)
    used = (g1 + g2) > 0
    assert used.sum() >= 3 * len(ARMS)  # the interactions x ⊗ arm were learnt
    want = (g1 * w1 + g2 * w2)[used] / (g1 + g2)[used]
    np.testing.assert_allclose(got[used, 0], want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(want, w1[used], rtol=1e-3)  # the merge is not one partition's
    # order of the partitions does not matter
    other = _policy()
    assert isinstance(other, PartitionedVWPolicy)
    other.apply(d2.merge(d1))
    np.testing.assert_allclose(_weights(other)[used, 0], got[used, 0], rtol=1e-6, atol=1e-7)


def test_vw_delta_round_trips_through_arrays_and_keeps_learning() -> None:
    arms, X, r = _stream(12, 120)
    learner = _policy()
    assert isinstance(learner, PartitionedVWPolicy)
    delta = learner.accumulate(learner.empty_statistics(), arms[:60], X[:60], r[:60])
    back = learner.statistics_from_arrays(delta.to_arrays())
    assert isinstance(back, VWDelta) and back.events == 60
    # a partition restored from its state file goes on learning from where it stood
    learner.accumulate(back, arms[60:], X[60:], r[60:])
    learner.accumulate(delta, arms[60:], X[60:], r[60:])
    a, b = _policy(), _policy()
    assert isinstance(a, PartitionedVWPolicy) and isinstance(b, PartitionedVWPolicy)
    a.apply(back)
    b.apply(delta)
    np.testing.assert_allclose(_weights(a), _weights(b), rtol=1e-6, atol=1e-7)
    # the whole model as statistics (hot reload) gives the same choices
    c = _policy()
    assert isinstance(c, PartitionedVWPolicy)
    c.set_statistics(a.statistics)
    x = X[0]
    np.testing.assert_allclose(c.choose(x, np.random.default_rng(0)).probabilities,
                               a.choose(x, np.random.default_rng(0)).probabilities)
    with pytest.raises(InvalidInputError, match="VWDelta"):
        a.apply(object())


def test_vw_accumulate_learns_at_the_logged_propensity_over_the_logged_arms() -> None:
    arms, X, r = _stream(13, 40)
    learner = _policy()
    assert isinstance(learner, PartitionedVWPolicy)

    def learnt(**logged: object) -> np.ndarray:
        one = _policy()
        assert isinstance(one, PartitionedVWPolicy)
        one.apply(learner.accumulate(learner.empty_statistics(), arms, X, r, **logged))
        return _weights(one)[:, 0]

    # VW weighs each cost by 1/propensity: the logged one, else 1/K of the example's arms
    at_third = learnt(propensities=np.full(40, 1.0 / 3.0))
    np.testing.assert_array_equal(learnt(), at_third)
    assert not np.allclose(learnt(propensities=np.full(40, 0.9)), at_third, atol=1e-4)
    # a logged eligible set is the example's action set (None: the active arms)
    np.testing.assert_array_equal(learnt(propensities=np.full(40, 1.0 / 3.0),
                                         eligible=[None] * 40), at_third)
    pair = [[a, "gpt35"] if a != "gpt35" else ["roleplay", "gpt35"] for a in arms]
    assert not np.array_equal(learnt(eligible=pair), at_third)  # 1/2 instead of 1/3
    np.testing.assert_array_equal(learnt(eligible=pair),
                                  learnt(eligible=pair, propensities=np.full(40, 0.5)))
    for bad, field in (({"propensities": np.r_[np.full(39, 0.5), 0.0]}, "propensities[39]"),
                       ({"propensities": np.full(40, 1.5)}, "propensities[0]"),
                       ({"eligible": [None] * 39}, "eligible")):
        with pytest.raises(InvalidInputError) as info:
            learner.accumulate(learner.empty_statistics(), arms, X, r, **bad)  # type: ignore[arg-type]
        assert info.value.field == field


def test_vw_statistics_from_arrays_refuses_a_delta_of_another_model() -> None:
    arms, X, r = _stream(14, 30)
    bag = _policy("bag")
    assert isinstance(bag, PartitionedVWPolicy)
    theirs = bag.accumulate(bag.empty_statistics(), arms, X, r).to_arrays()
    learner = _policy()
    assert isinstance(learner, PartitionedVWPolicy)
    with pytest.raises(InvalidInputError, match="Enabled learners are not identical") as info:
        learner.statistics_from_arrays(theirs)
    assert info.value.field == "vw_delta"
    garbage = {**theirs, "vw_delta": np.frombuffer(b"\x06\x00\x00\x00not a delta", np.uint8)}
    with pytest.raises(InvalidInputError, match="vw_delta must be a delta of this Vowpal"):
        learner.statistics_from_arrays(garbage)
    with pytest.raises(InvalidInputError, match="misses"):
        learner.statistics_from_arrays({"events": np.array(1)})
