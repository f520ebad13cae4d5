"""Logged bandit data for offline replay and off-policy evaluation, from anyone's logs.

Readers (all return ``(LoggedData, LogReadReport)`` and share one :class:`LogSpec`):

* **JSON Lines, CSV, Parquet** tables with a column mapping (``LogSpec.fields``: the
  logical fields ``arm``, ``propensity``, ``reward`` or ``cost``, ``context``,
  ``probabilities``, ``eligible``, ``decision_id``, ``timestamp`` name the log's
  columns; dotted paths reach into JSON objects). The project's own dialect — a
  :class:`bandit.events.DecisionEvent` plus ``reward`` per line — is the default
  mapping. ``context`` is a numeric array, a column glob (``x_*``: the matching columns
  in file order), or an object of named features (mapped as DSJSON features are).
  ``probabilities`` aligned with ``eligible``, or an object ``{arm: p}``, is the
  logging policy's full distribution. The optional ``retried``, ``rating`` and
  ``conversation_length`` (:data:`PROXY_FIELDS`) are the event's reward proxies, kept as
  :class:`RewardProxies` so the log can be re-scored under other α's
  (:meth:`LoggedData.rescored`); absent, they cost nothing.
* **DSJSON** (Decision Service / Personalizer / Vowpal Wabbit), per the format's
  definition: ``c._multi`` lists the actions of the event; ``_labelIndex`` is the
  0-based index of the chosen action into ``_multi`` and ``_label_Action`` its 1-based
  id; ``a`` is the ranking (1-based action ids, the chosen action first) and ``p`` the
  logging probabilities aligned with ``a``; ``_label_probability`` the chosen action's
  probability; ``_label_cost`` the cost, turned into a reward by
  ``reward = cost_offset + cost_scale · cost`` (default ``−cost``); ``EventId``,
  ``Timestamp``; ``_skipLearn: true`` events are skipped (counted); ``pdrop`` (events
  dropped by the client with that probability) gives the kept event the weight
  ``1 / (1 − pdrop)``. Arm ids come from an action feature (``LogSpec.action_id``).
  The project's older dialect (``c.x`` a dense array, ``_multi[].arm_id``) still reads.

**Context mapping** (``LogSpec.features``), documented and deterministic:

* ``dense`` — a numeric array (``c.x`` in DSJSON, the ``context`` field in tables) is the
  context. Its dimension is ``LogSpec.dim`` when configured, else the length most lines
  have (ties: the larger); lines of another length are malformed. Never the first line.
* ``hash`` — every shared feature (VW namespaces: the keys of ``c`` not starting with
  ``_``, nested objects as nested namespaces, arrays by position) gets a name
  ``namespace/.../feature`` (numbers: the value; strings: ``name=value`` with value 1;
  ``true``: value 1; ``false``/``null``: absent) and is hashed into ``dim`` columns
  (default 64) like VW's feature hashing: column ``1 + crc32(name) mod (dim − 1)``,
  sign ``−1`` when bit 31 of the CRC is set; column 0 is a constant 1 (VW's constant
  feature), so a log with only per-action features still has a context.
* ``named`` — the same names as columns (column 0 the constant), in the order they are
  first seen in the file (deterministic for a file), at most ``max_named`` columns.
* ``auto`` — ``dense`` when most events carry a dense array and no other shared feature,
  else ``hash``.

**Per-action features** (``_multi`` objects) give each action's arm id and, with
``LogSpec.action_features="hash"``, the arm's content features for hybrid LinUCB: every
feature of the action object but its id (same names as shared features) hashed into
``action_feature_dim`` columns (default 16) by the same crc32 mapping (column
``crc32(name) mod m``, no constant column: the hybrid model adds its own). An arm's
features are those of the first event that lists it; events that list the arm with other
features are counted (``LogReadReport.action_feature_conflicts``). They reach the
policy through :meth:`LoggedData.arm_registry` (``LoggedData.arm_features``, (K, m)).

Bad input is never a traceback: a malformed line is counted with its line number and
reason in the :class:`LogReadReport` (in the JSON output too); rewards outside the declared
range ``LogSpec.reward_range`` are refused (malformed) or clipped (``out_of_range="clip"``)
with a count. A zero or absent propensity refuses the whole log with an
:class:`InvalidInputError` naming the line (importance weights are undefined without it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import fnmatch
import functools
import gc
import math
import os
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from operator import getitem, itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from bandit.errors import InvalidInputError, StoreError

__all__ = [
    "LOG_FIELDS",
    "PROXY_FIELDS",
    "LogReadReport",
    "LogSpec",
    "LoggedData",
    "RewardProxies",
    "from_bandit_feedback",
    "read_csv",
    "read_dsjson",
    "read_jsonl",
    "read_log",
    "read_parquet",
    "read_store",
    "to_bandit_feedback",
    "write_dsjson",
    "write_jsonl",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
_MAX_ERRORS_KEPT = 100

#: logical fields of a tabular log and their default column (the project's own dialect)
LOG_FIELDS: Mapping[str, str] = {
    "arm": "arm_id",
    "propensity": "propensity",
    "reward": "reward",
    "cost": "",
    "context": "context",
    "probabilities": "probabilities",
    "eligible": "eligible",
    "decision_id": "decision_id",
    "timestamp": "ts_ms",
    "retried": "retried",
    "rating": "rating",
    "conversation_length": "conversation_length",
}
#: the optional per-event reward proxies (the arguments of
#: :func:`bandit.reward.reward_from_proxies`), for re-scoring a log under other α's
PROXY_FIELDS: tuple[str, ...] = ("retried", "rating", "conversation_length")
_FEATURE_MODES = ("auto", "dense", "hash", "named")


@dataclass(frozen=True)
class LogSpec:
    """How to read a log: column mapping, reward mapping and range, context mapping.

    ``fields`` overrides :data:`LOG_FIELDS` (``{"arm": "item_id"}``); ``cost`` set means
    the reward is ``cost_offset + cost_scale · cost`` (DSJSON always uses ``_label_cost``).
    ``reward_range`` is the declared range of rewards; ``out_of_range`` ``refuse`` (the
    line is malformed) or ``clip``. ``features``/``dim``/``max_named``: the context mapping
    (module docstring). ``action_id``: the dotted path of the arm id inside a DSJSON
    ``_multi`` object; ``auto`` tries ``arm_id``, ``_tag``, then the first ``id`` feature of
    any namespace, else the action's 1-based position. ``action_features``: ``none`` or
    ``hash`` (the actions' other features as arm content features, ``action_feature_dim``
    columns; module docstring).
    """

    fields: Mapping[str, str] = field(default_factory=dict)
    cost_scale: float = -1.0
    cost_offset: float = 0.0
    reward_range: tuple[float, float] = (0.0, 1.0)
    out_of_range: str = "refuse"
    features: str = "auto"
    dim: int | None = None
    max_named: int = 4096
    action_id: str = "auto"
    action_features: str = "none"
    action_feature_dim: int = 16

    def __post_init__(self) -> None:
        unknown = sorted(set(self.fields) - set(LOG_FIELDS))
        if unknown:
            raise InvalidInputError("field", unknown[0], f"must be one of {sorted(LOG_FIELDS)}")
        for k, v in self.fields.items():
            if not isinstance(v, str):
                raise InvalidInputError(f"field {k}", v, "must be a column name")
        lo, hi = self.reward_range
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise InvalidInputError("reward_range", self.reward_range, "must be finite with low < high")
        if self.out_of_range not in ("refuse", "clip"):
            raise InvalidInputError("out_of_range", self.out_of_range, "must be 'refuse' or 'clip'")
        if self.features not in _FEATURE_MODES:
            raise InvalidInputError("features", self.features, f"must be one of {_FEATURE_MODES}")
        if self.dim is not None and (isinstance(self.dim, bool) or not isinstance(self.dim, int)
                                     or self.dim < 1):
            raise InvalidInputError("dim", self.dim, "must be a positive integer")
        if self.features == "hash" and self.dim is not None and self.dim < 2:
            raise InvalidInputError("dim", self.dim, "must be >= 2 for hashed features")
        if self.action_features not in ("none", "hash"):
            raise InvalidInputError("action_features", self.action_features,
                                    "must be 'none' or 'hash'")
        if (isinstance(self.action_feature_dim, bool) or not isinstance(self.action_feature_dim, int)
                or self.action_feature_dim < 1):
            raise InvalidInputError("action_feature_dim", self.action_feature_dim,
                                    "must be a positive integer")
        if not (math.isfinite(self.cost_scale) and math.isfinite(self.cost_offset)):
            raise InvalidInputError("cost_scale", self.cost_scale, "must be finite")

    def column(self, name: str) -> str:
        return self.fields.get(name, LOG_FIELDS[name])

    def reward_from_cost(self, cost: float) -> float:
        return self.cost_offset + self.cost_scale * cost


@dataclass(frozen=True)
class LogReadReport:
    """What reading a log did: lines read, events kept, malformed lines with reasons.

    ``skipped``: events marked ``_skipLearn``; ``clipped``: rewards clipped into the
    declared range; ``dim``/``dim_source``: the context dimension and where it came from
    (``config``, ``majority``, ``hash``, ``named``).
    """

    path: str
    lines: int
    events: int
    malformed: int
    errors: tuple[tuple[int, str], ...] = ()
    skipped: int = 0
    clipped: int = 0
    dim: int = 0
    dim_source: str = ""
    action_feature_conflicts: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "lines": self.lines,
            "events": self.events,
            "malformed": self.malformed,
            "errors": [{"line": n, "reason": r} for n, r in self.errors],
            "skipped": self.skipped,
            "clipped": self.clipped,
            "dim": self.dim,
            "dim_source": self.dim_source,
            "action_feature_conflicts": self.action_feature_conflicts,
        }


@dataclass(frozen=True)
class RewardProxies:
    """Per-event reward proxies of a log (:data:`PROXY_FIELDS`), NaN where not observed.

    ``retried`` is 1 (the answer was retried) or 0, ``rating`` the stars, and
    ``conversation_length`` the messages after the decision, as
    :func:`bandit.reward.reward_from_proxies` takes them; an event with none observed had
    no feedback and gets a reward config's ``default_reward``. ``rescorable`` is False for
    an event whose reward came from feedback whose proxies were not kept (store rows
    written before migration 5); ``None`` means every event can be re-scored.
    """

    retried: FloatArray
    rating: FloatArray
    conversation_length: FloatArray
    rescorable: BoolArray | None = None

    def __post_init__(self) -> None:
        n = self.retried.shape[0]
        for name in PROXY_FIELDS:
            if getattr(self, name).shape != (n,):
                raise InvalidInputError(f"proxies.{name}", getattr(self, name).shape,
                                        f"must have shape ({n},)")
        if self.rescorable is not None and self.rescorable.shape != (n,):
            raise InvalidInputError("proxies.rescorable", self.rescorable.shape,
                                    f"must have shape ({n},)")

    @property
    def n(self) -> int:
        return int(self.retried.shape[0])

    @property
    def observed(self) -> int:
        """Events with at least one proxy observed."""
        seen = ~(np.isnan(self.retried) & np.isnan(self.rating)
                 & np.isnan(self.conversation_length))
        return int(seen.sum())

    @property
    def not_rescorable(self) -> int:
        """Events whose reward cannot be recomputed (their proxies were not kept)."""
        return 0 if self.rescorable is None else int((~self.rescorable).sum())

    def subset(self, idx: npt.ArrayLike) -> RewardProxies:
        i = np.asarray(idx)
        return RewardProxies(self.retried[i], self.rating[i], self.conversation_length[i],
                             None if self.rescorable is None else self.rescorable[i])

    def rewards(self, config: Any, event_ids: Sequence[str] | None = None) -> FloatArray:
        """Each event's reward under ``config`` (a :class:`bandit.config.RewardConfig`).

        :func:`bandit.reward.reward_from_proxies` is the one implementation of the reward:
        it is called once per distinct proxy combination (a log holds few) and its
        validation is the proxies' (a rating of 7 is refused naming the event, by
        ``event_ids`` when given, else by position).
        """
        from bandit.reward import reward_from_proxies

        # NaN (not observed) as -inf so that np.unique groups it; values are finite
        codes = np.nan_to_num(np.stack([self.retried, self.rating, self.conversation_length],
                                       axis=1), nan=-np.inf)
        if codes.shape[0] == 0:
            return np.zeros(0)
        combos, inverse = np.unique(codes, axis=0, return_inverse=True)
        values = np.empty(combos.shape[0])
        for j, (retried, rating, length) in enumerate(combos.tolist()):
            try:
                values[j] = reward_from_proxies(
                    config, retried=_proxy_arg(retried, flag=True), rating=_proxy_arg(rating),
                    conversation_length=_proxy_arg(length))
            except InvalidInputError as exc:
                i = int(np.flatnonzero(inverse.reshape(-1) == j)[0])
                where = f"event {event_ids[i]}" if event_ids is not None else f"event {i}"
                raise InvalidInputError(f"{where}: {exc.field}", exc.value, exc.reason) from None
        out: FloatArray = values[inverse.reshape(-1)]
        return out


def _proxy_arg(v: float, *, flag: bool = False) -> Any:
    """A stored proxy as :func:`bandit.reward.reward_from_proxies` takes it (None: not
    observed); a value it must refuse is passed on as it is, so its check names it."""
    if v == -math.inf:
        return None
    if flag and v in (0.0, 1.0):
        return v == 1.0
    return int(v) if not flag and v.is_integer() else v


@dataclass(frozen=True)
class LoggedData:
    """Logged decisions joined with rewards, as arrays (n events, K arms, d dims).

    ``probabilities`` is the full logging distribution (n, K) when the log has it
    (0 for arms not eligible), else ``None``; ``eligible`` (n, K) marks the arms each
    event could have had (``None``: all); ``weights`` are per-event weights (DSJSON
    ``pdrop``), ``None`` meaning 1; ``arm_features`` (K, m) are arms' content features read
    from the log (DSJSON ``action_features``), ``None`` when the log gave none;
    ``proxies`` are the events' reward proxies (:class:`RewardProxies`), ``None`` when the
    log has none.
    """

    arm_ids: tuple[str, ...]
    contexts: FloatArray
    arm_index: IntArray
    propensity: FloatArray
    reward: FloatArray
    probabilities: FloatArray | None = None
    decision_ids: tuple[str, ...] | None = field(default=None, repr=False)
    eligible: BoolArray | None = field(default=None, repr=False)
    weights: FloatArray | None = field(default=None, repr=False)
    arm_features: FloatArray | None = field(default=None, repr=False)
    proxies: RewardProxies | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        n = self.arm_index.shape[0]
        k = len(self.arm_ids)
        if self.contexts.ndim != 2 or self.contexts.shape[0] != n:
            raise InvalidInputError("contexts", self.contexts.shape, f"must have shape ({n}, d)")
        if self.propensity.shape != (n,) or self.reward.shape != (n,):
            raise InvalidInputError("propensity/reward", self.propensity.shape, f"must be ({n},)")
        if n and (self.arm_index.min() < 0 or self.arm_index.max() >= k):
            raise InvalidInputError("arm_index", int(self.arm_index.max()), "out of range")
        _check_propensity(self.propensity)
        if not np.all(np.isfinite(self.reward)):
            raise InvalidInputError("reward", "non-finite", "must be finite")
        if self.probabilities is not None and self.probabilities.shape != (n, k):
            raise InvalidInputError("probabilities", self.probabilities.shape, "must be (n, K)")
        if self.eligible is not None and self.eligible.shape != (n, k):
            raise InvalidInputError("eligible", self.eligible.shape, "must be (n, K)")
        if self.weights is not None and (self.weights.shape != (n,) or not np.all(self.weights > 0)):
            raise InvalidInputError("weights", self.weights.shape, f"must be ({n},) and positive")
        if self.arm_features is not None and (self.arm_features.ndim != 2
                                              or self.arm_features.shape[0] != k):
            raise InvalidInputError("arm_features", self.arm_features.shape, f"must be ({k}, m)")
        if self.proxies is not None and self.proxies.n != n:
            raise InvalidInputError("proxies", self.proxies.n, f"must hold {n} events")

    @property
    def n(self) -> int:
        return int(self.arm_index.shape[0])

    @property
    def n_arms(self) -> int:
        return len(self.arm_ids)

    @property
    def dim(self) -> int:
        return int(self.contexts.shape[1])

    def is_uniform(self, rtol: float = 1e-6) -> bool:
        """True when every propensity is the same 1/K (K = the event's eligible arms)."""
        k = (self.eligible.sum(axis=1) if self.eligible is not None
             else np.full(self.n, self.n_arms))
        p = self.propensity
        return bool(np.allclose(p, 1.0 / k, rtol=rtol) and np.allclose(p, p[0], rtol=rtol))

    def subset(self, idx: npt.ArrayLike) -> LoggedData:
        i = np.asarray(idx)
        return LoggedData(
            self.arm_ids, self.contexts[i], self.arm_index[i], self.propensity[i],
            self.reward[i], None if self.probabilities is None else self.probabilities[i],
            None if self.decision_ids is None else tuple(np.asarray(self.decision_ids,
                                                                    dtype=object)[i]),
            None if self.eligible is None else self.eligible[i],
            None if self.weights is None else self.weights[i],
            self.arm_features,
            None if self.proxies is None else self.proxies.subset(i),
        )

    def rescored(self, config: Any) -> LoggedData:
        """The log's events with their rewards recomputed from their proxies under ``config``.

        ``config`` is a :class:`bandit.config.RewardConfig` (α's, length cap, default
        reward); the reward is :meth:`RewardProxies.rewards`. Events that cannot be
        re-scored (:attr:`RewardProxies.not_rescorable`) are left out, so every reward
        config re-scores the same events. A log without proxies is refused, naming the
        fields to map.
        """
        px = self.proxies
        if px is None or px.observed == 0:
            lost = f"; {px.not_rescorable} of {self.n} events have feedback whose proxies " \
                   "were not kept (store rows written before migration 5)" \
                if px is not None and px.not_rescorable else ""
            raise InvalidInputError(
                "proxies", None,
                f"are required to re-score rewards: the log has none (map its columns to the "
                f"fields {', '.join(PROXY_FIELDS)}: --field NAME=COLUMN, LogSpec.fields{lost})")
        data = self
        if px.rescorable is not None and px.not_rescorable:
            keep = np.flatnonzero(px.rescorable)
            data, px = self.subset(keep), px.subset(keep)
        return dataclasses.replace(data, reward=px.rewards(config, data.decision_ids))

    def arm_registry(self) -> Any:
        """The log's arms as a :class:`bandit.arms.ArmRegistry`, with ``arm_features`` when read.

        Arms the log listed without features get none (hybrid LinUCB: f = 0).
        """
        from bandit.arms import Arm, ArmRegistry

        if self.arm_features is None:
            return ArmRegistry([Arm(a) for a in self.arm_ids])
        m = self.arm_features.shape[1]
        return ArmRegistry([Arm(a, features=tuple(self.arm_features[i].tolist()))
                            for i, a in enumerate(self.arm_ids)], feature_dim=m)


def _check_propensity(p: FloatArray) -> None:
    bad = np.flatnonzero(~(np.isfinite(p) & (p > 0) & (p <= 1)))
    if bad.size:
        raise InvalidInputError(
            f"propensity[{int(bad[0])}]", float(p[bad[0]]),
            f"must be in (0, 1] ({bad.size} events bad): importance weights need the logging "
            "probability of the chosen arm",
        )


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


class _Bad(Exception):
    """A line that cannot be used (reason in the message)."""


# ----------------------------------------------------------------------------- features


def _flatten(obj: dict[str, Any], prefix: str, out: list[tuple[str, float]]) -> None:
    """VW-JSON features of ``obj`` as (name, value) pairs (module docstring).

    Dispatches on the exact JSON types (``type(v) is ...``): this runs for every
    feature of every line.
    """
    append = out.append
    for key, v in obj.items():
        if not prefix and key[:1] == "_":
            continue
        t = type(v)
        if t is str:
            append((f"{prefix}{key}={v}", 1.0))
        elif t is float or t is int:
            if v != v or v in _INFS:
                raise _Bad(f"feature {prefix}{key} is not finite")
            append((prefix + key, float(v)))
        elif t is dict:
            _flatten(v, f"{prefix}{key}/", out)
        elif t is bool:
            if v:
                append((prefix + key, 1.0))
        elif t is list:
            name = prefix + key
            for i, e in enumerate(v):
                te = type(e)
                if te is float or te is int:
                    if not math.isfinite(e):
                        raise _Bad(f"feature {name}[{i}] is not finite")
                    append((f"{name}[{i}]", float(e)))
                elif te is str:
                    append((f"{name}={e}", 1.0))
                elif te is dict:
                    _flatten(e, name + "/", out)
                elif e is not None and te is not bool:
                    raise _Bad(f"feature {name}[{i}] is not a number or a string")


_INF = float("inf")
_INFS = (_INF, -_INF)


def _named(x: Sequence[float]) -> list[tuple[str, float]]:
    """A dense array's entries as features ``x[i]`` (for hashed and named contexts)."""
    return [(f"x[{i}]", float(v)) for i, v in enumerate(x)]


class _Hasher:
    """Feature hashing into ``dim`` columns (column 0 is the constant feature).

    Each distinct feature name is hashed once (``crc32``, a name -> (column, sign) cache);
    a matrix is built from flat (cell, value) lists in one ``np.bincount``, which adds a
    cell's values in the order the features came, as a row-by-row loop would.
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._cache: dict[str, tuple[int, float]] = {}

    def cell(self, name: str) -> tuple[int, float]:
        """The column and sign of a feature name (module docstring)."""
        hit = self._cache.get(name)
        if hit is None:
            h = zlib.crc32(name.encode())
            hit = (1 + h % (self.dim - 1), -1.0 if h & 0x80000000 else 1.0)
            if len(self._cache) < 1_000_000:
                self._cache[name] = hit
        return hit

    def matrix(self, rows: Sequence[Sequence[tuple[str, float]]]) -> FloatArray:
        dim, get, cell = self.dim, self._cache.get, self.cell
        cells: list[int] = []
        values: list[float] = []
        add_cell, add_value = cells.append, values.append
        for i, feats in enumerate(rows):
            base = i * dim
            for name, v in feats:
                hit = get(name) or cell(name)
                add_cell(base + hit[0])
                add_value(hit[1] * v)
        n = len(rows)
        out = np.bincount(np.asarray(cells, dtype=np.int64),
                          weights=np.asarray(values, dtype=np.float64),
                          minlength=n * dim).astype(np.float64, copy=False).reshape(n, dim)
        out[:, 0] = 1.0
        return out

    def objects(self, objs: Sequence[dict[str, Any]]) -> FloatArray:
        """``matrix`` of the features of ``objs`` (:func:`_flatten` of each), column-wise.

        Events of one log repeat one layout (the same namespaces and keys, each holding one
        type), so a key's values are taken across the events at once: a number is one
        column of values, a string one name per distinct value. A key whose values are not
        all numbers, all strings or all objects, and objects of differing keys, are
        flattened event by event. Features are added in :func:`_flatten`'s order, so each
        cell adds the same values in the same order as ``matrix`` does (same floats).
        Raises :class:`_Bad` where :func:`_flatten` would.
        """
        out = np.zeros((len(objs), self.dim))
        self._add(out, np.arange(len(objs)), objs, "")
        out[:, 0] = 1.0
        return out

    def _add(self, out: FloatArray, rows: IntArray, objs: Sequence[dict[str, Any]],
             prefix: str) -> None:
        first = tuple(objs[0])
        if list(map(tuple, objs)).count(first) != len(objs):
            self._add_each(out, rows, objs, prefix)
            return
        for key in first:
            if not prefix and key[:1] == "_":
                continue
            col = [o[key] for o in objs]
            types = set(map(type, col))
            if types <= _NUM:
                v = np.array(col, dtype=np.float64)
                if not np.isfinite(v).all():
                    raise _Bad(f"feature {prefix}{key} is not finite")
                c, sign = self.cell(prefix + key)
                out[rows, c] += sign * v
            elif types == _STR:
                at = {val: j for j, val in enumerate(set(col))}
                hits = np.array([self.cell(f"{prefix}{key}={val}") for val in at])
                j = np.fromiter(map(at.__getitem__, col), dtype=np.int64, count=len(col))
                out[rows, hits[j, 0].astype(np.int64)] += hits[j, 1]
            elif types == _DICT:
                self._add(out, rows, col, f"{prefix}{key}/")
            else:
                self._add_each(out, rows, [{key: v} for v in col], prefix)

    def _add_each(self, out: FloatArray, rows: IntArray, objs: Sequence[dict[str, Any]],
                  prefix: str) -> None:
        for i, o in zip(rows.tolist(), objs, strict=True):
            feats: list[tuple[str, float]] = []
            _flatten(o, prefix, feats)
            for name, v in feats:
                c, sign = self.cell(name)
                out[i, c] += sign * v


# ----------------------------------------------------------------------------- builder


@dataclass(slots=True)
class _Row:
    line: int
    arm: str
    propensity: float
    reward: float
    ctx: Any  # list[float] (dense) or list[(name, value)] (features)
    dense: bool
    # logging distribution: arms, values, and (DSJSON) the 1-based positions in arms of values
    probs: tuple[tuple[str, ...], list[float], list[int] | None] | None
    eligible: tuple[str, ...] | None
    event_id: str
    weight: float
    ts_ms: int | None = None


class _Builder:
    def __init__(self, path: str, spec: LogSpec) -> None:
        self.path = path
        self.spec = spec
        # the kept events, one list per field (in line order; see _Row for the fields)
        self.line: list[int] = []
        self.arm: list[str] = []
        self.prop: list[float] = []
        self.rewards: list[float] = []
        # a context is a dense array (True), features (False), or a row already hashed
        # into the configured dimension (None; features="hash", :func:`_dsjson_chunk`)
        self.ctx: list[Any] = []
        self.dense: list[bool | None] = []
        self.probs: list[tuple[tuple[str, ...], list[float], list[int] | None] | None] = []
        self.eligible: list[tuple[str, ...] | None] = []
        self.event_id: list[str] = []
        self.weight: list[float] = []
        self.ts: list[int | None] = []
        # reward proxies (retried, rating, length; NaN: not observed) and whether the
        # reward can be re-scored, by position in the lists above: only events that have
        # any, so a log without proxies costs nothing
        self.proxies: dict[int, tuple[float, float, float, bool]] = {}
        #: (field, column) of the proxies a table row may carry
        self.proxy_cols: tuple[tuple[str, str], ...] = tuple(
            (f, spec.column(f)) for f in PROXY_FIELDS)
        self.lines = 0
        self.malformed = 0
        self.skipped = 0
        self.clipped = 0
        self.errors: list[tuple[int, str]] = []
        # arm id -> (its first action object, its features) when reading action features
        self.actions: dict[str, tuple[Any, list[tuple[str, float]]]] = {}
        self.action_conflicts = 0
        # arm tuples (eligible arms, _multi actions) repeat from line to line: one object
        # each, so later steps key them by identity instead of hashing them again
        self.tuples: dict[tuple[str, ...], tuple[str, ...]] = {}
        # the last DSJSON action list read, its arm ids and whether it conflicted with the
        # arms' first listing: a line sharing the list object (``_dsjson_objects``) reuses them
        self.last_multi: list[Any] | None = None
        self.last_arms: tuple[str, ...] = ()
        self.last_conflict: bool | None = None
        self._hasher: _Hasher | None = None

    def hasher(self) -> _Hasher:
        """The hasher into the configured dimension (one name cache for the whole log)."""
        if self._hasher is None:
            self._hasher = _Hasher(self.spec.dim or 64)
        return self._hasher

    def intern(self, arms: tuple[str, ...]) -> tuple[str, ...]:
        return self.tuples.setdefault(arms, arms)

    def bad(self, line_no: int, reason: str) -> None:
        self.malformed += 1
        if len(self.errors) < _MAX_ERRORS_KEPT:
            self.errors.append((line_no, reason))

    def reward(self, line_no: int, value: Any) -> float:
        if not _is_num(value):
            raise _Bad(f"reward must be a finite number, got {value!r:.40}")
        lo, hi = self.spec.reward_range
        r = float(value)
        if lo <= r <= hi:
            return r
        if self.spec.out_of_range == "clip":
            self.clipped += 1
            return min(max(r, lo), hi)
        raise _Bad(f"reward {r:g} is outside the declared range [{lo:g}, {hi:g}] "
                   "(declare the range or clip: --reward-range / --clip-rewards)")

    @staticmethod
    def propensity(line_no: int, prop: Any) -> float:
        if prop is None or not isinstance(prop, int | float) or isinstance(prop, bool):
            raise InvalidInputError(f"line {line_no}: propensity", prop,
                                    "is required (a number in (0, 1])")
        if not (math.isfinite(prop) and 0 < prop <= 1):
            raise InvalidInputError(f"line {line_no}: propensity", prop, "must be in (0, 1]")
        return float(prop)

    def add(self, row: _Row) -> None:
        self.line.append(row.line)
        self.arm.append(row.arm)
        self.prop.append(row.propensity)
        self.rewards.append(row.reward)
        self.ctx.append(row.ctx)
        self.dense.append(row.dense)
        self.probs.append(row.probs)
        self.eligible.append(row.eligible)
        self.event_id.append(row.event_id)
        self.weight.append(row.weight)
        self.ts.append(row.ts_ms)

    def _columns(self) -> list[list[Any]]:
        return [self.line, self.arm, self.prop, self.rewards, self.ctx, self.dense, self.probs,
                self.eligible, self.event_id, self.weight, self.ts]

    def _is_id(self, name: str) -> bool:
        """Whether a flattened action feature is the action's id (not a content feature)."""
        base = name.partition("=")[0]
        path = self.spec.action_id
        if path != "auto":
            return base == path.replace(".", "/")
        return base == "arm_id" or (base.endswith("/id") and base.count("/") == 1)

    def note_actions(self, multi: list[Any], arms: tuple[str, ...]) -> bool:
        """Keep each arm's action features from the first event listing it; count changes.

        Returns whether ``multi`` lists an arm with other features than its first listing.
        """
        seen = self.actions
        new: dict[str, tuple[Any, list[tuple[str, float]]]] = {}
        conflict = False
        for m, arm in zip(multi, arms, strict=True):
            hit = seen.get(arm)
            if hit is None:
                feats: list[tuple[str, float]] = []
                _flatten(m, "", feats)
                new[arm] = (m, [f for f in feats if not self._is_id(f[0])])
            elif hit[0] != m:
                conflict = True
        seen.update(new)
        self.action_conflicts += conflict
        return conflict

    def _arm_features(self, order: tuple[str, ...]) -> FloatArray | None:
        if self.spec.action_features == "none":
            return None
        m = self.spec.action_feature_dim
        feats = [self.actions[a][1] if a in self.actions else [] for a in order]
        return _Hasher(m + 1).matrix(feats)[:, 1:].copy()

    def _contexts(self) -> tuple[list[int] | None, FloatArray, int, str]:
        """Fixed-length contexts of the kept events (module docstring: context mapping).

        Returns the positions of the events that have one (None: all), the contexts, the
        dimension and where it came from.
        """
        spec, xs, dense = self.spec, self.ctx, self.dense
        n = len(xs)
        mode = spec.features
        if mode == "auto":
            mode = "dense" if n and dense.count(True) * 2 >= n else "hash"
        if mode == "dense":
            lens = [len(x) if d else -1 for x, d in zip(xs, dense, strict=True)]
            if spec.dim is not None:
                dim, source = spec.dim, "config"
            else:
                counts = Counter(v for v in lens if v > 0)
                dim = max(counts.items(), key=lambda kv: (kv[1], kv[0]))[0] if counts else 0
                source = "majority"
            keep: list[int] | None = None
            if lens.count(dim) != n:
                keep = []
                for i, v in enumerate(lens):
                    if v == dim:
                        keep.append(i)
                    elif v < 0:
                        self.bad(self.line[i], "no dense numeric context array")
                    else:
                        self.bad(self.line[i], f"context has length {v}, expected {dim} ({source})")
                xs = [xs[i] for i in keep]
            ctx = np.asarray(xs, dtype=np.float64).reshape(len(xs), dim)
            return keep, ctx, dim, source

        if mode == "hash":
            dim = spec.dim or 64
            done = [i for i, d in enumerate(dense) if d is None]  # hashed as they were read
            if len(done) == n:
                return None, np.asarray(xs, dtype=np.float64).reshape(n, dim), dim, "hash"
            todo = [i for i, d in enumerate(dense) if d is not None]
            hashed = self.hasher().matrix([_named(xs[i]) if dense[i] else xs[i] for i in todo])
            if not done:
                return None, hashed, dim, "hash"
            out = np.zeros((n, dim))
            out[todo] = hashed
            out[done] = np.asarray([xs[i] for i in done], dtype=np.float64)
            return None, out, dim, "hash"
        feats = [_named(x) if d else x for x, d in zip(xs, dense, strict=True)]
        cols: dict[str, int] = {"constant": 0}
        for f in feats:
            for name, _ in f:
                if name not in cols:
                    if len(cols) >= spec.max_named:
                        raise InvalidInputError(
                            "features", "named",
                            f"the log has more than {spec.max_named} feature names: use hashing "
                            "(features='hash', dim=...)")
                    cols[name] = len(cols)
        ctx = np.zeros((n, len(cols)))
        ctx[:, 0] = 1.0
        for i, f in enumerate(feats):
            for name, v in f:
                ctx[i, cols[name]] += v
        return None, ctx, len(cols), "named"

    def _proxies(self, rows: list[int] | None, n: int) -> RewardProxies | None:
        """The kept events' proxies (``rows``: their positions, None: all in order)."""
        if not self.proxies:
            return None
        full = np.full((len(self.line), 4), np.nan)
        full[:, 3] = 1.0
        at = np.fromiter(self.proxies, dtype=np.int64, count=len(self.proxies))
        full[at] = np.asarray(list(self.proxies.values()), dtype=np.float64)
        if rows is not None:
            full = full[np.asarray(rows, dtype=np.int64).reshape(n)]
        ok = full[:, 3] == 1.0
        return RewardProxies(full[:, 0].copy(), full[:, 1].copy(), full[:, 2].copy(),
                             None if ok.all() else ok)

    def finish(self, arm_ids: Sequence[str] | None) -> tuple[LoggedData, LogReadReport]:
        keep, contexts, dim, source = self._contexts()
        columns_ = self._columns()
        if keep is not None:
            columns_ = [[col[i] for i in keep] for col in columns_]
        _, arm, prop, rewards, _, _, probs, eligible_, event_id, weight, ts_ms = columns_
        n = len(arm)
        # positions of the kept events in the builder's lists, in the order they end in
        rows: list[int] | None = keep
        if n and None not in ts_ms:
            # replay walks the log in time order: events by Timestamp (stable)
            ts = np.asarray(ts_ms, dtype=np.int64)
            if np.any(ts[1:] < ts[:-1]):
                order_ts = np.argsort(ts, kind="stable").tolist()
                arm, prop, rewards, probs, eligible_, event_id, weight = (
                    [col[i] for i in order_ts]
                    for col in (arm, prop, rewards, probs, eligible_, event_id, weight))
                contexts = contexts[order_ts]
                rows = order_ts if rows is None else [rows[i] for i in order_ts]
        pos: dict[str, int] = {a: i for i, a in enumerate(arm_ids or ())}
        # arm tuples are interned (Builder.intern): columns computed once per object
        cols: dict[int, IntArray] = {}

        def columns(arms: tuple[str, ...]) -> IntArray:
            hit = cols.get(id(arms))
            if hit is None:
                for a in arms:
                    if a not in pos:
                        pos[a] = len(pos)
                hit = cols[id(arms)] = np.fromiter((pos[a] for a in arms), dtype=np.int64,
                                                   count=len(arms))
            return hit

        last: Any = None
        for a, e, pr in zip(arm, eligible_, probs, strict=True):
            if a not in pos:
                pos[a] = len(pos)
            if e is not None and e is not last:
                columns(e)
                last = e
            if pr is not None and pr[0] is not last:
                columns(pr[0])
                last = pr[0]
        order = tuple(pos)
        k = len(order)
        arm_index = np.asarray([pos[a] for a in arm], dtype=np.int64).reshape(n)
        probabilities = None
        if n and None not in probs:
            # rows grouped by their arm tuple (few distinct): one vectorised store per group
            probabilities = np.zeros((n, k))
            groups: dict[int, list[int]] = {}
            for i, pr in enumerate(probs):
                groups.setdefault(id(pr[0]), []).append(i)  # type: ignore[index]
            for members in groups.values():
                first = probs[members[0]]
                c = columns(first[0])  # type: ignore[index]
                idx = np.asarray(members)
                vals = np.asarray([probs[i][1] for i in members], dtype=np.float64)  # type: ignore[index]
                if first[2] is None:  # type: ignore[index]
                    probabilities[idx[:, None], c[None, :]] = vals
                else:
                    at = np.asarray([probs[i][2] for i in members]) - 1  # type: ignore[index]
                    probabilities[idx[:, None], c[at]] = vals
        eligible = None
        if n and any(e is not None for e in eligible_):
            eligible = np.zeros((n, k), dtype=bool)
            groups_e: dict[int, list[int]] = {}
            for i, e in enumerate(eligible_):
                groups_e.setdefault(id(e), []).append(i)
            for members in groups_e.values():
                arms_e = eligible_[members[0]]
                idx = np.asarray(members)
                if arms_e is None:
                    eligible[idx] = True
                else:
                    eligible[idx[:, None], columns(arms_e)[None, :]] = True
            eligible[np.arange(n), arm_index] = True
            if eligible.all():
                eligible = None
        weights = np.asarray(weight, dtype=np.float64).reshape(n)
        data = LoggedData(
            arm_ids=order,
            contexts=contexts,
            arm_index=arm_index,
            propensity=np.asarray(prop, dtype=np.float64).reshape(n),
            reward=np.asarray(rewards, dtype=np.float64).reshape(n),
            probabilities=probabilities,
            decision_ids=tuple(event_id),
            eligible=eligible,
            weights=None if bool(np.all(weights == 1.0)) else weights,
            arm_features=self._arm_features(order),
            proxies=self._proxies(rows, n),
        )
        self.errors.sort()
        report = LogReadReport(self.path, self.lines, n, self.malformed, tuple(self.errors),
                               self.skipped, self.clipped, dim, source, self.action_conflicts)
        return data, report


# ----------------------------------------------------------------------------- tables


def _get(obj: Mapping[str, Any], path: str) -> Any:
    if not path:
        return None
    if path in obj:
        return obj[path]
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _arm_id(v: Any, what: str = "arm") -> str:
    if isinstance(v, str) and v:
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    raise _Bad(f"{what} must be a non-empty string or an integer, got {v!r:.40}")


def _table_row(b: _Builder, no: int, obj: Mapping[str, Any], ctx_cols: Sequence[str] | None) -> None:
    spec = b.spec
    try:
        arm = _arm_id(_get(obj, spec.column("arm")), f"arm ({spec.column('arm')})")
        cost_col = spec.column("cost")
        if cost_col:
            cost = _get(obj, cost_col)
            if not _is_num(cost):
                raise _Bad(f"cost ({cost_col}) must be a finite number, got {cost!r:.40}")
            raw_reward: Any = spec.reward_from_cost(float(cost))
        else:
            raw_reward = _get(obj, spec.column("reward"))
            if raw_reward is None:
                raise _Bad(f"reward ({spec.column('reward')}) is missing")
        reward = b.reward(no, raw_reward)
        if ctx_cols is not None:
            vals = [obj.get(c) for c in ctx_cols]
            if not all(_is_num(v) for v in vals):
                raise _Bad("context columns must hold finite numbers")
            ctx: Any = [float(v) for v in vals]
            dense = True
        else:
            raw = _get(obj, spec.column("context"))
            if isinstance(raw, str) and raw.startswith(("[", "{")):
                try:
                    raw = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    raise _Bad("context is not valid JSON") from None
            if isinstance(raw, list):
                if not raw or not all(_is_num(v) for v in raw):
                    raise _Bad("context must be a non-empty array of finite numbers")
                ctx, dense = raw, True
            elif isinstance(raw, dict):
                ctx, dense = [], False
                _flatten(raw, "", ctx)
            else:
                raise _Bad(f"context ({spec.column('context')}) must be an array of numbers or "
                           "an object of features")
        el = _get(obj, spec.column("eligible"))
        eligible = (b.intern(tuple(_arm_id(a, "eligible arm") for a in el))
                    if isinstance(el, list) else None)
        probs = None
        pr = _get(obj, spec.column("probabilities"))
        if isinstance(pr, dict):
            if not all(_is_num(v) for v in pr.values()):
                raise _Bad("probabilities must be finite numbers")
            probs = (b.intern(tuple(_arm_id(a, "probabilities key") for a in pr)),
                     [float(v) for v in pr.values()], None)
        elif isinstance(pr, list) and eligible is not None and len(pr) == len(eligible):
            if not all(_is_num(v) for v in pr):
                raise _Bad("probabilities must be finite numbers")
            probs = (eligible, [float(v) for v in pr], None)
        elif pr is not None and not (isinstance(pr, float) and math.isnan(pr)):
            raise _Bad("probabilities must be aligned with eligible or map arm -> probability")
        proxies = _proxies(obj, b.proxy_cols) if b.proxy_cols else None
    except _Bad as exc:
        b.bad(no, str(exc))
        return
    prop = b.propensity(no, _get(obj, spec.column("propensity")))
    did = _get(obj, spec.column("decision_id"))
    if proxies is not None:
        b.proxies[len(b.line)] = proxies
    b.add(_Row(no, arm, prop, reward, ctx, dense, probs, eligible,
               str(did) if did is not None else str(no), 1.0))


def _proxies(obj: Mapping[str, Any], cols: Sequence[tuple[str, str]]
             ) -> tuple[float, float, float, bool] | None:
    """The row's reward proxies as numbers (NaN: not observed), None when it has none.

    Only the type is checked here; the values' ranges are
    :func:`bandit.reward.reward_from_proxies`' to judge when the log is re-scored.
    """
    vals = [math.nan, math.nan, math.nan]
    seen = False
    for name, col in cols:
        v = _get(obj, col)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        if not (isinstance(v, bool) or _is_num(v)):
            raise _Bad(f"{name} ({col}) must be a finite number or boolean, got {v!r:.40}")
        vals[PROXY_FIELDS.index(name)] = float(v)
        seen = True
    return (vals[0], vals[1], vals[2], True) if seen else None


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a log is read into rows.

    Reading allocates many small containers that are all kept and hold no cycles; the
    collector would otherwise traverse the growing heap of live rows again and again
    (about half the parse time on large logs, see bench/replay.py). Restored on exit.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _open_log(path: str | Path, spec: LogSpec | None) -> _Builder:
    if not Path(path).is_file():
        raise InvalidInputError("path", str(path), "must be an existing log file")
    return _Builder(str(Path(path)), spec or LogSpec())


def _json_objects(b: _Builder) -> Iterator[tuple[int, dict[str, Any]]]:
    """Numbered JSON objects of the log; blank lines skipped, bad lines reported to ``b``."""
    with Path(b.path).open("rb") as fh:
        for no, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            b.lines += 1
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                b.bad(no, f"not valid JSON ({exc.msg})")
                continue
            if not isinstance(obj, dict):
                b.bad(no, "not a JSON object")
                continue
            yield no, obj


def _context_glob(spec: LogSpec, columns: Sequence[str]) -> list[str] | None:
    pat = spec.column("context")
    if not any(ch in pat for ch in "*?["):
        return None
    cols = [c for c in columns if fnmatch.fnmatchcase(c, pat)]
    if not cols:
        raise InvalidInputError("field context", pat, f"matches no column (columns: {list(columns)[:20]})")
    return cols


def read_jsonl(path: str | Path, *, arm_ids: Sequence[str] | None = None,
               spec: LogSpec | None = None) -> tuple[LoggedData, LogReadReport]:
    """Read a JSON-Lines log through ``spec``'s column mapping (module docstring)."""
    b = _open_log(path, spec)
    ctx_cols: list[str] | None = None
    globbed = any(ch in b.spec.column("context") for ch in "*?[")
    with _gc_paused():
        for no, obj in _json_objects(b):
            if globbed:
                ctx_cols = _context_glob(b.spec, list(obj))
            _table_row(b, no, obj, ctx_cols)
        return b.finish(arm_ids)


def _read_frame(path: str | Path, frame: Any, spec: LogSpec | None, first_line: int,
                arm_ids: Sequence[str] | None) -> tuple[LoggedData, LogReadReport]:
    b = _Builder(str(path), spec or LogSpec())
    b.proxy_cols = tuple((f, c) for f, c in b.proxy_cols if c in frame.columns)
    ctx_cols = _context_glob(b.spec, [str(c) for c in frame.columns])
    for i, obj in enumerate(frame.to_dict(orient="records")):
        b.lines += 1
        clean = {str(k): (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in obj.items()}
        _table_row(b, first_line + i, clean, ctx_cols)
    return b.finish(arm_ids)


def read_csv(path: str | Path, *, arm_ids: Sequence[str] | None = None,
             spec: LogSpec | None = None) -> tuple[LoggedData, LogReadReport]:
    """Read a CSV log (header row; line numbers count it). Context: a glob or JSON text."""
    import pandas as pd

    b = _open_log(path, spec)
    try:
        frame = pd.read_csv(b.path)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InvalidInputError("path", b.path, f"is not a readable CSV file ({exc})") from None
    return _read_frame(b.path, frame, spec, 2, arm_ids)


def read_parquet(path: str | Path, *, arm_ids: Sequence[str] | None = None,
                 spec: LogSpec | None = None) -> tuple[LoggedData, LogReadReport]:
    """Read a Parquet log (``line`` numbers are 1-based row numbers)."""
    import pandas as pd

    b = _open_log(path, spec)
    try:
        frame = pd.read_parquet(b.path)
    except (OSError, ValueError) as exc:
        raise InvalidInputError("path", b.path, f"is not a readable Parquet file ({exc})") from None
    return _read_frame(b.path, frame, spec, 1, arm_ids)


# ----------------------------------------------------------------------------- DSJSON


def _action_id(action: Mapping[str, Any], spec_path: str, position: int) -> str:
    if spec_path != "auto":
        v = _get(action, spec_path)
        if v is None:
            raise _Bad(f"action {position} has no {spec_path!r} feature (the configured action id)")
        return _arm_id(v, f"action {position} id ({spec_path})")
    for key in ("arm_id", "_tag"):
        v = action.get(key)
        if isinstance(v, str | int) and not isinstance(v, bool) and v != "":
            return str(v)
    for v in action.values():
        if isinstance(v, dict) and "id" in v and isinstance(v["id"], str | int):
            return str(v["id"])
    return str(position)


def _action_ids(multi: list[Any], spec_path: str) -> list[str]:
    """The arm id of every ``_multi`` action: a fast path for the common shapes."""
    try:
        if spec_path == "auto":
            first = multi[0]
            key = "arm_id" if "arm_id" in first else "_tag" if "_tag" in first else None
            if key is not None:
                ids = [m[key] for m in multi]
                if set(map(type, ids)) == _STR and "" not in ids:
                    return ids
        elif "." not in spec_path:
            ids = [m[spec_path] for m in multi]
            if set(map(type, ids)) == _STR and "" not in ids:
                return ids
        else:
            parts = spec_path.split(".")
            if len(parts) == 2:
                p0, p1 = parts
                ids = [m[p0][p1] for m in multi]
                if set(map(type, ids)) == _STR and "" not in ids:
                    return ids
    except (KeyError, TypeError, IndexError):
        pass
    if not all(isinstance(m, dict) for m in multi):
        raise _Bad("'c._multi' must be an array of action objects")
    return [_action_id(m, spec_path, j + 1) for j, m in enumerate(multi)]


_INT = {int}
_NUM = {int, float}
_STR = {str}


def _dsjson_row(b: _Builder, no: int, obj: dict[str, Any]) -> None:
    spec = b.spec
    try:
        if obj.get("_skipLearn") is True:
            b.skipped += 1
            return
        c = obj.get("c")
        if type(c) is not dict:
            raise _Bad("missing context object 'c'")
        multi = c.get("_multi")
        if multi is b.last_multi and multi is not None:  # the previous line's action list
            arms = b.last_arms
        else:
            if type(multi) is not list or not multi:
                raise _Bad("'c._multi' must be a non-empty array of action objects")
            arms = tuple(_action_ids(multi, spec.action_id))
            known = b.tuples.get(arms)
            if known is None:
                if len(set(arms)) != len(arms):
                    raise _Bad("action ids in '_multi' are not unique")
                known = b.tuples[arms] = arms
            arms = known
            b.last_multi, b.last_arms, b.last_conflict = multi, arms, None
        k = len(arms)
        li, la, a, p = obj.get("_labelIndex"), obj.get("_label_Action"), obj.get("a"), obj.get("p")
        if li is not None and type(li) is not int:
            raise _Bad(f"_labelIndex must be an integer, got {li!r:.40}")
        if la is not None and type(la) is not int:
            raise _Bad(f"_label_Action must be an integer, got {la!r:.40}")
        if li is not None:
            idx = li
            if la is not None and la != li + 1:
                raise _Bad(f"_label_Action {la} disagrees with _labelIndex {li} (must be index + 1)")
        elif la is not None:
            idx = la - 1
        elif type(a) is list and a:
            idx = a[0] - 1 if type(a[0]) is int else -1
        else:
            raise _Bad("no chosen action (_labelIndex, _label_Action or a)")
        if not 0 <= idx < k:
            raise _Bad(f"chosen action index {idx} is outside '_multi' (0..{k - 1})")
        dist: tuple[tuple[str, ...], list[float], list[int] | None] | None = None
        prop = obj.get("_label_probability")
        if a is not None or p is not None:
            if not (type(a) is list and type(p) is list and len(a) == len(p) and a):
                raise _Bad("'a' and 'p' must be arrays of the same length")
            if not (set(map(type, a)) <= _INT and min(a) >= 1 and max(a) <= k):
                raise _Bad(f"'a' must hold 1-based action ids in 1..{k}")
            if not set(map(type, p)) <= _NUM:
                raise _Bad("'p' must hold probabilities")
            if len(set(a)) != len(a) or min(p) < 0 or max(p) > 1:
                raise _Bad("'a' must not repeat an action and 'p' must hold probabilities")
            if prop is None:
                prop = p[a.index(idx + 1)] if idx + 1 in a else None
            if len(a) == k:  # a partial ranking is not the logging distribution
                dist = (arms, p, a)
        ts = obj.get("Timestamp")
        ts_ms = None if ts is None else _timestamp_ms(ts)
        cost = obj.get("_label_cost")
        if type(cost) not in _NUM or not math.isfinite(cost):
            raise _Bad(f"_label_cost must be a finite number, got {cost!r:.40}")
        reward = spec.cost_offset + spec.cost_scale * float(cost)
        lo, hi = spec.reward_range
        if not lo <= reward <= hi:  # clipped, refused, or not finite: the one place that says
            reward = b.reward(no, reward)
        pdrop = obj.get("pdrop", 0.0)
        if type(pdrop) not in _NUM or not 0 <= pdrop < 1:
            raise _Bad(f"pdrop must be in [0, 1), got {pdrop!r:.40}")
        x = c.get("x")
        # a finite sum implies finite entries (the per-entry check only when it is not)
        if (type(x) is list and x and len(c) == 2 and set(map(type, x)) <= _NUM
                and (math.isfinite(sum(x)) or all(math.isfinite(v) for v in x))):
            ctx: Any = x
            dense = True
        else:
            ctx, dense = [], False
            _flatten(c, "", ctx)
        if spec.action_features != "none":
            if multi is b.last_multi and b.last_conflict is not None:
                b.action_conflicts += b.last_conflict
            else:
                b.last_conflict = b.note_actions(multi, arms)
    except _Bad as exc:
        b.bad(no, str(exc))
        return
    if not (type(prop) is float and 0.0 < prop <= 1.0):
        prop = b.propensity(no, prop)
    eid = obj.get("EventId")
    b.add(_Row(no, arms[idx], prop, reward, ctx, dense, dist, arms,
               str(eid) if eid is not None else str(no), 1.0 / (1.0 - float(pdrop)), ts_ms))


#: events accepted column by column at once (:func:`_dsjson_chunk`)
_CHUNK = 512
_DICT = {dict}
_LIST = {list}
_NONE = {type(None)}


def _dsjson_chunk(b: _Builder, items: list[tuple[int, dict[str, Any]]]) -> bool:
    """Accept a run of well-formed DSJSON events field by field, as :func:`_dsjson_row` would.

    The per-event checks of :func:`_dsjson_row` done once per field over the run (types
    of a whole column at once, ranges in numpy). Returns False, having kept nothing, when
    any event needs :func:`_dsjson_row`: a malformed or skipped line, a reward to clip,
    action features, a missing optional field; the run is then read line by line, which
    names each problem.
    """
    spec = b.spec
    if spec.action_features != "none":
        return False
    n = len(items)
    objs = list(map(itemgetter(1), items))
    skip = [o.get("_skipLearn") for o in objs]
    if skip.count(None) != n and any(v is True for v in skip):
        return False
    cs = [o.get("c") for o in objs]
    if set(map(type, cs)) != _DICT:
        return False
    last_m, last_a = b.last_multi, b.last_arms
    arms_col: list[tuple[str, ...]] = []
    try:
        for m in (c.get("_multi") for c in cs):
            if m is not last_m or m is None:
                if type(m) is not list or not m:
                    return False
                arms = tuple(_action_ids(m, spec.action_id))
                known = b.tuples.get(arms)
                if known is None:
                    if len(set(arms)) != len(arms):
                        return False
                    known = b.tuples[arms] = arms
                last_m, last_a = m, known
                b.last_multi, b.last_arms, b.last_conflict = m, known, None
            arms_col.append(last_a)
        K = np.fromiter(map(len, arms_col), dtype=np.int64, count=n)
        lis = [o.get("_labelIndex") for o in objs]
        if set(map(type, lis)) != _INT:
            return False
        idx = np.array(lis, dtype=np.int64)
        las = [o.get("_label_Action") for o in objs]
        types = set(map(type, las))
        if not (types == _NONE or (types == _INT and np.array_equal(np.array(las), idx + 1))):
            return False
        if not ((idx >= 0) & (idx < K)).all():
            return False
        a_col = [o.get("a") for o in objs]
        p_col = [o.get("p") for o in objs]
        if set(map(type, a_col)) != _LIST or set(map(type, p_col)) != _LIST:
            return False
        lens = set(map(len, a_col))
        if len(lens) != 1 or set(map(len, p_col)) != lens or 0 in lens:
            return False
        L = lens.pop()
        if set(map(type, chain.from_iterable(a_col))) != _INT:
            return False
        # numpy converts a flat run of numbers faster than nested lists
        A = np.fromiter(chain.from_iterable(a_col), dtype=np.int64, count=n * L).reshape(n, L)
        if A.min() < 1 or (A > K[:, None]).any():
            return False
        if L > 1:
            S = np.sort(A, axis=1)
            if (S[:, 1:] == S[:, :-1]).any():
                return False
        if not set(map(type, chain.from_iterable(p_col))) <= _NUM:
            return False
        P = np.fromiter(chain.from_iterable(p_col), dtype=np.float64, count=n * L).reshape(n, L)
        if not ((P >= 0) & (P <= 1)).all():
            return False
        props = [o.get("_label_probability") for o in objs]
        if not set(map(type, props)) <= _NUM:
            return False
        prop = np.array(props, dtype=np.float64)
        if not ((prop > 0) & (prop <= 1)).all():
            return False
        ts = [o.get("Timestamp") for o in objs]
        types = set(map(type, ts))
        if types == _STR:
            ts = list(map(_parse_timestamp, ts))
        elif types != _NONE:
            return False
        costs = [o.get("_label_cost") for o in objs]
        if not set(map(type, costs)) <= _NUM:
            return False
        cost = np.array(costs, dtype=np.float64)
        if not np.isfinite(cost).all():
            return False
        reward = spec.cost_offset + spec.cost_scale * cost
        lo, hi = spec.reward_range
        if not ((reward >= lo) & (reward <= hi)).all():
            return False
        pdrops = [o.get("pdrop", 0.0) for o in objs]
        if not set(map(type, pdrops)) <= _NUM:
            return False
        pdrop = np.array(pdrops, dtype=np.float64)
        if not ((pdrop >= 0) & (pdrop < 1)).all():
            return False
        xs = [c.get("x") for c in cs]
        ctx: list[Any]
        dense: list[bool | None]
        ctx = []
        if (set(map(type, xs)) == _LIST and set(map(len, cs)) == {2} and 0 not in map(len, xs)
                and set(map(type, chain.from_iterable(xs))) <= _NUM):
            lens = set(map(len, xs))
            if len(lens) == 1:  # one array: the run's floats are not kept as objects
                d = lens.pop()
                X = np.fromiter(chain.from_iterable(xs), dtype=np.float64,
                                count=n * d).reshape(n, d)
                if np.isfinite(X).all():
                    ctx = list(X)
            elif math.isfinite(sum(map(sum, xs))):
                ctx = xs
        if ctx:
            dense = [True] * n
        else:
            dense = [type(x) is list and bool(x) and len(c) == 2 and set(map(type, x)) <= _NUM
                     and (math.isfinite(sum(x)) or all(math.isfinite(v) for v in x))
                     for c, x in zip(cs, xs, strict=True)]
            ctx = [x if d else None for x, d in zip(xs, dense, strict=True)]
            feat = [i for i, d in enumerate(dense) if not d]
            if spec.features in ("hash", "auto"):
                # features are only ever hashed into this dimension (auto: unless the log
                # is dense, when they are malformed): hashed now, column by column
                hashed = b.hasher().objects([cs[i] for i in feat])
                for i, row in zip(feat, hashed, strict=True):
                    ctx[i], dense[i] = row, None
            else:
                for i in feat:
                    feats: list[tuple[str, float]] = []
                    _flatten(cs[i], "", feats)
                    ctx[i] = feats
    except (_Bad, OverflowError):
        return False
    eids = [o.get("EventId") for o in objs]
    if set(map(type, eids)) != _STR:
        eids = [str(e) if e is not None else str(no) for (no, _), e in zip(items, eids, strict=True)]
    # distributions as rows of the run's arrays (the parsed lists are freed with the run)
    if (K == L).all():
        dists: list[Any] = list(zip(arms_col, P, A, strict=True))
    else:
        dists = [(ar, p, a) if len(ar) == L else None
                 for ar, p, a in zip(arms_col, P, A, strict=True)]
    b.line.extend(map(itemgetter(0), items))
    b.arm.extend(map(getitem, arms_col, lis))
    b.prop.extend(prop.tolist())
    b.rewards.extend(reward.tolist())
    b.ctx.extend(ctx)
    b.dense.extend(dense)
    b.probs.extend(dists)
    b.eligible.extend(arms_col)
    b.event_id.extend(eids)
    b.weight.extend((1.0 / (1.0 - pdrop)).tolist())
    b.ts.extend(ts)
    return True


_MULTI_KEY = b'"_multi"'


def _dsjson_objects(b: _Builder) -> Iterator[tuple[int, dict[str, Any]]]:
    """:func:`_json_objects` for DSJSON, parsing a repeated action list once.

    Logs list the same actions line after line, and their ``_multi`` text is much of a
    line's JSON. When a line holds, after its first ``"_multi"`` key, exactly the bytes of
    the action list last parsed (compact, or spelled as ``json.dumps`` does), those bytes
    are replaced by an unpredictable token before parsing and the parsed list (one shared
    object) is put back. Finding the token at ``c._multi`` proves the replaced bytes were
    that value, so the object is what parsing the whole line gives; otherwise the whole
    line is parsed. The shared list is never modified.
    """
    token = "\x00" + os.urandom(8).hex()  # no log line can contain it
    tok = orjson.dumps(token)
    loads = orjson.loads
    seg = b""  # the bytes of the last action list parsed
    multi: list[Any] | None = None  # and its value
    tries = 0  # failed attempts to find the bytes of a repeated action list
    with Path(b.path).open("rb") as fh:
        for no, raw in enumerate(fh, start=1):
            if not raw or raw.isspace():
                continue
            b.lines += 1
            obj: Any = None
            if seg:
                at = raw.find(_MULTI_KEY)
                if at >= 0:
                    s = at + 8
                    if raw.startswith(b":", s):
                        s += 1
                    if raw.startswith(b" ", s):
                        s += 1
                    if raw.startswith(seg, s):
                        try:
                            obj = loads(raw[:s] + tok + raw[s + len(seg):])
                        except orjson.JSONDecodeError:
                            obj = None
                        c = obj.get("c") if type(obj) is dict else None
                        if type(c) is dict and c.get("_multi") == token:
                            c["_multi"] = multi
                        else:
                            obj = None
            if obj is None:
                try:
                    obj = loads(raw)
                except orjson.JSONDecodeError as exc:
                    b.bad(no, f"not valid JSON ({exc.msg})")
                    continue
                if type(obj) is not dict:
                    b.bad(no, "not a JSON object")
                    continue
                c = obj.get("c")
                m = c.get("_multi") if type(c) is dict else None
                if type(m) is list and m:
                    if m == multi and tries < 3:  # a repeat not caught: learn its spelling
                        seg = _multi_bytes(raw, m)
                        tries += not seg
                    else:
                        seg = b""
                    multi = m
            yield no, obj


def _multi_bytes(raw: bytes, multi: list[Any]) -> bytes:
    """The text of ``multi`` after the first ``"_multi"`` key of ``raw`` (b"" if not found)."""
    at = raw.find(_MULTI_KEY)
    if at < 0:
        return b""
    s = at + 8
    if raw.startswith(b":", s):
        s += 1
    if raw.startswith(b" ", s):
        s += 1
    import json

    for text in (orjson.dumps(multi), json.dumps(multi).encode()):
        if raw.startswith(text, s):
            return text
    return b""


def read_dsjson(path: str | Path, *, arm_ids: Sequence[str] | None = None,
                spec: LogSpec | None = None) -> tuple[LoggedData, LogReadReport]:
    """Read a DSJSON log per the format's definition (module docstring)."""
    b = _open_log(path, spec)
    with _gc_paused():
        run: list[tuple[int, dict[str, Any]]] = []
        for item in _dsjson_objects(b):
            run.append(item)
            if len(run) == _CHUNK:
                _dsjson_rows(b, run)
                run = []
        _dsjson_rows(b, run)
        return b.finish(arm_ids)


def _dsjson_rows(b: _Builder, run: list[tuple[int, dict[str, Any]]]) -> None:
    if run and not _dsjson_chunk(b, run):
        for no, obj in run:
            _dsjson_row(b, no, obj)


def _timestamp_ms(value: Any) -> int:
    """A DSJSON ``Timestamp`` (ISO 8601, ``Z`` or offset; naive = UTC) as milliseconds."""
    if not isinstance(value, str):
        raise _Bad(f"Timestamp must be an ISO 8601 time, got {value!r:.40}")
    return _parse_timestamp(value)


@functools.lru_cache(maxsize=4096)  # logs written in bursts repeat timestamps
def _parse_timestamp(value: str) -> int:
    try:
        t = _dt.datetime.fromisoformat(value)
    except ValueError:
        raise _Bad(f"Timestamp must be an ISO 8601 time, got {value!r:.40}") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.UTC)
    return int(t.timestamp() * 1000)


_FORMATS = ("auto", "jsonl", "dsjson", "csv", "parquet")


def read_log(path: str | Path, *, fmt: str = "auto", arm_ids: Sequence[str] | None = None,
             spec: LogSpec | None = None) -> tuple[LoggedData, LogReadReport]:
    """Read ``path`` as ``jsonl``, ``dsjson``, ``csv`` or ``parquet``.

    ``auto``: by suffix (``.csv``, ``.parquet``/``.pq``, ``.dsjson``), else DSJSON when
    most of the first 100 non-empty lines carry ``_label_cost`` or ``c._multi``, else JSONL.
    """
    if fmt not in _FORMATS:
        raise InvalidInputError("format", fmt, f"must be one of {_FORMATS}")
    p = Path(path)
    if fmt == "auto":
        suffix = p.suffix.lower()
        fmt = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".dsjson": "dsjson"}.get(
            suffix, "")
        if not fmt:
            fmt = "jsonl"
            if p.is_file():
                votes = seen = 0
                with p.open("rb") as fh:
                    for line in fh:
                        if line.strip():
                            seen += 1
                            votes += b'"_label_cost"' in line or b'"_multi"' in line
                            if seen >= 100:
                                break
                fmt = "dsjson" if seen and votes * 2 > seen else "jsonl"
    reader = {"jsonl": read_jsonl, "dsjson": read_dsjson, "csv": read_csv,
              "parquet": read_parquet}[fmt]
    return reader(path, arm_ids=arm_ids, spec=spec)


# ----------------------------------------------------------------------------- writers


def write_jsonl(path: str | Path, data: LoggedData, *, experiment_id: str = "sim",
                variant: str = "logger", start_ms: int = 1_790_000_000_000) -> None:
    """Write ``data`` as JSON Lines: each line a :class:`~bandit.events.DecisionEvent` as
    the wire encodes it (its field list is spelled once, there), plus ``reward`` (and the
    logging distribution as ``probabilities`` when the log has it, and the reward proxies
    the event observed — ``retried`` a boolean, ``rating`` and ``conversation_length``
    integers — when the log has them)."""
    from bandit.events import DecisionEvent, encode_event

    px = data.proxies
    with Path(path).open("wb") as fh:
        for i in range(data.n):
            eligible = (list(data.arm_ids) if data.eligible is None
                        else [a for a, e in zip(data.arm_ids, data.eligible[i], strict=True) if e])
            event = DecisionEvent(
                event_id=f"d{i}", decision_id=f"d{i}", ts_ms=start_ms + i,
                unit_id=f"u{i % 997}", conversation_id=f"c{i}",
                experiment_id=experiment_id, variant=variant,
                arm_id=data.arm_ids[int(data.arm_index[i])],
                propensity=float(data.propensity[i]), policy_version="logger",
                context=tuple(data.contexts[i].tolist()), eligible=tuple(eligible),
            )
            obj: dict[str, Any] = orjson.loads(encode_event(event))
            obj["reward"] = float(data.reward[i])
            if data.probabilities is not None:
                col = {a: j for j, a in enumerate(data.arm_ids)}
                obj["probabilities"] = [float(data.probabilities[i, col[a]]) for a in eligible]
            if px is not None:
                for name in PROXY_FIELDS:
                    v = float(getattr(px, name)[i])
                    if not math.isnan(v):
                        obj[name] = (v == 1.0 if name == "retried" and v in (0.0, 1.0)
                                     else int(v) if v.is_integer() else v)
            fh.write(orjson.dumps(obj) + b"\n")


def write_dsjson(path: str | Path, data: LoggedData, *, cost_scale: float = -1.0,
                 cost_offset: float = 0.0) -> None:
    """Write ``data`` as DSJSON per the format (cost = (reward − offset) / scale).

    Only what the log knows is written: ``a`` ranks the chosen action first, and ``p``
    (aligned with ``a``) is written only when the log has the full logging distribution;
    otherwise ``a`` is just the chosen action and ``p`` its probability. The context is
    ``c.x`` (dense); actions are ``_multi[].arm_id``.
    """
    if cost_scale == 0 or not math.isfinite(cost_scale):
        raise InvalidInputError("cost_scale", cost_scale, "must be finite and non-zero")
    with Path(path).open("wb") as fh:
        for i in range(data.n):
            ids = (list(range(data.n_arms)) if data.eligible is None
                   else [int(j) for j in np.flatnonzero(data.eligible[i])])
            chosen = int(data.arm_index[i])
            li = ids.index(chosen)
            others = [j for j in range(len(ids)) if j != li]
            if data.probabilities is not None:
                pr = data.probabilities[i]
                others.sort(key=lambda j: (-pr[ids[j]], j))
                a = [li + 1] + [j + 1 for j in others]
                p = [float(data.propensity[i])] + [float(pr[ids[j]]) for j in others]
            else:
                a, p = [li + 1], [float(data.propensity[i])]
            obj: dict[str, Any] = {
                "_label_cost": (float(data.reward[i]) - cost_offset) / cost_scale,
                "_label_probability": float(data.propensity[i]),
                "_label_Action": li + 1, "_labelIndex": li,
                "a": a, "p": p,
                "c": {"x": data.contexts[i].tolist(),
                      "_multi": [{"arm_id": data.arm_ids[j]} for j in ids]},
                "EventId": data.decision_ids[i] if data.decision_ids is not None else f"d{i}",
                "Version": "1",
            }
            if data.weights is not None:
                obj["pdrop"] = 1.0 - 1.0 / float(data.weights[i])
            fh.write(orjson.dumps(obj) + b"\n")


# ----------------------------------------------------------------------------- OBP


def from_bandit_feedback(feedback: Mapping[str, Any], *,
                         arm_ids: Sequence[str] | None = None) -> LoggedData:
    """Open Bandit Pipeline's ``bandit_feedback`` dict as :class:`LoggedData`.

    Uses ``action``, ``reward``, ``pscore``, ``context`` (and ``n_actions``, ``pi_b`` of
    shape (n, K) or (n, K, 1) when present: the full logging distribution). Arm ids are
    ``arm_ids`` or ``"0".."K-1"``. A ``position`` other than 0 is refused (slates are not
    supported).
    """
    try:
        action = np.asarray(feedback["action"], dtype=np.int64)
        reward = np.asarray(feedback["reward"], dtype=np.float64)
        pscore = np.asarray(feedback["pscore"], dtype=np.float64)
        context = np.asarray(feedback["context"], dtype=np.float64)
    except KeyError as exc:
        raise InvalidInputError("bandit_feedback", str(exc), "is a required key") from None
    except (TypeError, ValueError) as exc:
        raise InvalidInputError("bandit_feedback", "arrays", f"must be numeric ({exc})") from None
    n = action.shape[0]
    if context.ndim == 1:
        context = context.reshape(n, -1)
    k = int(feedback.get("n_actions", int(action.max()) + 1 if n else 0))
    pos = feedback.get("position")
    if pos is not None and np.any(np.asarray(pos) != 0):
        raise InvalidInputError("bandit_feedback.position", "non-zero", "slates are not supported")
    ids = tuple(arm_ids) if arm_ids is not None else tuple(str(i) for i in range(k))
    if len(ids) != k:
        raise InvalidInputError("arm_ids", len(ids), f"must name n_actions = {k} arms")
    pi_b = feedback.get("pi_b")
    probs = None
    if pi_b is not None:
        probs = np.asarray(pi_b, dtype=np.float64)
        probs = probs[:, :, 0] if probs.ndim == 3 else probs
    return LoggedData(ids, context, action, pscore, reward, probs)


def to_bandit_feedback(data: LoggedData) -> dict[str, Any]:
    """:class:`LoggedData` as an Open Bandit Pipeline ``bandit_feedback`` dict."""
    out: dict[str, Any] = {
        "n_rounds": data.n, "n_actions": data.n_arms, "action": data.arm_index.copy(),
        "position": np.zeros(data.n, dtype=np.int64), "reward": data.reward.copy(),
        "pscore": data.propensity.copy(), "context": data.contexts.copy(),
        "action_context": np.eye(data.n_arms),
    }
    if data.probabilities is not None:
        out["pi_b"] = data.probabilities[:, :, None].copy()
    return out


# ----------------------------------------------------------------------------- store


_STORE_SQL = """
SELECT d.decision_id AS decision_id, d.arm_id AS arm_id, d.propensity AS propensity,
       d.context AS context, r.reward AS reward, r.joined AS joined,
       r.retried AS retried, r.rating AS rating, r.conversation_length AS conversation_length
FROM decisions AS d FINAL
INNER JOIN (SELECT decision_id, reward, joined, retried, rating, conversation_length
            FROM rewards FINAL) AS r
    ON d.decision_id = r.decision_id
WHERE d.experiment_id = {experiment_id:String}
  AND (length({variant:String}) = 0 OR d.variant = {variant:String})
ORDER BY d.ts_ms, d.decision_id
"""
#: the rewards' proxies are stored from migration 5 on; before, the query reads them NULL
_STORE_PROXIES_VERSION = 5
_STORE_SQL_NO_PROXIES = """
SELECT d.decision_id AS decision_id, d.arm_id AS arm_id, d.propensity AS propensity,
       d.context AS context, r.reward AS reward, r.joined AS joined,
       NULL AS retried, NULL AS rating, NULL AS conversation_length
FROM decisions AS d FINAL
INNER JOIN (SELECT decision_id, reward, joined FROM rewards FINAL) AS r
    ON d.decision_id = r.decision_id
WHERE d.experiment_id = {experiment_id:String}
  AND (length({variant:String}) = 0 OR d.variant = {variant:String})
ORDER BY d.ts_ms, d.decision_id
"""


def _store_rows(df: Any) -> Iterable[tuple[int, dict[str, Any]]]:
    import pandas as pd

    def proxy(v: Any) -> float | None:
        return None if v is None or pd.isna(v) else float(v)

    for no, row in enumerate(df.itertuples(index=False), start=1):
        ctx = row.context
        yield no, {"decision_id": row.decision_id, "arm_id": row.arm_id,
                   "propensity": float(row.propensity), "reward": float(row.reward),
                   "context": [float(v) for v in ctx] if ctx is not None and len(ctx) else None,
                   "joined": bool(row.joined), "retried": proxy(row.retried),
                   "rating": proxy(row.rating),
                   "conversation_length": proxy(row.conversation_length)}


def read_store(store: Any, experiment_id: str, *, variant: str = "",
               arm_ids: Sequence[str] | None = None,
               spec: LogSpec | None = None) -> tuple[LoggedData, LogReadReport]:
    """Decisions joined with their credited rewards from a Switchboard store.

    ``store`` is a :class:`bandit.store.ClickHouseStore` (``open_store``; chdb or a
    ClickHouse server); values reach SQL only as bound parameters. Rows with a bad
    context are counted as malformed (numbered in query order); a zero propensity
    refuses the log, as for files. The rewards' proxies (migration 5) are the events'
    :class:`RewardProxies`; a reward from feedback whose proxies are NULL (written before
    migration 5) cannot be re-scored (``RewardProxies.rescorable``), a decision that had
    no feedback can (it gets each reward config's default).
    """
    if not isinstance(experiment_id, str) or not experiment_id:
        raise InvalidInputError("experiment_id", experiment_id, "must be a non-empty string")
    query = getattr(store, "_query_df", None)
    if query is None:
        raise StoreError("this store cannot be queried for logged decisions")
    version = getattr(store, "schema_version", None)
    sql = (_STORE_SQL if version is None or version() >= _STORE_PROXIES_VERSION
           else _STORE_SQL_NO_PROXIES)
    df = query(sql, {"experiment_id": experiment_id, "variant": variant})
    b = _Builder(f"store:{experiment_id}", LogSpec(features="dense", dim=(spec.dim if spec else None),
                                                   reward_range=(spec or LogSpec()).reward_range,
                                                   out_of_range=(spec or LogSpec()).out_of_range))
    unknown = (math.nan, math.nan, math.nan, False)
    for no, obj in _store_rows(df):
        b.lines += 1
        at = len(b.line)
        _table_row(b, no, obj, None)
        if len(b.line) > at and obj["joined"] and at not in b.proxies:
            b.proxies[at] = unknown
    return b.finish(arm_ids)
