"""Decision ids: random 128-bit ids in the uuid4 hex format, cheap to make.

``uuid.uuid4()`` makes one ``getrandom`` system call per id; on a busy server that
call releases the GIL and the request thread may then wait for a background thread
(the Kafka producer) to hand it back. :class:`DecisionIds` draws 4 KiB from
``os.urandom`` at a time (256 ids) and formats them as RFC 4122 version-4 UUIDs, so the
ids are exactly as random and look exactly like before.

>>> import uuid
>>> ids = DecisionIds()
>>> u = uuid.UUID(ids())
>>> (u.version, u.variant == uuid.RFC_4122, len(ids()))
(4, True, 32)
"""

from __future__ import annotations

import os
import weakref

__all__ = ["DecisionIds"]

_POOL_BYTES = 4096
# RFC 4122: version nibble (bits 76-79) = 4, variant bits (62-63) = 0b10
_CLEAR = ~((0xF << 76) | (0x3 << 62))
_SET = (0x4 << 76) | (0x2 << 62)

_live: weakref.WeakSet[DecisionIds] = weakref.WeakSet()


class DecisionIds:
    """Callable returning a fresh 32-hex-digit uuid4 string per call (not thread-safe:
    one instance per event loop)."""

    __slots__ = ("__weakref__", "_pool", "_pos")

    def __init__(self) -> None:
        self._pool = b""
        self._pos = 0
        _live.add(self)

    def __call__(self) -> str:
        pos = self._pos
        if pos >= len(self._pool):
            self._pool = os.urandom(_POOL_BYTES)
            pos = 0
        self._pos = pos + 16
        n = int.from_bytes(self._pool[pos:pos + 16], "big") & _CLEAR | _SET
        return f"{n:032x}"

    def _reset(self) -> None:
        self._pool = b""
        self._pos = 0


def _after_fork() -> None:
    # a forked child must not hand out the parent's remaining ids
    for ids in list(_live):
        ids._reset()


os.register_at_fork(after_in_child=_after_fork)
