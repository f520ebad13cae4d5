"""The served model: one policy per variant over a live arm registry, hot-reloaded.

The learner publishes ``<model.dir>/policy.snapshot`` (atomic rename). A
background thread polls its ``(mtime, size)`` every ``reload_interval_s``; on change it
loads the snapshot *off* the request path, builds a complete new :class:`ServedModel`
and swaps one reference — requests already running finish on the old model, new ones
use the new one, none is dropped.

Without a snapshot the server serves the *prior* (untrained) policies; if a snapshot is
corrupt, the last good model is kept (or the prior, if there is none) and the error is
reported by ``/healthz``. A variant policy that cannot be built (e.g. ``hybrid_linucb``
without arm features) falls back to ``uniform``.

A snapshot whose learner had applied a published reward calibration names it
(``extra["reward_version"]``); the served ``policy_version`` is then
``<policy version>+<calibration id>`` (:func:`served_version`), what every decision logs.

Arms registered or retired at run time live in the shared registry file
(:mod:`bandit.formats.registry`, next to the snapshot). The same poll stats it too; its arms
are an overlay applied over the snapshot's (and the start-up) arms, re-applied to
every reloaded model. ``/v1/arms`` writes the file first (:meth:`ModelHolder.register`,
:meth:`ModelHolder.retire`) and applies the result here before answering; states are
applied in revision order, so a slow writer never rolls back a newer change.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from bandit.arms import Arm, ArmRegistry
from bandit.config import ExperimentConfig, PolicyConfig
from bandit.errors import InvalidInputError, SnapshotError, SwitchboardError
from bandit.formats.paths import snapshot_path
from bandit.formats.registry import RegistryFile, RegistryState
from bandit.policies.base import AdditivePolicy, Policy

__all__ = ["ModelHolder", "ServedModel", "served_version"]

log = logging.getLogger(__name__)


#: where a served model's learnt state comes from
ModelSource = Literal["snapshot", "prior"]


@dataclass
class ServedModel:
    """Everything one request needs, swapped together, atomically: the arms, one policy per variant
    (over those arms), and where their learnt state comes from."""

    arms: ArmRegistry
    #: variant name -> the policy that allocates inside it
    policies: dict[str, Policy]
    policy_version: str
    source: ModelSource
    dim: int
    loaded_at: float
    snapshot_mtime: float | None = None
    fallbacks: dict[str, str] = field(default_factory=dict)
    eligible_cache: dict[tuple[str, int], tuple[str, ...]] = field(default_factory=dict)

    def variant_eligible(self, variant: str, kinds: tuple[str, ...]) -> tuple[str, ...]:
        """Active arms of ``kinds`` (cached per registry version)."""
        key = (variant, self.arms.version)
        hit = self.eligible_cache.get(key)
        if hit is None:
            if len(self.eligible_cache) > 64:
                self.eligible_cache.clear()
            hit = tuple(a.arm_id for a in self.arms.active(kinds))
            self.eligible_cache[key] = hit
        return hit


def served_version(policy_version: str, meta: Mapping[str, Any]) -> str:
    """The ``policy_version`` decisions served from a snapshot carry: the policy's version,
    then ``+`` and the reward calibration id the learner had applied when it wrote the
    snapshot (``meta["extra"]["reward_version"]``, :mod:`bandit.formats.calibration`), so
    each logged decision names the α's its policy was learnt under. Without one (the
    config's α's, or a snapshot from before calibrations), the policy's version alone.

    >>> served_version("linucb:7", {"extra": {"reward_version": "cal-2-ab12cd34"}})
    'linucb:7+cal-2-ab12cd34'
    >>> served_version("linucb:7", {"extra": {"role": "learner-merged"}})
    'linucb:7'
    """
    extra = meta.get("extra")
    cal = extra.get("reward_version") if isinstance(extra, Mapping) else None
    if isinstance(cal, str) and cal and cal != "config":
        return f"{policy_version}+{cal}"
    return policy_version


def _build_policies(
    base: PolicyConfig, experiment: ExperimentConfig, arms: ArmRegistry,
    snapshot_policy: Policy | None,
) -> tuple[dict[str, Policy], dict[str, str]]:
    """Each variant's policy, and the variants whose policy could not be built (they get
    ``uniform``). A variant running the snapshot's policy serves it as loaded; another
    additive policy gets the snapshot's statistics when they fit it."""
    from bandit.policies import make_policy

    policies: dict[str, Policy] = {}
    fallbacks: dict[str, str] = {}
    for variant in experiment.variants:
        name = variant.policy
        policy: Policy
        try:
            if snapshot_policy is not None and snapshot_policy.name == name:
                policy = snapshot_policy
            else:
                policy = make_policy(dataclasses.replace(base, name=name), arms)
                if isinstance(policy, AdditivePolicy) \
                        and isinstance(snapshot_policy, AdditivePolicy):
                    stats = snapshot_policy.statistics
                    # another family's statistics (a VW model beside a linear control)
                    # do not fit: that variant serves its prior
                    if isinstance(stats, type(policy.empty_statistics())):
                        policy.set_statistics(stats)
        except (SwitchboardError, AttributeError, ValueError) as exc:
            fallbacks[variant.name] = f"{name}: {exc}"
            policy = make_policy(dataclasses.replace(base, name="uniform"), arms)
        policies[variant.name] = policy
    return policies, fallbacks


class ModelHolder:
    """Owns the current :class:`ServedModel`, the arm overlay and the reload thread."""

    def __init__(self, policy_config: PolicyConfig, experiment: ExperimentConfig,
                 snapshot_dir: str | os.PathLike[str], initial_arms: list[Arm],
                 reload_interval_s: float = 1.0,
                 registry: RegistryFile | None = None) -> None:
        self.policy_config = policy_config
        self.experiment = experiment
        self.path = snapshot_path(snapshot_dir)
        self.reload_interval_s = reload_interval_s
        self.initial_arms = list(initial_arms)
        self.snapshot_error: str | None = None
        self.reloads = 0
        self.failed_reloads = 0
        self.registry = registry if registry is not None else RegistryFile(snapshot_dir)
        self.registry_revision = 0
        self._overlay: dict[str, Arm] = {}
        self._lock = threading.Lock()
        self._seen: tuple[int, int] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.model = self._prior()
        self.check()
        self.check_registry()

    # ---------------------------------------------------------------- building
    def _prior(self) -> ServedModel:
        fdim = self.policy_config.arm_feature_dim or None
        arms = ArmRegistry(feature_dim=fdim)
        for arm in self.initial_arms:
            arms.add(arm)
        self._apply_overlay(arms)
        policies, fallbacks = _build_policies(self.policy_config, self.experiment, arms, None)
        return ServedModel(arms, policies, "prior", "prior", self.policy_config.dim,
                           time.time(), None, fallbacks)

    def _from_snapshot(self) -> ServedModel:
        from bandit.formats.snapshot import load_policy_snapshot

        loaded, arms, meta = load_policy_snapshot(self.path)
        if not isinstance(loaded, Policy):
            raise SnapshotError(f"{self.path}: holds a {type(loaded).__name__}, not a policy")
        policy: Policy = loaded
        for arm in self.initial_arms:
            if arm.arm_id not in arms:
                arms.add(arm)
        self._apply_overlay(arms)
        config = getattr(policy, "config", None)
        base = config if isinstance(config, PolicyConfig) else self.policy_config
        policies, fallbacks = _build_policies(base, self.experiment, arms, policy)
        version = served_version(str(meta.get("policy_version") or policy.version), meta)
        return ServedModel(arms, policies, version, "snapshot", int(policy.dim), time.time(),
                           self.path.stat().st_mtime, fallbacks)

    # ---------------------------------------------------------------- reloading
    def check(self) -> bool:
        """Reload if the snapshot file changed; returns True when a new model was swapped in."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            if self.model.source == "snapshot":
                self.snapshot_error = f"{self.path} disappeared; serving the last loaded model"
            return False
        except OSError as exc:
            self.snapshot_error = f"{self.path}: {exc}"
            return False
        seen = (st.st_mtime_ns, st.st_size)
        if seen == self._seen:
            return False
        self._seen = seen
        try:
            with self._lock:
                model = self._from_snapshot()
                self.model = model
        except (SnapshotError, SwitchboardError, OSError, ValueError, KeyError) as exc:
            self.failed_reloads += 1
            self.snapshot_error = str(exc)
            log.warning("snapshot reload failed, keeping %s model: %s", self.model.source, exc)
            return False
        self.snapshot_error = None
        self.reloads += 1
        return True

    def start(self) -> ModelHolder:
        self._thread = threading.Thread(target=self._run, name="snapshot-reloader", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.reload_interval_s):
            try:
                self._run_checks()
            except Exception as exc:  # the poller must survive anything
                self.snapshot_error = f"reloader: {exc}"

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def check_registry(self) -> bool:
        """Apply the shared registry file if it changed; True when a new revision was applied."""
        state = self.registry.refresh()
        if state is None:
            return False
        return self._apply_state(state)

    def _run_checks(self) -> None:
        self.check()
        self.check_registry()

    # ---------------------------------------------------------------- arms
    def _apply_overlay(self, arms: ArmRegistry) -> None:
        for arm in self._overlay.values():
            try:
                arms.add(arm)  # a no-op for an arm already registered as it is
            except InvalidInputError as exc:  # e.g. features of another length
                log.warning("registry arm %s not applied: %s", arm.arm_id, exc)

    def _apply_state(self, state: RegistryState) -> bool:
        with self._lock:
            if state.revision <= self.registry_revision:
                return False  # a newer revision (which includes this one) is applied
            self.registry_revision = state.revision
            self._overlay = {arm.arm_id: arm for arm in state.arms}
            self._apply_overlay(self.model.arms)
            return True

    def check_features(self, arm: Arm) -> None:
        """Raise :class:`InvalidInputError` if ``arm`` cannot join the served registry."""
        self.model.arms.check(arm)

    def register(self, arm: Arm) -> None:
        """Write ``arm`` to the shared registry file, then serve it (blocking file I/O).

        Raises :class:`~bandit.errors.RegistryError` (nothing changed anywhere) when the
        file cannot be updated.
        """
        self.check_features(arm)
        self._apply_state(self.registry.register(arm))

    def retire(self, arm_id: str) -> Arm:
        """Mark ``arm_id`` retired in the shared registry file, then here; returns the arm.

        Raises :class:`~bandit.errors.UnknownArmError` for an id neither this server nor
        the registry knows.
        """
        known = self.model.arms.get(arm_id) if arm_id in self.model.arms else None
        state = self.registry.retire(arm_id, known)
        self._apply_state(state)
        return self.model.arms.get(arm_id)

    def snapshot_age_s(self) -> float:
        m = self.model
        return -1.0 if m.snapshot_mtime is None else max(0.0, time.time() - m.snapshot_mtime)
