"""The Kafka adapter of the learner — with :mod:`consumers.kafka_records` (its record
parser), the only code that touches kafka-python.

It feeds raw messages to the pure core (:mod:`consumers.join`), and every
``learner.commit_interval_s`` checkpoints in this order:

1. write the outbox to the sink (idempotent store inserts) and the dead letters to the
   dead-letter topic (flushed);
2. snapshot every owned partition's state (statistics delta + pending joins + offsets)
   atomically to the shared state directory;
3. commit the same offsets to Kafka (informational: on assignment the snapshot's offsets
   are authoritative, because tansu's *latest* offsets cannot be trusted).

A crash anywhere replays from the last snapshot: the statistics come out exactly as in an
uninterrupted run. On revocation the partition is checkpointed before it moves; on
assignment its snapshot is loaded and the consumer seeks to its offsets.

Loud, not silent: a failing checkpoint is retried with backoff (one log line per backoff
step), counted, and turns readiness red; once checkpoints have failed for
``learner.max_checkpoint_failure_s`` the learner stops and :meth:`KafkaLearner.run`
raises :class:`LearnerStalledError` (the CLI exits non-zero). So does a run that cannot
reach the broker, or ends with rows it could not write, within ``max_idle_s``.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter, itemgetter
from typing import Any, Final

from bandit.config import Config
from bandit.errors import SwitchboardError
from bandit.formats.state import StateDir, read_key
from consumers.join import (
    DECISIONS,
    DESIGNS,
    ENGAGEMENT,
    EXPOSURES,
    FEEDBACK,
    EngagementPartition,
    JoinPartition,
    Outbox,
    event_time_bounds,
)
from consumers.kafka_records import crc32c_is_native, use_lean_records
from consumers.metrics import LearnerMetrics
from consumers.sink import Sink

__all__ = ["DEAD_LETTER_MAX_VALUE", "KafkaLearner", "LearnerStalledError", "dead_letter_headers"]

log = logging.getLogger("switchboard.learner")

#: the consumer's max.poll.interval.ms, which kafka-python also sends as the group's
#: rebalance timeout: how long a JoinGroup may be held while the group rebalances
REBALANCE_TIMEOUT_MS: Final = 300_000

#: one owned partition of the learner: a join pair, or engagement with exposures and designs
OwnedPartition = JoinPartition | EngagementPartition

_offset_of = attrgetter("offset")
_value_of = attrgetter("value")
_timestamp_of = attrgetter("timestamp")
_third = itemgetter(2)

#: Largest dead-letter value sent as is. Larger originals (an oversized event) are
#: truncated to this, with their size and SHA-256 in headers, so the record stays under
#: the broker's default 1 MiB message limit and the checkpoint never stalls on it.
DEAD_LETTER_MAX_VALUE = 512 * 1024
#: The dead-letter producer's request limit (the broker's default message limit).
_DEAD_LETTER_REQUEST_BYTES = 1024 * 1024
#: The loop is reported dead (liveness) when it has not turned for this long.
_LOOP_STUCK_S = 120.0


class LearnerStalledError(SwitchboardError):
    """The learner cannot make progress (checkpoints keep failing, broker unreachable)."""


def dead_letter_headers(
    reason: str, source_topic: str, partition: int, offset: int, raw: bytes = b""
) -> list[tuple[str, bytes]]:
    """Headers of a dead letter: why, where from, and the original's size and SHA-256
    (so a truncated value can still be matched with the bytes that arrived)."""
    return [
        ("reason", reason.encode()[:4000]),
        ("source_topic", source_topic.encode()),
        ("source_partition", str(partition).encode()),
        ("source_offset", str(offset).encode()),
        ("original_size", str(len(raw)).encode()),
        ("original_sha256", hashlib.sha256(raw).hexdigest().encode()),
        ("truncated", b"1" if len(raw) > DEAD_LETTER_MAX_VALUE else b"0"),
    ]


@dataclass
class _Backoff:
    delay: float = 0.0
    until: float = 0.0
    failures: int = 0
    since: float | None = None  # monotonic time of the first failure of this streak

    def failed(self, now: float) -> None:
        self.delay = min(30.0, max(0.2, self.delay * 2))
        self.until = now + self.delay
        self.failures += 1
        if self.since is None:
            self.since = now

    def ok(self) -> None:
        self.delay, self.until, self.failures, self.since = 0.0, 0.0, 0, None


class KafkaLearner:
    """One learner process of the consumer group."""

    def __init__(
        self,
        config: Config,
        make_join: Callable[[int], JoinPartition],
        *,
        sink: Sink | None = None,
        publish: Callable[[], None] | None = None,
        bootstrap_servers: str | None = None,
        metrics: LearnerMetrics | None = None,
        client_id: str = "switchboard-learner",
    ) -> None:
        self.config = config
        k = config.kafka
        self.bootstrap = bootstrap_servers or k.bootstrap_servers
        self.make_join = make_join
        self.sink = sink
        self.publish = publish
        self.metrics = metrics or LearnerMetrics(None)
        self.state_dir = StateDir(
            config.learner.state_dir, key=read_key(config.learner.state_hmac_key_file)
        )
        self.roles = {
            k.decisions_topic: DECISIONS,
            k.feedback_topic: FEEDBACK,
            k.engagement_topic: ENGAGEMENT,
            k.exposures_topic: EXPOSURES,
            k.designs_topic: DESIGNS,
        }
        self.topic_of = {v: t for t, v in self.roles.items()}
        self.partitions: dict[tuple[str, int], OwnedPartition] = {}
        self.pending_out = Outbox()
        self.stop_event = threading.Event()
        self.client_id = client_id
        self._consumer: Any = None
        self._producer: Any = None
        self._lean = False
        self._sink_backoff = _Backoff()
        self._last_commit = time.monotonic()
        self._last_publish = time.monotonic()
        self._last_log = time.monotonic()
        self._last_snapshot_wall = time.time()
        self._paused = False
        self._checkpoint_requested = threading.Event()
        self._saved: dict[tuple[str, int], tuple[tuple[str, int], ...]] = {}
        self.idle_since = time.monotonic()
        self._last_ok_commit = time.monotonic()
        self._loop_turned = time.monotonic()
        self.last_error: str | None = None
        #: why the learner gave up (set once; run() raises LearnerStalledError with it)
        self.failure: str | None = None
        self.metrics.commit_age.set_function(lambda: time.monotonic() - self._last_ok_commit)

    # ------------------------------------------------------------------ wiring

    def health(self) -> tuple[bool, bool, dict[str, Any]]:
        """``(live, ready, detail)`` for the probes (thread-safe reads)."""
        now = time.monotonic()
        live = self.failure is None and now - self._loop_turned < _LOOP_STUCK_S
        failing = self._sink_backoff.failures > 0
        # a member with no partition (more learners than partitions) is ready too: it
        # has nothing it cannot commit, and a rollout must not wait on it
        ready = live and self._consumer is not None and not failing
        detail: dict[str, Any] = {
            "partitions": len(self.partitions),
            "checkpoint_failures": self._sink_backoff.failures,
            "last_commit_age_s": round(now - self._last_ok_commit, 3),
        }
        if self.last_error is not None and failing:
            detail["error"] = self.last_error
        if self.failure is not None:
            detail["failure"] = self.failure
        return live, ready, detail

    def _connect(self, give_up_after_s: float | None = None) -> None:
        from kafka import KafkaConsumer, KafkaProducer
        from kafka.coordinator.assignors.range import RangePartitionAssignor

        k = self.config.kafka
        session = k.session_timeout_ms
        started = time.monotonic()
        backoff = _Backoff()
        # each attempt waits this long for the broker (kafka-python's default is 30 s)
        attempt_ms = 10_000 if give_up_after_s is None else round(
            min(10.0, max(2.0, give_up_after_s)) * 1000
        )
        while not self.stop_event.is_set():
            try:
                self._consumer = KafkaConsumer(
                    bootstrap_servers=self.bootstrap,
                    group_id=k.group_id,
                    client_id=self.client_id,
                    enable_auto_commit=False,
                    auto_offset_reset="earliest",
                    session_timeout_ms=session,
                    heartbeat_interval_ms=max(100, session // 4),
                    max_poll_records=max(self.config.learner.batch_size, 1),
                    max_poll_interval_ms=REBALANCE_TIMEOUT_MS,
                    fetch_max_bytes=64 * 1024 * 1024,
                    max_partition_fetch_bytes=16 * 1024 * 1024,
                    fetch_min_bytes=1,
                    fetch_max_wait_ms=100,
                    # With the C `crc32c` package kafka-python checks record-batch CRCs
                    # cheaply; its pure-Python fallback costs a large share of the consume
                    # time (bench/ingest.py), so without the C path the check is off
                    # (payloads are still validated).
                    check_crcs=crc32c_is_native(),
                    # Range assignment gives partition p of every topic to the same member,
                    # so a decisions partition and its feedback partition stay together.
                    partition_assignment_strategy=[RangePartitionAssignor],
                    bootstrap_timeout_ms=attempt_ms,
                )
                self._lean = self.config.learner.record_parser == "lean" and use_lean_records(
                    self._consumer
                )
                self._producer = KafkaProducer(
                    bootstrap_servers=self.bootstrap,
                    acks="all",
                    linger_ms=5,
                    max_request_size=_DEAD_LETTER_REQUEST_BYTES,
                    bootstrap_timeout_ms=attempt_ms,
                    client_id=self.client_id + "-dlq",
                )
                break
            except Exception as exc:  # broker not reachable yet: keep trying
                if self._consumer is not None:
                    self._consumer.close()
                    self._consumer = None
                now = time.monotonic()
                if give_up_after_s is not None and now - started >= give_up_after_s:
                    self.failure = (
                        f"kafka at {self.bootstrap} did not answer for "
                        f"{now - started:.0f} s ({exc})"
                    )
                    return
                backoff.failed(now)
                # one line per backoff step (the steps double up to 30 s)
                log.warning(
                    "kafka at %s not reachable (%s); retry %d in %.1f s",
                    self.bootstrap, exc, backoff.failures, backoff.delay,
                )
                self.stop_event.wait(backoff.delay)
        if self._consumer is not None:
            self._consumer.subscribe(list(self.roles), listener=_Rebalance(self))

    # ------------------------------------------------------------------ rebalance

    def _partition_key(self, topic: str, partition: int) -> tuple[str, int]:
        role = self.roles[topic]
        return ("engagement" if role in (ENGAGEMENT, EXPOSURES, DESIGNS) else "join", partition)

    def on_revoked(self, tps: list[Any]) -> None:
        keys = {self._partition_key(tp.topic, tp.partition) for tp in tps}
        if keys:
            # kafka-python runs this callback on its IO thread, where a synchronous commit
            # is refused; the snapshot carries the offsets the next owner seeks to.
            self.checkpoint(force=True, only=keys, commit=False)
        for key in keys:
            self.partitions.pop(key, None)
            self._saved.pop(key, None)
        log.info("revoked %s", sorted(keys))

    def on_assigned(self, tps: list[Any]) -> None:
        from kafka import TopicPartition

        for tp in tps:
            key = self._partition_key(tp.topic, tp.partition)
            part = self.partitions.get(key)
            if part is None:
                # this process owns the partition now: a temporary file of its state is
                # a killed writer's
                self.state_dir.remove_stale_temp(*key)
                try:
                    part = self._load_partition(*key)
                except SwitchboardError as exc:
                    # a state file it must not resume from (corrupt, another policy's):
                    # kafka-python would swallow the error, so stop with it instead
                    self.failure = f"cannot resume {key[0]} partition {key[1]}: {exc}"
                    log.error("%s; stopping", self.failure)
                    self.stop_event.set()
                    continue
                self.partitions[key] = part
                self._saved[key] = tuple(sorted(part.offsets.items()))
            role = self.roles[tp.topic]
            # Always seek to the snapshot offset (or 0): tansu's latest offsets are wrong.
            self._consumer.seek(TopicPartition(tp.topic, tp.partition), part.offsets[role])
        self.idle_since = time.monotonic()
        log.info("assigned %s", sorted({self._partition_key(tp.topic, tp.partition) for tp in tps}))

    def _load_partition(self, kind: str, partition: int) -> OwnedPartition:
        if kind == "join":
            part: OwnedPartition = self.make_join(partition)
        else:
            future_ms, past_ms = event_time_bounds(self.config.learner)
            part = EngagementPartition(partition, max_future_ms=future_ms, max_past_ms=past_ms)
        state = self.state_dir.load(kind, partition)
        if state is not None:
            part.load_state(state)
        return part

    # ------------------------------------------------------------------ loop

    def run(self, *, max_idle_s: float | None = None) -> None:
        """Consume until ``stop_event`` is set (SIGTERM) or ``max_idle_s`` without messages.

        Raises :class:`LearnerStalledError` when the learner could not make progress:
        checkpoints failing for ``learner.max_checkpoint_failure_s``, the broker not
        answering (or no partition assigned) within ``max_idle_s``, or rows still
        unwritten when it stops.
        """
        self.metrics.serve(self.health)
        try:
            self._connect(give_up_after_s=max_idle_s)
            if self._consumer is not None:
                self._loop(max_idle_s)
            stopped_ok = self.shutdown()
        finally:
            self.metrics.close()
        if self.failure is None and not stopped_ok:
            self.failure = f"the final checkpoint failed ({self.last_error})"
        if self.failure is not None:
            raise LearnerStalledError(self.failure)

    def _loop(self, max_idle_s: float | None) -> None:
        consumer = self._consumer
        lc = self.config.learner
        poll_backoff = _Backoff()
        while not self.stop_event.is_set():
            now = time.monotonic()
            self._loop_turned = now
            if self._stalled(now):
                return
            if self._paused and now >= self._sink_backoff.until:
                self.checkpoint(force=True)
            try:
                batch = consumer.poll(timeout_ms=200, max_records=lc.batch_size)
            except Exception as exc:
                poll_backoff.failed(time.monotonic())
                log.warning("poll failed (%s); retry %d in %.1f s",
                            exc, poll_backoff.failures, poll_backoff.delay)
                self.stop_event.wait(poll_backoff.delay)
                continue
            poll_backoff.ok()
            if self._paused:  # waiting for the store, not for messages: not idle
                self.idle_since = time.monotonic()
            if batch:
                t0 = time.perf_counter()
                self._apply(batch)
                self.metrics.batch_latency.observe(time.perf_counter() - t0)
                self.idle_since = time.monotonic()
            elif max_idle_s is not None and time.monotonic() - self.idle_since > max_idle_s:
                if self.partitions:
                    return
                # a group join takes about half a session timeout on an idle machine, but
                # the coordinator may hold a JoinGroup for up to the rebalance timeout
                # while it waits for every member (seen past four session timeouts with
                # three test workers on two cores): only after that is it a failure
                grace = max_idle_s + max(4 * self.config.kafka.session_timeout_ms,
                                         REBALANCE_TIMEOUT_MS) / 1000
                if time.monotonic() - self.idle_since > grace:
                    self.failure = (
                        f"no partition of {sorted(self.roles)} was assigned within "
                        f"{grace:g} s (is the broker up and are the topics created?)"
                    )
                    return
            self._tick()

    def _stalled(self, now: float) -> bool:
        """Give up once checkpoints have failed for ``max_checkpoint_failure_s``."""
        since = self._sink_backoff.since
        limit = self.config.learner.max_checkpoint_failure_s
        if since is None or now - since < limit:
            return False
        self.failure = (
            f"checkpoints failed for {now - since:.0f} s "
            f"({self._sink_backoff.failures} attempts; last error: {self.last_error})"
        )
        log.error("%s; stopping", self.failure)
        return True

    def _tick(self) -> None:
        lc = self.config.learner
        now = time.monotonic()
        if self._checkpoint_requested.is_set():
            self._checkpoint_requested.clear()
            self.checkpoint()
        elif now - self._last_commit >= lc.commit_interval_s:
            self.checkpoint()
        if self.publish is not None and now - self._last_publish >= lc.publish_interval_s:
            self._publish()
        if now - self._last_log >= 10.0:
            self._log_progress()

    def request_checkpoint(self) -> None:
        """Ask the consuming thread to checkpoint after its current poll (thread-safe)."""
        self._checkpoint_requested.set()

    def _apply(self, batch: dict[Any, list[Any]]) -> None:
        touched: dict[tuple[str, int], OwnedPartition] = {}
        before: dict[tuple[str, int], tuple[int, int, int, int]] = {}
        m = self.metrics
        for tp, records in batch.items():
            key = self._partition_key(tp.topic, tp.partition)
            part = self.partitions.get(key)
            if part is None:  # fetched before on_assigned ran (should not happen)
                part = self._load_partition(*key)
                self.partitions[key] = part
            before.setdefault(key, m.snapshot_counts(part))
            if self._lean:  # (offset, value, timestamp) from the lean PartitionRecords
                pairs, stamps = records, list(map(_third, records))
            else:
                pairs = list(zip(map(_offset_of, records), map(_value_of, records), strict=True))
                stamps = [-1 if t is None else t for t in map(_timestamp_of, records)]
            part.ingest(self.roles[tp.topic], pairs, stamps)
            touched[key] = part
        for key, part in touched.items():
            part.advance()
            m.record(part, before[key])
            self.pending_out.extend(part.outbox.drain())

    # ------------------------------------------------------------------ checkpoint

    def checkpoint(
        self, *, force: bool = False, only: set[tuple[str, int]] | None = None, commit: bool = True
    ) -> bool:
        """Sink → dead letters → snapshots → commit. Returns False when it must be retried."""
        now = time.monotonic()
        if not force and now < self._sink_backoff.until:
            return False
        self._last_commit = now
        for part in self.partitions.values():
            self.pending_out.extend(part.outbox.drain())
        out = self.pending_out
        if len(out):
            try:
                refused = self.sink.write(out) if self.sink is not None else []
                self._send_dead_letters([*out.dead_letters, *refused])
            except Exception as exc:
                self._sink_backoff.failed(now)
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.metrics.checkpoint_failures.inc()
                # one line per backoff step: the delay doubles up to 30 s
                log.warning(
                    "store/dead-letter write failed (%s); pausing consumption, "
                    "retry %d in %.1f s",
                    exc,
                    self._sink_backoff.failures,
                    self._sink_backoff.delay,
                )
                self._pause(True)
                return False
            if refused:
                self.metrics.store_rejected.inc(len(refused))
                log.warning("the store refused %d rows permanently; dead-lettered", len(refused))
            self.pending_out = Outbox()
        if self._sink_backoff.failures:
            log.info("checkpoint succeeded again after %d failures", self._sink_backoff.failures)
        self._sink_backoff.ok()
        self._pause(False)
        keys = [k for k in self.partitions if only is None or k in only]
        for key in keys:
            part = self.partitions[key]
            offsets = tuple(sorted(part.offsets.items()))
            if self._saved.get(key) == offsets:
                continue  # nothing consumed since its last snapshot
            self.state_dir.save(part.to_state())
            self._saved[key] = offsets
        self._last_snapshot_wall = time.time()
        self._last_ok_commit = time.monotonic()
        self.metrics.snapshot_time.set(self._last_snapshot_wall)
        if commit:
            self._commit(keys)
        return True

    def _send_dead_letters(self, letters: list[Any]) -> None:
        """Send and flush every dead letter; raise (to retry the checkpoint) unless every
        one was acknowledged. Values over DEAD_LETTER_MAX_VALUE are truncated."""
        if not letters:
            return
        topic = self.config.kafka.dead_letter_topic
        futures = []
        for dl in letters:
            futures.append(
                self._producer.send(
                    topic,
                    value=dl.raw[:DEAD_LETTER_MAX_VALUE],
                    headers=dead_letter_headers(
                        dl.reason, self.topic_of.get(dl.source, dl.source), dl.partition,
                        dl.offset, dl.raw,
                    ),
                )
            )
        self._producer.flush(timeout=30)
        refused = []
        for dl, fut in zip(letters, futures, strict=True):
            if not fut.is_done:
                raise TimeoutError("dead letters not acknowledged within 30 s")
            if fut.failed():
                if getattr(fut.exception, "retriable", False):
                    raise RuntimeError(f"dead letter not delivered: {fut.exception}")
                refused.append((dl, fut.exception))
        # The broker refused a record for good (its size limit below ours, a policy): send
        # the headers alone, so the reason and the original's size and SHA-256 still get
        # there and the checkpoint never stalls on one record.
        fallback = [
            self._producer.send(
                topic,
                value=b"",
                headers=[
                    *dead_letter_headers(
                        dl.reason, self.topic_of.get(dl.source, dl.source), dl.partition,
                        dl.offset, dl.raw,
                    ),
                    ("dead_letter_error", str(exc).encode()[:1000]),
                ],
            )
            for dl, exc in refused
        ]
        if fallback:
            log.warning("%d dead letters refused by the broker; sent their headers only",
                        len(fallback))
            self._producer.flush(timeout=30)
            if not all(f.is_done and f.succeeded() for f in fallback):
                raise RuntimeError("dead letters (headers only) not delivered")
        self.metrics.dead_lettered.inc(len(letters))

    def _commit(self, keys: list[tuple[str, int]]) -> None:
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata

        offsets = {}
        assigned = self._consumer.assignment()
        for key in keys:
            part = self.partitions[key]
            for role, off in part.offsets.items():
                tp = TopicPartition(self.topic_of[role], key[1])
                if role in (EXPOSURES, DESIGNS) and tp not in assigned:
                    continue  # these topics may have fewer partitions (auto-created)
                offsets[tp] = OffsetAndMetadata(off, "", -1)
        if not offsets:
            return
        try:
            self._consumer.commit(offsets=offsets)
        except Exception as exc:  # the snapshot is authoritative; Kafka's copy can lag
            log.warning("offset commit failed (%s); the snapshot still holds the offsets", exc)

    def _pause(self, on: bool) -> None:
        if on == self._paused or self._consumer is None:
            return
        assignment = list(self._consumer.assignment())
        if on:
            self._consumer.pause(*assignment)
        else:
            self._consumer.resume(*assignment)
        self._paused = on

    def _publish(self) -> None:
        self._last_publish = time.monotonic()
        if self.publish is None:
            return
        try:
            self.publish()
        except Exception as exc:
            log.warning("model publish failed (%s); will retry", exc)

    def _log_progress(self) -> None:
        self._last_log = time.monotonic()
        totals: dict[str, int] = {}
        for part in self.partitions.values():
            for k, v in part.counters.as_dict().items():
                totals[k] = totals.get(k, 0) + v
        log.info(
            "partitions=%d %s snapshot_age_s=%.1f",
            len(self.partitions),
            " ".join(f"{k}={v}" for k, v in sorted(totals.items())),
            time.time() - self._last_snapshot_wall,
        )

    def shutdown(self) -> bool:
        """Flush, snapshot, commit, publish, close (SIGTERM path). False when the final
        checkpoint failed (rows or state not written: the next start replays them)."""
        consumer = self._consumer
        if consumer is None:
            return True
        ok = False
        for attempt in range(5):
            if self.checkpoint(force=True):
                ok = True
                break
            log.warning("final checkpoint failed (attempt %d)", attempt + 1)
            time.sleep(min(2.0, 0.2 * 2**attempt))
        if ok:
            self._publish()
        try:
            consumer.close(autocommit=False)  # revokes: one more (cheap) checkpoint
        except Exception as exc:
            log.warning("consumer close failed (%s)", exc)
        self._consumer = None
        if self._producer is not None:
            try:
                self._producer.close(timeout=10)
            except Exception as exc:
                log.warning("producer close failed (%s)", exc)
        if self.sink is not None:
            self.sink.close()
        return ok


def _Rebalance(learner: KafkaLearner) -> Any:
    """A kafka-python ConsumerRebalanceListener bound to ``learner`` (import kept lazy)."""
    from kafka import ConsumerRebalanceListener

    class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
        def on_partitions_revoked(self, revoked: Any) -> None:
            learner.on_revoked(list(revoked))

        def on_partitions_assigned(self, assigned: Any) -> None:
            learner.on_assigned(list(assigned))

    return Listener()
