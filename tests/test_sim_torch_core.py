"""The torch batched LinUCB is the core's LinUCB in tensors: same scores after the same events."""

from __future__ import annotations

import numpy as np
import pytest

from bandit.arms import Arm, ArmRegistry
from bandit.config import PolicyConfig
from bandit.policies import make_policy

torch = pytest.importorskip("torch")
from simulations.torch_backend import linucb_scores, linucb_update  # noqa: E402


def test_torch_linucb_scores_and_updates_equal_the_core_score_batch() -> None:
    rng = np.random.default_rng(np.random.SeedSequence(161).spawn(1)[0])
    S, K, d, lam = 3, 5, 4, 1.5
    alphas = np.array([0.0, 0.4, 2.0])
    ids = [f"arm{k}" for k in range(K)]
    core = [make_policy(PolicyConfig(name="linucb", dim=d, alpha=float(a), ridge_lambda=lam),
                        ArmRegistry([Arm(i) for i in ids])) for a in alphas]
    a_inv = torch.eye(d, dtype=torch.float64).repeat(S, K, 1, 1) / lam
    b = torch.zeros((S, K, d), dtype=torch.float64)
    theta = torch.zeros((S, K, d), dtype=torch.float64)
    alpha = torch.tensor(alphas, dtype=torch.float64)
    for step in range(60):
        arm = rng.integers(K, size=S)
        x = rng.standard_normal((S, d))
        r = rng.random(S)
        linucb_update(a_inv, b, theta, torch.tensor(arm), torch.tensor(x), torch.tensor(r))
        for s in range(S):
            core[s].update(ids[int(arm[s])], x[s], float(r[s]))
        if step % 20 == 19:
            probe = rng.standard_normal((S, d))
            got = linucb_scores(theta, a_inv, torch.tensor(probe), alpha).numpy()
            for s in range(S):
                want = core[s].score_batch(probe[s:s + 1], ids).scores[0]
                # the core scores from its float32 packed A⁻¹ (≈ 6e-8·d·cond relative)
                np.testing.assert_allclose(got[s], want, rtol=1e-5, atol=1e-7)
