"""The arm registry: experts and baselines that can be added and retired at run time.

Retiring an arm only marks it inactive — what was learnt about it (and about every
other arm) is kept, so it can be re-activated without loss. Content features (for
example judge scores per dimension) let a hybrid model score an arm it has never
served.

>>> reg = ArmRegistry()
>>> reg.add(Arm("gpt35", kind="baseline"))
>>> reg.add(Arm("roleplay-7b", kind="expert", features=(0.9, 0.1)))
>>> [a.arm_id for a in reg.active()]
['gpt35', 'roleplay-7b']
>>> reg.retire("roleplay-7b"); [a.arm_id for a in reg.active()]
['gpt35']
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from bandit.errors import InvalidInputError, UnknownArmError

__all__ = ["Arm", "ArmKind", "ArmRegistry"]

ArmKind = Literal["expert", "baseline"]
_MAX_ARM_ID = 128


@dataclass(frozen=True, slots=True)
class Arm:
    """An expert LLM or a baseline model that can answer a conversation."""

    arm_id: str
    kind: ArmKind = "expert"
    features: tuple[float, ...] | None = None
    active: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.arm_id, str) or not self.arm_id or len(self.arm_id) > _MAX_ARM_ID:
            raise InvalidInputError(
                "arm_id", self.arm_id, f"must be a non-empty string of at most {_MAX_ARM_ID} chars"
            )
        if self.kind not in ("expert", "baseline"):
            raise InvalidInputError("kind", self.kind, "must be 'expert' or 'baseline'")
        if self.features is not None:
            feats = tuple(self.features)
            for i, v in enumerate(feats):
                if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                    raise InvalidInputError(f"features[{i}]", v, "must be a finite number")
            object.__setattr__(self, "features", tuple(float(v) for v in feats))

    def to_row(self) -> dict[str, object]:
        """The arm as a JSON object (snapshots, the shared arms registry, ``/v1/arms``)."""
        return {"arm_id": self.arm_id, "kind": self.kind,
                "features": list(self.features) if self.features else None,
                "active": self.active}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Arm:
        """Inverse of :meth:`to_row` (``kind`` defaults to expert, ``active`` to true)."""
        return cls(str(row["arm_id"]), kind=row.get("kind", "expert"),
                   features=tuple(row["features"]) if row.get("features") else None,
                   active=bool(row.get("active", True)))


class ArmRegistry:
    """Thread-safe, insertion-ordered set of arms.

    ``feature_dim`` (if set) is the required length of content features; ``version``
    increases on every change so caches keyed on it (eligible index arrays) refresh.
    """

    def __init__(self, arms: Iterable[Arm] = (), *, feature_dim: int | None = None) -> None:
        self.feature_dim = feature_dim
        self._arms: dict[str, Arm] = {}
        self._lock = threading.Lock()
        self.version = 0
        for arm in arms:
            self.add(arm)

    def check(self, arm: Arm) -> None:
        """Raise :class:`InvalidInputError` if ``arm`` cannot join this registry."""
        fdim = self.feature_dim
        if fdim is not None and arm.features is not None and len(arm.features) != fdim:
            raise InvalidInputError(
                "features", len(arm.features), f"must have length {self.feature_dim}"
            )

    def add(self, arm: Arm, *, replace_existing: bool = True) -> None:
        """Register ``arm`` (or re-activate / update an existing one).

        Adding an arm equal to the registered one changes nothing (``version`` included,
        so caches keyed on it stay valid).
        """
        self.check(arm)
        with self._lock:
            if arm.arm_id in self._arms and not replace_existing:
                raise InvalidInputError("arm_id", arm.arm_id, "is already registered")
            if self._arms.get(arm.arm_id) == arm:
                return
            self._arms[arm.arm_id] = arm
            self.version += 1

    def retire(self, arm_id: str) -> None:
        """Mark ``arm_id`` inactive; its learnt statistics are kept."""
        with self._lock:
            arm = self._get(arm_id)
            self._arms[arm_id] = replace(arm, active=False)
            self.version += 1

    def get(self, arm_id: str) -> Arm:
        with self._lock:
            return self._get(arm_id)

    def _get(self, arm_id: str) -> Arm:
        try:
            return self._arms[arm_id]
        except (KeyError, TypeError):
            raise UnknownArmError(arm_id) from None

    def __contains__(self, arm_id: object) -> bool:
        return arm_id in self._arms

    def __iter__(self) -> Iterator[Arm]:
        with self._lock:
            return iter(list(self._arms.values()))

    def __len__(self) -> int:
        return len(self._arms)

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._arms)

    def active(self, kinds: Sequence[str] | None = None) -> list[Arm]:
        with self._lock:
            return [
                a for a in self._arms.values() if a.active and (kinds is None or a.kind in kinds)
            ]

    def resolve_eligible(
        self, eligible: Sequence[str] | None, kinds: Sequence[str] | None = None
    ) -> list[str]:
        """Active arm ids allowed by ``eligible`` (None = all active) and ``kinds``.

        Raises :class:`UnknownArmError` for an id that is not registered or retired,
        and :class:`InvalidInputError` when nothing is left to choose from.
        """
        if eligible is None:
            ids = [a.arm_id for a in self.active(kinds)]
        else:
            ids = []
            seen = set()
            for i, arm_id in enumerate(eligible):
                arm = self._arms.get(arm_id) if isinstance(arm_id, str) else None
                if arm is None or not arm.active:
                    raise UnknownArmError(arm_id, field=f"eligible[{i}]", reason="is not an active arm")
                if (kinds is None or arm.kind in kinds) and arm_id not in seen:
                    ids.append(arm_id)
                    seen.add(arm_id)
        if not ids:
            raise InvalidInputError("eligible", list(eligible or []), "leaves no active arm to choose from")
        return ids

    def to_list(self) -> list[dict[str, object]]:
        return [a.to_row() for a in self]

    @classmethod
    def from_list(cls, rows: Iterable[Mapping[str, Any]], *, feature_dim: int | None = None) -> ArmRegistry:
        return cls((Arm.from_row(r) for r in rows), feature_dim=feature_dim)
