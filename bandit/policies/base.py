"""The protocols every allocation policy implements.

A policy chooses an arm for a context with an explicit RNG and returns a
:class:`Choice` carrying the propensity — the probability the policy gave the chosen
arm — because offline evaluation of any other policy is impossible without it.

:class:`Policy` is what every policy does: choose, learn, snapshot. Policies whose learnt
state is *additive* also implement :class:`AdditivePolicy`: their state is
:class:`Statistics` (sums that merge by adding), so a Kafka partition can accumulate its
own delta (``empty_statistics`` / ``accumulate``), the learner folds merged deltas in
(``apply``), and the allocation server replaces the state wholesale on hot reload
(``set_statistics``). Callers test the capability with ``isinstance(p, AdditivePolicy)``
(both protocols are runtime-checkable) instead of catching errors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

__all__ = ["AdditivePolicy", "Choice", "Policy", "Statistics"]

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
    """Additive learnt state: ``merge`` adds two deltas (associative; the sum of two
    partitions' work), ``to_arrays`` serialises for partition state files."""

    def merge(self, other: Statistics) -> Statistics: ...

    def to_arrays(self) -> Mapping[str, np.ndarray]: ...


@runtime_checkable
class Policy(Protocol):
    """What the allocation server, the replay and the simulator rely on."""

    @property
    def name(self) -> str:
        """The policy's name in the ``[policy]`` section (``linucb``, ``vw``, ...)."""
        ...

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

    def snapshot_arrays(self) -> dict[str, np.ndarray]:
        """The learnt state as named arrays (:mod:`bandit.formats.snapshot` writes them)."""
        ...

    def restore_arrays(self, arrays: dict[str, np.ndarray]) -> None: ...


@runtime_checkable
class AdditivePolicy(Policy, Protocol):
    """A policy whose learnt state is additive :class:`Statistics` (partitioned learning)."""

    def empty_statistics(self) -> Statistics:
        """A zero delta to accumulate a partition's events into."""
        ...

    def accumulate(
        self,
        stats: Statistics,
        arm_ids: Sequence[str],
        contexts: npt.ArrayLike,
        rewards: npt.ArrayLike,
        *,
        propensities: npt.ArrayLike | None = None,
        eligible: Sequence[Sequence[str] | None] | None = None,
    ) -> Statistics:
        """Add a batch of events into ``stats`` (in place where possible) and return it.

        ``propensities`` / ``eligible`` are each decision's logged probability of its arm
        and its eligible arms (None: not logged), for policies that learn off-policy from
        them (Vowpal Wabbit); a policy that does not need them ignores them.
        """
        ...

    def statistics_from_arrays(self, arrays: Mapping[str, np.ndarray]) -> Statistics:
        """Rebuild statistics written by their ``to_arrays`` (partition state files)."""
        ...

    @property
    def statistics(self) -> Statistics: ...

    def set_statistics(self, stats: Statistics) -> None: ...

    def apply(self, delta: Statistics) -> None:
        """Fold a (merged) delta into the live state."""
        ...
