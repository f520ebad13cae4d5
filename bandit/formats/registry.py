"""The shared arm registry: one durable file that every server and the learner follow.

Arms registered or retired at run time (``POST``/``DELETE /v1/arms`` on any allocation
server) are written to ``<model.dir>/arms-registry.json`` — the directory the
servers already read model snapshots from (a shared volume when there are several) —
*before* the change is applied anywhere, so any decision that names a new arm is made
after the file contains it. Other servers pick the change up on their reload poll; the
learner re-reads the file when a decision names an arm it does not know.

The file is JSON::

    {"format": "switchboard-arms-registry", "version": 1, "revision": 7,
     "sha256": "<hex of the canonical JSON of {revision, arms}>",
     "arms": [{"arm_id": "roleplay-7b", "kind": "expert", "features": [0.9, 0.1],
               "active": true}, ...]}

* **Writes** take an exclusive ``fcntl.flock`` on ``arms-registry.json.lock``, read the
  current file, merge the one change into it, and replace the file atomically (write a
  temporary file, fsync, ``os.replace``, fsync the directory). Two writers on different
  servers therefore serialise and neither loses the other's arm.
* **The revision** increases by one on every write that changes something.
* **Arms are never deleted**, only retired (``active: false``); what was learnt about a
  retired arm is kept and it can be re-registered.
* **Reads** need no lock (the rename is atomic). A file that is not valid JSON, has the
  wrong format or version, or fails its checksum is refused with :class:`RegistryError`
  naming the file; a :class:`RegistryFile` follower then keeps its last good state. A
  writer refuses to merge into a corrupt file (that would drop every arm in it).

>>> import tempfile
>>> reg = RegistryFile(tempfile.mkdtemp())
>>> reg.register(Arm("roleplay-7b", features=(0.9, 0.1))).revision
1
>>> state = reg.retire("roleplay-7b")
>>> state.revision, state.get("roleplay-7b").active
(2, False)
>>> RegistryFile(reg.directory).refresh().arm_ids()
['roleplay-7b']
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bandit.arms import Arm
from bandit.errors import InvalidInputError, RegistryError, UnknownArmError
from bandit.formats.locks import exclusive_lock
from bandit.formats.paths import REGISTRY_LOCK_NAME, registry_path
from bandit.formats.snapshot import write_atomic

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "RegistryFile",
    "RegistryState",
    "decode_registry",
    "encode_registry",
]

FORMAT = "switchboard-arms-registry"
FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class RegistryState:
    """One revision of the registry: every arm ever registered, in registration order."""

    revision: int = 0
    arms: tuple[Arm, ...] = ()

    def get(self, arm_id: str) -> Arm:
        for arm in self.arms:
            if arm.arm_id == arm_id:
                return arm
        raise UnknownArmError(arm_id)

    def __contains__(self, arm_id: object) -> bool:
        return any(arm.arm_id == arm_id for arm in self.arms)

    def arm_ids(self) -> list[str]:
        return [arm.arm_id for arm in self.arms]

    def with_arm(self, arm: Arm) -> RegistryState:
        """This state with ``arm`` added or replacing the arm of the same id (same revision)."""
        arms = list(self.arms)
        for i, old in enumerate(arms):
            if old.arm_id == arm.arm_id:
                arms[i] = arm
                break
        else:
            arms.append(arm)
        return RegistryState(self.revision, tuple(arms))


def _digest(revision: int, rows: list[Any]) -> str:
    body = json.dumps({"revision": revision, "arms": rows}, sort_keys=True,
                      separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(body.encode()).hexdigest()


def encode_registry(state: RegistryState) -> bytes:
    """The file's bytes for ``state`` (checksummed JSON)."""
    rows = [a.to_row() for a in state.arms]
    doc = {"format": FORMAT, "version": FORMAT_VERSION, "revision": state.revision,
           "sha256": _digest(state.revision, rows), "arms": rows}
    return (json.dumps(doc, indent=1, allow_nan=False) + "\n").encode()


def decode_registry(data: bytes, source: str) -> RegistryState:
    """Parse and verify a registry file; raises :class:`RegistryError` naming ``source``."""
    try:
        doc = json.loads(data.decode())
    except (UnicodeDecodeError, ValueError) as exc:
        raise RegistryError(f"{source}: not a valid arms registry ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise RegistryError(f"{source}: not a Switchboard arms registry "
                            f"(format {doc.get('format') if isinstance(doc, dict) else None!r})")
    version = doc.get("version")
    if version != FORMAT_VERSION:
        raise RegistryError(f"{source}: format version {version!r} is not supported "
                            f"(this build reads {FORMAT_VERSION})")
    revision, rows = doc.get("revision"), doc.get("arms")
    if isinstance(revision, bool) or not isinstance(revision, int) or revision < 0 \
            or not isinstance(rows, list):
        raise RegistryError(f"{source}: malformed arms registry (revision {revision!r})")
    try:
        digest = _digest(revision, rows)
    except (TypeError, ValueError) as exc:
        raise RegistryError(f"{source}: malformed arms registry ({exc})") from None
    if digest != doc.get("sha256"):
        raise RegistryError(f"{source}: checksum mismatch (corrupt arms registry)")
    arms: list[Arm] = []
    seen: set[str] = set()
    try:
        for row in rows:
            arm = Arm.from_row(row)
            if arm.arm_id in seen:
                raise RegistryError(f"{source}: arm {arm.arm_id!r} is listed twice")
            seen.add(arm.arm_id)
            arms.append(arm)
    except (AttributeError, KeyError, TypeError, InvalidInputError) as exc:
        raise RegistryError(f"{source}: invalid arm in arms registry ({exc})") from None
    return RegistryState(revision, tuple(arms))


class RegistryFile:
    """Reads, follows and updates ``<directory>/arms-registry.json``.

    :meth:`register` and :meth:`retire` are the writers (lock, read, merge, atomic
    replace). :meth:`refresh` is the follower: one ``os.stat``, and a read only when
    the file changed; a bad file is reported in :attr:`error` and the last good state
    (:attr:`state`) is kept.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.path = registry_path(self.directory)
        self.lock_path = self.directory / REGISTRY_LOCK_NAME
        self.state = RegistryState()
        self.error: str | None = None
        self._seen: tuple[int, int, int] | None = None
        self._mutex = threading.Lock()

    # ------------------------------------------------------------------ reading
    def read(self) -> RegistryState:
        """The file's current state (empty when there is no file yet)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return RegistryState()
        except OSError as exc:
            raise RegistryError(f"{self.path}: cannot read ({exc.strerror or exc})") from None
        return decode_registry(data, str(self.path))

    def refresh(self) -> RegistryState | None:
        """The new state if the file changed since the last call, else None.

        On a bad file, :attr:`error` names it and None is returned (the last good
        :attr:`state` stays); the same bad file is not re-read until it changes.
        """
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self.error = f"{self.path}: {exc.strerror or exc}"
            return None
        seen = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self._mutex:
            if seen == self._seen:
                return None
            self._seen = seen
            try:
                state = self.read()
            except RegistryError as exc:
                self.error = str(exc)
                return None
            self.error = None
            self.state = state
            return state

    # ------------------------------------------------------------------ writing
    def register(self, arm: Arm) -> RegistryState:
        """Add ``arm`` (or update / re-activate the arm of its id) in the file."""
        return self._update(lambda state: state.with_arm(arm))

    def retire(self, arm_id: str, known: Arm | None = None) -> RegistryState:
        """Mark ``arm_id`` inactive in the file.

        ``known`` is the caller's record of an arm the file does not list yet (an arm a
        server was started with); without it an unlisted id raises
        :class:`~bandit.errors.UnknownArmError`.
        """
        def change(state: RegistryState) -> RegistryState:
            if arm_id in state:
                arm = state.get(arm_id)
            elif known is not None and known.arm_id == arm_id:
                arm = known
            else:
                raise UnknownArmError(arm_id)
            return state.with_arm(replace(arm, active=False))

        return self._update(change)

    def _update(self, change: Callable[[RegistryState], RegistryState]) -> RegistryState:
        with self._locked():
            current = self.read()
            new = change(current)
            if new.arms == current.arms:
                state = current
            else:
                state = RegistryState(current.revision + 1, new.arms)
                self._write(encode_registry(state))
        with self._mutex:
            if state.revision >= self.state.revision:
                self.state = state
        return state

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return exclusive_lock(self.lock_path, 0o644, lambda exc: RegistryError(
            f"{self.lock_path}: cannot open the registry lock ({exc.strerror or exc})"))

    def _write(self, data: bytes) -> None:
        try:
            write_atomic(self.path, data)
        except OSError as exc:
            raise RegistryError(f"{self.path}: cannot write ({exc.strerror or exc})") from None
