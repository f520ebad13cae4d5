"""Reward from message-level proxies: reward = Σ α_i · proxy_i / Σ α_i over observed proxies.

Each proxy is normalised to [0, 1] with 1 = good:

* retry: ``1 - retried`` (a retried answer failed);
* rating: ``(stars - 1) / 4`` for 1..5 stars;
* conversation length after the message: ``min(length, cap) / cap``.

Weights are renormalised over the proxies present, so a missing rating does not
read as a bad rating. No proxy at all gives the configured default reward.

>>> from bandit.config import RewardConfig
>>> reward_from_proxies(RewardConfig(), retried=False, rating=5, conversation_length=20)
1.0
>>> reward_from_proxies(RewardConfig(), retried=True)
0.0
"""

from __future__ import annotations

import math

from bandit.config import RewardConfig
from bandit.errors import InvalidInputError

__all__ = ["reward_from_proxies"]


def reward_from_proxies(
    config: RewardConfig,
    *,
    retried: bool | None = None,
    rating: int | None = None,
    conversation_length: int | None = None,
) -> float:
    """Combine the observed proxies into one reward in [0, 1]."""
    total = 0.0
    weight = 0.0
    if retried is not None:
        if not isinstance(retried, bool):
            raise InvalidInputError("retried", retried, "must be a bool")
        total += config.alpha_retry * (0.0 if retried else 1.0)
        weight += config.alpha_retry
    if rating is not None:
        if isinstance(rating, bool) or not isinstance(rating, int) or not 1 <= rating <= 5:
            raise InvalidInputError("rating", rating, "must be an integer star rating in [1, 5]")
        total += config.alpha_rating * (rating - 1) / 4.0
        weight += config.alpha_rating
    if conversation_length is not None:
        if (
            isinstance(conversation_length, bool)
            or not isinstance(conversation_length, int | float)
            or not math.isfinite(conversation_length)
            or conversation_length < 0
        ):
            raise InvalidInputError(
                "conversation_length", conversation_length, "must be a finite number >= 0"
            )
        total += config.alpha_length * min(conversation_length, config.length_cap) / config.length_cap
        weight += config.alpha_length
    if weight == 0.0:
        return config.default_reward
    return total / weight
