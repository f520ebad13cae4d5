"""Vowpal Wabbit contextual-bandit policy (``vowpal_wabbit_next``) behind the Policy protocol.

The workspace runs ``--cb_explore_adf`` with the exploration algorithm of
:class:`~bandit.config.VWParams` ``vw_exploration`` (``squarecb`` by default; ``epsilon``
uses ``epsilon``;
``bag``, ``cover``, ``softmax``, ``regcb``, ``regcbopt`` also accepted) and
``--interactions xa``: the shared namespace ``x`` holds the context (``i:x_i``), each
action line the arm indicator in namespace ``a``, so the model is linear in x per arm,
like disjoint LinUCB.

* ``choose`` samples from VW's pmf mixed with the probability floor,
  p = f + (1 - K·f)·pmf with f = min(probability_floor, 1/K); the propensity is p of
  the drawn arm. ``Choice.scores`` is VW's pmf.
* ``update`` learns the cost ``-reward`` with the probability logged for that decision:
  pass ``propensity=`` (and ``eligible=``) explicitly, or the policy uses what it
  remembers from its own recent ``choose`` calls for the same context and arm, or
  1/K of the currently active arms as a last resort.
* State is a VW model. Snapshots store the serialised workspace.
* Partitioned learning goes through vowpal-wabbit-next's delta API: a partition learns
  into a copy of the base model and its statistics are the :class:`VWDelta` to it
  (``calculate_delta``); deltas merge with ``merge_deltas`` — VW's model merge, which
  averages each weight over the partitions weighted by their adaptive (AdaGrad)
  accumulators and sums the accumulators — and ``apply`` folds one in
  (``apply_delta``). So with :func:`make_vw_policy` an exploration whose whole state is
  in the weights (``epsilon``, ``bag``, ``softmax``, ``regcb``, ``regcbopt``) gives a
  :class:`PartitionedVWPolicy`, an :class:`~bandit.policies.base.AdditivePolicy` the
  partitioned learner can learn like the linear policies. ``squarecb`` and ``cover``
  keep an exploration counter that a delta does not carry (applying one restarts their
  exploration from uniform), so they give a plain :class:`VWPolicy`
  (:class:`~bandit.policies.base.Policy` only: one learner owns the model).
* Arms are VW features named from a hash of the arm id, so that every process (each
  partition's learner) names an arm alike and merged deltas agree.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, cast

import numpy as np
import numpy.typing as npt
import vowpal_wabbit_next as vw

from bandit.arms import ArmRegistry
from bandit.config import PolicyConfig, VWParams
from bandit.errors import ConfigError, InvalidInputError, UnknownArmError
from bandit.linear import _as_reward, as_context, as_contexts, as_rewards
from bandit.policies.base import Choice

__all__ = ["PartitionedVWPolicy", "VWDelta", "VWPolicy", "make_vw_policy", "vw_args"]

_EXPLORATION = {
    "squarecb": lambda c: ["--squarecb"],
    "epsilon": lambda c: ["--epsilon", repr(c.epsilon)],
    "bag": lambda c: ["--bag", "5"],
    "cover": lambda c: ["--cover", "5"],
    "softmax": lambda c: ["--softmax", "--lambda", "10"],
    "regcb": lambda c: ["--regcb"],
    "regcbopt": lambda c: ["--regcbopt"],
}
_MEMO_MAX = 20_000
#: explorations whose whole state is in the weights, so that a model delta carries it
MERGEABLE_EXPLORATIONS = frozenset({"epsilon", "bag", "softmax", "regcb", "regcbopt"})


def vw_args(config: VWParams) -> list[str]:
    """VW command line for ``config`` (raises ConfigError on an unknown exploration)."""
    try:
        explore = _EXPLORATION[config.vw_exploration](config)
    except KeyError:
        raise ConfigError(
            "policy.vw_exploration", config.vw_exploration, f"must be one of {sorted(_EXPLORATION)}"
        ) from None
    return ["--cb_explore_adf", *explore, "--interactions", "xa", "--quiet"]


class VWPolicy:
    """``cb_explore_adf`` policy over the live arm registry."""

    name: ClassVar[str] = "vw"

    def __init__(self, params: VWParams, arms: ArmRegistry,
                 model_data: bytes | None = None) -> None:
        if not isinstance(params, VWParams):
            raise ConfigError("policy", type(params).__name__, "vw takes VWParams")
        config = self.params = params
        self.arms = arms
        self._dim = config.dim
        self._args = vw_args(config)
        self._ws = vw.Workspace(self._args, model_data=model_data)
        self._parser = vw.TextFormatParser(self._ws)
        self._fmt = " ".join(f"{i}:%.9g" for i in range(config.dim))
        self._events = 0
        # arm id -> stable VW feature name (arm ids may contain characters VW reserves)
        self._feature: dict[str, str] = {}
        self._action_lines: dict[str, vw.Example] = {}
        self._eligible_cache: dict[Any, tuple[str, ...]] = {}
        self._synced_version = -1
        self._lock = threading.RLock()
        self._memo: OrderedDict[tuple[bytes, str], tuple[float, tuple[str, ...]]] = OrderedDict()

    # ---- protocol properties
    @property
    def config(self) -> PolicyConfig:
        """The ``[policy]`` section of this policy (what snapshots record)."""
        return PolicyConfig.from_params(self.name, self.params)

    @property
    def version(self) -> str:
        return f"{self.name}:{self._events}"

    @property
    def dim(self) -> int:
        return self._dim

    def _arm_feature(self, arm_id: str) -> str:
        feat = self._feature.get(arm_id)
        if feat is None:
            digest = hashlib.blake2b(arm_id.encode(), digest_size=8).hexdigest()
            feat = self._feature[arm_id] = f"arm_{digest}"
        return feat

    def _eligible(self, eligible: Sequence[str] | None) -> tuple[str, ...]:
        if self.arms.version != self._synced_version:
            self._synced_version = self.arms.version
            self._eligible_cache.clear()
        try:
            key = None if eligible is None else tuple(eligible)
            hit = self._eligible_cache.get(key)
        except TypeError:
            self.arms.resolve_eligible(eligible)
            raise
        if hit is None:
            hit = tuple(self.arms.resolve_eligible(eligible))
            if len(self._eligible_cache) > 4096:
                self._eligible_cache.clear()
            self._eligible_cache[key] = hit
        return hit

    def _examples(self, x: npt.NDArray[np.float64], ids: Sequence[str],
                  label: tuple[int, float, float] | None = None,
                  parser: vw.TextFormatParser | None = None) -> list[vw.Example]:
        """The multi-line example of ``x`` over ``ids``, parsed for the policy's workspace
        (action lines cached) or, given ``parser``, for that parser's workspace."""
        cache = parser is None
        parse = (self._parser if parser is None else parser).parse_line
        shared = parse("shared |x " + self._fmt % tuple(x.tolist()))
        out = [shared]
        for j, arm_id in enumerate(ids):
            if label is not None and j == label[0]:
                out.append(parse(f"0:{label[1]!r}:{label[2]!r} |a {self._arm_feature(arm_id)}"))
            else:
                line = self._action_lines.get(arm_id) if cache else None
                if line is None:
                    line = parse(f"|a {self._arm_feature(arm_id)}")
                    if cache:
                        self._action_lines[arm_id] = line
                out.append(line)
        return out

    # ---- choosing
    def choose(
        self,
        context: npt.ArrayLike,
        rng: np.random.Generator,
        eligible: Sequence[str] | None = None,
    ) -> Choice:
        x = as_context(context, self._dim)
        with self._lock:
            ids = self._eligible(eligible)
            pred = cast(list[tuple[int, float]], self._ws.predict_one(self._examples(x, ids)))
            version = self.version
        K = len(ids)
        pmf = np.zeros(K)
        for j, p in pred:
            pmf[j] = p
        pmf /= pmf.sum()
        f = min(self.params.probability_floor, 1.0 / K)
        probs = f + (1.0 - K * f) * pmf
        pos = min(int(np.searchsorted(np.cumsum(probs), rng.random() * probs.sum(), "right")),
                  K - 1)
        arm_id = ids[pos]
        with self._lock:
            self._memo[(x.tobytes(), arm_id)] = (float(probs[pos]), ids)
            if len(self._memo) > _MEMO_MAX:
                self._memo.popitem(last=False)
        return Choice(arm_id, float(probs[pos]), version, ids, probs, pmf)

    # ---- learning
    def update(self, arm_id: str, context: npt.ArrayLike, reward: float, *,
               propensity: float | None = None, eligible: Sequence[str] | None = None) -> None:
        x = as_context(context, self._dim)
        r = _as_reward(reward)
        if not isinstance(arm_id, str) or arm_id not in self.arms:
            raise UnknownArmError(arm_id)
        with self._lock:
            self._learn(arm_id, x, r, propensity, eligible)

    def _learn(self, arm_id: str, x: npt.NDArray[np.float64], r: float,
               propensity: float | None, eligible: Sequence[str] | None,
               workspace: vw.Workspace | None = None) -> None:
        memo = self._memo.pop((x.tobytes(), arm_id), None)
        ids: tuple[str, ...]
        if eligible is not None:
            ids = tuple(eligible)
        elif memo is not None:
            ids = memo[1]
        else:
            ids = tuple(a.arm_id for a in self.arms.active())
        if arm_id not in ids:
            ids = (*ids, arm_id)
        if propensity is None:
            propensity = memo[0] if memo is not None else 1.0 / len(ids)
        if not 0.0 < propensity <= 1.0:
            raise InvalidInputError("propensity", propensity, "must be in (0, 1]")
        label = (ids.index(arm_id), -r, float(propensity))
        if workspace is None:
            self._ws.learn_one(self._examples(x, ids, label))
            self._events += 1
        else:
            workspace.learn_one(self._examples(x, ids, label, vw.TextFormatParser(workspace)))

    def update_batch(
        self, arm_ids: Sequence[str], contexts: npt.ArrayLike, rewards: npt.ArrayLike
    ) -> None:
        ids = list(arm_ids)
        X = as_contexts(contexts, self._dim, len(ids))
        r = as_rewards(rewards, len(ids))
        for i, a in enumerate(ids):
            if not isinstance(a, str) or a not in self.arms:
                raise UnknownArmError(a, field=f"arm_ids[{i}]")
        for a, x, reward in zip(ids, X, r, strict=True):
            self.update(a, x, float(reward))

    # ---- snapshots
    def snapshot_arrays(self) -> dict[str, np.ndarray]:
        with self._lock:
            names = sorted(self._feature)
            return {
                "vw_model": np.frombuffer(self._ws.serialize(), dtype=np.uint8).copy(),
                "arm_ids": np.array(names, dtype=np.str_),
                "vw_features": np.array([self._feature[a] for a in names], dtype=np.str_),
                "events": np.array(self._events),
            }

    def restore_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        try:
            model = bytes(np.asarray(arrays["vw_model"], dtype=np.uint8).tobytes())
            names = [str(a) for a in np.asarray(arrays["arm_ids"]).reshape(-1)]
            events = int(np.asarray(arrays["events"]))
            # snapshots before hashed feature names numbered the arms in order of use
            features = ([str(f) for f in np.asarray(arrays["vw_features"]).reshape(-1)]
                        if "vw_features" in arrays else [f"arm{i}" for i in range(len(names))])
        except KeyError as exc:
            raise InvalidInputError("arrays", sorted(arrays), f"misses {exc}") from None
        ws = vw.Workspace(self._args, model_data=model)
        with self._lock:
            self._ws = ws
            self._parser = vw.TextFormatParser(ws)
            self._feature = dict(zip(names, features, strict=True))
            self._action_lines.clear()
            self._memo.clear()
            self._events = events

    def __repr__(self) -> str:
        return f"VWPolicy(args={self._args!r}, events={self._events})"


class VWDelta:
    """Statistics of a :class:`PartitionedVWPolicy`: what a workspace learnt since a base.

    Live while a partition accumulates (a workspace trained from the base model), frozen
    once merged or read back from a state file (a ``vw.ModelDelta``; one read back also
    keeps the workspace it was checked on, so learning resumes without another copy).
    ``merge`` is VW's model merge (``merge_deltas``); deltas merged or applied together
    must share the base.
    """

    def __init__(self, args: list[str], base: vw.Workspace, *,
                 workspace: vw.Workspace | None = None, delta: vw.ModelDelta | None = None,
                 events: int = 0) -> None:
        self._args = args
        self._base = base
        self._ws = workspace
        self._delta = delta
        self.events = events

    def model_delta(self) -> vw.ModelDelta:
        if self._delta is not None:  # frozen, or the workspace has not learnt since
            return self._delta
        if self._ws is not None:
            return vw.calculate_delta(self._base, self._ws)
        self._delta = vw.calculate_delta(self._base, self._base)  # nothing learnt
        return self._delta

    def learning_workspace(self) -> vw.Workspace:
        """The workspace new events are learnt into (base + this delta)."""
        if self._ws is None:
            if self._delta is None:
                self._ws = vw.Workspace(self._args, model_data=self._base.serialize())
            else:
                self._ws = _vw_call(vw.apply_delta, self._base, self._delta)
        self._delta = None  # what it learns next is not in a frozen delta
        return self._ws

    def merge(self, other: Any) -> VWDelta:
        if not isinstance(other, VWDelta):
            raise InvalidInputError("other", type(other).__name__, "must be VWDelta")
        merged = _vw_call(vw.merge_deltas, [self.model_delta(), other.model_delta()])
        return VWDelta(self._args, self._base, delta=merged, events=self.events + other.events)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "vw_delta": np.frombuffer(self.model_delta().serialize(), dtype=np.uint8).copy(),
            "events": np.array(self.events),
        }

    def __repr__(self) -> str:
        return f"VWDelta(events={self.events})"


class PartitionedVWPolicy(VWPolicy):
    """A :class:`VWPolicy` whose state merges across learner partitions through model
    deltas (module docstring); built by :func:`make_vw_policy` for explorations in
    :data:`MERGEABLE_EXPLORATIONS`."""

    def __init__(self, params: VWParams, arms: ArmRegistry,
                 model_data: bytes | None = None) -> None:
        if isinstance(params, VWParams) and params.vw_exploration not in MERGEABLE_EXPLORATIONS:
            raise ConfigError("policy.vw_exploration", params.vw_exploration,
                              f"must be one of {sorted(MERGEABLE_EXPLORATIONS)} to merge "
                              "across partitions (its exploration state is in the weights)")
        super().__init__(params, arms, model_data)

    def _copy(self) -> vw.Workspace:
        return vw.Workspace(self._args, model_data=self._ws.serialize())

    def empty_statistics(self) -> VWDelta:
        """A zero delta whose base is the current model."""
        with self._lock:
            return VWDelta(self._args, self._copy())

    def accumulate(self, stats: Any, arm_ids: Sequence[str], contexts: npt.ArrayLike,
                   rewards: npt.ArrayLike, *,
                   propensities: npt.ArrayLike | None = None,
                   eligible: Sequence[Sequence[str] | None] | None = None) -> VWDelta:
        """Learn a batch into ``stats`` (in place) and return it.

        ``propensities`` are the logged probabilities of the chosen arms (VW weighs each
        cost by 1/propensity); ``eligible`` each decision's eligible arms, the actions of
        its example (None for one: the active arms). Without propensities each event is
        learnt at 1/K of its actions.
        """
        st = self._as_delta(stats, "stats")
        ids = list(arm_ids)
        X = as_contexts(contexts, self._dim, len(ids))
        r = as_rewards(rewards, len(ids))
        p = None if propensities is None else as_rewards(propensities, len(ids))
        if p is not None and not bool(((p > 0.0) & (p <= 1.0)).all()):
            bad = int(np.flatnonzero(~((p > 0.0) & (p <= 1.0)))[0])
            raise InvalidInputError(f"propensities[{bad}]", float(p[bad]), "must be in (0, 1]")
        sets = [None] * len(ids) if eligible is None else list(eligible)
        if len(sets) != len(ids):
            raise InvalidInputError("eligible", len(sets), f"must have {len(ids)} entries")
        for i, a in enumerate(ids):
            if not isinstance(a, str) or a not in self.arms:
                raise UnknownArmError(a, field=f"arm_ids[{i}]")
        with self._lock:
            ws = st.learning_workspace()
            for i, (a, x) in enumerate(zip(ids, X, strict=True)):
                self._learn(a, x, float(r[i]), None if p is None else float(p[i]), sets[i], ws)
            st.events += len(ids)
        return st

    def statistics_from_arrays(self, arrays: Mapping[str, np.ndarray]) -> VWDelta:
        """A delta written by :meth:`VWDelta.to_arrays`, based on the current model.

        The delta is applied to the model once here, so that one VW cannot read, or one
        of another model (other options, exploration or interactions), is refused with
        :class:`InvalidInputError` now rather than when it is merged or learnt into.
        """
        try:
            data = bytes(np.asarray(arrays["vw_delta"], dtype=np.uint8).tobytes())
            events = int(np.asarray(arrays["events"]))
        except KeyError as exc:
            raise InvalidInputError("arrays", sorted(arrays), f"misses {exc}") from None
        delta = _vw_call(vw.ModelDelta, data)
        with self._lock:
            base = self._copy()
        ws = _vw_call(vw.apply_delta, base, delta)
        return VWDelta(self._args, base, workspace=ws, delta=delta, events=events)

    @property
    def statistics(self) -> VWDelta:
        """The whole model as a delta from an untrained workspace (VW starts at zero)."""
        with self._lock:
            return VWDelta(self._args, vw.Workspace(self._args), workspace=self._copy(),
                           events=self._events)

    def set_statistics(self, stats: Any) -> None:
        """Replace the model with ``stats`` taken as a delta from an untrained workspace."""
        st = self._as_delta(stats, "stats")
        ws = _vw_call(vw.apply_delta, vw.Workspace(self._args), st.model_delta())
        with self._lock:
            self._install(ws)
            self._events = st.events

    def apply(self, delta: Any) -> None:
        """Fold a (merged) delta whose base is the current model in (``apply_delta``)."""
        d = self._as_delta(delta, "delta")
        with self._lock:
            self._install(_vw_call(vw.apply_delta, self._ws, d.model_delta()))
            self._events += d.events

    def _install(self, ws: vw.Workspace) -> None:
        self._ws = ws
        self._parser = vw.TextFormatParser(ws)
        self._action_lines.clear()
        self._memo.clear()

    @staticmethod
    def _as_delta(stats: Any, field: str) -> VWDelta:
        if not isinstance(stats, VWDelta):
            raise InvalidInputError(field, type(stats).__name__, "must be VWDelta")
        return stats


def _vw_call(fn: Any, *args: Any) -> Any:
    """``fn(*args)`` with VW's refusal of a delta (not a delta, corrupted, or of a model
    with other options) raised as :class:`InvalidInputError` naming the delta."""
    try:
        return fn(*args)
    except RuntimeError as exc:
        reason = " ".join(str(exc).split())
        raise InvalidInputError("vw_delta", "a delta Vowpal Wabbit refused",
                                f"must be a delta of this Vowpal Wabbit model ({reason})") from None


def make_vw_policy(params: VWParams, arms: ArmRegistry) -> VWPolicy:
    """The ``vw`` plugin (entry point ``switchboard.policies``): a
    :class:`PartitionedVWPolicy` when the exploration merges, else a :class:`VWPolicy`."""
    if isinstance(params, VWParams) and params.vw_exploration in MERGEABLE_EXPLORATIONS:
        return PartitionedVWPolicy(params, arms)
    return VWPolicy(params, arms)
