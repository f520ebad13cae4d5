"""The learner's model: the policy, its arms, the frozen prior and the merged snapshots.

The published model is ``prior + Σ partition deltas``. The prior is frozen in the state
directory the first time the group starts (from the newest published snapshot if one
exists, else an empty policy), so restarting the learner never counts a delta twice.
Any consumer may publish: it merges every partition file of the shared state directory
and writes the snapshot with an atomic rename.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from bandit.arms import ArmRegistry
from bandit.config import Config
from bandit.errors import ConfigError
from consumers.state import StateDir

__all__ = ["PRIOR_NAME", "PUBLISHED_NAME", "ModelPublisher", "load_arms", "load_or_create_prior"]

PRIOR_NAME = "prior.snapshot"
PUBLISHED_NAME = "policy.snapshot"


def load_arms(path: str | os.PathLike[str] | None, config: Config) -> ArmRegistry | None:
    """Arms from a JSON list (``[{"arm_id": ..., "kind": ...}, ...]``), or None."""
    if path is None:
        return None
    try:
        rows = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError("arms", str(path), "file does not exist") from None
    except json.JSONDecodeError as exc:
        raise ConfigError("arms", str(path), f"is not valid JSON ({exc.msg})") from None
    fdim = config.policy.arm_feature_dim or None
    return ArmRegistry.from_list(rows, feature_dim=fdim)


def load_or_create_prior(config: Config, arms: ArmRegistry | None) -> tuple[Any, ArmRegistry]:
    """The frozen prior policy of the group (created once, atomically)."""
    from bandit.policies import make_policy
    from bandit.snapshot import load_policy_snapshot, save_policy_snapshot

    state = Path(config.learner.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    prior = state / PRIOR_NAME
    if prior.exists():
        policy, loaded_arms, _ = load_policy_snapshot(prior)
        if arms is not None:
            for arm in arms:
                if arm.arm_id not in loaded_arms:
                    loaded_arms.add(arm)
        return policy, loaded_arms
    published = Path(config.serve.snapshot_dir) / PUBLISHED_NAME
    if published.exists() and arms is None:
        policy, arms, _ = load_policy_snapshot(published)
    else:
        if arms is None:
            raise ConfigError(
                "arms",
                None,
                "must be given (--arms FILE) when no model snapshot "
                f"exists in {config.serve.snapshot_dir}",
            )
        policy = make_policy(config.policy, arms)
    save_policy_snapshot(prior, policy, arms, extra={"role": "learner-prior"})
    return policy, arms


class ModelPublisher:
    """Writes ``prior + Σ partition deltas`` to the serve snapshot directory."""

    def __init__(self, config: Config, arms: ArmRegistry) -> None:
        self.config = config
        self.arms = arms
        self.state = StateDir(config.learner.state_dir)
        self.out = Path(config.serve.snapshot_dir) / PUBLISHED_NAME
        self.published = 0

    def merged_delta(self, model: Any) -> Any:
        total = model.empty_statistics()
        for _, delta in sorted(self.state.load_deltas("join").items()):
            total = total.merge(delta)
        return total

    def publish(self) -> None:
        from bandit.snapshot import load_policy_snapshot, save_policy_snapshot

        policy, arms, _ = load_policy_snapshot(Path(self.config.learner.state_dir) / PRIOR_NAME)
        for arm in self.arms:
            if arm.arm_id not in arms:
                arms.add(arm)
        policy.apply(self.merged_delta(policy))
        self.out.parent.mkdir(parents=True, exist_ok=True)
        save_policy_snapshot(self.out, policy, arms, extra={"role": "learner-merged"})
        self.published += 1
