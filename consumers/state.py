"""Atomic, checksummed per-partition state files in the shared learner state directory.

Each file holds one partition's statistics delta, pending joins, recently closed ids,
watermarks, counters and next offsets — written together with write-then-rename, so a
crash leaves either the old or the new snapshot, never a mix. The directory is shared
by every consumer of the group: a partition's state moves with the partition.

Format: ``SBLS1\\n`` + 32-byte SHA-256 of the payload + pickled payload. The files are
written and read only by the learner itself (trusted local state).
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path
from typing import Any, Final

from bandit.errors import SnapshotError

__all__ = ["StateDir"]

_MAGIC: Final = b"SBLS1\n"


class StateDir:
    """Per-partition state files ``<kind>-<partition>.state`` under ``root``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, kind: str, partition: int) -> Path:
        return self.root / f"{kind}-{partition:05d}.state"

    def save(self, kind: str, partition: int, state: dict[str, Any]) -> None:
        # The statistics delta is pickled on its own so the model publisher can read the
        # deltas of every partition without unpickling the pending joins.
        rest = {k: v for k, v in state.items() if k != "delta"}
        payload = pickle.dumps(
            (
                pickle.dumps(state.get("delta"), protocol=pickle.HIGHEST_PROTOCOL),
                pickle.dumps(rest, protocol=pickle.HIGHEST_PROTOCOL),
            ),
            protocol=pickle.HIGHEST_PROTOCOL,
        )
        final = self.path(kind, partition)
        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(_MAGIC + hashlib.sha256(payload).digest() + payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        dir_fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def load(self, kind: str, partition: int) -> dict[str, Any] | None:
        """The saved state, or None for a partition never snapshotted."""
        p = self.path(kind, partition)
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            return None
        return _decode(data, p)

    def load_deltas(self, kind: str = "join") -> dict[int, Any]:
        """Only the statistics delta of every partition (cheap: pending joins stay pickled)."""
        return {p: _unpickle(blob) for p, (blob, _) in self._blobs(kind).items()}

    def load_all(self, kind: str) -> dict[int, dict[str, Any]]:
        return {p: _assemble(d, r, self.root) for p, (d, r) in self._blobs(kind).items()}

    def _blobs(self, kind: str) -> dict[int, tuple[bytes, bytes]]:
        out: dict[int, tuple[bytes, bytes]] = {}
        for p in sorted(self.root.glob(f"{kind}-*.state")):
            try:
                part = int(p.stem.split("-")[-1])
            except ValueError:
                continue
            try:
                out[part] = _split(p.read_bytes(), p)
            except FileNotFoundError:
                continue
        return out


def _unpickle(blob: bytes) -> Any:
    return pickle.loads(blob)


def _assemble(delta: bytes, rest: bytes, where: Path) -> dict[str, Any]:
    state = _unpickle(rest)
    if not isinstance(state, dict):
        raise SnapshotError(f"{where}: state does not hold a mapping")
    state["delta"] = _unpickle(delta)
    return state


def _decode(data: bytes, path: Path) -> dict[str, Any]:
    return _assemble(*_split(data, path), path)


def _split(data: bytes, path: Path) -> tuple[bytes, bytes]:
    head = len(_MAGIC)
    if data[:head] != _MAGIC or len(data) < head + 32:
        raise SnapshotError(f"{path} is not a learner state file")
    digest, payload = data[head : head + 32], data[head + 32 :]
    if hashlib.sha256(payload).digest() != digest:
        raise SnapshotError(f"{path} is corrupt (checksum mismatch)")
    blobs = _unpickle(payload)
    if not (isinstance(blobs, tuple) and len(blobs) == 2):
        raise SnapshotError(f"{path} does not hold a learner state")
    return blobs[0], blobs[1]
