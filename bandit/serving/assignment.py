"""Deterministic, salted unit → variant assignment (sticky across servers and restarts).

u = blake2b(salt ‖ 0x00 ‖ unit_id) read as a 64-bit integer / 2⁶⁴ ∈ [0, 1), then the
variant whose cumulative normalised weight interval contains u. Nothing is stored: every
server computes the same variant for the same user from the config alone.

>>> from bandit.config import ExperimentConfig
>>> a = VariantAssigner(ExperimentConfig())
>>> a.assign("user-1").name == a.assign("user-1").name
True
"""

from __future__ import annotations

import bisect
import hashlib

from bandit.config import ExperimentConfig, VariantConfig

__all__ = ["VariantAssigner", "unit_hash"]

_SCALE = float(2**64)


def unit_hash(salt: str, unit_id: str) -> float:
    """Uniform number in [0, 1) from ``salt`` and ``unit_id`` (blake2b, 64 bits)."""
    digest = hashlib.blake2b(salt.encode() + b"\0" + unit_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


class VariantAssigner:
    """Maps units to the experiment's variants in proportion to their weights."""

    def __init__(self, experiment: ExperimentConfig) -> None:
        self.experiment = experiment
        self.variants = tuple(v for v in experiment.variants if v.weight > 0)
        total = sum(v.weight for v in self.variants)
        acc = 0.0
        bounds = []
        for v in self.variants:
            acc += v.weight / total
            bounds.append(acc)
        bounds[-1] = 1.0
        self._bounds = bounds

    def assign(self, unit_id: str) -> VariantConfig:
        u = unit_hash(self.experiment.salt, unit_id)
        i = bisect.bisect_right(self._bounds, u)
        return self.variants[min(i, len(self.variants) - 1)]
