"""Policy comparison in the ground-truth world: many policies × seeds, in parallel.

Each job runs one policy (built by :func:`bandit.policies.make_policy`) on one seed of a
named scenario. Feedback is delayed and batched as a stream would deliver it: the
policy chooses ``batch_size`` arms while frozen, then the proxies are drawn and it
learns them with ``update_batch``. Experts arrive and retire by day (the registry is
updated and only active arms are eligible); regret is exact, against the best active
arm's true expected reward. Jobs run in a :class:`multiprocessing.pool.Pool` whose
workers ignore SIGINT: one Ctrl-C (or a SIGTERM the CLI turns into one) reaches only the
parent, which terminates the pool, so no worker outlives the command. Seeds come from
``SeedSequence(seed).spawn``. No printing: the CLI owns progress.
"""

from __future__ import annotations

import json
import multiprocessing
import signal
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from bandit.arms import Arm
from bandit.config import PolicyConfig
from simulations.spec import DEFAULT_POLICIES, SimulationSpec
from simulations.world import make_world

__all__ = ["DEFAULT_POLICIES", "SimulationSpec", "run_job", "simulate", "summarise",
           "write_results"]

def run_job(spec: SimulationSpec, policy_name: str, seed_index: int,
            seq: np.random.SeedSequence) -> pd.DataFrame:
    """One (policy, seed) run; a tidy frame with one row per step."""
    from bandit.policies import make_policy

    world = make_world(spec.scenario, spec.world_seed)
    rng = np.random.default_rng(seq)
    env_rng = np.random.default_rng(seq.spawn(1)[0])
    registry = world.registry(day=0)
    config = PolicyConfig(name=policy_name, dim=world.dim, alpha=spec.alpha,  # type: ignore[arg-type]
                          thompson_v=spec.thompson_v,
                          probability_floor=spec.probability_floor,
                          arm_feature_dim=world.scenario.n_dims
                          if policy_name == "hybrid_linucb" else 0,
                          fixed_arm=world.arm_ids[0])
    policy = make_policy(config, registry)
    T, K = spec.steps, world.n_arms
    _, X, topics = world.sample_contexts(env_rng, T)
    days = np.minimum(np.arange(T) // spec.steps_per_day, world.scenario.horizon_days - 1)
    mu = np.empty((T, K))
    for d in np.unique(days):
        m = days == d
        mu[m] = world.expected_rewards(topics[m], int(d))
    chosen = np.empty(T, dtype=np.int64)
    reward = np.empty(T)
    best = np.empty(T)
    pos = {a: i for i, a in enumerate(world.arm_ids)}
    current_day = -1
    eligible: list[str] = []
    mask = np.ones(K, dtype=bool)
    for start in range(0, T, spec.batch_size):
        stop = min(T, start + spec.batch_size)
        for t in range(start, stop):
            if days[t] != current_day:
                current_day = int(days[t])
                mask = world.active_mask(current_day)
                for i, spec_arm in enumerate(world.arms):
                    if mask[i] and not registry.get(spec_arm.arm_id).active:
                        registry.add(Arm(spec_arm.arm_id, kind="expert",
                                         features=spec_arm.strengths))
                    elif not mask[i] and registry.get(spec_arm.arm_id).active:
                        registry.retire(spec_arm.arm_id)
                eligible = [a for a, m in zip(world.arm_ids, mask, strict=True) if m]
            chosen[t] = pos[policy.choose(X[t], rng, eligible).arm_id]
            best[t] = mu[t, mask].max()
        block = slice(start, stop)
        prox = world.sample_proxies(env_rng, topics[block], chosen[block], int(days[start]))
        reward[block] = prox.reward
        policy.update_batch([world.arm_ids[i] for i in chosen[block]], X[block], prox.reward)
    exp_r = mu[np.arange(T), chosen]
    regret = best - exp_r
    return pd.DataFrame({
        "policy": policy_name,
        "seed": seed_index,
        "step": np.arange(1, T + 1),
        "day": days,
        "arm": np.asarray(world.arm_ids)[chosen],
        "reward": reward,
        "expected_reward": exp_r,
        "regret": regret,
        "cumulative_reward": np.cumsum(reward),
        "cumulative_regret": np.cumsum(regret),
    })


def _job(args: tuple[SimulationSpec, str, int, np.random.SeedSequence]
         ) -> tuple[str, int, pd.DataFrame | None, str | None]:
    spec, name, i, seq = args
    try:
        return name, i, run_job(spec, name, i, seq), None
    except Exception as exc:  # a policy that fails (e.g. vw not installed) is reported
        return name, i, None, f"{type(exc).__name__}: {exc}"


def simulate(
    spec: SimulationSpec,
    *,
    workers: int = 1,
    on_done: Callable[[str, int], None] | None = None,
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Run every (policy, seed); returns the tidy step table and per-policy errors."""
    seqs = np.random.SeedSequence(spec.seed).spawn(spec.seeds)
    jobs = [(spec, p, i, seqs[i]) for p in spec.policies for i in range(spec.seeds)]
    frames: list[pd.DataFrame] = []
    errors: dict[str, str] = {}
    if workers <= 1:
        results = (_job(j) for j in jobs)
        for name, i, df, err in results:
            _collect(frames, errors, name, df, err)
            if on_done:
                on_done(name, i)
    else:
        # leaving the block terminates the workers, also on KeyboardInterrupt. Ctrl-C or
        # SIGTERM while the pool starts would interrupt Pool() half-built, before the
        # block that terminates it: they are held until the block is entered
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            pool = multiprocessing.Pool(min(workers, len(jobs)), initializer=_worker_init)
        except BaseException:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
            raise
        with pool:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)  # a held signal lands here
            for name, i, df, err in pool.imap_unordered(_job, jobs):
                _collect(frames, errors, name, df, err)
                if on_done:
                    on_done(name, i)
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if not table.empty:
        table = table.sort_values(["policy", "seed", "step"], ignore_index=True)
    return table, errors


#: the signals that stop a simulation (held while the worker pool starts)
_STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})


def _worker_init() -> None:
    """Workers leave SIGINT to the parent (which terminates them) and end on SIGTERM
    (a forked worker inherits the parent's held signals: released here)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)


def _collect(frames: list[pd.DataFrame], errors: dict[str, str], name: str,
             df: pd.DataFrame | None, err: str | None) -> None:
    if df is not None:
        frames.append(df)
    elif err is not None:
        errors[name] = err


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Final cumulative regret / reward per policy: mean, sd and a 95% CI over seeds.

    The interval is Student's t with seeds − 1 degrees of freedom (a few seeds are a small
    sample: the normal 1.96 would be too narrow); NaN with a single seed."""
    last = table[table["step"] == table["step"].max()]
    g = last.groupby("policy")
    out = pd.DataFrame({
        "final_regret_mean": g["cumulative_regret"].mean(),
        "final_regret_sd": g["cumulative_regret"].std(ddof=1),
        "final_reward_mean": g["cumulative_reward"].mean(),
        "mean_reward": g["cumulative_reward"].mean() / table["step"].max(),
        "seeds": g["seed"].nunique(),
    })
    dof = (out["seeds"] - 1).where(out["seeds"] > 1)
    half = sps.t.ppf(0.975, dof) * out["final_regret_sd"] / np.sqrt(out["seeds"])
    out["final_regret_ci_low"] = out["final_regret_mean"] - half
    out["final_regret_ci_high"] = out["final_regret_mean"] + half
    return out.sort_values("final_regret_mean").reset_index()


def write_results(table: pd.DataFrame, spec: SimulationSpec, out_dir: str | Path,
                  errors: dict[str, str] | None = None,
                  extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write ``steps.parquet``, ``summary.json``, ``regret.png``, ``allocation.png``.

    ``extra`` entries (e.g. ``day30_lift``) are added to the summary and its file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table.to_parquet(out / "steps.parquet", index=False)
    summ = summarise(table)
    summary: dict[str, Any] = {
        "scenario": spec.scenario, "steps": spec.steps, "seeds": spec.seeds,
        "batch_size": spec.batch_size, "seed": spec.seed,
        "policies": summ.to_dict(orient="records"), "errors": errors or {},
        "files": ["steps.parquet", "summary.json", "regret.png", "allocation.png"],
        **dict(extra or {}),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, g in table.groupby("policy"):
        curves = g.pivot(index="step", columns="seed", values="cumulative_regret")
        m = curves.mean(axis=1)
        lo, hi = curves.quantile(0.1, axis=1), curves.quantile(0.9, axis=1)
        ax.plot(m.index, m.values, label=str(name))
        ax.fill_between(m.index, lo.values, hi.values, alpha=0.2)
    ax.set_xlabel("step")
    ax.set_ylabel("cumulative regret (mean, 10–90% band over seeds)")
    ax.set_title(f"Scenario {spec.scenario}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "regret.png", dpi=100)
    plt.close(fig)
    names = sorted(table["policy"].unique())
    fig, axes = plt.subplots(len(names), 1, figsize=(8, 2.2 * len(names)), squeeze=False)
    bins = max(1, spec.steps // 20)
    for ax, name in zip(axes[:, 0], names, strict=True):
        g = table[table["policy"] == name]
        share = pd.crosstab((g["step"] - 1) // bins * bins, g["arm"], normalize="index")
        ax.stackplot(share.index, share.T.values, labels=list(share.columns))
        ax.set_title(f"{name}: allocation share", fontsize=9)
        ax.set_ylim(0, 1)
    axes[0, 0].legend(fontsize=6, ncol=4, loc="upper right")
    fig.tight_layout()
    fig.savefig(out / "allocation.png", dpi=90)
    plt.close(fig)
    return summary


def policies_from_arg(names: Sequence[str] | str) -> tuple[str, ...]:
    items = names.split(",") if isinstance(names, str) else list(names)
    return tuple(n.strip() for n in items if n.strip())
