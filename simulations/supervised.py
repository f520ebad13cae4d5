"""Supervised-to-bandit conversion (Dudík, Langford & Li 2011; Bietti et al. 2021).

Each labelled example becomes one bandit round: the classes are the arms, the policy
chooses one, and the reward is 1 when it is the true class (0 otherwise) — only the
chosen arm's reward is revealed. The *progressive* reward (mean reward over one pass,
learning as it goes, with feedback delivered every ``batch_size`` rounds) compares
policies on real data with a known optimum of 1.0 and uniform at 1/K.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from bandit.arms import Arm, ArmRegistry
from bandit.config import PolicyConfig
from bandit.errors import InvalidInputError

__all__ = ["compare_on_digits", "digits_bandit", "progressive_reward"]

FloatArray = npt.NDArray[np.float64]


def digits_bandit() -> tuple[FloatArray, npt.NDArray[np.int64], tuple[str, ...]]:
    """scikit-learn's bundled digits (1797 × 64, 10 classes) scaled to [0, 1] plus an
    intercept column; arms ``digit-0`` .. ``digit-9``."""
    from sklearn.datasets import load_digits

    ds = load_digits()
    x = np.hstack([np.ones((ds.data.shape[0], 1)), ds.data / 16.0])
    return x, ds.target.astype(np.int64), tuple(f"digit-{k}" for k in range(10))


def progressive_reward(policy: Any, x: FloatArray, y: npt.NDArray[np.int64],
                       arm_ids: tuple[str, ...], rng: np.random.Generator,
                       *, batch_size: int = 1) -> float:
    """One pass in the order given; returns the mean reward (progressive validation)."""
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise InvalidInputError("x", x.shape, f"must have {y.shape[0]} > 0 rows")
    if batch_size < 1:
        raise InvalidInputError("batch_size", batch_size, "must be >= 1")
    pos = {a: i for i, a in enumerate(arm_ids)}
    total = 0.0
    eligible = list(arm_ids)
    for start in range(0, x.shape[0], batch_size):
        stop = min(x.shape[0], start + batch_size)
        chosen = [policy.choose(x[i], rng, eligible).arm_id for i in range(start, stop)]
        r = (np.array([pos[c] for c in chosen]) == y[start:stop]).astype(np.float64)
        total += float(r.sum())
        policy.update_batch(chosen, x[start:stop], r)
    return total / x.shape[0]


def compare_on_digits(policies: tuple[str, ...] = ("linucb", "linear_thompson", "vw", "uniform"),
                      *, seeds: int = 3, seed: int = 20261123, batch_size: int = 1,
                      alpha: float = 0.3) -> pd.DataFrame:
    """Progressive reward of each policy over the same shuffled passes (one per seed)."""
    from bandit.policies import make_policy

    x, y, arm_ids = digits_bandit()
    rows = []
    for s, seq in enumerate(np.random.SeedSequence(seed).spawn(seeds)):
        order = np.random.default_rng(seq).permutation(x.shape[0])
        for name in policies:
            config = PolicyConfig(name=name, dim=x.shape[1], alpha=alpha,  # type: ignore[arg-type]
                                  thompson_v=0.1, probability_floor=0.0)
            pol = make_policy(config, ArmRegistry([Arm(a) for a in arm_ids]))
            rng = np.random.default_rng(seq.spawn(1)[0])
            value = progressive_reward(pol, x[order], y[order], arm_ids, rng,
                                       batch_size=batch_size)
            rows.append({"policy": name, "seed": s, "progressive_reward": value})
    return pd.DataFrame(rows)
