"""The learner's model: the policy, its arms, the frozen prior and the merged snapshots.

The published model is ``prior + Σ partition deltas`` — for a Vowpal Wabbit policy the
prior's model with the partitions' model deltas merged by VW's model merge and applied
(:class:`bandit.adapters.vw.PartitionedVWPolicy`). The prior is frozen in the state
directory the first time the group starts (from the newest published snapshot if one
exists, else an empty policy), so restarting the learner never counts a delta twice.
Any consumer may publish: it merges every partition file of the shared state directory
and writes the snapshot with an atomic rename.

Arms registered at run time reach the learner through the shared arm registry file
(:mod:`bandit.formats.registry`) that the allocation servers write before serving a new arm:
:class:`ArmFollower` re-reads it (one ``os.stat``, a read only if it changed) when a
decision names an arm the learner does not know, and adds what it finds to the
policy's arms — which the join partitions and the published snapshot share.

Published reward α's (``<model.dir>/reward-calibration.json``,
:mod:`bandit.formats.calibration`) reach the join partitions through
:class:`RewardCalibration`: it re-reads the file when it changed (checked at most once a
second, from the consuming loop's closes, never per event), keeps the last good history
when a new file is refused, and remembers the newest version that scored a decision,
which the published snapshot names (``extra["reward_version"]``) so the servers stamp it
into each decision's ``policy_version``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from bandit.arms import ArmRegistry
from bandit.config import Config
from bandit.errors import ConfigError, InvalidInputError
from bandit.formats.calibration import (
    CONFIG_VERSION,
    CalibrationFile,
    CalibrationHistory,
    CalibrationVersion,
)
from bandit.formats.paths import prior_path, snapshot_path
from bandit.formats.registry import RegistryFile, RegistryState
from bandit.formats.state import StateDir, read_key

__all__ = [
    "ArmFollower",
    "RewardCalibration",
    "SnapshotWriter",
    "load_arms",
    "load_or_create_prior",
]

log = logging.getLogger(__name__)


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


def load_or_create_prior(
    config: Config, arms: ArmRegistry | None, registry: RegistryFile | None = None
) -> tuple[Any, ArmRegistry]:
    """The frozen prior policy of the group (created once, atomically).

    On a first start the arms come from ``arms`` (``--arms``), else from the newest
    published snapshot, else from the shared arms registry file (``registry``: what the
    servers' ``POST /v1/arms`` or a bootstrap step registered).
    """
    from bandit.formats.snapshot import load_policy_snapshot, save_policy_snapshot
    from bandit.policies import make_policy

    state = Path(config.learner.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    key = read_key(config.learner.state_hmac_key_file)
    prior = prior_path(state)
    if prior.exists():
        policy, loaded_arms, _ = load_policy_snapshot(prior, key=key)
        if arms is not None:
            for arm in arms:
                if arm.arm_id not in loaded_arms:
                    loaded_arms.add(arm)
        return _additive(policy), loaded_arms
    published = snapshot_path(config.model.dir)
    if published.exists() and arms is None:
        policy, arms, _ = load_policy_snapshot(published)
    else:
        if arms is None and registry is not None:
            arms = _registry_arms(registry, config)
        if arms is None:
            raise ConfigError(
                "arms",
                None,
                "must be given (--arms FILE) when no model snapshot exists in "
                f"{config.model.dir} and the arms registry "
                f"({registry.path if registry is not None else 'not given'}) names no arm",
            )
        policy = make_policy(config.policy, arms)
    _additive(policy)
    save_policy_snapshot(prior, policy, arms, extra={"role": "learner-prior"}, key=key)
    return policy, arms


def _additive(policy: Any) -> Any:
    """The learner merges partition deltas, so its policy must be additive."""
    from bandit.policies import AdditivePolicy

    if not isinstance(policy, AdditivePolicy):
        raise ConfigError(
            "policy.name", policy.name,
            "is not additive: its state cannot be merged across learner partitions (use a "
            "linear policy, or vw with policy.vw_exploration epsilon, bag, softmax, regcb "
            "or regcbopt)",
        )
    return policy


def _registry_arms(registry: RegistryFile, config: Config) -> ArmRegistry | None:
    """The arms of the shared registry file, or None when it names none."""
    from bandit.errors import RegistryError

    try:
        state = registry.read()
    except RegistryError as exc:
        raise ConfigError("arms", str(registry.path), f"registry unreadable ({exc})") from None
    if not state.arms:
        return None
    arms = ArmRegistry.from_list(
        [arm.to_row() for arm in state.arms], feature_dim=config.policy.arm_feature_dim or None
    )
    log.info("first start: %d arms from the arms registry %s", len(arms), registry.path)
    return arms


class ArmFollower:
    """Keeps the learner's arms (``arms``, shared with the policy) up with the registry file.

    Arms are only ever added or updated (kind, content features, active flag), never
    removed: the registry never deletes an arm, and a retired arm's late decisions are
    still learnt from.
    """

    def __init__(self, arms: ArmRegistry, registry: RegistryFile) -> None:
        self.arms = arms
        self.registry = registry
        self._lock = threading.Lock()
        self._error: str | None = None

    def sync(self) -> None:
        """Merge the registry file into ``arms`` if it changed since the last look."""
        with self._lock:
            state = self.registry.refresh()
            if self.registry.error != self._error:
                self._error = self.registry.error
                if self._error is not None:
                    log.warning("arms registry unreadable, keeping the last good one: %s",
                                self._error)
            if state is not None:
                self._merge(state)

    def known(self, arm_id: str) -> bool:
        """Whether ``arm_id`` is a learner arm, looking in the registry file if needed."""
        if arm_id in self.arms:
            return True
        self.sync()
        return arm_id in self.arms

    def _merge(self, state: RegistryState) -> None:
        for arm in state.arms:
            new = arm.arm_id not in self.arms
            try:
                self.arms.add(arm)  # a no-op for an arm already registered as it is
            except InvalidInputError as exc:  # e.g. content features of another length
                log.warning("registry arm %s ignored: %s", arm.arm_id, exc)
                continue
            if new:
                log.info("learning arm %s (%s) from the arms registry", arm.arm_id, arm.kind)


class RewardCalibration:
    """The published reward calibration as the join partitions see it
    (:class:`consumers.join.CalibrationSource`).

    :meth:`in_force` polls the file (:class:`bandit.formats.calibration.CalibrationFile`:
    a stat at most every ``min_interval_s``, a read only when ``(mtime_ns, size)``
    changed); a refused file is logged once per change, counted in ``metrics``'
    ``calibration_errors`` and the previous history stays in force. :meth:`applied`
    records the newest version (by number) that scored a decision in this process:
    ``metrics.reward_calibration`` shows it and the published snapshot names it. A
    restarted learner starts from what the last snapshot named (``seed``).
    """

    def __init__(self, path: str | os.PathLike[str], *, key: bytes | None = None,
                 metrics: Any = None, min_interval_s: float = 1.0) -> None:
        self.file = CalibrationFile(path, key=key, min_interval_s=min_interval_s)
        self.metrics = metrics
        self.newest_applied: str | None = None
        self._applied_number = 0
        self._errors = 0
        self._lock = threading.Lock()

    def in_force(self) -> CalibrationHistory:
        self.file.poll()
        if self.file.errors != self._errors:
            with self._lock:
                new, self._errors = self.file.errors - self._errors, self.file.errors
            if self.metrics is not None:
                self.metrics.calibration_errors.inc(new)
        return self.file.history

    def applied(self, version: CalibrationVersion) -> None:
        if version.version < self._applied_number or self.newest_applied == version.id:
            return  # the common case, per close: nothing newer
        with self._lock:
            if version.version < self._applied_number:
                return
            if self.newest_applied != version.id:
                log.info("reward calibration %s now scores decisions from %d ms on "
                         "(alpha_retry %g, alpha_rating %g, alpha_length %g)", version.id,
                         version.effective_from_ms, version.reward.alpha_retry,
                         version.reward.alpha_rating, version.reward.alpha_length)
            self._applied_number, self.newest_applied = version.version, version.id
        if self.metrics is not None:
            self.metrics.reward_calibration(version.version, version.id)

    def seed(self, reward_version: Any) -> None:
        """Start from the version a previous snapshot named (a calibration id), if it is
        in the current history."""
        if not isinstance(reward_version, str) or reward_version == CONFIG_VERSION:
            return
        self.in_force()
        version = self.file.history.get(reward_version)
        if version is not None and self.newest_applied is None:
            self.applied(version)


class SnapshotWriter:
    """Writes ``prior + Σ partition deltas`` to the serve snapshot directory, naming the
    newest reward calibration version applied (``calibration``) in its ``extra``."""

    def __init__(self, config: Config, arms: ArmRegistry,
                 follower: ArmFollower | None = None,
                 calibration: RewardCalibration | None = None) -> None:
        self.config = config
        self.arms = arms
        self.follower = follower
        self.calibration = calibration
        self.key = read_key(config.learner.state_hmac_key_file)
        self.state = StateDir(config.learner.state_dir, key=self.key)
        self.out = snapshot_path(config.model.dir)
        self.written = 0
        _remove_stale(self.out)
        if calibration is not None and self.out.exists():
            calibration.seed(_published_reward_version(self.out, self.key))

    def merged_delta(self, model: Any) -> Any:
        """The sum of every partition's saved delta, as ``model``'s statistics.

        Each saved delta (:data:`bandit.formats.state.StateDelta`) is rebuilt by the
        policy (``statistics_from_arrays``: a Vowpal Wabbit delta on the prior's model)
        and the partitions are merged in partition order, starting from the first (an
        empty delta only when no partition has saved one).
        """
        deltas = [
            model.statistics_from_arrays(delta.to_arrays())
            for _, delta in sorted(self.state.load_deltas("join").items())
        ]
        if not deltas:
            return model.empty_statistics()
        total = deltas[0]
        for delta in deltas[1:]:
            total = total.merge(delta)
        return total

    def write(self) -> None:
        """Merge the partitions' saved deltas into the prior and write the snapshot the
        servers hot-reload (atomically, by :func:`bandit.formats.snapshot.save_policy_snapshot`)."""
        from bandit.formats.snapshot import load_policy_snapshot, save_policy_snapshot

        if self.follower is not None:
            # other learner processes may have learnt arms whose deltas are merged here
            self.follower.sync()
        policy, arms, _ = load_policy_snapshot(
            prior_path(self.config.learner.state_dir), key=self.key
        )
        for arm in self.arms:
            arms.add(arm)
        policy.apply(self.merged_delta(policy))
        self.out.parent.mkdir(parents=True, exist_ok=True)
        # authenticated under the state key when one is configured; a server without the
        # key still reads it by its checksum (bandit.formats.snapshot)
        extra: dict[str, Any] = {"role": "learner-merged"}
        applied = self.calibration.newest_applied if self.calibration is not None else None
        if applied is not None:
            extra["reward_version"] = applied
        save_policy_snapshot(self.out, policy, arms, extra=extra, key=self.key)
        self.written += 1


def _published_reward_version(path: Path, key: bytes | None) -> Any:
    """The reward version a published snapshot names (None when it names none or cannot be
    read: the next write replaces it)."""
    from bandit.errors import SnapshotError
    from bandit.formats.snapshot import load_snapshot

    try:
        _, meta = load_snapshot(path, key=key)
    except SnapshotError as exc:
        log.info("published snapshot not read for its reward version: %s", exc)
        return None
    extra = meta.get("extra")
    return extra.get("reward_version") if isinstance(extra, dict) else None


def _remove_stale(target: Path, older_than_s: float = 300.0) -> None:
    """Remove ``write_atomic`` temporary files of ``target`` a killed writer left (any
    learner may publish, so only old ones: a live writer's file is seconds old)."""
    import time

    now = time.time()
    for p in target.parent.glob(f".{target.name}.*.tmp"):
        try:
            if now - p.stat().st_mtime >= older_than_s:
                p.unlink()
                log.info("removed stale temporary file %s", p)
        except FileNotFoundError:
            continue
