"""Policies in the ground-truth world, the torch batched simulator, digits, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ks_2samp

from bandit.cli import main
from bandit.errors import InvalidInputError
from simulations.runner import SimulationSpec, run_job, simulate, write_results
from simulations.world import make_world

SEED = 20261123


def _final_regret(spec: SimulationSpec, policy: str, seqs: list) -> np.ndarray:  # type: ignore[type-arg]
    return np.array([run_job(spec, policy, i, s)["cumulative_regret"].iloc[-1]
                     for i, s in enumerate(seqs)])


def test_sim_linucb_and_thompson_beat_greedy_and_uniform_on_regret() -> None:
    spec = SimulationSpec(scenario="default", steps=2000, batch_size=10, probability_floor=0.0)
    seqs = np.random.SeedSequence(SEED).spawn(6)
    reg = {p: _final_regret(spec, p, seqs)
           for p in ("linucb", "linear_thompson", "greedy", "uniform")}
    means = {p: float(r.mean()) for p, r in reg.items()}
    for learner in ("linucb", "linear_thompson"):
        assert means[learner] < means["greedy"], means
        assert means[learner] < 0.6 * means["uniform"], means


def test_sim_torch_batched_linucb_agrees_with_numpy_in_distribution() -> None:
    from simulations.torch_backend import simulate_linucb_batched

    world = make_world("default", 0)
    seqs = np.random.SeedSequence(SEED + 1).spawn(16)
    spec = SimulationSpec(scenario="default", steps=800, batch_size=10, steps_per_day=100,
                          alpha=0.3, probability_floor=0.01)
    ref = _final_regret(spec, "linucb", seqs)
    res = simulate_linucb_batched(world, seqs, steps=800, alphas=0.3, update_every=10,
                                  steps_per_day=100, probability_floor=0.01, device="cpu",
                                  threads=1)
    got = res.cumulative_regret[:, -1]
    assert res.cumulative_regret.shape == (16, 800)
    # Means within 15% of each other and same distribution (KS at 1%).
    assert abs(got.mean() - ref.mean()) < 0.15 * ref.mean(), (got.mean(), ref.mean())
    assert ks_2samp(got, ref).pvalue > 0.01
    assert res.seed_steps_per_s > 0


def test_sim_torch_alpha_grid_runs_as_one_batch() -> None:
    from simulations.torch_backend import simulate_linucb_batched

    world = make_world("small", 0)
    seqs = np.random.SeedSequence(SEED + 2).spawn(4)
    res = simulate_linucb_batched(world, seqs, steps=40, alphas=[0.0, 0.3, 1.0, 3.0],
                                  device="cpu", threads=1)
    assert res.cumulative_regret.shape == (4, 40)
    np.testing.assert_allclose(res.alphas, [0.0, 0.3, 1.0, 3.0])
    assert (np.diff(res.cumulative_regret, axis=1) >= -1e-12).all()
    with pytest.raises(InvalidInputError):
        simulate_linucb_batched(world, seqs, steps=0)
    with pytest.raises(InvalidInputError):
        simulate_linucb_batched(world, [], steps=5)


def test_sim_torch_device_is_selectable() -> None:
    from simulations.torch_backend import resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(InvalidInputError):
        resolve_device("tpu")


def test_sim_digits_supervised_to_bandit_all_policies_beat_uniform() -> None:
    """Light version of bench/digits.py: one pass, two seeds, defaults (tuned LinUCB)."""
    from simulations.supervised import DigitsProtocol, compare_on_digits

    protocol = DigitsProtocol(passes=1, seeds=2)
    df = compare_on_digits({"linucb": {"name": "linucb", "alpha": 0.1},
                            "linear_thompson": {"name": "linear_thompson"},
                            "vw": {"name": "vw"}, "uniform": {"name": "uniform"}}, protocol)
    assert len(df) == 4 * 2 and set(df["seed"]) == {0, 1}
    means = df.groupby("variant")["progressive_reward"].mean()
    assert 0.05 < means["uniform"] < 0.15
    for p in ("linear_thompson", "vw"):
        assert means[p] > 0.3, means
    assert means["linucb"] > 0.65, means


def test_sim_digits_passes_learn_and_tuning_seeds_are_apart() -> None:
    from bandit.arms import Arm, ArmRegistry
    from bandit.config import PolicyConfig
    from bandit.policies import make_policy
    from simulations.supervised import (
        DigitsProtocol,
        compare_on_digits,
        digits_bandit,
        progressive_reward,
    )

    x, y, arm_ids = digits_bandit()
    pol = make_policy(PolicyConfig(name="linucb", dim=x.shape[1], alpha=0.1),
                      ArmRegistry([Arm(a) for a in arm_ids]))
    rng = np.random.default_rng(np.random.SeedSequence(8))
    per_pass = progressive_reward(pol, x[:400], y[:400], arm_ids, rng, passes=3, shuffle=rng)
    assert len(per_pass) == 3 and per_pass[2] > per_pass[0]  # later passes know more
    p = DigitsProtocol(seeds=3, tune_seeds=2)
    evaluation = {tuple(s.spawn_key) for s in p.sequences(tuning=False)}
    tuning = {tuple(s.spawn_key) for s in p.sequences(tuning=True)}
    assert len(evaluation) == 3 and len(tuning) == 2 and not evaluation & tuning
    with pytest.raises(InvalidInputError, match="passes"):
        DigitsProtocol(passes=0)
    # every variant of a seed sees the same stream: two copies of one policy agree exactly
    twins = compare_on_digits({"a": {"name": "uniform"}, "b": {"name": "uniform"}},
                              DigitsProtocol(passes=1, seeds=1))
    assert twins["progressive_reward"].nunique() == 1


def test_sim_results_folder_has_table_summary_and_plots(tmp_path: Path) -> None:
    spec = SimulationSpec(scenario="small", policies=("linucb", "uniform", "vw"), seeds=2,
                          steps=300, batch_size=20)
    table, errors = simulate(spec, workers=2)
    assert errors == {}
    assert set(table["policy"]) == {"linucb", "uniform", "vw"}
    assert len(table) == 3 * 2 * 300
    summary = write_results(table, spec, tmp_path, errors)
    back = pd.read_parquet(tmp_path / "steps.parquet")
    assert {"policy", "seed", "step", "cumulative_regret", "cumulative_reward"} <= set(back)
    assert (back["regret"] >= -1e-12).all()
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 300
    for png in ("regret.png", "allocation.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
    assert {r["policy"] for r in summary["policies"]} == {"linucb", "uniform", "vw"}


def test_sim_spec_refuses_bad_input() -> None:
    with pytest.raises(InvalidInputError):
        SimulationSpec(scenario="nope")
    with pytest.raises(InvalidInputError):
        SimulationSpec(steps=0)
    with pytest.raises(InvalidInputError):
        SimulationSpec(policies=())


def test_sim_cli_simulate_replay_evaluate_json(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "log.jsonl"
    assert main(["simulate", "--scenario", "small", "--write-log", str(log),
                 "--log-events", "3000", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["events"] == 3000
    assert main(["simulate", "--scenario", "small", "--policies", "linucb,uniform", "--seeds",
                 "2", "--steps", "200", "--workers", "1", "--out", str(tmp_path / "r"),
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {p["policy"] for p in out["policies"]} == {"linucb", "uniform"}
    assert main(["replay", "--log", str(log), "--policies", "linucb,greedy", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["log"]["malformed"] == 0 and len(out["results"]) == 2
    assert main(["evaluate", "--log", str(log), "--policy", "linucb", "--bootstrap", "50",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {r["estimator"] for r in out["results"]} == {"ips", "snips", "dm", "dr", "switch_dr"}
    from bandit.arms import Arm, ArmRegistry
    from bandit.config import PolicyConfig
    from bandit.formats.snapshot import save_policy_snapshot
    from bandit.policies import make_policy
    from simulations.logs import read_log

    data, _ = read_log(log)
    reg = ArmRegistry([Arm(a) for a in data.arm_ids])
    pol = make_policy(PolicyConfig(name="linucb", dim=data.dim), reg)
    pol.update_batch([data.arm_ids[i] for i in data.arm_index], data.contexts, data.reward)
    save_policy_snapshot(tmp_path / "snap.bin", pol, reg)
    assert main(["evaluate", "--log", str(log), "--snapshot", str(tmp_path / "snap.bin"),
                 "--bootstrap", "20", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["events"] == 3000
    assert main(["simulate", "--backend", "torch", "--device", "cpu", "--seeds", "2",
                 "--steps", "50", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["runs"] == 2
    assert main(["evaluate", "--log", str(tmp_path / "missing.jsonl"), "--policy", "linucb",
                 "--json"]) == 2
