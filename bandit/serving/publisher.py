"""Asynchronous event publisher: bounded buffer → Kafka, spilling to disk on failure.

One :class:`EventPublisher` per topic: the server publishes decisions, and the feedback,
engagement and fallback exposures posted over HTTP, each through its own (with its own
spill directory), so the same never-lost path serves every event kind.

Allocation never waits on Kafka. ``publish`` appends the encoded event to a bounded
in-memory buffer (or, if the buffer is full, to the spill file) and returns: no lock, no
thread wake-up. A background thread drains the buffer every ``flush_interval_s``
(default 5 ms) and sends what it found with a producer from
:mod:`bandit.serving.producers` (librdkafka, or kafka-python without it: ``acks=all``,
retries, 5 ms linger) and delivery callbacks. Draining on a timer instead of waking
the thread per event matters: with a per-event wake-up the publisher and the Kafka
network thread took more CPU per decision than the whole allocation (thread
switches and GIL hand-offs; docs/serving.md). Delivery:

* delivered → done;
* failed (broker down, timeout) → the event is appended to the local spill file
  ``<spill_dir>/active-<instance>.spill`` (one JSON event per line) and the broker is
  considered down for ``retry_interval_s``, during which new events spill directly.

A resender drains the spill when the broker is back: it rotates the active file to
``pending-<instance>-<n>.spill`` (new spills go to a fresh active file), probes the
broker with the first record, sends the rest, waits for the acknowledgements and only
then deletes the pending file; records that fail again are spilled again. Spilled
events are therefore re-sent at least once and never lost (the learner deduplicates on
``event_id``). Files are locked with ``flock`` so several servers can share a spill
directory; an unlocked ``active-*`` file left by a crashed server is adopted.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import orjson

from bandit.events import Event
from bandit.serving.producers import ConfluentProducer, make_producer

__all__ = ["EventPublisher"]

log = logging.getLogger(__name__)

ProducerFactory = Callable[[], Any]


class _SpillFile:
    """The active append-only spill file of this instance (flock-ed while open)."""

    def __init__(self, directory: Path, instance: str) -> None:
        self.dir = directory
        self.instance = instance
        self.path = directory / f"active-{instance}.spill"
        self._fh: IO[bytes] | None = None

    def append(self, lines: list[bytes]) -> None:
        if self._fh is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            fh = _open_private(self.path, "ab")
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            self._fh = fh
        self._fh.write(b"".join(line + b"\n" for line in lines))
        self._fh.flush()

    def sync(self) -> None:
        if self._fh is not None:
            os.fsync(self._fh.fileno())

    def rotate(self, target: Path) -> bool:
        """Rename the active file to ``target`` (if it has data) and start a new one."""
        if self._fh is None:
            return False
        self._fh.flush()
        os.fsync(self._fh.fileno())
        os.replace(self.path, target)
        fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
        self._fh.close()
        self._fh = None
        return True

    def close(self) -> None:
        if self._fh is not None:
            self.sync()
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


class EventPublisher:
    """Publishes events to ``topic``, each keyed by its ``key`` (the conversation id of
    decisions and feedback, the unit id of engagement and exposures).

    ``key_field`` names the JSON field a spilled record's key is read back from when it
    is re-sent (so the partition does not change on the way through the spill file).
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        spill_dir: str | os.PathLike[str],
        buffer_size: int = 100_000,
        *,
        delivery_timeout_ms: int = 30_000,
        retry_interval_s: float = 2.0,
        flush_interval_s: float = 0.005,
        producer_factory: ProducerFactory | None = None,
        key_field: str = "conversation_id",
    ) -> None:
        self.key_field = key_field
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.spill_dir = Path(spill_dir)
        self.retry_interval_s = retry_interval_s
        self.delivery_timeout_ms = max(delivery_timeout_ms, 1000)
        self._factory = producer_factory or self._default_factory
        self.flush_interval_s = flush_interval_s
        self.buffer_size = max(1, buffer_size)
        # (key, value) pairs; deque.append/popleft are atomic, so the request thread
        # appends and the publisher thread drains without a lock or a wake-up
        self._buffer: deque[tuple[bytes, bytes]] = deque()
        self._instance = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._spill = _SpillFile(self.spill_dir, self._instance)
        self._spill_lock = threading.Lock()
        self._inflight: dict[int, bytes] = {}
        self._inflight_lock = threading.Lock()
        self._ids = itertools.count()
        self._rotations = itertools.count()
        self._producer: Any = None
        self._down_until = 0.0
        self._reset_wanted = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.backlog = self._existing_backlog()
        self.sent = 0
        self.spilled = 0
        self.resent = 0
        self.last_error: str | None = None

    # ---------------------------------------------------------------- public API
    def start(self) -> EventPublisher:
        self._thread = threading.Thread(target=self._run, name=f"publisher-{self.topic}",
                                        daemon=True)
        self._thread.start()
        return self

    def publish(self, event: Event) -> None:
        """Enqueue ``event`` without blocking; spill it to disk if the buffer is full."""
        # orjson serialises the slotted dataclass natively: the same bytes as
        # ``encode_event`` (tested) far cheaper than ``dataclasses.asdict``.
        value = orjson.dumps(event)
        if len(self._buffer) < self.buffer_size:
            self._buffer.append((event.key, value))
        else:
            self._spill_records([value])

    @property
    def depth(self) -> int:
        return len(self._buffer)

    @property
    def healthy(self) -> bool:
        """No recent failure: a producer is up, or none was needed yet (an idle topic)."""
        return (self._producer is not None or self.last_error is None) \
            and time.monotonic() >= self._down_until

    def close(self, timeout_s: float = 5.0) -> None:
        """Drain the buffer, wait for acknowledgements, spill whatever is left."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s + 5)
        leftovers = self._drain(len(self._buffer) + 1)
        if leftovers:
            self._spill_records([v for _, v in leftovers])
        if self._producer is not None:
            with contextlib.suppress(Exception):
                self._producer.flush(timeout=timeout_s)
            with contextlib.suppress(Exception):
                self._producer.close(timeout=1)
        with self._inflight_lock:
            pending, self._inflight = list(self._inflight.values()), {}
        if pending:
            self._spill_records(pending)
        with self._spill_lock:
            self._spill.close()

    # ---------------------------------------------------------------- internals
    def _default_factory(self) -> Any:
        # tansu refuses InitProducerId: no idempotence; spilled re-sends are deduplicated
        # on event_id by the learner
        # _ensure_producer binds on_down and on_result to this publisher
        return make_producer(self.bootstrap_servers, self.delivery_timeout_ms)

    def _produced(self, value: bytes, error: str | None) -> None:
        """Outcome of an untracked librdkafka send: a failure carries its record back,
        so nothing needs remembering per record (close() purges, which fails them)."""
        if error is None:
            self.sent += 1
        else:
            self._mark_down(f"delivery: {error}")
            self._spill_records([value])

    def _producer_down(self, reason: str) -> None:
        """No broker reachable: spill new events at once and, from the run loop, fail
        what the producer still holds (spilled by the errbacks) instead of keeping it
        in memory until the delivery timeout."""
        self._mark_down(f"producer: {reason}")
        self._reset_wanted = True

    def _existing_backlog(self) -> int:
        n = 0
        if self.spill_dir.is_dir():
            for path in self.spill_dir.glob("*.spill"):
                with contextlib.suppress(OSError):
                    n += path.read_bytes().count(b"\n")
        return n

    def _spill_records(self, values: list[bytes]) -> None:
        with self._spill_lock:
            self._spill.append(values)
            self.backlog += len(values)
            self.spilled += len(values)

    def _mark_down(self, reason: str) -> None:
        self.last_error = reason
        self._down_until = time.monotonic() + self.retry_interval_s

    def _ensure_producer(self) -> bool:
        if self._producer is not None:
            return True
        if time.monotonic() < self._down_until:
            return False
        try:
            producer = self._factory()
        except Exception as exc:  # broker unreachable: spill and retry later
            self._mark_down(f"producer: {exc}")
            return False
        if isinstance(producer, ConfluentProducer):
            # whoever built it, its reports come here
            producer.on_down = self._producer_down
            producer.on_result = self._produced
        self._producer = producer
        return True

    def _reset_producer(self) -> None:
        """Drop a producer that keeps failing (it may be in a fatal state); a fresh one is
        created on the next attempt. Its unsent records fail and are spilled."""
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                producer.close(timeout=0)

    def _send(self, value: bytes, key: bytes) -> Any:
        rid = next(self._ids)
        with self._inflight_lock:
            self._inflight[rid] = value
        try:
            future = self._producer.send(self.topic, key=key, value=value)
        except Exception as exc:
            with self._inflight_lock:
                self._inflight.pop(rid, None)
            self._mark_down(f"send: {exc}")
            self._spill_records([value])
            return None
        future.add_callback(self._delivered, rid)
        future.add_errback(self._failed, rid)
        return future

    def _send_untracked(self, value: bytes, key: bytes) -> None:
        """Send; with librdkafka the delivery report brings a failed record back to
        :meth:`_produced`, with kafka-python it is tracked in ``_inflight``."""
        produce = getattr(self._producer, "produce", None)
        if produce is None:
            self._send(value, key)
            return
        try:
            produce(self.topic, key, value)
        except Exception as exc:  # queue full, producer closed: spill it
            self._mark_down(f"send: {exc}")
            self._spill_records([value])

    def _delivered(self, rid: int, _metadata: Any) -> None:
        with self._inflight_lock:
            found = self._inflight.pop(rid, None) is not None
        if found:
            self.sent += 1

    def _failed(self, rid: int, exc: BaseException) -> None:
        with self._inflight_lock:
            value = self._inflight.pop(rid, None)
        self._mark_down(f"delivery: {exc}")
        if value is not None:
            self._spill_records([value])

    def _run(self) -> None:
        next_resend = time.monotonic() + self.retry_interval_s
        while True:
            stopping = self._stop.wait(self.flush_interval_s)
            self._poll()
            if self._reset_wanted:
                self._reset_wanted = False
                self._reset_producer()
            # on stop, send everything still buffered (close() spills what is left)
            while batch := self._drain(5000):
                if time.monotonic() < self._down_until or not self._ensure_producer():
                    self._spill_records([v for _, v in batch])
                else:
                    for k, v in batch:
                        self._send_untracked(v, k)
                if not stopping:
                    break
            if stopping:
                return
            now = time.monotonic()
            if now >= next_resend:
                next_resend = now + self.retry_interval_s
                with self._spill_lock:
                    self._spill.sync()
                if self.backlog > 0 and now >= self._down_until:
                    try:
                        self.resend()
                    except Exception as exc:  # never let the publisher thread die
                        log.warning("resending spilled events failed: %s", exc)
                        self._mark_down(f"resend: {exc}")

    def _poll(self) -> None:
        """Serve delivery reports (librdkafka hands them over only when polled)."""
        poll = getattr(self._producer, "poll", None)
        if poll is not None:
            try:
                poll(0)
            except Exception as exc:  # never let the publisher thread die
                log.warning("polling the producer failed: %s", exc)

    def _drain(self, limit: int) -> list[tuple[bytes, bytes]]:
        out: list[tuple[bytes, bytes]] = []
        pop = self._buffer.popleft
        with contextlib.suppress(IndexError):
            while len(out) < limit:
                out.append(pop())
        return out

    def resend(self) -> int:
        """Re-send spilled events if the broker answers; returns how many were sent."""
        if not self._ensure_producer():
            return 0
        with self._spill_lock:
            target = self.spill_dir / f"pending-{self._instance}-{next(self._rotations)}.spill"
            self._spill.rotate(target)
        sent = 0
        for path in sorted(self.spill_dir.glob("*.spill")):
            if path.name.startswith("active-"):
                if self._instance in path.name:
                    continue
                adopted = self._adopt(path)
                if adopted is None:
                    continue
                path = adopted
            n = self._resend_file(path)
            if n < 0:
                break
            sent += n
        return sent

    def _adopt(self, path: Path) -> Path | None:
        """Claim the active file of a dead server (unlocked) as a pending file."""
        try:
            fh = open(path, "rb")
        except OSError:
            return None
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            return None
        target = self.spill_dir / f"pending-{self._instance}-{next(self._rotations)}.spill"
        try:
            os.replace(path, target)
        finally:
            fh.close()
        return target

    def _resend_file(self, path: Path) -> int:
        try:
            fh = open(path, "rb")
        except OSError:
            return 0
        with fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return 0  # another server is draining it
            lines = [line for line in fh.read().split(b"\n") if line]
            if not lines:
                path.unlink(missing_ok=True)
                return 0
            valid = [(v, k) for v in lines if (k := _key_of(v, self.key_field)) is not None]
            bad = len(lines) - len(valid)
            if bad:
                with _open_private(path.with_suffix(".bad"), "ab") as out:
                    out.write(b"".join(v + b"\n" for v in lines if _key_of(v, self.key_field) is None))
            first = self._send(*valid[0]) if valid else None
            if valid and first is None:
                return -1
            if first is not None:
                try:
                    first.get(timeout=self.delivery_timeout_ms / 1000)
                except Exception as exc:
                    self._mark_down(f"resend probe: {exc}")
                    self._reset_producer()
                    # the errback re-spilled the probe record: drop it from this file
                    self._rewrite(path, [v for v, _ in valid[1:]])
                    with self._spill_lock:
                        self.backlog = max(0, self.backlog - 1 - bad)
                    return -1
            for v, k in valid[1:]:
                self._send_untracked(v, k)
            with contextlib.suppress(Exception):
                self._producer.flush(timeout=self.delivery_timeout_ms / 1000)
            path.unlink(missing_ok=True)
        with self._spill_lock:
            # files adopted from other servers were not counted here: never below zero
            self.backlog = max(0, self.backlog - len(lines))
        self.resent += len(valid)
        return len(valid)

    @staticmethod
    def _rewrite(path: Path, values: list[bytes]) -> None:
        tmp = path.with_suffix(".tmp")
        with _open_private(tmp, "wb") as out:
            out.write(b"".join(v + b"\n" for v in values))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)


def _open_private(path: Path, mode: str) -> IO[bytes]:
    """Open a spill file created 0600 whatever the process umask: spilled events hold
    user ids and contexts."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode == "ab" else os.O_TRUNC)
    return os.fdopen(os.open(path, flags, 0o600), mode)


def _key_of(value: bytes, key_field: str) -> bytes | None:
    """Partition key (``key_field``) of an encoded event; None if unreadable."""
    try:
        obj = orjson.loads(value)
        cid = obj[key_field]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    return cid.encode() if isinstance(cid, str) else None
