"""simulations.runner: seed intervals and the results folder."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from simulations.runner import SimulationSpec, summarise, write_results


def _table(finals: list[float]) -> pd.DataFrame:
    rows = []
    for seed, final in enumerate(finals):
        for step in (1, 2):
            rows.append({"policy": "linucb", "seed": seed, "step": step, "day": 0, "arm": "a",
                         "reward": 1.0, "expected_reward": 1.0, "regret": final / 2,
                         "cumulative_reward": float(step), "cumulative_regret": final * step / 2})
    return pd.DataFrame(rows)


def test_summarise_interval_over_seeds_uses_t_quantiles() -> None:
    finals = [10.0, 12.0, 14.0]
    row = summarise(_table(finals)).iloc[0]
    half = stats.t.ppf(0.975, 2) * np.std(finals, ddof=1) / math.sqrt(3)
    assert math.isclose(row["final_regret_ci_high"] - row["final_regret_mean"], half, rel_tol=1e-12)
    assert half > 1.96 * np.std(finals, ddof=1) / math.sqrt(3)  # wider than the normal one


def test_summarise_single_seed_has_no_interval() -> None:
    row = summarise(_table([10.0])).iloc[0]
    assert math.isnan(row["final_regret_ci_low"]) and math.isnan(row["final_regret_ci_high"])


def test_write_results_puts_extra_figures_in_summary_json(tmp_path: Path) -> None:
    spec = SimulationSpec(policies=("linucb",), seeds=3, steps=2)
    lift = {"planted": 0.68, "estimate": 0.7, "ci_low": 0.6, "ci_high": 0.8}
    write_results(_table([10.0, 12.0, 14.0]), spec, tmp_path, {}, {"day30_lift": lift})
    assert json.loads((tmp_path / "summary.json").read_text())["day30_lift"] == lift
