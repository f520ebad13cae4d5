"""The learner's lean Kafka record parser (``learner.record_parser = "lean"``).

kafka-python turns every record into a ``ConsumerRecord`` through several layers of
pure-Python objects, more than the learner's own work per feedback event. The learner only
needs each record's offset, value and timestamp, so when the installed kafka-python has
the internals this module was checked against (the minor version pinned in
``pyproject.toml``; checked again, with a probe, when the consumer is created), the
consumer's fetcher is given a ``PartitionRecords`` subclass that parses uncompressed v2
record batches in one tight loop into ``(offset, value, timestamp)`` triples; every other
case (compressed or legacy batches, control batches, CRC failures, skipping to the fetch
offset, position bookkeeping) goes through kafka-python's own batch objects and rules.
With ``learner.record_parser = "kafka-python"``, or internals that differ, the client's own
parsing is used. ``tests/test_learner_records.py`` checks the parser against
kafka-python's on batches with keys, headers, null values, multi-byte varints and offset
gaps; the throughput of each choice (and of confluent-kafka) is measured by
``bench/ingest.py`` and written down in ``docs/learner.md``.
"""

from __future__ import annotations

import bisect
import logging
from typing import Any

__all__ = ["crc32c_is_native", "lean_partition_records", "parse_v2_records", "use_lean_records"]

log = logging.getLogger("switchboard.learner")


def parse_v2_records(
    buf: bytes, pos: int, base_offset: int, count: int
) -> tuple[list[int], list[bytes | None], list[int]]:
    """Offsets, values and timestamp deltas of the ``count`` records of an uncompressed
    v2 batch whose records start at ``buf[pos]`` (Kafka's record format: length,
    attributes, timestamp delta, offset delta, key, value, headers — all lengths zigzag
    varints). A record's timestamp is the batch's first timestamp plus its delta."""
    offsets: list[int] = []
    values: list[bytes | None] = []
    deltas: list[int] = []
    add_offset = offsets.append
    add_value = values.append
    add_delta = deltas.append
    # Varints of one or two bytes (lengths < 8 KiB, offset deltas < 8192) are decoded
    # inline; longer ones by _varint. Zigzag: (v >> 1) ^ -(v & 1).
    for _ in range(count):
        b = buf[pos]
        if b < 0x80:
            length = (b >> 1) ^ -(b & 1)
            pos += 1
        elif buf[pos + 1] < 0x80:
            v = (b & 0x7F) | (buf[pos + 1] << 7)
            length = (v >> 1) ^ -(v & 1)
            pos += 2
        else:
            length, pos = _varint(buf, pos)
        end = pos + length
        pos += 1  # attributes (unused)
        b = buf[pos]
        if b < 0x80:
            add_delta((b >> 1) ^ -(b & 1))
            pos += 1
        else:
            tdelta, pos = _varint(buf, pos)
            add_delta(tdelta)
        b = buf[pos]
        if b < 0x80:
            delta = (b >> 1) ^ -(b & 1)
            pos += 1
        elif buf[pos + 1] < 0x80:
            v = (b & 0x7F) | (buf[pos + 1] << 7)
            delta = (v >> 1) ^ -(v & 1)
            pos += 2
        else:
            delta, pos = _varint(buf, pos)
        b = buf[pos]
        if b < 0x80:
            klen = (b >> 1) ^ -(b & 1)
            pos += 1
        else:
            klen, pos = _varint(buf, pos)
        if klen > 0:
            pos += klen
        b = buf[pos]
        if b < 0x80:
            vlen = (b >> 1) ^ -(b & 1)
            pos += 1
        elif buf[pos + 1] < 0x80:
            v = (b & 0x7F) | (buf[pos + 1] << 7)
            vlen = (v >> 1) ^ -(v & 1)
            pos += 2
        else:
            vlen, pos = _varint(buf, pos)
        if vlen >= 0:
            if pos + vlen > end:
                raise ValueError(f"record value overruns its record at offset delta {delta}")
            add_value(buf[pos : pos + vlen])
        else:
            add_value(None)
        add_offset(base_offset + delta)
        pos = end  # headers (unused)
    if pos != len(buf):
        raise ValueError(f"{len(buf) - pos} unconsumed bytes after {count} records")
    return offsets, values, deltas


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """A zigzag-encoded varint at ``buf[pos]``; returns (value, next position)."""
    result = 0
    shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift > 63:
            raise ValueError("varint out of int64 range")


def use_lean_records(consumer: Any) -> bool:
    """Give ``consumer``'s fetcher the lean ``PartitionRecords`` when kafka-python's
    internals are the ones it was written against; False (and no change) otherwise."""
    fetcher = getattr(consumer, "_fetcher", None)
    base = getattr(type(fetcher), "PartitionRecords", None)
    config = getattr(fetcher, "config", None)
    if (
        fetcher is None
        or not isinstance(base, type)
        or not isinstance(config, dict)
        or config.get("key_deserializer") is not None
        or config.get("value_deserializer") is not None
        or str(config.get("isolation_level", "read_uncommitted")) != "read_uncommitted"
        or not all(
            hasattr(base, name)
            for name in ("take", "drain", "_maybe_raise_next_inline_exception", "__bool__")
        )
    ):
        log.info("kafka-python internals differ; using its standard record parsing")
        return False
    lean = lean_partition_records(base)
    try:  # an empty fetch exercises the attributes the lean class relies on
        from kafka.record import MemoryRecords

        if lean(0, None, MemoryRecords(b""), check_crcs=False).take(1) != []:
            raise ValueError("an empty fetch yielded records")
    except Exception as exc:
        log.info("lean record parsing unavailable (%s); using kafka-python's", exc)
        return False
    fetcher.PartitionRecords = lean
    return True


def lean_partition_records(base: type) -> type:
    from kafka.errors import CorruptRecordError

    class LeanPartitionRecords(base):  # type: ignore[misc, valid-type]
        """kafka-python's PartitionRecords, taking ``(offset, value, timestamp)`` triples
        batch-wise."""

        def __init__(self, fetch_offset: int, tp: Any, records: Any, *args: Any, **kw: Any):
            super().__init__(fetch_offset, tp, records, *args, **kw)
            self._lean_records = records
            self._lean_offsets: list[int] = []
            self._lean_values: list[bytes | None] = []
            self._lean_stamps: list[int] = []
            self._lean_at = 0
            self._lean_last: Any = None

        def take(self, n: int | None = None) -> list[tuple[int, bytes | None, int]]:
            self._maybe_raise_next_inline_exception()
            out: list[tuple[int, bytes | None, int]] = []
            try:
                while self.record_iterator is not None and (n is None or len(out) < n):
                    at, offsets = self._lean_at, self._lean_offsets
                    if at >= len(offsets):
                        self._next_batch()
                        continue
                    k = len(offsets) - at if n is None else min(n - len(out), len(offsets) - at)
                    out.extend(
                        zip(
                            offsets[at : at + k],
                            self._lean_values[at : at + k],
                            self._lean_stamps[at : at + k],
                            strict=True,
                        )
                    )
                    self._lean_at = at + k
                    self.next_fetch_offset = offsets[at + k - 1] + 1
                    self.records_read += k
            except Exception as exc:
                if not out:
                    raise
                self._next_inline_exception = exc  # raised by the next take, as kafka-python does
            return out

        def _next_batch(self) -> None:
            self._lean_offsets, self._lean_values, self._lean_at = [], [], 0
            self._lean_stamps = []
            batch = self._lean_records.next_batch()
            if batch is None:
                last = self._lean_last
                if last is not None and last.magic == 2:
                    self.next_fetch_offset = last.next_offset
                self.drain()
                return
            self._lean_last = batch
            if self.check_crcs and not batch.validate_crc():
                raise CorruptRecordError(
                    f"Record batch for partition {self.topic_partition} at offset "
                    f"{batch.base_offset} failed crc check"
                )
            self.bytes_read += batch.size_in_bytes
            if batch.magic == 2:
                self.leader_epoch = batch.leader_epoch
                if batch.is_control_batch:
                    self.next_fetch_offset = batch.next_offset
                    return
            if batch.magic == 2 and batch.compression_type == 0:
                try:
                    offsets, values, deltas = parse_v2_records(
                        bytes(batch._buffer), batch._pos, batch.base_offset, batch.records_count
                    )
                except (ValueError, IndexError) as exc:
                    raise CorruptRecordError(f"Found invalid record structure: {exc!r}") from exc
                if batch.timestamp_type == batch.LOG_APPEND_TIME:
                    stamps = [batch.max_timestamp] * len(offsets)
                else:
                    first = batch.first_timestamp
                    stamps = [first + d for d in deltas]
            else:
                offsets, values, stamps = [], [], []
                for record in batch:
                    if self.check_crcs and batch.magic < 2 and not record.validate_crc():
                        raise CorruptRecordError(
                            f"Record for partition {self.topic_partition} at offset "
                            f"{record.offset} failed crc check"
                        )
                    offsets.append(record.offset)
                    values.append(record.value)
                    stamps.append(-1 if record.timestamp is None else record.timestamp)
            skip = bisect.bisect_left(offsets, self.fetch_offset)  # mid-batch fetch offset
            self._lean_offsets, self._lean_values = offsets[skip:], values[skip:]
            self._lean_stamps = stamps[skip:]
            if not self._lean_offsets and batch.magic == 2:
                self.next_fetch_offset = max(self.next_fetch_offset, batch.next_offset)

    return LeanPartitionRecords


def crc32c_is_native() -> bool:
    """True when kafka-python computes CRC32C with the C ``crc32c`` package."""
    try:
        from kafka.record import util
    except ImportError:  # pragma: no cover - kafka-python is a dependency
        return False
    return getattr(util, "crc32c_c", None) is not None
