"""The dashboard's per-arm view of a snapshot comes from the core's public scoring."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bandit.arms import Arm, ArmRegistry
from bandit.config import PolicyConfig
from bandit.formats.snapshot import save_policy_snapshot
from bandit.policies import make_policy
from dashboards.data import load_policy_view


def test_policy_view_estimates_are_the_closed_form_ridge_solution(tmp_path: Path) -> None:
    rng = np.random.default_rng(17)
    d, lam = 4, 2.0
    reg = ArmRegistry([Arm("a"), Arm("b"), Arm("c"), Arm("old")])
    pol = make_policy(PolicyConfig(name="linucb", dim=d, alpha=0.7, ridge_lambda=lam), reg)
    X = rng.standard_normal((60, d))
    ids = [["a", "b", "c", "old"][i % 4] for i in range(60)]
    r = rng.random(60)
    pol.update_batch(ids, X, r)
    reg.add(Arm("old", active=False))  # retired: the policy no longer scores it
    xbar = X.mean(axis=0)
    path = tmp_path / "policy.snapshot"
    save_policy_snapshot(path, pol, reg, extra={"mean_context": xbar.tolist()})
    view = load_policy_view(str(path), 1, 0.7, lam)
    table = view.estimates.set_index("arm_id")
    for arm in ("a", "b", "c"):
        rows = [i for i, a in enumerate(ids) if a == arm]
        A = lam * np.eye(d) + X[rows].T @ X[rows]
        theta = np.linalg.solve(A, X[rows].T @ r[rows])
        assert np.isclose(table.loc[arm, "estimate"], theta @ xbar, rtol=1e-10, atol=1e-12)
        assert np.isclose(table.loc[arm, "width"], 0.7 * np.sqrt(xbar @ np.linalg.solve(A, xbar)),
                          rtol=1e-10)
        assert table.loc[arm, "n"] == len(rows)
    assert np.isnan(table.loc["old", "estimate"]) and table.loc["old", "n"] == 15
