"""``switchboard simulate`` (``replay``, ``evaluate`` and ``tune``: :mod:`simulations.offline_cli`).

The CLI owns the terminal (rich progress bar, tables); ``--json`` prints one JSON
object instead. Heavy imports happen inside each command.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any

__all__ = ["register"]


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=_default) + "\n")


def _default(o: Any) -> Any:
    try:
        return float(o)
    except (TypeError, ValueError):
        return str(o)


# ----------------------------------------------------------------------------- simulate


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def register(sub: Any) -> None:
    """Entry point ``simulate`` (also registers nothing else: see the other entry points)."""
    from simulations.spec import DEFAULT_POLICIES, SimulationSpec

    # the class's field defaults: an instance would validate its scenario against the
    # world module, and registration must stay free of numpy/scipy (``switchboard --help``)
    d = SimulationSpec
    p = sub.add_parser(
        "simulate", help="compare policies in the ground-truth simulator",
        description="Run every policy on --seeds seeds of a simulated world with known truth; "
        "write steps.parquet, summary.json and plots to --out. One Ctrl-C or SIGTERM stops it "
        "and its worker processes.")
    p.add_argument("--scenario", default=d.scenario,
                   help="simulated world: default, lift20, lift68, small")
    p.add_argument("--policies", default=",".join(DEFAULT_POLICIES),
                   help="comma-separated policies to compare")
    p.add_argument("--seeds", type=int, default=d.seeds, help="independent runs per policy")
    p.add_argument("--steps", type=int, default=d.steps, help="decisions per run")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help="feedback delivered every N events")
    p.add_argument("--steps-per-day", type=int, default=d.steps_per_day,
                   help="decisions per simulated day (experts arrive and retire by day)")
    p.add_argument("--probability-floor", type=float, default=d.probability_floor,
                   help="smallest probability any eligible arm gets")
    p.add_argument("--alpha", type=float, default=d.alpha,
                   help="exploration weight α of the UCB policies")
    p.add_argument("--workers", type=int, default=2, help="worker processes")
    p.add_argument("--seed", type=int, default=d.seed, help="root seed (SeedSequence) of the runs")
    p.add_argument("--out", default="results/simulate", help="output folder")
    p.add_argument("--backend", choices=("numpy", "torch"), default="numpy",
                   help="torch: batched LinUCB over seeds (linucb only)")
    p.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--write-log", metavar="PATH",
                   help="instead of comparing policies, write a uniformly-logged decision log "
                        "(JSONL or .dsjson) to PATH (default: off)")
    p.add_argument("--log-events", type=int, default=100_000, help="events of --write-log")
    p.add_argument("--lift", action="store_true",
                   help="also measure day-30 engagement lift of the expert mixture vs GPT-3.5 "
                        "(in summary.json as day30_lift)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_simulate)


def _simulate(args: argparse.Namespace) -> int:
    import numpy as np

    from simulations.runner import SimulationSpec, policies_from_arg, simulate, write_results
    from simulations.world import make_world, planted_lift, simulate_log

    if args.write_log:
        from simulations.logs import write_dsjson, write_jsonl

        world = make_world(args.scenario, 0)
        data, _mu = simulate_log(world, np.random.default_rng(args.seed), args.log_events)
        Path(args.write_log).parent.mkdir(parents=True, exist_ok=True)
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
    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM stops the pool as Ctrl-C does
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
    extra: dict[str, Any] = {}
    if args.lift:
        from bandit.stats import relative_lift

        world = make_world(args.scenario, 0)
        rng = np.random.default_rng(args.seed)
        treat = world.simulate_engagement(rng, 4000, lambda w, x, t, d: w.oracle_router(x, t, d))
        ctrl = world.simulate_engagement(rng, 4000, lambda w, x, t, d: w.baseline_router(x, t, d))
        lift = relative_lift(treat["screen_time"][:, 30], ctrl["screen_time"][:, 30])
        extra["day30_lift"] = {"planted": planted_lift(world), "estimate": lift.estimate,
                               "ci_low": lift.ci_low, "ci_high": lift.ci_high}
    summary = write_results(table, spec, args.out, errors, extra)
    summary["out"] = args.out
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
