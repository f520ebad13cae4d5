"""Versioned, checksummed, atomically written snapshots of arrays + metadata.

File layout (all integers little-endian)::

    offset  size  field
    0       8     magic  b"SWBSNAP\\0"
    8       4     format version (uint32, currently 1)
    12      8     header length H (uint64)
    20      8     payload length P (uint64)
    28      32    sha256 over header + payload
    60      H     header: UTF-8 JSON object (``meta``, e.g. policy name, config, arms)
    60+H    P     payload: ``numpy.savez`` archive of the arrays (no pickles)

The file must be exactly 60 + H + P bytes. Anything else — wrong magic, unknown
version, truncation, trailing bytes, checksum mismatch, undecodable JSON or npz — is
refused with :class:`SnapshotError` before any state is built, so a snapshot is never
half-loaded. Writes go to a temporary file in the same directory, are fsynced, then
``os.replace``-d over the target (atomic on POSIX), and the directory is fsynced.
Arrays round-trip bitwise (npz stores raw buffers).

Optional keyed authentication: given a ``key``, :func:`save_snapshot` writes
``b"SWBHMAC\0"`` + HMAC-SHA256(key, snapshot) + the snapshot above, and
:func:`load_snapshot` with the key refuses any file whose HMAC does not verify (or that
has none), so only a holder of the key can write a file the reader accepts. A reader
without a key reads an authenticated file by its checksum alone.

>>> import tempfile, pathlib, numpy as np
>>> path = pathlib.Path(tempfile.mkdtemp()) / "s.swb"
>>> save_snapshot(path, {"w": np.arange(3.0)}, {"note": "hi"})
>>> arrays, meta = load_snapshot(path)
>>> arrays["w"].tolist(), meta["note"]
([0.0, 1.0, 2.0], 'hi')
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import io
import json
import os
import struct
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bandit.arms import ArmRegistry
from bandit.config import PolicyConfig
from bandit.errors import ConfigError, InvalidInputError, SnapshotError

__all__ = [
    "FORMAT_VERSION",
    "HMAC_MAGIC",
    "MAGIC",
    "load_policy_snapshot",
    "load_snapshot",
    "save_policy_snapshot",
    "save_snapshot",
    "write_atomic",
]

MAGIC = b"SWBSNAP\0"
HMAC_MAGIC = b"SWBHMAC\0"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<8sIQQ32s")
_HMAC_HEAD = len(HMAC_MAGIC) + 32


def _sign(data: bytes, key: bytes | None) -> bytes:
    if key is None:
        return data
    return HMAC_MAGIC + hmac.new(key, data, hashlib.sha256).digest() + data


def _verify(data: bytes, key: bytes | None, source: str) -> bytes:
    """The snapshot inside an authenticated file (or ``data`` itself); raises when a
    ``key`` is given and the HMAC is missing or wrong."""
    signed = data[: len(HMAC_MAGIC)] == HMAC_MAGIC
    if key is None:
        return data[_HMAC_HEAD:] if signed else data
    if not signed:
        raise SnapshotError(f"{source}: not authenticated (an HMAC key is configured)")
    mac, inner = data[len(HMAC_MAGIC) : _HMAC_HEAD], data[_HMAC_HEAD:]
    if not hmac.compare_digest(mac, hmac.new(key, inner, hashlib.sha256).digest()):
        raise SnapshotError(f"{source}: HMAC mismatch (written without this key, or altered)")
    return inner


def _encode(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> bytes:
    for name, arr in arrays.items():
        if not isinstance(arr, np.ndarray) or arr.dtype.hasobject:
            raise InvalidInputError(f"arrays[{name}]", type(arr).__name__,
                                    "must be a numpy array without Python objects")
    try:
        header = json.dumps(dict(meta), sort_keys=True, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise InvalidInputError("meta", meta, f"must be JSON-serialisable ({exc})") from None
    buf = io.BytesIO()
    np.savez(buf, **dict(arrays))  # type: ignore[arg-type]
    payload = buf.getvalue()
    digest = hashlib.sha256(header + payload).digest()
    return _PREFIX.pack(MAGIC, FORMAT_VERSION, len(header), len(payload), digest) + header + payload


def _decode(data: bytes, source: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    if len(data) < _PREFIX.size:
        raise SnapshotError(f"{source}: truncated ({len(data)} bytes, header needs {_PREFIX.size})")
    magic, version, hlen, plen, digest = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise SnapshotError(f"{source}: not a Switchboard snapshot (magic {magic!r})")
    if version != FORMAT_VERSION:
        raise SnapshotError(f"{source}: format version {version} is not supported "
                            f"(this build reads {FORMAT_VERSION})")
    expected = _PREFIX.size + hlen + plen
    if len(data) != expected:
        raise SnapshotError(
            f"{source}: truncated or padded ({len(data)} bytes, expected {expected})"
        )
    body = data[_PREFIX.size:]
    if hashlib.sha256(body).digest() != digest:
        raise SnapshotError(f"{source}: checksum mismatch (corrupt snapshot)")
    try:
        meta = json.loads(body[:hlen].decode())
        with np.load(io.BytesIO(body[hlen:]), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (ValueError, UnicodeDecodeError, OSError, zipfile.BadZipFile) as exc:
        raise SnapshotError(f"{source}: undecodable content ({exc})") from None
    if not isinstance(meta, dict):
        raise SnapshotError(f"{source}: header must be a JSON object")
    return arrays, meta


def save_snapshot(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray],
                  meta: Mapping[str, Any], *, key: bytes | None = None) -> None:
    """Write ``arrays`` and JSON ``meta`` to ``path`` atomically (write, fsync, rename),
    authenticated with HMAC-SHA256 under ``key`` when given. The file is created 0600."""
    target = Path(path)
    data = _sign(_encode(arrays, meta), key)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, data)


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically: a temporary file in the same directory,
    fsynced, ``os.replace``-d over the target, then the directory fsynced (best effort).
    Readers see the old or the new content, never a mix; on failure the temporary file
    is removed and the error (``OSError``) raised."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:
        dfd = os.open(target.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def load_snapshot(path: str | os.PathLike[str], *, key: bytes | None = None
                  ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a snapshot written by :func:`save_snapshot`; raises :class:`SnapshotError`
    (also when ``key`` is given and the file's HMAC does not verify under it)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SnapshotError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return _decode(_verify(data, key, str(path)), str(path))


# --------------------------------------------------------------------------- policies


def save_policy_snapshot(path: str | os.PathLike[str], policy: Any, arms: ArmRegistry,
                         extra: Mapping[str, Any] | None = None, *,
                         key: bytes | None = None) -> None:
    """Snapshot a policy's learnt state with its config and the arm registry.

    ``extra`` (JSON-serialisable, e.g. Kafka offsets) is stored in ``meta["extra"]``,
    so state and offsets are written in one atomic file.
    """
    meta = {
        "kind": "policy",
        "policy": policy.name,
        "policy_version": policy.version,
        "config": dataclasses.asdict(policy.config),
        "arms": arms.to_list(),
        "arm_feature_dim": arms.feature_dim,
        "extra": dict(extra) if extra is not None else None,
    }
    save_snapshot(path, policy.snapshot_arrays(), meta, key=key)


def load_policy_snapshot(path: str | os.PathLike[str], *, key: bytes | None = None
                         ) -> tuple[Any, ArmRegistry, dict[str, Any]]:
    """Rebuild ``(policy, arms, meta)`` from :func:`save_policy_snapshot`'s file."""
    from bandit.policies import make_policy

    arrays, meta = load_snapshot(path, key=key)
    if meta.get("kind") != "policy":
        raise SnapshotError(f"{path}: not a policy snapshot (kind {meta.get('kind')!r})")
    try:
        config = PolicyConfig(**meta["config"])
        arms = ArmRegistry.from_list(meta["arms"], feature_dim=meta.get("arm_feature_dim"))
        policy = make_policy(config, arms)
        policy.restore_arrays(arrays)
    except (KeyError, TypeError, ConfigError, InvalidInputError) as exc:
        raise SnapshotError(f"{path}: inconsistent policy snapshot ({exc})") from None
    return policy, arms, meta
