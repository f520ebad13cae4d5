"""Supervised-to-bandit conversion (Dudík, Langford & Li 2011; Bietti et al. 2021).

Each labelled example becomes one bandit round: the classes are the arms, the policy
chooses one, and the reward is 1 when it is the true class (0 otherwise) — only the
chosen arm's reward is revealed. The *progressive* reward — the mean reward over the
whole stream, learning as it goes, with feedback delivered every ``batch_size`` rounds —
compares policies on real data with a known optimum of 1.0 and uniform at 1/K.

The usual protocol (the one Vowpal Wabbit's own evaluations follow) makes the stream
several passes over the data, each pass in a fresh random order, and repeats the run
over several seeds: one pass over 1,797 digits is too short for a learner that starts
from nothing, and a single order or seed is too noisy to rank policies.

Tuning is honest only on data the reported figure does not use: :func:`tune_on_digits`
picks hyper-parameters by the mean progressive reward over *tuning* seeds (their own
shuffles and policy randomness), disjoint from the evaluation seeds of
:func:`compare_on_digits` (both spawned from one ``SeedSequence``).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from bandit.arms import Arm, ArmRegistry
from bandit.config import PolicyConfig
from bandit.errors import InvalidInputError

__all__ = [
    "DigitsProtocol",
    "compare_on_digits",
    "digits_bandit",
    "progressive_reward",
    "tune_on_digits",
]

FloatArray = npt.NDArray[np.float64]
Variants = Mapping[str, Mapping[str, Any]]


def digits_bandit() -> tuple[FloatArray, npt.NDArray[np.int64], tuple[str, ...]]:
    """scikit-learn's bundled digits (1797 × 64, 10 classes) scaled to [0, 1] plus an
    intercept column; arms ``digit-0`` .. ``digit-9``."""
    from sklearn.datasets import load_digits

    ds = load_digits()
    x = np.hstack([np.ones((ds.data.shape[0], 1)), ds.data / 16.0])
    return x, ds.target.astype(np.int64), tuple(f"digit-{k}" for k in range(10))


def progressive_reward(policy: Any, x: FloatArray, y: npt.NDArray[np.int64],
                       arm_ids: tuple[str, ...], rng: np.random.Generator,
                       *, batch_size: int = 1, passes: int = 1,
                       shuffle: np.random.Generator | None = None) -> list[float]:
    """Mean reward of each pass over ``(x, y)``, learning as it goes (progressive validation).

    Every pass visits each row once, in the order given, or in a fresh permutation drawn
    from ``shuffle`` when one is given. The progressive reward of the whole stream is
    the mean of the returned list (passes have equal length).
    """
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise InvalidInputError("x", x.shape, f"must have {y.shape[0]} > 0 rows")
    if batch_size < 1:
        raise InvalidInputError("batch_size", batch_size, "must be >= 1")
    if passes < 1:
        raise InvalidInputError("passes", passes, "must be >= 1")
    pos = {a: i for i, a in enumerate(arm_ids)}
    eligible = list(arm_ids)
    out = []
    for _ in range(passes):
        order = shuffle.permutation(x.shape[0]) if shuffle is not None else np.arange(x.shape[0])
        xs, ys = x[order], y[order]
        total = 0.0
        for start in range(0, xs.shape[0], batch_size):
            stop = min(xs.shape[0], start + batch_size)
            chosen = [policy.choose(xs[i], rng, eligible).arm_id for i in range(start, stop)]
            r = (np.array([pos[c] for c in chosen]) == ys[start:stop]).astype(np.float64)
            total += float(r.sum())
            policy.update_batch(chosen, xs[start:stop], r)
        out.append(total / xs.shape[0])
    return out


@dataclass(frozen=True, slots=True)
class DigitsProtocol:
    """Passes, seeds and feedback delay of a digits comparison.

    ``seeds`` evaluation seeds and ``tune_seeds`` tuning seeds are spawned from
    ``SeedSequence(seed)`` (the first ``seeds`` children evaluate, the next
    ``tune_seeds`` tune), so tuning never sees an evaluation shuffle.
    """

    passes: int = 5
    seeds: int = 5
    tune_seeds: int = 2
    seed: int = 20261123
    batch_size: int = 1

    def __post_init__(self) -> None:
        for field in ("passes", "seeds", "batch_size"):
            if getattr(self, field) < 1:
                raise InvalidInputError(field, getattr(self, field), "must be >= 1")
        if self.tune_seeds < 0:
            raise InvalidInputError("tune_seeds", self.tune_seeds, "must be >= 0")

    def sequences(self, tuning: bool) -> list[np.random.SeedSequence]:
        children = np.random.SeedSequence(self.seed).spawn(self.seeds + self.tune_seeds)
        return children[self.seeds:] if tuning else children[: self.seeds]


def _as_variants(policies: Sequence[str] | Variants) -> Variants:
    if isinstance(policies, Mapping):
        return policies
    return {name: {"name": name} for name in policies}


def _run(variants: Variants, protocol: DigitsProtocol, tuning: bool) -> pd.DataFrame:
    from bandit.policies import make_policy

    x, y, arm_ids = digits_bandit()
    rows = []
    for s, seq in enumerate(protocol.sequences(tuning)):
        # the same shuffles (and policy random streams) for every variant of a seed:
        # spawned once per seed, since spawn() hands out new children on every call
        shuffle_seq, policy_seq = seq.spawn(2)
        for label, overrides in variants.items():
            config = PolicyConfig(**{"dim": x.shape[1], **overrides})
            pol = make_policy(config, ArmRegistry([Arm(a) for a in arm_ids]))
            per_pass = progressive_reward(
                pol, x, y, arm_ids, np.random.default_rng(policy_seq),
                batch_size=protocol.batch_size, passes=protocol.passes,
                shuffle=np.random.default_rng(shuffle_seq),
            )
            rows.append({"variant": label, "policy": config.name, "seed": s,
                         "progressive_reward": float(np.mean(per_pass)),
                         "last_pass_reward": per_pass[-1]})
    return pd.DataFrame(rows)


def compare_on_digits(policies: Sequence[str] | Variants = ("linucb", "linear_thompson", "vw",
                                                            "uniform"),
                      protocol: DigitsProtocol | None = None) -> pd.DataFrame:
    """Progressive reward of each variant on the evaluation seeds of ``protocol``.

    ``policies`` is a list of policy names (run at their defaults) or a mapping
    ``label -> PolicyConfig fields`` (``{"linucb-a0.1": {"name": "linucb", "alpha": 0.1}}``).
    One row per (variant, seed): ``variant``, ``policy``, ``seed``,
    ``progressive_reward`` (mean over all passes) and ``last_pass_reward``.
    """
    return _run(_as_variants(policies), protocol or DigitsProtocol(), tuning=False)


def tune_on_digits(name: str, grid: Mapping[str, Sequence[Any]],
                   protocol: DigitsProtocol | None = None) -> tuple[dict[str, Any], pd.DataFrame]:
    """Grid search of ``name``'s hyper-parameters on the tuning seeds of ``protocol``.

    Returns the best fields (highest mean progressive reward over the tuning seeds) and
    the table of every grid point (``variant`` is the point written ``k=v,...``).
    """
    protocol = protocol or DigitsProtocol()
    if protocol.tune_seeds < 1:
        raise InvalidInputError("tune_seeds", protocol.tune_seeds, "must be >= 1 to tune")
    keys = list(grid)
    points = [dict(zip(keys, values, strict=True))
              for values in itertools.product(*(grid[k] for k in keys))]
    variants = {",".join(f"{k}={v}" for k, v in p.items()) or "defaults": {"name": name, **p}
                for p in points}
    table = _run(variants, protocol, tuning=True)
    means = table.groupby("variant", sort=False)["progressive_reward"].mean()
    best = dict(variants[str(means.idxmax())])
    best.pop("name")
    return best, table
