"""Off-policy estimators against ground truth; decision-log formats and bad input."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import softmax

from bandit.errors import InvalidInputError
from simulations.logs import (
    LoggedData,
    read_dsjson,
    read_jsonl,
    read_log,
    write_dsjson,
    write_jsonl,
)
from simulations.ope import OPEWarning, estimate, evaluate_policy
from simulations.replay import FixedLinearPolicy
from simulations.world import make_world, simulate_log

SEED = 777
# reliability warnings are asserted where they are the point (test_ope_warns_*)
pytestmark = pytest.mark.filterwarnings("ignore::simulations.ope.OPEWarning")


def _logger(world, rng_seed: int = 3):  # type: ignore[no-untyped-def]
    w = np.random.default_rng(rng_seed).standard_normal((world.n_arms, world.dim))

    def probs(x: np.ndarray) -> np.ndarray:
        p = softmax(x @ w.T, axis=1)
        return 0.9 * p + 0.1 / world.n_arms  # floor so every arm has support

    return probs


def _target(world):  # type: ignore[no-untyped-def]
    return FixedLinearPolicy(np.random.default_rng(11).standard_normal((world.n_arms, world.dim)))


def test_ope_ips_and_dr_cover_truth_under_nonuniform_logger() -> None:
    world = make_world("small", 0)
    logger, target = _logger(world), _target(world)
    cover = {"ips": 0, "dr": 0, "snips": 0}
    runs = 20
    for seq in np.random.SeedSequence(SEED).spawn(runs):
        rng = np.random.default_rng(seq)
        data, mu = simulate_log(world, rng, 4000, logger=logger)
        pi = target.probabilities(data.contexts)
        truth = float((pi * mu).sum(axis=1).mean())
        df = evaluate_policy(data, pi, rng=rng, n_bootstrap=100).set_index("estimator")
        for k in cover:
            cover[k] += int(df.loc[k, "ci_low"] <= truth <= df.loc[k, "ci_high"])
    # 95% intervals: P(fewer than 15 of 20 cover) < 0.3% if calibrated.
    assert all(c >= 15 for c in cover.values()), cover


def test_ope_dr_has_lower_variance_than_ips_with_good_model() -> None:
    world = make_world("small", 0)
    logger, target = _logger(world), _target(world)
    ips, dr = [], []
    for seq in np.random.SeedSequence(SEED + 1).spawn(30):
        rng = np.random.default_rng(seq)
        data, mu = simulate_log(world, rng, 2000, logger=logger)
        pi = target.probabilities(data.contexts)
        q_hat = mu + 0.01 * rng.standard_normal(mu.shape)  # a good reward model
        df = estimate(data.reward, data.arm_index, data.propensity, pi, q_hat=q_hat,
                      estimators=("ips", "dr"), ci="normal").set_index("estimator")
        ips.append(df.loc["ips", "value"])
        dr.append(df.loc["dr", "value"])
    assert np.var(dr) < 0.5 * np.var(ips)


def test_ope_dm_is_biased_with_misspecified_model() -> None:
    world = make_world("small", 0)
    rng = np.random.default_rng(np.random.SeedSequence(SEED + 2))
    data, mu = simulate_log(world, rng, 20_000, logger=_logger(world))
    pi = _target(world).probabilities(data.contexts)
    truth = float((pi * mu).sum(axis=1).mean())
    q_bad = np.full(mu.shape, float(data.reward.mean()))  # ignores context and arm
    df = estimate(data.reward, data.arm_index, data.propensity, pi, q_hat=q_bad,
                  ci="normal").set_index("estimator")
    assert abs(df.loc["dm", "value"] - truth) > 5 * df.loc["dm", "se"] + 0.01
    assert df.loc["dr", "ci_low"] - 0.01 <= truth <= df.loc["dr", "ci_high"] + 0.01


def test_ope_warns_on_tiny_propensity_and_unsupported_mass() -> None:
    n = 100
    r = np.ones(n)
    a = np.zeros(n, dtype=np.int64)
    p = np.full(n, 1e-4)
    pi = np.tile([0.5, 0.5], (n, 1))
    with pytest.warns(OPEWarning) as rec:
        df = estimate(r, a, p, pi, estimators=("ips", "snips"), ci="normal")
    text = " ".join(str(w.message) for w in rec)
    assert "tiny propensities" in text and "unsupported target mass" in text
    assert len(df.attrs["warnings"]) == 2  # n = ESS = 100: not "too few events"


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"propensity": np.array([0.5, 0.0])}, "propensity[1]"),
        ({"propensity": np.array([0.5, 1.5])}, "propensity[1]"),
        ({"arm_index": np.array([0, 5])}, "arm_index"),
        ({"target": np.array([[0.2, 0.2], [0.5, 0.5]])}, "target"),
        ({"reward": np.zeros(0), "arm_index": np.zeros(0, int), "propensity": np.zeros(0),
          "target": np.zeros((0, 2))}, "reward"),
        ({"estimators": ("dr",)}, "q_hat"),
        ({"estimators": ("magic",)}, "estimator"),
        ({"ci": "wild"}, "ci"),
    ],
)
def test_ope_estimate_refuses_bad_input(kwargs: dict, field: str) -> None:  # type: ignore[type-arg]
    args = {"reward": np.array([1.0, 0.0]), "arm_index": np.array([0, 1]),
            "propensity": np.array([0.5, 0.5]), "target": np.array([[1.0, 0.0], [0.0, 1.0]])}
    args.update(kwargs)
    extra = {k: args.pop(k) for k in ("estimators", "ci") if k in args}
    with pytest.raises(InvalidInputError) as err, warnings.catch_warnings():
        warnings.simplefilter("ignore", OPEWarning)
        estimate(args["reward"], args["arm_index"], args["propensity"], args["target"], **extra)
    assert err.value.field == field


# ----------------------------------------------------------------------------- logs


def _small_log() -> LoggedData:
    world = make_world("small", 0)
    data, _ = simulate_log(world, np.random.default_rng(5), 50, logger=_logger(world))
    return data


@pytest.mark.parametrize("writer,reader", [(write_jsonl, read_jsonl), (write_dsjson, read_dsjson)])
def test_logs_roundtrip_preserves_arrays(tmp_path: Path, writer, reader) -> None:  # type: ignore[no-untyped-def]
    data = _small_log()
    path = tmp_path / "log"
    writer(path, data)
    back, report = reader(path, arm_ids=data.arm_ids)
    assert report.malformed == 0 and report.events == data.n == report.lines
    assert back.arm_ids == data.arm_ids
    np.testing.assert_array_equal(back.arm_index, data.arm_index)
    np.testing.assert_allclose(back.contexts, data.contexts)
    np.testing.assert_allclose(back.propensity, data.propensity)
    np.testing.assert_allclose(back.reward, data.reward)
    assert back.probabilities is not None
    np.testing.assert_allclose(back.probabilities, data.probabilities)  # type: ignore[arg-type]


def test_logs_malformed_lines_are_counted_with_line_numbers(tmp_path: Path) -> None:
    data = _small_log()
    path = tmp_path / "log.jsonl"
    write_jsonl(path, data)
    lines = path.read_bytes().splitlines()
    lines[2] = b"{not json"
    lines[4] = b"[1, 2]"
    lines[6] = lines[6].replace(b'"reward":', b'"reward_x":')
    lines[8] = lines[8].replace(b'"context":[', b'"context":[1.0,')  # wrong length
    path.write_bytes(b"\n".join(lines) + b"\n")
    back, report = read_log(path)
    assert report.malformed == 4
    assert [n for n, _ in report.errors] == [3, 5, 7, 9]
    assert back.n == data.n - 4
    assert report.to_dict()["errors"][0]["line"] == 3


@pytest.mark.parametrize("bad", [b'"propensity":0.0', b'"propensity":null', b'"propensity":-0.1'])
def test_logs_zero_or_absent_propensity_is_refused(tmp_path: Path, bad: bytes) -> None:
    data = _small_log()
    path = tmp_path / "log.jsonl"
    write_jsonl(path, data)
    lines = path.read_bytes().splitlines()
    import re

    lines[1] = re.sub(rb'"propensity":[0-9.e-]+', bad, lines[1])
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(InvalidInputError, match="propensity") as err:
        read_jsonl(path)
    assert "line 2" in err.value.field


def test_logs_missing_file_and_bad_format_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError):
        read_jsonl(tmp_path / "none.jsonl")
    with pytest.raises(InvalidInputError):
        read_log(tmp_path / "none.jsonl", fmt="csv")
    with pytest.raises(InvalidInputError):
        LoggedData(("a",), np.zeros((1, 2)), np.zeros(1, np.int64), np.zeros(1), np.zeros(1))


@pytest.mark.integration
def test_logs_read_store_joins_decisions_with_rewards(store, store_dsn, capsys) -> None:  # type: ignore[no-untyped-def]
    from bandit.store.rows import RewardRow
    from simulations.logs import read_store
    from tests.fixtures.store import LOG_TS0_MS, logged_decision

    data = _small_log()
    decisions, rewards = [], []
    for i in range(data.n):
        decisions.append(logged_decision(data, i))
        arm = decisions[-1].arm_id
        if i % 5:  # every fifth decision has no credited reward yet
            rewards.append(RewardRow(
                decision_id=f"d{i}", experiment_id="exp", variant="bandit", arm_id=arm,
                unit_id=f"u{i}", reward=float(data.reward[i]),
                propensity=float(data.propensity[i]), joined=True, late=False,
                ts_ms=LOG_TS0_MS + i, policy_version="v1"))
    store.insert_decisions(decisions)
    store.insert_rewards(rewards)
    back, report = read_store(store, "exp", arm_ids=data.arm_ids)
    keep = np.array([i % 5 != 0 for i in range(data.n)])
    assert report.events == keep.sum() and report.malformed == 0
    np.testing.assert_array_equal(back.arm_index, data.arm_index[keep])
    np.testing.assert_allclose(back.reward, data.reward[keep])
    np.testing.assert_allclose(back.contexts, data.contexts[keep], rtol=1e-6)  # Float32 column
    empty, rep = read_store(store, "other-experiment")
    assert rep.events == 0 and empty.n == 0
    with pytest.raises(InvalidInputError):
        read_store(store, "")
    store.close()
    from bandit.cli import main

    assert main(["replay", "--store", store_dsn, "--experiment", "exp", "--policies", "uniform",
                 "--json"]) == 0
    import json

    assert json.loads(capsys.readouterr().out)["log"]["events"] == keep.sum()


# ----------------------------------------------------------------------------- properties


@pytest.mark.filterwarnings("ignore::simulations.ope.OPEWarning")
@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 60), k=st.integers(2, 6), seed=st.integers(0, 2**32 - 1))
def test_ope_on_policy_ips_is_mean_reward_and_dr_with_exact_residuals(n: int, k: int,
                                                                      seed: int) -> None:
    rng = np.random.default_rng(seed)
    mu = rng.dirichlet(np.ones(k), size=n)  # logging distribution
    a = np.array([rng.choice(k, p=row) for row in mu])
    p = mu[np.arange(n), a]
    r = rng.random(n)
    q = rng.random((n, k))
    df = estimate(r, a, p, mu, q_hat=q, ci="normal").set_index("estimator")
    # Target == logger: every weight is 1, so IPS and SNIPS are the mean reward.
    assert df.loc["ips", "value"] == pytest.approx(r.mean())
    assert df.loc["snips", "value"] == pytest.approx(r.mean())
    assert df.loc["ips", "ess"] == pytest.approx(n)
    # With q̂ equal to the observed reward on the logged arm, DR == DM.
    q_exact = q.copy()
    q_exact[np.arange(n), a] = r
    df2 = estimate(r, a, p, mu, q_hat=q_exact, ci="normal").set_index("estimator")
    assert df2.loc["dr", "value"] == pytest.approx(df2.loc["dm", "value"])


@settings(max_examples=30, deadline=None)
@given(scale=st.floats(0.1, 1.0), seed=st.integers(0, 2**32 - 1))
def test_ope_snips_is_invariant_to_scaling_propensities(scale: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, k = 40, 3
    a = rng.integers(0, k, n)
    p = rng.uniform(0.2, 1.0, n)
    r = rng.random(n)
    pi = rng.dirichlet(np.ones(k), size=n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OPEWarning)
        v1 = estimate(r, a, p, pi, estimators=("snips",), ci="normal")["value"].iloc[0]
        v2 = estimate(r, a, p * scale, pi, estimators=("snips",), ci="normal")["value"].iloc[0]
    assert v1 == pytest.approx(v2)
