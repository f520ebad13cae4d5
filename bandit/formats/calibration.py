"""The published reward calibration: an append-only history of versioned reward α's.

``switchboard calibrate --publish`` appends the α's it fitted (:mod:`bandit.analysis.
calibration`) to ``<model.dir>/reward-calibration.json``; the learner follows the file
and scores each closing decision with the version in force at the *decision's* event time
(:meth:`CalibrationHistory.reward_at`), so a replay, a restart or a ``kill -9`` gives the
same rewards. Before the first version (or without a file) the config's ``[reward]``
is in force, named ``"config"``.

The file is JSON::

    {"format": "switchboard-reward-calibration", "format_version": 1,
     "versions": [
       {"version": 1, "id": "cal-1-<8 hex>", "created_ms": ..., "effective_from_ms": ...,
        "reward": {"alpha_retry": ..., "alpha_rating": ..., "alpha_length": ...,
                   "length_cap": ..., "default_reward": ...},
        "source": {"outcome": ..., "n_units": ..., "r2_oof": ..., "experiments": [...],
                   "as_of_ms": ..., ...}},
       ...],
     "sha256": "<hex>", "hmac_sha256": "<hex>"}

* **Versions** are numbered 1, 2, ... in order, ``effective_from_ms`` never decreases
  from one to the next (a later version with the same time supersedes the earlier one),
  and each ``id`` is ``cal-<version>-`` and the first 8 hex digits of the SHA-256 of the
  version's canonical JSON (every field but ``id``), so an id names one content.
* **Integrity.** ``sha256`` is the SHA-256 of the canonical JSON (sorted keys, no
  spaces) of ``{"format", "format_version", "versions"}``: a file altered or cut short is
  refused. With the learner's HMAC key (``learner.state_hmac_key_file``, the key that
  authenticates its state files and the published snapshot) the writer also stores
  ``hmac_sha256``, HMAC-SHA256 of the same canonical bytes, and a reader given the key
  refuses a file whose HMAC is missing or does not verify — only a key holder can
  publish α's the learner applies. A reader without a key checks the checksum alone.
  The signature lives inside the JSON (not as a binary prefix, as in
  :mod:`bandit.formats.snapshot`) so the file stays readable by people and ``jq``.
* **Writes** (:func:`append_version`) take an exclusive ``fcntl.flock`` on
  ``reward-calibration.json.lock``, read and verify the current file, append one version
  and replace the file atomically (:func:`bandit.formats.snapshot.write_atomic`, 0600),
  so two publishers never lose a version. A writer refuses to append to a file it
  cannot verify.
* **Reads** need no lock. Every field is checked; an error names the file, the field
  (``versions[1].reward.alpha_rating``) and the value.

Pure and light (no numpy at import): ``switchboard --help`` imports the CLI that uses it.

>>> import tempfile, pathlib
>>> from bandit.config import RewardConfig
>>> path = pathlib.Path(tempfile.mkdtemp()) / CALIBRATION_NAME
>>> v = append_version(path, RewardConfig(0.6, 0.4, 0.0), effective_from_ms=1_000,
...                    source={"outcome": "day30_engagement"}, created_ms=900)
>>> v.id.startswith("cal-1-"), v.version
(True, 1)
>>> history = load_history(path)
>>> history.reward_at(999, RewardConfig())[0], history.reward_at(1_000, RewardConfig())[0] == v.id
('config', True)
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import hmac
import json
import logging
import math
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from bandit.config import RewardConfig
from bandit.errors import ConfigError, InvalidInputError
from bandit.formats.locks import exclusive_lock
from bandit.formats.paths import CALIBRATION_NAME, calibration_path

__all__ = [
    "CALIBRATION_NAME",
    "CONFIG_VERSION",
    "FORMAT",
    "FORMAT_VERSION",
    "CalibrationFile",
    "CalibrationFileError",
    "CalibrationHistory",
    "CalibrationVersion",
    "append_version",
    "calibration_path",
    "decode_history",
    "encode_history",
    "load_history",
    "version_id",
]

log = logging.getLogger(__name__)

FORMAT: Final = "switchboard-reward-calibration"
FORMAT_VERSION: Final = 1
#: the reward version of a decision scored with the config's ``[reward]``
CONFIG_VERSION: Final = "config"
#: the fields of a version's ``reward`` block, in RewardConfig order
REWARD_FIELDS: Final = ("alpha_retry", "alpha_rating", "alpha_length", "length_cap",
                        "default_reward")
_VERSION_KEYS: Final = frozenset({"version", "id", "created_ms", "effective_from_ms", "reward",
                                  "source"})
_DOC_KEYS: Final = frozenset({"format", "format_version", "versions", "sha256", "hmac_sha256"})


class CalibrationFileError(InvalidInputError):
    """A calibration file that cannot be read, fails its checksum or HMAC, or holds a bad
    field. ``source`` is the file; ``field`` the field inside it (dotted)."""

    def __init__(self, source: str, field: str, value: Any, reason: str) -> None:
        super().__init__(field, value, reason)
        self.source = source
        self.args = (f"{source}: {self.args[0]}",)

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True, slots=True)
class CalibrationVersion:
    """One published set of reward α's and what it was fitted on (``source``, JSON)."""

    version: int
    id: str
    created_ms: int
    effective_from_ms: int
    reward: RewardConfig
    source: Mapping[str, Any] = field(default_factory=dict)

    def content(self) -> dict[str, Any]:
        """Every field but ``id``, as the file holds it (what the id hashes)."""
        return {"version": self.version, "created_ms": self.created_ms,
                "effective_from_ms": self.effective_from_ms,
                "reward": {k: getattr(self.reward, k) for k in REWARD_FIELDS},
                "source": dict(self.source)}

    def to_row(self) -> dict[str, Any]:
        return {"id": self.id, **self.content()}


def version_id(version: int, content: Mapping[str, Any]) -> str:
    """``cal-<version>-<8 hex of the SHA-256 of the content's canonical JSON>``."""
    return f"cal-{version}-{hashlib.sha256(_canonical(content)).hexdigest()[:8]}"


@dataclass(frozen=True, slots=True)
class CalibrationHistory:
    """Every published version, oldest first (empty: the config's α's throughout)."""

    versions: tuple[CalibrationVersion, ...] = ()
    #: each version's effective_from_ms, for the bisection in :meth:`index_at`
    _starts: tuple[int, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_starts", tuple(v.effective_from_ms for v in self.versions))

    def __len__(self) -> int:
        return len(self.versions)

    @property
    def newest(self) -> CalibrationVersion | None:
        return self.versions[-1] if self.versions else None

    def index_at(self, ts_ms: int) -> int:
        """Index of the version in force at ``ts_ms`` (-1: none, the config's)."""
        return bisect.bisect_right(self._starts, ts_ms) - 1

    def reward_at(self, ts_ms: int, default: RewardConfig) -> tuple[str, RewardConfig]:
        """``(id, α's)`` in force at event time ``ts_ms``: the newest version whose
        ``effective_from_ms <= ts_ms``, else ``("config", default)``."""
        i = self.index_at(ts_ms)
        if i < 0:
            return CONFIG_VERSION, default
        v = self.versions[i]
        return v.id, v.reward

    def get(self, version_id: str) -> CalibrationVersion | None:
        """The version with id ``version_id`` (None when not in this history)."""
        for v in self.versions:
            if v.id == version_id:
                return v
        return None


# ------------------------------------------------------------------------- encoding


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _body(rows: list[Any]) -> dict[str, Any]:
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "versions": rows}


def _mac(key: bytes, canonical: bytes) -> str:
    return hmac.new(key, canonical, hashlib.sha256).hexdigest()


def encode_history(history: CalibrationHistory, *, key: bytes | None = None) -> bytes:
    """The file's bytes for ``history``: checksummed, and HMAC-signed under ``key``."""
    body = _body([v.to_row() for v in history.versions])
    canonical = _canonical(body)
    doc = {**body, "sha256": hashlib.sha256(canonical).hexdigest()}
    if key is not None:
        doc["hmac_sha256"] = _mac(key, canonical)
    return (json.dumps(doc, indent=1, allow_nan=False) + "\n").encode()


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def decode_history(data: bytes, source: str, *, key: bytes | None = None) -> CalibrationHistory:
    """Parse and verify a calibration file; raises :class:`CalibrationFileError` naming
    ``source`` and the field."""

    def bad(where: str, value: Any, reason: str) -> CalibrationFileError:
        return CalibrationFileError(source, where, value, reason)

    try:
        doc = json.loads(data.decode())
    except (UnicodeDecodeError, ValueError) as exc:
        raise bad("file", f"{len(data)} bytes", f"is not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise bad("file", type(doc).__name__, "must hold a JSON object")
    if doc.get("format") != FORMAT:
        raise bad("format", doc.get("format"), f"must be {FORMAT!r}")
    if doc.get("format_version") != FORMAT_VERSION:
        raise bad("format_version", doc.get("format_version"),
                  f"is not supported (this build reads {FORMAT_VERSION})")
    unknown = sorted(set(doc) - _DOC_KEYS)
    if unknown:
        raise bad(unknown[0], doc[unknown[0]], "is not a field of a calibration file")
    rows = doc.get("versions")
    if not isinstance(rows, list):
        raise bad("versions", rows, "must be a list")
    try:
        canonical = _canonical(_body(rows))
    except (TypeError, ValueError) as exc:
        raise bad("versions", str(rows)[:60], f"is not canonical JSON ({exc})") from None
    if doc.get("sha256") != hashlib.sha256(canonical).hexdigest():
        raise bad("sha256", doc.get("sha256"),
                  "does not match the content (the file is corrupt or was edited)")
    if key is not None:
        mac = doc.get("hmac_sha256")
        if not isinstance(mac, str):
            raise bad("hmac_sha256", mac,
                      "is missing: the file is not authenticated and an HMAC key is configured")
        if not hmac.compare_digest(mac, _mac(key, canonical)):
            raise bad("hmac_sha256", mac[:16] + "...",
                      "does not verify (written without this key, or altered)")
    versions: list[CalibrationVersion] = []
    for i, row in enumerate(rows):
        versions.append(_decode_version(row, f"versions[{i}]", bad))
        if row["version"] != i + 1:
            raise bad(f"versions[{i}].version", row["version"],
                      f"must be {i + 1} (versions are numbered 1, 2, ... in order)")
        if i and versions[i].effective_from_ms < versions[i - 1].effective_from_ms:
            raise bad(f"versions[{i}].effective_from_ms", versions[i].effective_from_ms,
                      f"must be >= the previous version's {versions[i - 1].effective_from_ms}")
    return CalibrationHistory(tuple(versions))


def _decode_version(row: Any, where: str, bad: Any) -> CalibrationVersion:
    if not isinstance(row, dict):
        raise bad(where, row, "must be a JSON object")
    missing = sorted(_VERSION_KEYS - set(row))
    if missing:
        raise bad(f"{where}.{missing[0]}", None, "is missing")
    extra = sorted(set(row) - _VERSION_KEYS)
    if extra:
        raise bad(f"{where}.{extra[0]}", row[extra[0]], "is not a field of a version")
    for name in ("version", "created_ms", "effective_from_ms"):
        if not _is_int(row[name]) or row[name] < (1 if name == "version" else 0):
            raise bad(f"{where}.{name}", row[name],
                      "must be an integer >= " + ("1" if name == "version" else "0"))
    reward = row["reward"]
    if not isinstance(reward, dict):
        raise bad(f"{where}.reward", reward, "must be a JSON object")
    for name in REWARD_FIELDS:
        if name not in reward:
            raise bad(f"{where}.reward.{name}", None, "is missing")
    extra = sorted(set(reward) - set(REWARD_FIELDS))
    if extra:
        raise bad(f"{where}.reward.{extra[0]}", reward[extra[0]], "is not a reward setting")
    for name in REWARD_FIELDS:
        ok = _is_int(reward[name]) if name == "length_cap" else _is_number(reward[name])
        if not ok:
            kind = "an integer" if name == "length_cap" else "a finite number"
            raise bad(f"{where}.reward.{name}", reward[name], f"must be {kind}")
    try:
        config = RewardConfig(**{k: reward[k] for k in REWARD_FIELDS})
    except ConfigError as exc:
        raise bad(f"{where}.{exc.field}", exc.value, exc.reason) from None
    if not isinstance(row["source"], dict):
        raise bad(f"{where}.source", row["source"], "must be a JSON object")
    v = CalibrationVersion(row["version"], "", row["created_ms"], row["effective_from_ms"],
                           config, dict(row["source"]))
    expected = version_id(v.version, v.content())
    if row["id"] != expected:
        raise bad(f"{where}.id", row["id"], f"does not match its content (expected {expected!r})")
    return CalibrationVersion(v.version, expected, v.created_ms, v.effective_from_ms, config,
                              v.source)


# ------------------------------------------------------------------------- files


def load_history(path: str | os.PathLike[str], key: bytes | None = None) -> CalibrationHistory:
    """The history in ``path`` (empty when there is no file); raises
    :class:`CalibrationFileError` for a file that cannot be read or verified."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return CalibrationHistory()
    except OSError as exc:
        raise CalibrationFileError(str(path), "file", str(path),
                                   f"cannot be read ({exc.strerror or exc})") from None
    return decode_history(data, str(path), key=key)


def _locked(path: Path) -> contextlib.AbstractContextManager[None]:
    lock = path.with_name(path.name + ".lock")
    return exclusive_lock(lock, 0o600, lambda exc: CalibrationFileError(
        str(path), "lock", str(lock), f"cannot be opened ({exc.strerror or exc})"))


def append_version(path: str | os.PathLike[str], reward: RewardConfig, *,
                   effective_from_ms: int, source: Mapping[str, Any],
                   key: bytes | None = None, created_ms: int | None = None
                   ) -> CalibrationVersion:
    """Append ``reward`` as the next version of the history in ``path`` (created if
    absent) and return it. Serialised with other writers by an ``flock``; refuses an
    ``effective_from_ms`` before the newest version's (:class:`InvalidInputError`) and a
    file it cannot verify under ``key`` (:class:`CalibrationFileError`)."""
    from bandit.formats.snapshot import write_atomic  # numpy: only when publishing

    if not isinstance(reward, RewardConfig):
        raise InvalidInputError("reward", type(reward).__name__, "must be a RewardConfig")
    if not _is_int(effective_from_ms) or effective_from_ms < 0:
        raise InvalidInputError("effective_from_ms", effective_from_ms,
                                "must be a non-negative integer (epoch ms)")
    created = int(time.time() * 1000) if created_ms is None else created_ms
    if not _is_int(created) or created < 0:
        raise InvalidInputError("created_ms", created, "must be a non-negative integer (epoch ms)")
    for name in REWARD_FIELDS:
        value = getattr(reward, name)
        if not (_is_int(value) if name == "length_cap" else _is_number(value)):
            raise InvalidInputError(f"reward.{name}", value, "must be a finite number")
    try:
        src = json.loads(_canonical(dict(source)))
    except (TypeError, ValueError) as exc:
        raise InvalidInputError("source", str(source)[:60],
                                f"must be a JSON object of finite values ({exc})") from None
    target = Path(path)
    with _locked(target):
        history = load_history(target, key=key)
        newest = history.newest
        if newest is not None and effective_from_ms < newest.effective_from_ms:
            raise InvalidInputError(
                "effective_from_ms", effective_from_ms,
                f"must not be before the newest version's effective_from_ms "
                f"{newest.effective_from_ms} ({newest.id} in {target})")
        n = len(history) + 1
        draft = CalibrationVersion(n, "", created, effective_from_ms, reward, src)
        version = CalibrationVersion(n, version_id(n, draft.content()), created,
                                     effective_from_ms, reward, src)
        data = encode_history(CalibrationHistory((*history.versions, version)), key=key)
        try:
            write_atomic(target, data)
        except OSError as exc:
            raise CalibrationFileError(str(target), "file", str(target),
                                       f"cannot be written ({exc.strerror or exc})") from None
    return version


class CalibrationFile:
    """Follows a calibration file: :meth:`poll` re-reads it when its ``(mtime_ns, size)``
    changed, at most once per ``min_interval_s``.

    A file that fails to parse or verify is logged once per change (one line naming the
    file and the field), counted in :attr:`errors`, kept in :attr:`error`, and the last
    good :attr:`history` stays in force. A file that disappears keeps the last history
    too (versions are never withdrawn by deleting the file; it is logged as an error).
    Thread-safe.
    """

    def __init__(self, path: str | os.PathLike[str], *, key: bytes | None = None,
                 min_interval_s: float = 1.0) -> None:
        self.path = Path(path)
        self.key = key
        self.min_interval_s = min_interval_s
        self.history = CalibrationHistory()
        self.error: str | None = None
        self.errors = 0
        self._seen: tuple[int, int] | None = None
        self._next = 0.0
        self._mutex = threading.Lock()

    def poll(self) -> bool:
        """Re-read the file if it is due and changed; True when a new history is in force."""
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self.min_interval_s
        return self.refresh()

    def refresh(self) -> bool:
        """Re-read the file if it changed (no rate limit); True when a new history is in
        force."""
        with self._mutex:
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                if self._seen is not None and self._seen != (-1, -1):
                    self._seen = (-1, -1)
                    if self.history.versions:
                        self._fail(f"{self.path}: file disappeared; keeping "
                                   f"{self.history.versions[-1].id}")
                return False
            except OSError as exc:
                return self._fail(f"{self.path}: cannot stat ({exc.strerror or exc})")
            seen = (st.st_mtime_ns, st.st_size)
            if seen == self._seen:
                return False
            self._seen = seen
            try:
                history = load_history(self.path, key=self.key)
            except CalibrationFileError as exc:
                return self._fail(str(exc))
            self.error = None
            if history == self.history:
                return False
            self.history = history
            newest = history.newest
            log.info("reward calibration %s: %d versions, newest %s (effective from %s ms)",
                     self.path, len(history), newest.id if newest else "none",
                     newest.effective_from_ms if newest else "-")
            return True

    def _fail(self, message: str) -> bool:
        self.errors += 1
        self.error = message
        keep = self.history.newest.id if self.history.newest else CONFIG_VERSION
        log.error("reward calibration refused, %s stays in force: %s", keep, message)
        return False
