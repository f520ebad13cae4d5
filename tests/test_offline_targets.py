"""Any target policy, honest intervals, and a cross-check against Open Bandit Pipeline."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bandit.arms import Arm, ArmRegistry
from bandit.config import PolicyConfig
from bandit.errors import InvalidInputError
from bandit.policies import make_policy
from simulations.logs import LoggedData, from_bandit_feedback, to_bandit_feedback
from simulations.ope import (
    ArgmaxPolicy,
    OPEWarning,
    bounded_interval,
    estimate,
    evaluate_policy,
    read_target_file,
    target_probabilities,
    wilson_interval,
)
from simulations.replay import replay
from simulations.world import make_world, simulate_log

SEED = 16161


def _log(n: int = 400, seed: int = 1) -> tuple[LoggedData, np.ndarray]:
    world = make_world("small", 0)
    return simulate_log(world, np.random.default_rng(seed), n)


# ----------------------------------------------------------------------------- OBP


def test_ope_point_estimates_equal_open_bandit_pipeline() -> None:
    obp_dataset = pytest.importorskip("obp.dataset")
    from obp import ope as obp_ope

    for i, seq in enumerate(np.random.SeedSequence(SEED).spawn(3)):
        ds = obp_dataset.SyntheticBanditDataset(
            n_actions=6, dim_context=5, reward_type="binary",
            reward_function=obp_dataset.logistic_reward_function,
            behavior_policy_function=obp_dataset.linear_behavior_policy,
            random_state=int(seq.generate_state(1)[0]))
        fb = ds.obtain_batch_bandit_feedback(n_rounds=3000)
        data = from_bandit_feedback(fb)
        rng = np.random.default_rng(seq)
        pi = rng.dirichlet(np.ones(6), size=data.n)
        q_hat = rng.random((data.n, 6))
        ours = estimate(data.reward, data.arm_index, data.propensity, pi, q_hat=q_hat,
                        switch_tau=2.0 + i, ci="normal").set_index("estimator")["value"]
        kw = {"reward": fb["reward"], "action": fb["action"], "position": fb["position"],
              "pscore": fb["pscore"], "action_dist": pi[:, :, None]}
        qk = {"estimated_rewards_by_reg_model": q_hat[:, :, None]}
        ref = {
            "ips": obp_ope.InverseProbabilityWeighting().estimate_policy_value(**kw),
            "snips": obp_ope.SelfNormalizedInverseProbabilityWeighting().estimate_policy_value(**kw),
            "dm": obp_ope.DirectMethod().estimate_policy_value(
                position=fb["position"], action_dist=pi[:, :, None], **qk),
            "dr": obp_ope.DoublyRobust().estimate_policy_value(**kw, **qk),
            "switch_dr": obp_ope.SwitchDoublyRobust(tau=2.0 + i).estimate_policy_value(**kw, **qk),
        }
        for name, value in ref.items():
            assert ours[name] == pytest.approx(value, abs=1e-9), name


def test_logs_bandit_feedback_roundtrip() -> None:
    data, _ = _log(200)
    data = LoggedData(data.arm_ids, data.contexts, data.arm_index, data.propensity, data.reward,
                      np.full((data.n, data.n_arms), 1 / data.n_arms))
    fb = to_bandit_feedback(data)
    assert fb["n_rounds"] == 200 and fb["pi_b"].shape == (200, data.n_arms, 1)
    back = from_bandit_feedback(fb, arm_ids=data.arm_ids)
    np.testing.assert_array_equal(back.arm_index, data.arm_index)
    np.testing.assert_allclose(back.contexts, data.contexts)
    np.testing.assert_allclose(back.propensity, data.propensity)
    np.testing.assert_allclose(back.probabilities, data.probabilities)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        from_bandit_feedback({"action": [0]})
    with pytest.raises(InvalidInputError):
        from_bandit_feedback({**fb, "position": np.ones(200, int)})


# ----------------------------------------------------------------------------- intervals


def test_intervals_stay_in_range_and_do_not_collapse_at_zero_counts() -> None:
    lo, hi = wilson_interval(0.0, 113)
    assert lo == 0.0 and 0.02 < hi < 0.05
    # 0 of 113 binary rewards: a normal interval is [0, 0]; ours is not
    assert bounded_interval(0.0, 0.0, 0.0, 113, reward_range=(0, 1), binary=True)[1] > 0.02
    # small count, mean near 0: never below the range
    lo, hi = bounded_interval(0.05, -0.2, 0.3, 5, reward_range=(0, 1), binary=False)
    assert lo == 0.0 and hi == 0.3
    assert bounded_interval(float("nan"), 0, 0, 0, reward_range=(-1, 2), binary=False) == (-1, 2)
    n = 300
    r = np.zeros(n)
    a = np.zeros(n, np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OPEWarning)
        df = estimate(r, a, np.full(n, 0.5), np.tile([1.0, 0.0], (n, 1)), ci="bootstrap",
                      n_bootstrap=50, estimators=("ips", "snips"))
    assert (df["ci_low"] == 0).all() and (df["ci_high"] > 0.005).all()


def test_replay_zero_or_one_accepted_event_is_nan_with_warning_not_silent() -> None:
    data, _ = _log(30)
    never = ArgmaxPolicy(np.zeros((1, data.dim)), ("no-such-arm",))
    with pytest.raises(InvalidInputError):
        replay(data, never, rng=np.random.default_rng(0), learn=False)
    # a target that matches no logged event: zero accepted events
    k = data.n_arms
    other = int(np.setdiff1d(np.arange(k), data.arm_index)[0]) if len(
        np.unique(data.arm_index)) < k else None
    if other is None:
        data = data.subset(np.flatnonzero(data.arm_index != 0))
        other = 0
    w = np.zeros((k, data.dim))
    w[other, 0] = 1.0
    res = replay(data, ArgmaxPolicy(w), rng=np.random.default_rng(0), learn=False)
    assert res.events_used == 0 and np.isnan(res.value)
    assert (res.ci_low, res.ci_high) == (0.0, 1.0)
    assert any("too few events" in w for w in res.warnings)


def test_replay_warns_when_one_tiny_propensity_switches_method() -> None:
    data, _ = _log(500)
    p = data.propensity.copy()
    p[7] = 1e-12
    bad = LoggedData(data.arm_ids, data.contexts, data.arm_index, p, data.reward)
    w = np.random.default_rng(2).standard_normal((data.n_arms, data.dim))
    res = replay(bad, ArgmaxPolicy(w), rng=np.random.default_rng(0), learn=False)
    text = " ".join(res.warnings)
    assert res.method == "rejection" and "method switched" in text and "tiny propensities" in text


def test_estimate_refuses_rewards_outside_declared_range() -> None:
    with pytest.raises(InvalidInputError, match="declared range"):
        estimate([5.0, -3.0], [0, 1], [0.5, 0.5], [[1, 0], [0, 1]])
    df = estimate([5.0, -3.0], [0, 1], [0.5, 0.5], [[1, 0], [0, 1]], reward_range=(-5, 5),
                  estimators=("ips",), ci="normal", min_events=1)
    assert -5 <= df["ci_low"][0] <= df["ci_high"][0] <= 5


# ----------------------------------------------------------------------------- targets


def test_targets_fixed_distribution_over_subset_and_eligibility() -> None:
    data, mu = _log(2000)
    subset = list(data.arm_ids[:3])
    pi = target_probabilities(dict.fromkeys(subset, 1 / 3), data)
    assert np.allclose(pi[:, :3], 1 / 3) and (pi[:, 3:] == 0).all()
    truth = float(mu[:, :3].mean())
    df = evaluate_policy(data, dict.fromkeys(subset, 1.0), ci="normal").set_index("estimator")
    assert abs(df.loc["ips", "value"] - truth) < 4 * df.loc["ips", "se"] + 1e-3
    # an event that did not offer arm 0: the fixed distribution is renormalised over the rest
    el = np.ones((data.n, data.n_arms), bool)
    el[:, 0] = data.arm_index == 0
    restricted = LoggedData(data.arm_ids, data.contexts, data.arm_index, data.propensity,
                            data.reward, eligible=el)
    pi = target_probabilities(dict.fromkeys(subset, 1.0), restricted)
    row = int(np.flatnonzero(~el[:, 0])[0])
    assert pi[row, 0] == 0 and pi[row, 1] == pytest.approx(0.5)
    with pytest.raises(InvalidInputError, match="not an arm"):
        target_probabilities({"nope": 1.0}, data)


def _softmax_target(contexts: np.ndarray, arm_ids: tuple[str, ...], eligible: np.ndarray) -> np.ndarray:
    z = np.where(eligible, contexts[:, : len(arm_ids)], -np.inf)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_targets_callable_file_and_argmax_ties(tmp_path: Path) -> None:
    data, _ = _log(300)
    pi = target_probabilities(_softmax_target, data)
    np.testing.assert_allclose(pi.sum(axis=1), 1.0)
    frame = pd.DataFrame(pi, columns=list(data.arm_ids))
    frame.to_csv(tmp_path / "t.csv", index=False)
    np.testing.assert_allclose(read_target_file(tmp_path / "t.csv", data), pi)
    # joined by decision_id, in any row order
    ids = [f"d{i}" for i in range(data.n)]
    keyed = LoggedData(data.arm_ids, data.contexts, data.arm_index, data.propensity, data.reward,
                       decision_ids=tuple(ids))
    frame.assign(decision_id=ids).iloc[::-1].to_parquet(tmp_path / "t.parquet")
    np.testing.assert_allclose(read_target_file(tmp_path / "t.parquet", keyed), pi)
    frame.iloc[:10].to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(InvalidInputError, match="rows"):
        read_target_file(tmp_path / "short.csv", data)
    with pytest.raises(InvalidInputError, match="raised ZeroDivisionError"):
        target_probabilities(lambda x, a, e: 1 / 0, data)
    with pytest.raises(InvalidInputError, match="sum to 1"):
        target_probabilities(lambda x, a, e: np.ones((x.shape[0], len(a))), data)
    # argmax with ties: all-zero weights tie every arm
    tie = ArgmaxPolicy(np.zeros((data.n_arms, data.dim)), ties="first")
    assert (target_probabilities(tie, data)[:, 0] == 1).all()
    split = ArgmaxPolicy(np.zeros((data.n_arms, data.dim)), ties="split")
    assert np.allclose(target_probabilities(split, data), 1 / data.n_arms)
    picks = split.choose_indices(data.contexts, np.random.default_rng(0))
    assert len(np.unique(picks)) == data.n_arms


@pytest.mark.filterwarnings("ignore::simulations.ope.OPEWarning")
def test_targets_snapshot_restricted_to_subset_and_hybrid_with_arm_features() -> None:
    data, _ = _log(600)
    subset = list(data.arm_ids[1:4])
    reg = ArmRegistry([Arm(a) for a in subset])  # the policy knows only a subset
    pol = make_policy(PolicyConfig(name="linucb", dim=data.dim, probability_floor=0.05), reg)
    pi = target_probabilities(pol, data)
    assert np.allclose(pi.sum(axis=1), 1) and (pi[:, [0, 4, 5]] == 0).all()
    assert pi[:, 1:4].min() >= 0.05 - 1e-12
    pi2 = target_probabilities(pol, data, eligible_arms=subset[:2])
    assert (pi2[:, 3] == 0).all() and np.allclose(pi2[:, 1:3].sum(axis=1), 1)
    feats = ArmRegistry([Arm(a, features=(float(i), 1.0)) for i, a in enumerate(data.arm_ids)],
                        feature_dim=2)
    hyb = make_policy(PolicyConfig(name="hybrid_linucb", dim=data.dim, arm_feature_dim=2), feats)
    hyb.update_batch([data.arm_ids[i] for i in data.arm_index[:300]], data.contexts[:300],
                     data.reward[:300])
    df = evaluate_policy(data.subset(np.arange(300, 600)), hyb, ci="normal")
    assert set(df["estimator"]) == {"ips", "snips", "dm", "dr", "switch_dr"}
    assert ((df["ci_low"] >= 0) & (df["ci_high"] <= 1)).all()


# ----------------------------------------------------------------------------- CLI


def _write_csv_log(path: Path) -> LoggedData:
    data, _ = _log(1500, seed=4)
    frame = pd.DataFrame({"item_id": [data.arm_ids[i] for i in data.arm_index],
                          "pscore": data.propensity, "click": data.reward})
    for j in range(data.dim):
        frame[f"x_{j}"] = data.contexts[:, j]
    frame.to_csv(path, index=False)
    return data


def test_cli_csv_log_with_field_mapping_targets_and_out(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from bandit.cli import main

    log = tmp_path / "log.csv"
    data = _write_csv_log(log)
    src = ["--log", str(log), "--field", "arm=item_id", "--field", "propensity=pscore",
           "--field", "reward=click", "--field", "context=x_*"]
    arms = ",".join(data.arm_ids[:2])
    out = tmp_path / "ev"
    assert main(["evaluate", *src, "--target", f"uniform:{arms}", "--bootstrap", "30",
                 "--json", "--out", str(out)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["log"]["events"] == 1500 and res["log"]["dim"] == data.dim
    summary = json.loads((out / "summary.json").read_text())
    assert summary["command"] == "evaluate" and (out / "plot.png").stat().st_size > 0
    assert {r["estimator"] for r in summary["results"]} == {"ips", "snips", "dm", "dr", "switch_dr"}
    # a callable target by module:function, a subset snapshot-like policy, --strict
    assert main(["evaluate", *src, "--target", "tests.test_offline_targets:_softmax_target",
                 "--bootstrap", "20", "--json"]) == 0
    capsys.readouterr()
    assert main(["replay", *src, "--policies", "linucb,uniform", "--arms", arms,
                 "--min-events", "100000", "--strict", "--json"]) == 3
    res = json.loads(capsys.readouterr().out)
    assert any("too few events" in w for w in res["warnings"])


def test_cli_user_mistakes_are_one_line_errors(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from bandit.cli import main

    log = tmp_path / "log.csv"
    _write_csv_log(log)
    cases = [
        ["evaluate", "--log", str(log), "--target", "uniform:a"],  # no arm column 'arm_id'
        ["evaluate", "--log", str(log), "--field", "arm", "--target", "uniform:a"],
        ["evaluate", "--log", str(log), "--field", "arm=item_id", "--field", "propensity=pscore",
         "--field", "reward=click", "--field", "context=x_*", "--target", "nosuch.module:f"],
        ["replay", "--log", str(log), "--field", "arm=item_id", "--field", "propensity=pscore",
         "--field", "reward=click", "--field", "context=x_*", "--policies", "hybrid_linucb"],
    ]
    for argv in cases:
        rc = main(argv)
        err = capsys.readouterr().err
        assert rc == 2 and "Traceback" not in err and "error:" in err, (argv, err)


def test_cli_jsonl_with_bad_first_line_uses_the_majority_dimension(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from bandit.cli import main
    from simulations.logs import write_jsonl

    data, _ = _log(400)
    path = tmp_path / "log.jsonl"
    write_jsonl(path, data)
    lines = path.read_bytes().splitlines()
    lines[0] = lines[0].replace(b'"context":[', b'"context":[9.0,')
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert main(["replay", "--log", str(path), "--policies", "uniform", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["log"]["events"] == 399 and res["log"]["errors"][0]["line"] == 1
    assert res["log"]["dim_source"] == "majority"
    assert any("malformed lines: 1" in w for w in res["warnings"])


def test_cli_tune_writes_best_config_fragment(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    import tomllib

    from bandit.cli import main
    from bandit.config import PolicyConfig

    data, _ = _log(3000, seed=9)
    from simulations.logs import write_jsonl

    write_jsonl(tmp_path / "log.jsonl", data)
    frag = tmp_path / "policy.toml"
    assert main(["tune", "--log", str(tmp_path / "log.jsonl"), "--policies", "linucb,epsilon_greedy",
                 "--alpha", "0,0.5", "--probability-floor", "0,0.02", "--epsilon", "0.05",
                 "--write-config", str(frag), "--out", str(tmp_path / "tune"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert len(res["results"]) == 6  # linucb 2 × 2, epsilon_greedy 1 × 2
    best = max((r for r in res["results"] if r["value"] is not None), key=lambda r: r["value"])
    cfg = tomllib.loads(frag.read_text())["policy"]
    assert cfg["name"] == best["policy"] == res["best"]["policy"]
    PolicyConfig(**cfg)  # a valid config fragment
    assert (tmp_path / "tune" / "policy.toml").read_text() == frag.read_text()


def test_cli_snapshot_over_a_subset_greedy_and_arms(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from bandit.cli import main
    from bandit.formats.snapshot import save_policy_snapshot
    from simulations.logs import write_jsonl

    data, _ = _log(1500, seed=5)
    write_jsonl(tmp_path / "log.jsonl", data)
    known = list(data.arm_ids[:3])
    reg = ArmRegistry([Arm(a) for a in known])
    pol = make_policy(PolicyConfig(name="linucb", dim=data.dim), reg)
    m = np.isin(data.arm_index, [0, 1, 2])
    pol.update_batch([data.arm_ids[i] for i in data.arm_index[m]], data.contexts[m], data.reward[m])
    save_policy_snapshot(tmp_path / "snap.bin", pol, reg)
    base = ["evaluate", "--log", str(tmp_path / "log.jsonl"), "--snapshot",
            str(tmp_path / "snap.bin"), "--bootstrap", "20", "--json"]
    for extra in ([], ["--greedy"], ["--arms", ",".join(known[:2])]):
        assert main([*base, *extra]) == 0, extra
        res = json.loads(capsys.readouterr().out)
        assert res["events"] == 1500 and len(res["results"]) == 5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OPEWarning)
        greedy_pi = target_probabilities(pol, data)
    assert (greedy_pi[:, 3:] == 0).all()


def test_logs_parquet_list_context_and_csv_json_context(tmp_path: Path) -> None:
    from simulations.logs import LogSpec, read_log

    data, _ = _log(120, seed=6)
    frame = pd.DataFrame({"item": [int(i) for i in data.arm_index], "p": data.propensity,
                          "r": data.reward, "x": list(data.contexts)})
    frame.to_parquet(tmp_path / "log.parquet")
    spec = LogSpec(fields={"arm": "item", "propensity": "p", "reward": "r", "context": "x"})
    back, rep = read_log(tmp_path / "log.parquet", spec=spec)
    assert rep.malformed == 0 and back.n == 120
    np.testing.assert_allclose(back.contexts, data.contexts)
    assert set(back.arm_ids) <= {str(i) for i in range(data.n_arms)}  # integer ids as text
    frame.assign(x=[json.dumps(list(map(float, c))) for c in data.contexts]).to_csv(
        tmp_path / "log.csv", index=False)
    back, rep = read_log(tmp_path / "log.csv", spec=spec)
    assert rep.malformed == 0 and back.n == 120 and rep.errors == ()
    np.testing.assert_allclose(back.contexts, data.contexts)


def test_cli_out_is_listed_by_the_dashboard_and_hybrid_reads_arm_features(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from bandit.cli import main
    from dashboards.transforms import discover_results, summary_tables
    from simulations.logs import write_jsonl

    data, _ = _log(800, seed=8)
    write_jsonl(tmp_path / "log.jsonl", data)
    arms = tmp_path / "arms.json"
    arms.write_text(json.dumps([{"arm_id": a, "features": [float(i % 3), 1.0]}
                                for i, a in enumerate(data.arm_ids)]))
    out = tmp_path / "results" / "hybrid"
    assert main(["replay", "--log", str(tmp_path / "log.jsonl"), "--policies", "hybrid_linucb",
                 "--arm-features", str(arms), "--out", str(out), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["results"][0]["policy"] == "hybrid_linucb" and res["results"][0]["events_used"] > 0
    runs = discover_results(tmp_path / "results")
    assert [r.name for r in runs] == ["hybrid"] and runs[0].summary["command"] == "replay"
    assert runs[0].plots and "results" in summary_tables(runs[0].summary)
