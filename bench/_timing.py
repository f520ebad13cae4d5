"""The benchmarks' one timing loop: per-call wall-clock and thread-CPU percentiles.

Wall time is what a caller waits; thread CPU time (``time.thread_time_ns``) leaves out the
time the thread waited for a core, so on a loaded machine the two together tell load
from cost. :func:`interleaved` runs several callables round by round, so that a burst
of load from other processes falls on all of them alike and their ratios stay fair.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import numpy as np

__all__ = ["interleaved", "summary", "timed"]

Call = Callable[[int], object]


def summary(wall_ns: np.ndarray, cpu_ns: np.ndarray | None = None) -> dict[str, float]:
    """p50/p99 µs of ``wall_ns`` (and the p50 of ``cpu_ns`` when given)."""
    p50, p99 = np.percentile(wall_ns, [50, 99]) / 1000.0
    out = {"p50_us": round(float(p50), 2), "p99_us": round(float(p99), 2)}
    if cpu_ns is not None:
        out["cpu_p50_us"] = round(float(np.percentile(cpu_ns, 50)) / 1000.0, 2)
    return out


def timed(fn: Call, n: int, start: int = 0) -> dict[str, float]:
    """Call ``fn(i)`` for i in ``start .. start + n - 1``; :func:`summary` of each call."""
    return interleaved({"fn": fn}, start, start + n)["fn"]


def interleaved(fns: Mapping[str, Call], start: int, stop: int,
                block: int = 1) -> dict[str, dict[str, float]]:
    """For each i in ``start .. stop - 1`` call every ``fns[name](i)`` in turn; a
    :func:`summary` per name.

    The order is shuffled each round (a fixed seed), so every callable follows every
    other about equally often: what one leaves in, or evicts from, the caches falls on
    all of them alike rather than always on the one after it. With ``block`` > 1 a
    "round" is ``block`` consecutive indices of one callable before the next callable's
    same indices (each still plays every index in order): each callable is then timed in
    its own steady state, as in a simulation loop, while a burst of load (blocks are
    well under a millisecond) still falls on all of them alike.
    """
    n = stop - start
    wall = {name: np.empty(n) for name in fns}
    cpu = {name: np.empty(n) for name in fns}
    clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
    items = list(fns.items())
    blocks = range(start, stop, block)
    orders = np.random.default_rng(0).permuted(
        np.tile(np.arange(len(items)), (len(blocks), 1)), axis=1).tolist()
    for b, i0 in enumerate(blocks):
        for j in orders[b]:
            name, fn = items[j]
            w, c = wall[name], cpu[name]
            for i in range(i0, min(i0 + block, stop)):
                c0 = cpu_clock()
                t0 = clock()
                fn(i)
                w[i - start] = clock() - t0
                c[i - start] = cpu_clock() - c0
    return {name: summary(wall[name], cpu[name]) for name in fns}
