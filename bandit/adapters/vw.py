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
* State is a VW model, not additive sufficient statistics: the policy implements
  :class:`~bandit.policies.base.Policy` (choose, learn, snapshot), not
  :class:`~bandit.policies.base.AdditivePolicy`. Snapshots store the serialised workspace.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, ClassVar, cast

import numpy as np
import numpy.typing as npt
import vowpal_wabbit_next as vw

from bandit.arms import ArmRegistry
from bandit.config import PolicyConfig, VWParams
from bandit.errors import ConfigError, InvalidInputError, UnknownArmError
from bandit.linear import _as_reward, as_context, as_contexts, as_rewards
from bandit.policies.base import Choice

__all__ = ["VWPolicy", "vw_args"]

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
            feat = self._feature[arm_id] = f"arm{len(self._feature)}"
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
                  label: tuple[int, float, float] | None = None) -> list[vw.Example]:
        shared = self._parser.parse_line("shared |x " + self._fmt % tuple(x.tolist()))
        out = [shared]
        for j, arm_id in enumerate(ids):
            if label is not None and j == label[0]:
                out.append(self._parser.parse_line(
                    f"0:{label[1]!r}:{label[2]!r} |a {self._arm_feature(arm_id)}"
                ))
            else:
                line = self._action_lines.get(arm_id)
                if line is None:
                    line = self._parser.parse_line(f"|a {self._arm_feature(arm_id)}")
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
               propensity: float | None, eligible: Sequence[str] | None) -> None:
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
        self._ws.learn_one(self._examples(x, ids, (ids.index(arm_id), -r, float(propensity))))
        self._events += 1

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
            names = sorted(self._feature, key=lambda a: int(self._feature[a][3:]))
            return {
                "vw_model": np.frombuffer(self._ws.serialize(), dtype=np.uint8).copy(),
                "arm_ids": np.array(names, dtype=np.str_),
                "events": np.array(self._events),
            }

    def restore_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        try:
            model = bytes(np.asarray(arrays["vw_model"], dtype=np.uint8).tobytes())
            names = [str(a) for a in np.asarray(arrays["arm_ids"]).reshape(-1)]
            events = int(np.asarray(arrays["events"]))
        except KeyError as exc:
            raise InvalidInputError("arrays", sorted(arrays), f"misses {exc}") from None
        ws = vw.Workspace(self._args, model_data=model)
        with self._lock:
            self._ws = ws
            self._parser = vw.TextFormatParser(ws)
            self._feature = {a: f"arm{i}" for i, a in enumerate(names)}
            self._action_lines.clear()
            self._memo.clear()
            self._events = events

    def __repr__(self) -> str:
        return f"VWPolicy(args={self._args!r}, events={self._events})"
