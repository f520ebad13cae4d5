"""Rows the store holds that are not wire events: rewards and exposures."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ExposureRow", "RewardRow"]


@dataclass(frozen=True, slots=True)
class RewardRow:
    """The reward the learner credited to one decision.

    ``joined`` — feedback arrived inside the attribution window (else the configured
    default reward was used); ``late`` — feedback arrived after the window closed.
    One row per ``decision_id``: a replay overwrites, never duplicates.

    ``reward_version`` names the α's the reward was computed with: the id of a published
    calibration version (:mod:`bandit.formats.calibration`) or ``"config"`` (the
    config's ``[reward]``). ``retried``, ``rating`` and ``conversation_length`` are the
    decision's merged proxies (None: not observed), so the reward can be recomputed
    under other α's (:func:`bandit.reward.reward_from_proxies`).
    """

    decision_id: str
    experiment_id: str
    variant: str
    arm_id: str
    unit_id: str
    reward: float
    propensity: float
    joined: bool
    late: bool
    ts_ms: int
    policy_version: str
    reward_version: str = "config"
    retried: bool | None = None
    rating: int | None = None
    conversation_length: int | None = None


@dataclass(frozen=True, slots=True)
class ExposureRow:
    """A unit's exposure to an experiment variant; the first one (min ``ts_ms``) counts."""

    unit_id: str
    experiment_id: str
    variant: str
    ts_ms: int
