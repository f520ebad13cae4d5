"""``switchboard simulate``, ``switchboard replay`` and ``switchboard evaluate``.

The CLI owns the terminal (rich progress bar, tables); ``--json`` prints one JSON
object instead. Heavy imports happen inside each command.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Any

__all__ = ["register", "register_evaluate", "register_replay"]


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=_default) + "\n")


def _default(o: Any) -> Any:
    try:
        return float(o)
    except (TypeError, ValueError):
        return str(o)


# ----------------------------------------------------------------------------- simulate


def register(sub: Any) -> None:
    """Entry point ``simulate`` (also registers nothing else: see the other entry points)."""
    p = sub.add_parser("simulate", help="compare policies in the ground-truth simulator")
    p.add_argument("--scenario", default="default", help="default, lift20, lift68, small")
    p.add_argument("--policies", default="linucb,hybrid_linucb,linear_thompson,greedy,"
                   "epsilon_greedy,uniform,vw")
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=20, help="feedback delivered every N events")
    p.add_argument("--steps-per-day", type=int, default=100)
    p.add_argument("--probability-floor", type=float, default=0.01)
    p.add_argument("--alpha", type=float, default=0.3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=20261123)
    p.add_argument("--out", default="results/simulate")
    p.add_argument("--backend", choices=("numpy", "torch"), default="numpy",
                   help="torch: batched LinUCB over seeds (linucb only)")
    p.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--write-log", metavar="PATH",
                   help="instead: write a uniformly-logged decision log (JSONL or .dsjson)")
    p.add_argument("--log-events", type=int, default=100_000)
    p.add_argument("--lift", action="store_true",
                   help="also measure day-30 engagement lift of the expert mixture vs GPT-3.5")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_simulate)


def _simulate(args: argparse.Namespace) -> int:
    import numpy as np

    from simulations.runner import SimulationSpec, policies_from_arg, simulate, write_results
    from simulations.world import make_world, planted_lift, simulate_log

    if args.write_log:
        from simulations.logs import write_dsjson, write_jsonl

        world = make_world(args.scenario, 0)
        data, _mu = simulate_log(world, np.random.default_rng(args.seed), args.log_events)
        (write_dsjson if args.write_log.endswith(".dsjson") else write_jsonl)(args.write_log, data)
        out = {"log": args.write_log, "events": data.n, "arms": list(data.arm_ids),
               "dim": data.dim}
        _emit(out) if args.json else print(f"wrote {data.n} events to {args.write_log}")
        return 0
    spec = SimulationSpec(
        scenario=args.scenario, policies=policies_from_arg(args.policies), seeds=args.seeds,
        steps=args.steps, batch_size=args.batch_size, steps_per_day=args.steps_per_day,
        seed=args.seed, alpha=args.alpha, probability_floor=args.probability_floor,
    )
    if args.backend == "torch":
        from simulations.torch_backend import simulate_linucb_batched

        world = make_world(args.scenario, 0)
        res = simulate_linucb_batched(
            world, np.random.SeedSequence(args.seed).spawn(args.seeds), steps=args.steps,
            alphas=args.alpha, probability_floor=args.probability_floor,
            update_every=args.batch_size, steps_per_day=args.steps_per_day, device=args.device,
            threads=args.threads)
        out = {"backend": "torch", **res.to_dict()}
        _emit(out) if args.json else print(json.dumps(out, indent=2))
        return 0
    n_jobs = len(spec.policies) * spec.seeds
    if args.json:
        table, errors = simulate(spec, workers=args.workers)
    else:
        from rich.progress import Progress

        with Progress() as progress:
            task = progress.add_task(f"simulating {spec.scenario}", total=n_jobs)
            table, errors = simulate(spec, workers=args.workers,
                                     on_done=lambda _n, _i: progress.advance(task))
    if table.empty:
        _emit({"errors": errors}) if args.json else print(f"all policies failed: {errors}")
        return 1
    summary = write_results(table, spec, args.out, errors)
    summary["out"] = args.out
    if args.lift:
        from bandit.stats import relative_lift

        world = make_world(args.scenario, 0)
        rng = np.random.default_rng(args.seed)
        treat = world.simulate_engagement(rng, 4000, lambda w, x, t, d: w.oracle_router(x, t, d))
        ctrl = world.simulate_engagement(rng, 4000, lambda w, x, t, d: w.baseline_router(x, t, d))
        lift = relative_lift(treat["screen_time"][:, 30], ctrl["screen_time"][:, 30])
        summary["day30_lift"] = {"planted": planted_lift(world), "estimate": lift.estimate,
                                 "ci_low": lift.ci_low, "ci_high": lift.ci_high}
    if args.json:
        _emit(summary)
    else:
        from rich.console import Console
        from rich.table import Table

        t = Table(title=f"scenario {spec.scenario}: final cumulative regret, "
                        f"{spec.seeds} seeds")
        for col in ("policy", "regret (mean)", "95% CI", "mean reward"):
            t.add_column(col)
        for row in summary["policies"]:
            t.add_row(row["policy"], f"{row['final_regret_mean']:.1f}",
                      f"[{row['final_regret_ci_low']:.1f}, {row['final_regret_ci_high']:.1f}]",
                      f"{row['mean_reward']:.4f}")
        Console().print(t)
        for name, err in errors.items():
            Console().print(f"[yellow]{name} failed: {err}")
        if "day30_lift" in summary:
            Console().print(f"day-30 lift: {summary['day30_lift']}")
        Console().print(f"results in {args.out}/ (steps.parquet, summary.json, regret.png, "
                        "allocation.png)")
    return 0


# ----------------------------------------------------------------------------- replay


def _add_source(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--log", help="JSONL decisions+reward or VW DSJSON file")
    src.add_argument("--store", metavar="DSN",
                     help="read decisions joined with rewards from a store (chdb:// or http://)")
    p.add_argument("--experiment", help="experiment id (with --store)")
    p.add_argument("--variant", default="", help="only this variant (with --store)")
    p.add_argument("--format", default="auto", choices=("auto", "jsonl", "dsjson"))


def _load_log(args: argparse.Namespace) -> Any:
    from simulations.logs import read_log

    if args.store:
        from bandit.errors import InvalidInputError
        from bandit.store import open_store
        from simulations.logs import read_store

        if not args.experiment:
            raise InvalidInputError("--experiment", args.experiment, "is required with --store")
        with open_store(args.store, read_only=True) as store:
            data, report = read_store(store, args.experiment, variant=args.variant)
    else:
        data, report = read_log(args.log, fmt=args.format)
    if not args.json and report.malformed:
        print(f"warning: {report.malformed} malformed lines skipped "
              f"(first: {list(report.errors[:5])})", file=sys.stderr)
    return data, report


def _make_policy(name: str, data: Any) -> Any:
    from bandit.arms import Arm, ArmRegistry
    from bandit.config import PolicyConfig
    from bandit.policies import make_policy

    reg = ArmRegistry([Arm(a) for a in data.arm_ids])
    return make_policy(PolicyConfig(name=name, dim=data.dim, fixed_arm=data.arm_ids[0]), reg)  # type: ignore[arg-type]


def register_replay(sub: Any) -> None:
    p = sub.add_parser("replay", help="replay learning policies on a logged decision log")
    _add_source(p)
    p.add_argument("--policies", default="linucb,linear_thompson,greedy,uniform")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--method", default="auto", choices=("auto", "replay", "rejection"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_replay)


def _replay(args: argparse.Namespace) -> int:
    from simulations.replay import replay_many
    from simulations.runner import policies_from_arg

    data, report = _load_log(args)
    policies = {n: _make_policy(n, data) for n in policies_from_arg(args.policies)}
    df = replay_many(data, policies, seed=args.seed, batch_size=args.batch_size,
                     method=args.method)
    out = {"log": report.to_dict(), "results": df.to_dict(orient="records")}
    if args.json:
        _emit(out)
    else:
        print(df.to_string(index=False))
    return 0


# ----------------------------------------------------------------------------- evaluate


def register_evaluate(sub: Any) -> None:
    p = sub.add_parser("evaluate", help="off-policy evaluation (IPS, SNIPS, DM, DR, switch-DR)")
    _add_source(p)
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--policy", help="a named policy, trained on --train-fraction of the log")
    target.add_argument("--snapshot", help="a frozen policy snapshot file")
    p.add_argument("--train-fraction", type=float, default=0.5)
    p.add_argument("--bootstrap", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from bandit.errors import InvalidInputError
    from simulations.ope import OPEWarning, evaluate_policy, policy_probabilities

    data, report = _load_log(args)
    rng = np.random.default_rng(args.seed)
    if args.snapshot:
        from bandit.snapshot import load_policy_snapshot

        policy, _arms, _meta = load_policy_snapshot(args.snapshot)
        test = data
    else:
        if not 0 <= args.train_fraction < 1:
            raise InvalidInputError("train_fraction", args.train_fraction, "must be in [0, 1)")
        policy = _make_policy(args.policy, data)
        cut = int(data.n * args.train_fraction)
        if cut:
            train = data.subset(np.arange(cut))
            policy.update_batch([data.arm_ids[i] for i in train.arm_index], train.contexts,
                                train.reward)
        test = data.subset(np.arange(cut, data.n))
    target = policy_probabilities(policy, test.contexts, test.arm_ids, rng)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", OPEWarning)
        df = evaluate_policy(test, target, n_bootstrap=args.bootstrap, rng=rng)
    notes = [str(w.message) for w in caught]
    out = {"log": report.to_dict(), "events": test.n, "warnings": notes,
           "results": df.to_dict(orient="records")}
    if args.json:
        _emit(out)
    else:
        for n in notes:
            print(f"warning: {n}", file=sys.stderr)
        print(df.to_string(index=False))
    return 0
