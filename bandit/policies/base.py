"""The Policy protocol every allocation policy implements.

A policy chooses an arm for a context with an explicit RNG and returns a
:class:`Choice` carrying the propensity — the probability the policy gave the chosen
arm — because offline evaluation of any other policy is impossible without it.

Learnt state is *sufficient statistics* (:class:`Statistics`): additive, so a Kafka
partition can accumulate its own delta, replicas merge by adding, and forgetting
scales. The learner uses ``empty_statistics`` / ``accumulate`` / ``apply``; the
allocation server replaces the state wholesale with ``set_statistics`` on hot reload.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

__all__ = ["Choice", "Policy", "Statistics"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Choice:
    """The outcome of one ``choose`` call.

    ``arms`` are the eligible arm ids in the order of ``probabilities`` and ``scores``;
    ``probabilities`` sum to 1 and each is >= the policy's probability floor;
    ``propensity == probabilities[arms.index(arm_id)]``.
    """

    arm_id: str
    propensity: float
    policy_version: str
    arms: tuple[str, ...]
    probabilities: FloatArray
    scores: FloatArray

    def scores_by_arm(self) -> dict[str, float]:
        return {a: float(s) for a, s in zip(self.arms, self.scores, strict=True)}


@runtime_checkable
class Statistics(Protocol):
    """Additive learnt state: ``merge`` adds, ``scaled`` multiplies (forgetting)."""

    def merge(self, other: Statistics) -> Statistics: ...

    def scaled(self, factor: float) -> Statistics: ...

    def to_arrays(self) -> Mapping[str, np.ndarray]: ...


@runtime_checkable
class Policy(Protocol):
    """What the allocation server, the learner and the simulator rely on."""

    name: str

    @property
    def version(self) -> str:
        """Identifier of the learnt state the next choice is made from (logged on decisions)."""
        ...

    @property
    def dim(self) -> int: ...

    def choose(
        self,
        context: npt.ArrayLike,
        rng: np.random.Generator,
        eligible: Sequence[str] | None = None,
    ) -> Choice: ...

    def update(self, arm_id: str, context: npt.ArrayLike, reward: float) -> None: ...

    def update_batch(
        self, arm_ids: Sequence[str], contexts: npt.ArrayLike, rewards: npt.ArrayLike
    ) -> None: ...

    def empty_statistics(self) -> Statistics: ...

    def accumulate(
        self,
        stats: Statistics,
        arm_ids: Sequence[str],
        contexts: npt.ArrayLike,
        rewards: npt.ArrayLike,
    ) -> Statistics: ...

    @property
    def statistics(self) -> Statistics: ...

    def set_statistics(self, stats: Statistics) -> None: ...

    def apply(self, delta: Statistics) -> None: ...
