"""Logged bandit data for offline replay and off-policy evaluation.

Two file formats are read and written:

* **JSON Lines of decisions** — one object per line with the fields of
  :class:`bandit.events.DecisionEvent` plus ``reward`` (a number in [0, 1]), i.e. a
  decision joined with its feedback. Optional ``probabilities`` (list aligned with
  ``eligible``) carries the logging policy's full distribution.
* **Vowpal Wabbit DSJSON** (the format of VW's decision-service logs): ``_label_cost``
  (= −reward), ``_label_probability``, ``_labelIndex`` (0-based index into ``a``),
  ``a`` (1-based action ids in the order of ``p``), ``p`` (the logging distribution),
  ``c`` with ``x`` (the context) and ``_multi`` (one ``{"arm_id": ...}`` per action),
  ``EventId``.

Malformed lines are counted with their line numbers in a :class:`LogReadReport`, never
skipped silently; a zero or absent propensity refuses the whole log with an
:class:`InvalidInputError` (importance weights are undefined without it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from bandit.errors import InvalidInputError, StoreError

__all__ = [
    "LogReadReport",
    "LoggedData",
    "read_dsjson",
    "read_jsonl",
    "read_log",
    "read_store",
    "write_dsjson",
    "write_jsonl",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
_MAX_ERRORS_KEPT = 100


@dataclass(frozen=True)
class LogReadReport:
    """What reading a log did: lines read, events kept, malformed lines with reasons."""

    path: str
    lines: int
    events: int
    malformed: int
    errors: tuple[tuple[int, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "lines": self.lines,
            "events": self.events,
            "malformed": self.malformed,
            "errors": [{"line": n, "reason": r} for n, r in self.errors],
        }


@dataclass(frozen=True)
class LoggedData:
    """Logged decisions joined with rewards, as arrays (n events, K arms, d dims).

    ``probabilities`` is the full logging distribution (n, K) when the log has it
    (0 for arms not eligible), else ``None``.
    """

    arm_ids: tuple[str, ...]
    contexts: FloatArray
    arm_index: IntArray
    propensity: FloatArray
    reward: FloatArray
    probabilities: FloatArray | None = None
    decision_ids: tuple[str, ...] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        n = self.arm_index.shape[0]
        if self.contexts.ndim != 2 or self.contexts.shape[0] != n:
            raise InvalidInputError("contexts", self.contexts.shape, f"must have shape ({n}, d)")
        if self.propensity.shape != (n,) or self.reward.shape != (n,):
            raise InvalidInputError("propensity/reward", self.propensity.shape, f"must be ({n},)")
        if n and (self.arm_index.min() < 0 or self.arm_index.max() >= len(self.arm_ids)):
            raise InvalidInputError("arm_index", int(self.arm_index.max()), "out of range")
        _check_propensity(self.propensity)
        if not np.all(np.isfinite(self.reward)):
            raise InvalidInputError("reward", "non-finite", "must be finite")
        if self.probabilities is not None and self.probabilities.shape != (n, len(self.arm_ids)):
            raise InvalidInputError("probabilities", self.probabilities.shape, "must be (n, K)")

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
        """True when every propensity is 1/K (uniformly-logged data)."""
        return bool(np.allclose(self.propensity, 1.0 / self.n_arms, rtol=rtol))

    def subset(self, idx: npt.ArrayLike) -> LoggedData:
        i = np.asarray(idx)
        return LoggedData(
            self.arm_ids, self.contexts[i], self.arm_index[i], self.propensity[i],
            self.reward[i], None if self.probabilities is None else self.probabilities[i],
        )


def _check_propensity(p: FloatArray) -> None:
    bad = np.flatnonzero(~(np.isfinite(p) & (p > 0) & (p <= 1)))
    if bad.size:
        raise InvalidInputError(
            f"propensity[{int(bad[0])}]", float(p[bad[0]]),
            f"must be in (0, 1] ({bad.size} events bad): importance weights need the logging "
            "probability of the chosen arm",
        )


class _Builder:
    def __init__(self, path: str) -> None:
        self.path = path
        self.arm_pos: dict[str, int] = {}
        self.ctx: list[Sequence[float]] = []
        self.arm: list[int] = []
        self.prop: list[float] = []
        self.rew: list[float] = []
        self.probs: list[dict[str, float] | None] = []
        self.ids: list[str] = []
        self.lines = 0
        self.malformed = 0
        self.errors: list[tuple[int, str]] = []
        self.dim: int | None = None

    def bad(self, line_no: int, reason: str) -> None:
        self.malformed += 1
        if len(self.errors) < _MAX_ERRORS_KEPT:
            self.errors.append((line_no, reason))

    def pos(self, arm_id: str) -> int:
        if arm_id not in self.arm_pos:
            self.arm_pos[arm_id] = len(self.arm_pos)
        return self.arm_pos[arm_id]

    def add(self, line_no: int, ctx: Any, arm_id: Any, prop: Any, reward: Any,
            probs: dict[str, float] | None, event_id: str) -> None:
        if prop is None or isinstance(prop, bool) or not isinstance(prop, int | float):
            raise InvalidInputError(f"line {line_no}: propensity", prop,
                                    "is required (a number in (0, 1])")
        if not (math.isfinite(prop) and 0 < prop <= 1):
            raise InvalidInputError(f"line {line_no}: propensity", prop, "must be in (0, 1]")
        if not isinstance(arm_id, str) or not arm_id:
            return self.bad(line_no, f"arm_id must be a non-empty string, got {arm_id!r:.40}")
        if (isinstance(reward, bool) or not isinstance(reward, int | float)
                or not math.isfinite(reward)):
            return self.bad(line_no, f"reward must be a finite number, got {reward!r:.40}")
        if not isinstance(ctx, list) or not ctx or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in ctx
        ):
            return self.bad(line_no, "context must be a non-empty array of finite numbers")
        if self.dim is None:
            self.dim = len(ctx)
        elif len(ctx) != self.dim:
            return self.bad(line_no, f"context has length {len(ctx)}, expected {self.dim}")
        self.ctx.append(ctx)
        self.arm.append(self.pos(arm_id))
        self.prop.append(float(prop))
        self.rew.append(float(reward))
        self.probs.append(probs)
        self.ids.append(event_id)
        if probs:
            for a in probs:
                self.pos(a)
        return None

    def finish(self, arm_ids: Sequence[str] | None) -> tuple[LoggedData, LogReadReport]:
        if arm_ids is not None:
            order = list(arm_ids)
            for a in self.arm_pos:
                if a not in order:
                    order.append(a)
        else:
            order = sorted(self.arm_pos, key=self.arm_pos.__getitem__)
        seen = sorted(self.arm_pos, key=self.arm_pos.__getitem__)
        remap = np.array([order.index(a) for a in seen], dtype=np.int64)
        n = len(self.arm)
        arm_index = remap[np.asarray(self.arm, dtype=np.int64)] if n else np.zeros(0, np.int64)
        probabilities = None
        if n and all(p for p in self.probs):
            probabilities = np.zeros((n, len(order)))
            col = {a: i for i, a in enumerate(order)}
            for i, pd in enumerate(self.probs):
                for a, v in pd.items():  # type: ignore[union-attr]
                    probabilities[i, col[a]] = v
        data = LoggedData(
            arm_ids=tuple(order),
            contexts=np.asarray(self.ctx, dtype=np.float64).reshape(n, self.dim or 0),
            arm_index=arm_index,
            propensity=np.asarray(self.prop, dtype=np.float64),
            reward=np.asarray(self.rew, dtype=np.float64),
            probabilities=probabilities,
            decision_ids=tuple(self.ids),
        )
        report = LogReadReport(self.path, self.lines, n, self.malformed, tuple(self.errors))
        return data, report


def _lines(path: Path) -> Iterable[tuple[int, bytes]]:
    with path.open("rb") as fh:
        yield from enumerate(fh, start=1)


def _open_log(path: str | Path) -> _Builder:
    if not Path(path).is_file():
        raise InvalidInputError("path", str(path), "must be an existing log file")
    return _Builder(str(Path(path)))


def _json_objects(b: _Builder) -> Iterable[tuple[int, dict[str, Any]]]:
    """Numbered JSON objects of the log; blank lines skipped, bad lines reported to ``b``."""
    for no, raw in _lines(Path(b.path)):
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


def read_jsonl(
    path: str | Path, *, arm_ids: Sequence[str] | None = None
) -> tuple[LoggedData, LogReadReport]:
    """Read a JSON-Lines decision log (DecisionEvent fields + ``reward``)."""
    b = _open_log(path)
    for no, obj in _json_objects(b):
        probs = None
        if "probabilities" in obj and "eligible" in obj:
            pr, el = obj["probabilities"], obj["eligible"]
            if isinstance(pr, list) and isinstance(el, list) and len(pr) == len(el):
                probs = {str(a): float(v) for a, v in zip(el, pr, strict=True)}
        b.add(no, obj.get("context"), obj.get("arm_id"), obj.get("propensity"),
              obj.get("reward"), probs, str(obj.get("decision_id", no)))
    return b.finish(arm_ids)


def read_dsjson(
    path: str | Path, *, arm_ids: Sequence[str] | None = None
) -> tuple[LoggedData, LogReadReport]:
    """Read a Vowpal Wabbit DSJSON log (see the module docstring for the fields used)."""
    b = _open_log(path)
    for no, obj in _json_objects(b):
        try:
            c = obj["c"]
            multi = [m["arm_id"] for m in c["_multi"]]
            actions = obj["a"]
            probs_list = obj["p"]
            chosen = multi[actions[int(obj["_labelIndex"])] - 1]
            probs = {multi[a - 1]: float(v) for a, v in zip(actions, probs_list, strict=True)}
            cost = obj["_label_cost"]
            ctx = c["x"]
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            b.bad(no, f"missing or malformed DSJSON field ({type(exc).__name__}: {exc})")
            continue
        reward = -cost if isinstance(cost, int | float) and not isinstance(cost, bool) else cost
        b.add(no, ctx, chosen, obj.get("_label_probability"), reward, probs,
              str(obj.get("EventId", no)))
    return b.finish(arm_ids)


def read_log(path: str | Path, *, fmt: str = "auto",
             arm_ids: Sequence[str] | None = None) -> tuple[LoggedData, LogReadReport]:
    """Read ``path`` as ``jsonl`` or ``dsjson`` (``auto``: by the first non-empty line)."""
    if fmt == "auto":
        fmt = "jsonl"
        p = Path(path)
        if p.is_file():
            with p.open("rb") as fh:
                for line in fh:
                    if line.strip():
                        fmt = "dsjson" if b'"_label_cost"' in line else "jsonl"
                        break
    if fmt == "jsonl":
        return read_jsonl(path, arm_ids=arm_ids)
    if fmt == "dsjson":
        return read_dsjson(path, arm_ids=arm_ids)
    raise InvalidInputError("format", fmt, "must be 'auto', 'jsonl' or 'dsjson'")


def write_jsonl(path: str | Path, data: LoggedData, *, experiment_id: str = "sim",
                variant: str = "logger", start_ms: int = 1_790_000_000_000) -> None:
    """Write ``data`` as JSON Lines (DecisionEvent fields + ``reward``)."""
    with Path(path).open("wb") as fh:
        for i in range(data.n):
            obj: dict[str, Any] = {
                "event_id": f"d{i}", "decision_id": f"d{i}", "ts_ms": start_ms + i,
                "unit_id": f"u{i % 997}", "conversation_id": f"c{i}",
                "experiment_id": experiment_id, "variant": variant,
                "arm_id": data.arm_ids[int(data.arm_index[i])],
                "propensity": float(data.propensity[i]), "policy_version": "logger",
                "context": data.contexts[i].tolist(), "eligible": list(data.arm_ids),
                "schema_version": 1, "reward": float(data.reward[i]),
            }
            if data.probabilities is not None:
                obj["probabilities"] = data.probabilities[i].tolist()
            fh.write(orjson.dumps(obj) + b"\n")


def write_dsjson(path: str | Path, data: LoggedData) -> None:
    """Write ``data`` as VW DSJSON (cost = −reward, 1-based actions)."""
    k = data.n_arms
    multi = [{"arm_id": a} for a in data.arm_ids]
    with Path(path).open("wb") as fh:
        for i in range(data.n):
            a = int(data.arm_index[i])
            probs = (data.probabilities[i].tolist() if data.probabilities is not None
                     else [float(data.propensity[i]) if j == a else
                           (1 - float(data.propensity[i])) / max(k - 1, 1) for j in range(k)])
            obj = {
                "_label_cost": -float(data.reward[i]),
                "_label_probability": float(data.propensity[i]),
                "_label_Action": a + 1, "_labelIndex": a,
                "a": list(range(1, k + 1)), "p": probs,
                "c": {"x": data.contexts[i].tolist(), "_multi": multi},
                "EventId": f"d{i}", "Version": "1",
            }
            fh.write(orjson.dumps(obj) + b"\n")


_STORE_SQL = """
SELECT d.decision_id AS decision_id, d.arm_id AS arm_id, d.propensity AS propensity,
       d.context AS context, r.reward AS reward
FROM decisions AS d FINAL
INNER JOIN (SELECT decision_id, reward FROM rewards FINAL) AS r
    ON d.decision_id = r.decision_id
WHERE d.experiment_id = {experiment_id:String}
  AND (length({variant:String}) = 0 OR d.variant = {variant:String})
ORDER BY d.ts_ms, d.decision_id
"""


def read_store(store: Any, experiment_id: str, *, variant: str = "",
               arm_ids: Sequence[str] | None = None) -> tuple[LoggedData, LogReadReport]:
    """Decisions joined with their credited rewards from a Switchboard store.

    ``store`` is a :class:`bandit.store.ClickHouseStore` (``open_store``; chdb or a
    ClickHouse server); values reach SQL only as bound parameters. Rows with a bad
    context are counted as malformed (numbered in query order); a zero propensity
    refuses the log, as for files.
    """
    if not isinstance(experiment_id, str) or not experiment_id:
        raise InvalidInputError("experiment_id", experiment_id, "must be a non-empty string")
    query = getattr(store, "_query_df", None)
    if query is None:
        raise StoreError("this store cannot be queried for logged decisions")
    df = query(_STORE_SQL, {"experiment_id": experiment_id, "variant": variant})
    b = _Builder(f"store:{experiment_id}")
    for no, row in enumerate(df.itertuples(index=False), start=1):
        b.lines += 1
        ctx = row.context
        ctx = [float(v) for v in ctx] if ctx is not None and len(ctx) else None
        b.add(no, ctx, row.arm_id, float(row.propensity), float(row.reward), None,
              str(row.decision_id))
    return b.finish(arm_ids)
