"""``switchboard arms seed FILE``: register the initial experts in the shared arm registry.

A fresh install has no model snapshot, so neither the learner nor the servers know any arm.
The bootstrap job (a one-shot compose service, a Kubernetes Job) runs this once before
they start: it writes every arm of ``FILE`` that the registry
(``<model.dir>/arms-registry.json``, :mod:`bandit.formats.registry`) does not list yet.

It is idempotent and conservative, so it can run on every deploy: an arm already in the
registry is left exactly as it is — in particular an arm an operator retired
(``DELETE /v1/arms/{id}``) is *not* re-activated, and features changed since are not
overwritten (``POST /v1/arms`` is the way to change a registered arm). The file is
validated as a whole before anything is written.

``FILE`` is a JSON list of arms, the row form of :meth:`bandit.arms.Arm.to_row`::

    [{"arm_id": "gpt35", "kind": "baseline"}, {"arm_id": "roleplay-7b", "features": [0.9, 0.1]}]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bandit.arms import Arm, ArmRegistry
from bandit.errors import ConfigError, InvalidInputError

__all__ = ["SeedResult", "read_arms_file", "register", "seed_registry"]


def read_arms_file(path: str | Path, *, feature_dim: int | None = None) -> list[Arm]:
    """The arms listed in the JSON file ``path``, validated (ids unique, features of
    ``feature_dim`` when given); a bad file raises :class:`ConfigError` naming it."""
    try:
        rows = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("arms", str(path), "file does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("arms", str(path), f"cannot be read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError("arms", str(path), f"is not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(rows, list):
        raise ConfigError("arms", str(path), f"must be a JSON list of arms, not {type(rows).__name__}")
    arms: list[Arm] = []
    seen: set[str] = set()
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or "arm_id" not in row:
            raise ConfigError(f"arms[{i}]", row, f"in {path} must be an object with an arm_id")
        try:
            arm = Arm.from_row(row)
        except (InvalidInputError, TypeError, ValueError) as exc:
            raise ConfigError(f"arms[{i}]", row, f"in {path} is not a valid arm ({exc})") from None
        if arm.arm_id in seen:
            raise ConfigError(f"arms[{i}].arm_id", arm.arm_id, f"is listed twice in {path}")
        seen.add(arm.arm_id)
        arms.append(arm)
    try:
        ArmRegistry(arms, feature_dim=feature_dim)  # the features' dimension, checked once
    except InvalidInputError as exc:
        raise ConfigError("arms", str(path), f"has an invalid arm ({exc})") from None
    return arms


class SeedResult:
    """What :func:`seed_registry` did: arms written, arms already present, final revision."""

    def __init__(self, registered: list[str], present: list[str], revision: int, path: Path) -> None:
        self.registered = registered
        self.present = present
        self.revision = revision
        self.path = path

    def __str__(self) -> str:
        return (f"{len(self.registered)} registered, {len(self.present)} already present "
                f"({self.path}, revision {self.revision})")


def seed_registry(directory: str | Path, arms: list[Arm]) -> SeedResult:
    """Register each of ``arms`` the registry in ``directory`` does not list yet."""
    from bandit.formats.registry import RegistryFile

    registry = RegistryFile(directory)
    current = registry.read()
    registered, present = [], []
    state = current
    for arm in arms:
        if arm.arm_id in current:
            present.append(arm.arm_id)
            continue
        state = registry.register(arm)
        registered.append(arm.arm_id)
    return SeedResult(registered, present, state.revision, registry.path)


def _seed(args: argparse.Namespace) -> int:
    from bandit.config import load_config

    config = load_config(getattr(args, "config", None))
    arms = read_arms_file(args.file, feature_dim=config.policy.arm_feature_dim or None)
    if not arms:
        raise ConfigError("arms", args.file, "names no arm (a fresh install needs at least one)")
    fixed = {v.name for v in config.experiment.variants if v.policy == "fixed"}
    if fixed and config.policy.fixed_arm not in {a.arm_id for a in arms}:
        from bandit.formats.registry import RegistryFile

        if config.policy.fixed_arm not in RegistryFile(config.model.dir).read():
            raise ConfigError("policy.fixed_arm", config.policy.fixed_arm,
                              f"is served by variant(s) {sorted(fixed)} but is neither in {args.file} "
                              f"nor in the registry")
    result = seed_registry(config.model.dir, arms)
    print(f"arms seed: {result}")
    return 0


def register(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "arms", help="manage the shared arm registry (bootstrap)",
        description="The shared arm registry (<model.dir>/arms-registry.json) that the "
                    "servers and the learner follow; see deploy/OPERATIONS.md.")
    sub = p.add_subparsers(dest="arms_command", metavar="ACTION", required=True)
    seed = sub.add_parser(
        "seed", help="register the arms of FILE that the registry does not list yet (idempotent)",
        description="Register every arm of FILE (a JSON list of {arm_id, kind, features}) that the "
                    "registry does not list yet. Arms already there, retired ones included, are left "
                    "unchanged, so it is safe to run on every deploy.")
    seed.add_argument("file", help="JSON list of arms")
    seed.set_defaults(func=_seed)
