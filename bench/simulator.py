"""Benchmark: seed-steps/s of the batched torch LinUCB simulator (K = 20, d = 32).

Prints one JSON object. In one process, side by side on the same world:

* ``numpy``: the per-step policy path (:func:`simulations.runner.run_job`), a few seeds;
* ``torch_cpu``: :func:`simulations.torch_backend.simulate_linucb_batched` on the CPU;
* ``torch_cuda``: the same on the GPU for each ``--cuda-seeds`` batch size and each
  dtype (float32 and float64), when CUDA is available — the issue's target is
  ≥ 10 million seed-steps/s there; absent a GPU the entry says so.

Host-side drawing of the worlds' contexts and uniforms is outside the timed region (the
result's ``seconds`` covers the step loop only, synchronised). Usage:

    .venv/bin/python bench/simulator.py [--steps 300] [--cpu-seeds 256]
        [--cuda-seeds 4096,16384,32768]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TARGET_CUDA_SEED_STEPS_PER_S = 10_000_000


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--update-every", type=int, default=10)
    ap.add_argument("--cpu-seeds", type=int, default=256)
    ap.add_argument("--cpu-threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--cuda-seeds", default="4096,16384,32768",
                    help="comma-separated batch sizes (runs) for the GPU")
    ap.add_argument("--numpy-seeds", type=int, default=4)
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from simulations.runner import SimulationSpec, run_job
    from simulations.torch_backend import simulate_linucb_batched
    from simulations.world import Scenario, make_world

    world = make_world(Scenario(name="bench", dim=32, n_specialists=14, n_generalists=5), 0)
    out: dict[str, Any] = {
        "benchmark": "simulator",
        "arms": world.n_arms, "dim": world.dim, "steps": args.steps,
        "update_every": args.update_every,
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "cpus": os.cpu_count(),
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available()
                    else None},
        "target_cuda_seed_steps_per_s": TARGET_CUDA_SEED_STEPS_PER_S,
    }

    spec = SimulationSpec(steps=args.steps, batch_size=args.update_every, alpha=0.3)
    seqs = np.random.SeedSequence(5).spawn(args.numpy_seeds)
    t = time.perf_counter()
    for i, s in enumerate(seqs):
        run_job(spec, "linucb", i, s)
    out["numpy"] = {"runs": args.numpy_seeds,
                    "seed_steps_per_s": round(args.numpy_seeds * args.steps
                                              / (time.perf_counter() - t))}

    def batched(runs: int, device: str, dtype: torch.dtype, threads: int | None) -> dict[str, Any]:
        res = simulate_linucb_batched(world, np.random.SeedSequence(6).spawn(runs),
                                      steps=args.steps, alphas=0.3,
                                      update_every=args.update_every, device=device,
                                      dtype=dtype, threads=threads)
        d = res.to_dict()
        d["dtype"] = str(dtype).removeprefix("torch.")
        d["seed_steps_per_s"] = round(d["seed_steps_per_s"])
        d["seconds"] = round(d["seconds"], 3)
        return d

    out["torch_cpu"] = [batched(args.cpu_seeds, "cpu", dt, args.cpu_threads)
                        for dt in (torch.float64, torch.float32)]
    if torch.cuda.is_available():
        rows = []
        for runs in (int(v) for v in args.cuda_seeds.split(",") if v):
            for dt in (torch.float32, torch.float64):
                try:
                    rows.append(batched(runs, "cuda", dt, None))
                except torch.OutOfMemoryError as exc:
                    rows.append({"runs": runs, "dtype": str(dt), "error": str(exc)[:200]})
                torch.cuda.empty_cache()
        out["torch_cuda"] = rows
        best = max((r.get("seed_steps_per_s", 0) for r in rows), default=0)
        out["best_cuda_seed_steps_per_s"] = best
        out["cuda_meets_target"] = best >= TARGET_CUDA_SEED_STEPS_PER_S
        out["cuda_speedup_vs_numpy"] = round(best / max(out["numpy"]["seed_steps_per_s"], 1), 1)
    else:
        out["torch_cuda"] = "no CUDA device on this machine"
    sys.stdout.write(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
