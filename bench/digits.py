"""Supervised-to-bandit comparison on scikit-learn's digits, printed as JSON.

The usual protocol (:mod:`simulations.supervised`): 10 arms (the classes), reward 1 for
the true class, feedback after every round; the stream is ``--passes`` passes over the
1,797 digits, each in a fresh random order; five evaluation seeds; the figure is the
progressive reward (mean reward over the whole stream, learning as it goes), with the
last pass's mean beside it. Every policy runs

* at its defaults (``PolicyConfig`` defaults; Vowpal Wabbit ``--cb_explore_adf
  --squarecb`` with VW's own defaults), and
* tuned: the best point of a small grid, chosen on two *tuning* seeds (their own
  shuffles) disjoint from the evaluation seeds, then run on the evaluation seeds.

All policies see the same shuffles for a given seed. Also reported: the old single-pass
figure at the defaults (the protocol the docs used before). Single-threaded BLAS.

Usage: ``python bench/digits.py [--passes 5] [--seeds 5] [--quick]`` (about six
CPU-minutes; ``--quick``: 2 passes, 2 seeds, 1 tuning seed, smaller grids).
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simulations.supervised import DigitsProtocol, compare_on_digits, tune_on_digits  # noqa: E402

POLICIES = ("linucb", "linear_thompson", "epsilon_greedy", "vw", "uniform")
# The probability floor (default 0.01) is searched for every policy: it is a price paid
# in reward (about (K - 1)·floor of the traffic goes to arms the policy thinks worse),
# so a tuned figure without it and one with it are different questions.
FLOORS = [0.0, 0.01]
GRIDS: dict[str, dict[str, list[Any]]] = {
    "linucb": {"alpha": [0.1, 0.3], "probability_floor": FLOORS},
    "linear_thompson": {"thompson_v": [0.03, 0.1], "probability_floor": FLOORS},
    "epsilon_greedy": {"epsilon": [0.05, 0.1], "probability_floor": FLOORS},
    "vw": {"vw_exploration": ["squarecb", "bag"], "probability_floor": FLOORS},
}
QUICK_GRIDS: dict[str, dict[str, list[Any]]] = {
    "linucb": {"alpha": [0.1, 1.0]},
    "linear_thompson": {"thompson_v": [0.1, 0.5]},
    "epsilon_greedy": {"epsilon": [0.05]},
    "vw": {"vw_exploration": ["squarecb", "epsilon"]},
}


def _summary(df: pd.DataFrame) -> dict[str, dict[str, Any]]:
    out = {}
    for label, g in df.groupby("variant", sort=False):
        out[str(label)] = {
            "progressive_reward_mean": round(float(g["progressive_reward"].mean()), 4),
            "progressive_reward_sd": round(float(g["progressive_reward"].std(ddof=1)), 4)
            if len(g) > 1 else None,
            "last_pass_reward_mean": round(float(g["last_pass_reward"].mean()), 4),
            "per_seed": [round(float(v), 4) for v in g["progressive_reward"]],
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--passes", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--tune-seeds", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.passes, args.seeds, args.tune_seeds = 2, 2, 1
    grids = QUICK_GRIDS if args.quick else GRIDS
    protocol = DigitsProtocol(passes=args.passes, seeds=args.seeds, tune_seeds=args.tune_seeds)
    started = time.perf_counter()

    defaults = compare_on_digits(POLICIES, protocol)
    tuned_fields: dict[str, dict[str, Any]] = {}
    grid_tables: dict[str, Any] = {}
    for name, grid in grids.items():
        best, table = tune_on_digits(name, grid, protocol)
        tuned_fields[name] = best
        grid_tables[name] = {
            str(k): round(float(v), 4)
            for k, v in table.groupby("variant", sort=False)["progressive_reward"].mean().items()
        }
    tuned = compare_on_digits({f"{n}-tuned": {"name": n, **f} for n, f in tuned_fields.items()},
                              protocol)
    one_pass = compare_on_digits(POLICIES, DigitsProtocol(passes=1, seeds=args.seeds))
    report = {
        "benchmark": "digits",
        "protocol": {"passes": protocol.passes, "evaluation_seeds": protocol.seeds,
                     "tuning_seeds": protocol.tune_seeds, "seed": protocol.seed,
                     "feedback_every": protocol.batch_size, "rounds_per_pass": 1797,
                     "arms": 10, "dim": 65},
        "defaults": _summary(defaults),
        "tuned": _summary(tuned),
        "tuned_fields": tuned_fields,
        "tuning_grid_mean_progressive_reward": grid_tables,
        "single_pass_defaults": _summary(one_pass),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    json.dump(report, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
