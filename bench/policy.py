"""Per-decision latency of the core policies vs Vowpal Wabbit, printed as JSON.

For K ∈ {20, 100, 1000} arms and d ∈ {32, 64}: p50/p99 microseconds of

* ``choose`` — one request, state unchanged between calls (the allocation server);
* ``update`` — one event folded into the statistics;
* ``online`` — ``update`` then ``choose`` (pays the lazy refresh of the updated arm);

for LinUCB and LinearThompson, and for Vowpal Wabbit ``--cb_explore_adf --squarecb``
on the same contexts in the same process: raw ``predict_one`` / ``learn_one`` on
pre-parsed examples (VW's own compute) and through :class:`bandit.adapters.vw.VWPolicy`
(text formatting + parsing included). Ratios are VW time / LinUCB time.

BLAS runs single-threaded (``OPENBLAS_NUM_THREADS=1`` unless already set), as it should in
an allocation server: per-request products are far too small to gain from threads, and
on a loaded machine two BLAS thread pools (numpy's and scipy's) spinning against each
other multiply tail latency. Scale with processes instead.

Usage: ``python bench/policy.py [--quick]`` (about a minute; ``--quick`` a few seconds).
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bandit.adapters.vw import VWPolicy, vw_args  # noqa: E402
from bandit.arms import Arm, ArmRegistry  # noqa: E402
from bandit.config import PolicyConfig  # noqa: E402
from bandit.policies import make_policy  # noqa: E402

TARGETS = {
    "linucb_choose_K100_d64_p50_us": 20.0,
    "linucb_choose_K1000_d64_p50_us": 150.0,
    "linucb_vs_vw_predict_K100_d64_min_ratio": 3.0,
}


def _timed(fn: Callable[[int], object], n: int) -> dict[str, float]:
    ts = np.empty(n)
    clock = time.perf_counter_ns
    for i in range(n):
        t0 = clock()
        fn(i)
        ts[i] = clock() - t0
    p50, p99 = np.percentile(ts, [50, 99]) / 1000.0
    return {"p50_us": round(float(p50), 2), "p99_us": round(float(p99), 2)}


def _bench_linear(name: str, K: int, d: int, X: np.ndarray, r: np.ndarray, n: int,
                  warm: int) -> dict[str, Any]:
    ids = [f"arm{i}" for i in range(K)]
    pol = make_policy(PolicyConfig(name=name, dim=d), ArmRegistry([Arm(a) for a in ids]))
    pol.update_batch([ids[i % K] for i in range(warm)], X[:warm], r[:warm])
    rng = np.random.default_rng(0)
    pol.choose(X[0], rng)
    out = {"choose": _timed(lambda i: pol.choose(X[i], rng), n)}
    out["update"] = _timed(lambda i: pol.update(ids[i % K], X[i], float(r[i])), n)

    def online(i: int) -> None:
        pol.update(ids[(i * 7) % K], X[i], float(r[i]))
        pol.choose(X[i + 1], rng)

    out["online"] = _timed(online, n)
    return out


def _bench_vw(K: int, d: int, X: np.ndarray, r: np.ndarray, n: int, warm: int) -> dict[str, Any]:
    import vowpal_wabbit_next as vw

    ids = [f"arm{i}" for i in range(K)]
    cfg = PolicyConfig(name="vw", dim=d)
    ws = vw.Workspace(vw_args(cfg))
    parser = vw.TextFormatParser(ws)
    fmt = " ".join(f"{i}:%.9g" for i in range(d))
    actions = [parser.parse_line(f"|a arm{j}") for j in range(K)]
    shared = [parser.parse_line("shared |x " + fmt % tuple(x)) for x in X[: n + 1]]
    labelled = [
        [shared[i], *actions[: i % K],
         parser.parse_line(f"0:{-r[i]!r}:{1.0 / K!r} |a arm{i % K}"), *actions[i % K + 1:]]
        for i in range(n)
    ]
    for i in range(min(warm, n)):
        ws.learn_one(labelled[i])
    out = {
        "predict_raw": _timed(lambda i: ws.predict_one([shared[i], *actions]), n),
        "learn_raw": _timed(lambda i: ws.learn_one(labelled[i]), n),
    }
    pol = VWPolicy(cfg, ArmRegistry([Arm(a) for a in ids]))
    rng = np.random.default_rng(0)
    for i in range(min(warm, n)):
        pol.update(ids[i % K], X[i], float(r[i]), propensity=1.0 / K)
    out["choose_policy"] = _timed(lambda i: pol.choose(X[i], rng), n)
    out["update_policy"] = _timed(
        lambda i: pol.update(ids[i % K], X[i], float(r[i]), propensity=1.0 / K), n
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, K <= 100")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(np.random.SeedSequence(1234))
    results: list[dict[str, Any]] = []
    started = time.perf_counter()
    for K in (20, 100) if args.quick else (20, 100, 1000):
        for d in (32, 64):
            n = (100 if args.quick else 400) if K < 1000 else (50 if args.quick else 150)
            warm = 20 * K
            X = rng.normal(size=(max(warm, n + 2), d)) / np.sqrt(d)
            r = rng.random(X.shape[0])
            row: dict[str, Any] = {"K": K, "d": d, "calls": n}
            row["linucb"] = _bench_linear("linucb", K, d, X, r, n, warm)
            row["linear_thompson"] = _bench_linear("linear_thompson", K, d, X, r, n, warm)
            row["vw"] = _bench_vw(K, d, X, r, min(n, 100 if K >= 1000 else n), warm)
            lin = row["linucb"]["choose"]["p50_us"]
            row["ratios_vs_linucb_choose_p50"] = {
                "vw_predict_raw": round(row["vw"]["predict_raw"]["p50_us"] / lin, 2),
                "vw_choose_policy": round(row["vw"]["choose_policy"]["p50_us"] / lin, 2),
                "linear_thompson_choose": round(
                    row["linear_thompson"]["choose"]["p50_us"] / lin, 2),
            }
            results.append(row)

    def find(K: int, d: int) -> dict[str, Any] | None:
        return next((x for x in results if x["K"] == K and x["d"] == d), None)

    reached: dict[str, Any] = {}
    k100, k1000 = find(100, 64), find(1000, 64)
    if k100:
        reached["linucb_choose_K100_d64_p50_us"] = k100["linucb"]["choose"]["p50_us"]
        reached["linucb_vs_vw_predict_K100_d64_min_ratio"] = (
            k100["ratios_vs_linucb_choose_p50"]["vw_predict_raw"])
    if k1000:
        reached["linucb_choose_K1000_d64_p50_us"] = k1000["linucb"]["choose"]["p50_us"]
    report = {
        "benchmark": "policy",
        "machine": {"python": platform.python_version(), "processor": platform.processor(),
                    "numpy": np.__version__, "cpus": os.cpu_count(),
                    "load_average_1m": round(os.getloadavg()[0], 2),
                    "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS")},
        "targets": TARGETS,
        "reached": reached,
        "results": results,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    json.dump(report, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
