"""Per-decision latency of the core policies vs Vowpal Wabbit, printed as JSON.

Two parts, in one run:

* ``interleaved`` — learning every round: one round is ``choose`` on a context, the
  reward of the chosen arm from a fixed linear ground truth, and ``update`` of that
  arm, for K ∈ {10, 100} arms and d ∈ {32, 64}: LinUCB, LinearThompson, HybridLinUCB
  with m ∈ ``--arm-features`` (2 and 6) content features per arm, beside a plain numpy
  LinUCB with Sherman–Morrison updates (:class:`NumpyShermanMorrisonLinUCB`, the
  reference a data scientist would write) and Vowpal Wabbit ``--cb_explore_adf
  --squarecb`` ``predict_one`` + ``learn_one`` on pre-parsed examples over the same
  stream (same contexts, same reward function). p50/p99 µs per round (wall clock) and
  the p50 of the thread's CPU time, which leaves out waiting for a core. ``numpy_call``
  (one ``np.dot`` of two length-d vectors, in the same loop) is the per-call floor: a
  round's p50 over it counts how many such calls the round costs, on any machine.
* ``latency`` — per-call figures for K ∈ {20, 100, 1000}: ``choose`` with the state
  unchanged (the allocation server), ``update`` alone, ``online`` (update then choose),
  for LinUCB and LinearThompson, and VW raw ``predict_one`` / ``learn_one`` and
  through :class:`bandit.adapters.vw.VWPolicy` (text formatting + parsing included).

BLAS runs single-threaded (``OPENBLAS_NUM_THREADS=1`` unless already set), as it should in
an allocation server: per-request products are far too small to gain from threads, and
on a loaded machine two BLAS thread pools (numpy's and scipy's) spinning against each
other multiply tail latency. Scale with processes instead.

Usage: ``python bench/policy.py [--quick] [--only interleaved|latency]
[--arm-features 2 6] [--arms 10 100] [--dims 32 64]`` (a few minutes on an idle machine, 15 on a loaded one;
``--quick`` about a tenth of that).
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

from _timing import interleaved, timed  # noqa: E402  (bench/, the script's folder)

from bandit.adapters.vw import VWPolicy, vw_args  # noqa: E402
from bandit.arms import Arm, ArmRegistry  # noqa: E402
from bandit.config import PolicyConfig, VWParams  # noqa: E402
from bandit.policies import make_policy  # noqa: E402

TARGETS = {
    "linucb_choose_K100_d64_p50_us": 20.0,
    "linucb_choose_K1000_d64_p50_us": 150.0,
    "linucb_vs_vw_predict_K100_d64_min_ratio": 3.0,
    "linucb_round_K10_d64_p50_us": 25.0,
    "linucb_round_K10_d64_max_ratio_vs_numpy_reference": 1.2,
    "hybrid_linucb_round_K10_d64_p50_us": 100.0,  # reported per m (--arm-features)
    "vw_round_vs_linucb_K10_d64_min_ratio": 3.0,
    "vw_round_vs_hybrid_linucb_K10_d64_min_ratio": 3.0,
}


class NumpyShermanMorrisonLinUCB:
    """Plain numpy disjoint LinUCB: cached A⁻¹ per arm with Sherman–Morrison updates.

    The reference the core is measured against: no validation, no propensities, no
    locks, argmax without a floor — what a data scientist would write in a notebook.
    """

    def __init__(self, K: int, d: int, alpha: float = 1.0, lam: float = 1.0) -> None:
        self.alpha = alpha
        self.ainv = np.broadcast_to(np.eye(d) / lam, (K, d, d)).copy()
        self.rows = self.ainv.reshape(K * d, d)  # one product gives A⁻¹x of every arm
        self.b = np.zeros((K, d))
        self.theta = np.zeros((K, d))

    def choose(self, x: np.ndarray) -> int:
        width_sq = (self.rows @ x).reshape(self.theta.shape) @ x  # xᵀA⁻¹x per arm
        return int(np.argmax(self.theta @ x + self.alpha * np.sqrt(width_sq)))

    def update(self, arm: int, x: np.ndarray, reward: float) -> None:
        P = self.ainv[arm]
        u = P @ x
        P -= np.outer(u, u) / (1.0 + x @ u)
        self.b[arm] += reward * x
        self.theta[arm] = P @ self.b[arm]


def _bench_linear(name: str, K: int, d: int, X: np.ndarray, r: np.ndarray, n: int,
                  warm: int) -> dict[str, Any]:
    ids = [f"arm{i}" for i in range(K)]
    pol = make_policy(PolicyConfig(name=name, dim=d), ArmRegistry([Arm(a) for a in ids]))
    pol.update_batch([ids[i % K] for i in range(warm)], X[:warm], r[:warm])
    rng = np.random.default_rng(0)
    pol.choose(X[0], rng)
    out = {"choose": timed(lambda i: pol.choose(X[i], rng), n)}
    out["update"] = timed(lambda i: pol.update(ids[i % K], X[i], float(r[i])), n)

    def online(i: int) -> None:
        pol.update(ids[(i * 7) % K], X[i], float(r[i]))
        pol.choose(X[i + 1], rng)

    out["online"] = timed(online, n)
    return out


class _Stream:
    """Contexts, a linear ground truth per arm and the noise of each round."""

    def __init__(self, K: int, d: int, n: int, rng: np.random.Generator) -> None:
        self.X = rng.normal(size=(n, d)) / np.sqrt(d)
        self.truth = rng.normal(size=(K, d))
        self.noise = 0.1 * rng.normal(size=n)

    def reward(self, i: int, arm: int) -> float:
        return float(self.truth[arm] @ self.X[i] + self.noise[i])


Round = Callable[[int], None]


def _core_round(name: str, K: int, d: int, m: int, stream: _Stream) -> Round:
    ids = [f"arm{i}" for i in range(K)]
    feats = np.random.default_rng(7).random((K, m))
    hybrid = name == "hybrid_linucb"
    arms = ArmRegistry([Arm(a, features=tuple(feats[i]) if hybrid else None)
                        for i, a in enumerate(ids)], feature_dim=m if hybrid else None)
    pol = make_policy(PolicyConfig(name=name, dim=d, arm_feature_dim=m), arms)
    pos = {a: i for i, a in enumerate(ids)}
    rng = np.random.default_rng(0)
    X = stream.X

    def round_(i: int) -> None:
        arm = pol.choose(X[i], rng).arm_id
        pol.update(arm, X[i], stream.reward(i, pos[arm]))

    return round_


def _numpy_round(K: int, d: int, stream: _Stream) -> Round:
    ref = NumpyShermanMorrisonLinUCB(K, d)
    X = stream.X

    def round_(i: int) -> None:
        arm = ref.choose(X[i])
        ref.update(arm, X[i], stream.reward(i, arm))

    return round_


def _vw_round(K: int, d: int, stream: _Stream) -> Round:
    """VW predict_one + learn_one per round on pre-parsed examples (VW's own compute)."""
    import vowpal_wabbit_next as vw

    ws = vw.Workspace(vw_args(VWParams(dim=d)))
    parser = vw.TextFormatParser(ws)
    fmt = " ".join(f"{i}:%.9g" for i in range(d))
    actions = [parser.parse_line(f"|a arm{j}") for j in range(K)]
    shared = [parser.parse_line("shared |x " + fmt % tuple(x)) for x in stream.X]
    draw = np.random.default_rng(0).random(stream.X.shape[0])
    no_label = vw.CBLabel()

    def round_(i: int) -> None:
        ex = [shared[i], *actions]
        pmf = ws.predict_one(ex)
        acc, arm, p = 0.0, pmf[-1][0], pmf[-1][1]
        for a, q in pmf:  # sample the action from VW's pmf
            acc += q
            if draw[i] < acc:
                arm, p = a, q
                break
        actions[arm].set_label(vw.CBLabel(label=(-stream.reward(i, arm), max(p, 1e-6))))
        ws.learn_one(ex)
        actions[arm].set_label(no_label)

    return round_


def _bench_interleaved(K: int, d: int, ms: tuple[int, ...], n: int, warm: int,
                       rng: np.random.Generator) -> dict[str, Any]:
    """Every learner plays the same rounds; their calls alternate round by round, in an
    order shuffled every round, so a burst of load from other processes, and what one
    learner evicts from the caches, falls on all of them alike."""
    stream = _Stream(K, d, warm + 2 * n, rng)
    rounds: dict[str, Round] = {
        name: _core_round(name, K, d, 0, stream) for name in ("linucb", "linear_thompson")
    }
    for m in ms:
        rounds[f"hybrid_linucb_m{m}"] = _core_round("hybrid_linucb", K, d, m, stream)
    rounds["numpy_sherman_morrison_linucb"] = _numpy_round(K, d, stream)
    rounds["vw"] = _vw_round(K, d, stream)
    # the per-call floor under the same load: one numpy call on two length-d vectors, the
    # smallest unit a round is made of (a round's p50 over it counts such calls)
    x = stream.X[0]
    rounds["numpy_call"] = lambda i: np.dot(x, x)
    for i in range(warm):
        for fn in rounds.values():
            fn(i)
    row: dict[str, Any] = {"K": K, "d": d, "rounds": n, "warm_rounds": warm}
    row.update(interleaved(rounds, warm, warm + n))
    row["ratios_p50"] = _ratios(row, ms)
    # the same learners go on for n more rounds, BLOCK consecutive rounds each in turn:
    # a simulation's or replay's loop, where a learner's state stays in the CPU caches
    blocked: dict[str, Any] = dict(interleaved(rounds, warm + n, warm + 2 * n, block=BLOCK))
    blocked["ratios_p50"] = _ratios(blocked, ms)
    row[f"blocked{BLOCK}"] = blocked
    return row


#: consecutive rounds of one learner in the blocked timing
BLOCK = 32


def _ratios(row: dict[str, Any], ms: tuple[int, ...]) -> dict[str, float]:
    p50s = {name: v["p50_us"] for name, v in row.items() if isinstance(v, dict) and "p50_us" in v}
    return {
        "linucb_vs_numpy_reference": round(p50s["linucb"] / p50s["numpy_sherman_morrison_linucb"], 2),
        "vw_vs_linucb": round(p50s["vw"] / p50s["linucb"], 2),
        **{f"vw_vs_hybrid_linucb_m{m}": round(p50s["vw"] / p50s[f"hybrid_linucb_m{m}"], 2)
           for m in ms},
        "vw_vs_linear_thompson": round(p50s["vw"] / p50s["linear_thompson"], 2),
        "linucb_in_numpy_calls": round(p50s["linucb"] / max(p50s["numpy_call"], 1e-3), 1),
    }


def _bench_vw(K: int, d: int, X: np.ndarray, r: np.ndarray, n: int, warm: int) -> dict[str, Any]:
    import vowpal_wabbit_next as vw

    ids = [f"arm{i}" for i in range(K)]
    cfg = VWParams(dim=d)
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
        "predict_raw": timed(lambda i: ws.predict_one([shared[i], *actions]), n),
        "learn_raw": timed(lambda i: ws.learn_one(labelled[i]), n),
    }
    pol = VWPolicy(cfg, ArmRegistry([Arm(a) for a in ids]))
    rng = np.random.default_rng(0)
    for i in range(min(warm, n)):
        pol.update(ids[i % K], X[i], float(r[i]), propensity=1.0 / K)
    out["choose_policy"] = timed(lambda i: pol.choose(X[i], rng), n)
    out["update_policy"] = timed(
        lambda i: pol.update(ids[i % K], X[i], float(r[i]), propensity=1.0 / K), n
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, K <= 100")
    parser.add_argument("--arm-features", type=int, nargs="+", default=[2, 6],
                        help="content features per arm for HybridLinUCB (m), one run per value")
    parser.add_argument("--only", choices=("interleaved", "latency"), default=None)
    parser.add_argument("--arms", type=int, nargs="+", default=[10, 100],
                        help="K of the interleaved part, one run per value")
    parser.add_argument("--dims", type=int, nargs="+", default=[32, 64],
                        help="d of the interleaved part, one run per value")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(np.random.SeedSequence(1234))
    load_at_start = round(os.getloadavg()[0], 2)
    results: list[dict[str, Any]] = []
    interleaved: list[dict[str, Any]] = []
    started = time.perf_counter()
    for K in args.arms if args.only != "latency" else ():
        for d in args.dims:
            n = 300 if args.quick else 2000
            interleaved.append(_bench_interleaved(K, d, tuple(args.arm_features), n, 5 * K,
                                                  rng))
    for K in () if args.only == "interleaved" else (20, 100) if args.quick else (20, 100, 1000):
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

    def find(K: int, d: int, rows: list[dict[str, Any]] = results) -> dict[str, Any] | None:
        return next((x for x in rows if x["K"] == K and x["d"] == d), None)

    reached: dict[str, Any] = {}
    k10 = find(10, 64, interleaved)
    for mode, rows in (("", k10), (f"_blocked{BLOCK}", k10 and k10[f"blocked{BLOCK}"])):
        if not rows:
            continue
        ratios = rows["ratios_p50"]
        reached[f"linucb_round_K10_d64_p50_us{mode}"] = rows["linucb"]["p50_us"]
        reached[f"linucb_round_K10_d64_max_ratio_vs_numpy_reference{mode}"] = (
            ratios["linucb_vs_numpy_reference"])
        reached[f"vw_round_vs_linucb_K10_d64_min_ratio{mode}"] = ratios["vw_vs_linucb"]
        reached[f"linucb_round_K10_d64_in_numpy_calls{mode}"] = ratios["linucb_in_numpy_calls"]
        reached[f"numpy_call_K10_d64_p50_us{mode}"] = rows["numpy_call"]["p50_us"]
        for m in args.arm_features:
            reached[f"hybrid_linucb_m{m}_round_K10_d64_p50_us{mode}"] = (
                rows[f"hybrid_linucb_m{m}"]["p50_us"])
            reached[f"vw_round_vs_hybrid_linucb_m{m}_K10_d64_min_ratio{mode}"] = (
                ratios[f"vw_vs_hybrid_linucb_m{m}"])
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
                    "load_average_1m_start": load_at_start,
                    "load_average_1m_end": round(os.getloadavg()[0], 2),
                    "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS")},
        "targets": TARGETS,
        "reached": reached,
        "interleaved": interleaved,
        "latency": results,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    json.dump(report, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
