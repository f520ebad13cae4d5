"""The adapter's lean record-batch parser against kafka-python's own (no broker needed)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.kafka_records import lean_partition_records, parse_v2_records, use_lean_records

kafka_records = pytest.importorskip("kafka.record")
fetcher_mod = pytest.importorskip("kafka.consumer.fetcher")

Record = tuple[int, bytes | None, bytes | None, list[tuple[str, bytes | None]]]

records_st = st.lists(
    st.tuples(
        st.integers(0, 2**40),  # timestamp offset (multi-byte varints)
        st.none() | st.binary(max_size=40),  # key
        st.none() | st.binary(max_size=300),  # value (null values happen: tombstones)
        st.lists(st.tuples(st.text(max_size=5), st.none() | st.binary(max_size=8)), max_size=2),
    ),
    min_size=1,
    max_size=30,
)


def _memory_records(batches: list[tuple[int, list[Record], int]], compression: int = 0) -> bytes:
    """Raw v2 batches as a broker returns them: (base offset, records, offset gap)."""
    out = b""
    for base, records, gap in batches:
        builder = kafka_records.default_records.DefaultRecordBatchBuilder(
            magic=2, compression_type=compression, is_transactional=False,
            producer_id=-1, producer_epoch=-1, base_sequence=-1, batch_size=1 << 30,
        )
        for i, (ts, key, value, headers) in enumerate(records):
            # an offset gap (compaction) inside the batch after the first record
            builder.append(i + (gap if i else 0), 1_700_000_000_000 + ts, key, value, headers)
        buf = builder.build()
        # the builder writes base offset 0; the broker assigns the real one
        out += base.to_bytes(8, "big", signed=True) + bytes(buf[8:])
    return out


def _standard(raw: bytes, tp: Any, fetch_offset: int) -> list[tuple[int, bytes | None, int]]:
    part = fetcher_mod.Fetcher.PartitionRecords(
        fetch_offset, tp, kafka_records.MemoryRecords(raw), check_crcs=True
    )
    return [(r.offset, r.value, r.timestamp) for r in part.take()]


def _lean(raw: bytes, tp: Any, fetch_offset: int, n: int) -> list[tuple[int, bytes | None, int]]:
    """Take in chunks of ``n`` as poll(max_records=n) does; the position must track."""
    cls = lean_partition_records(fetcher_mod.Fetcher.PartitionRecords)
    part = cls(fetch_offset, tp, kafka_records.MemoryRecords(raw), check_crcs=True)
    out: list[tuple[int, bytes | None, int]] = []
    while part:
        got = part.take(n)
        if got:
            assert part.next_fetch_offset == got[-1][0] + 1
        out += got
    return out


@settings(max_examples=60, deadline=None)
@given(
    batches=st.lists(st.tuples(records_st, st.integers(0, 300)), min_size=1, max_size=3),
    compression=st.sampled_from([0, 1]),  # none, gzip (the generic path)
    skip=st.integers(0, 5),
    n=st.integers(1, 50),
)
def test_lean_partition_records_equal_kafka_python(batches, compression, skip, n):  # type: ignore[no-untyped-def]
    layout, base = [], 0
    for records, gap in batches:
        layout.append((base, records, gap))
        base += len(records) + gap + 1
    raw = _memory_records(layout, compression)
    tp = fetcher_mod.TopicPartition("t", 0)
    fetch_offset = layout[0][0] + skip
    assert _lean(raw, tp, fetch_offset, n) == _standard(raw, tp, fetch_offset)


def test_parse_v2_records_reads_offsets_values_and_timestamps() -> None:
    raw = _memory_records([(7, [(0, b"k", b"v1", []), (300, None, None, [("h", b"x")])], 4)])
    batch = kafka_records.MemoryRecords(raw).next_batch()
    offsets, values, deltas = parse_v2_records(bytes(batch._buffer), batch._pos, 7, 2)
    assert offsets == [7, 12] and values == [b"v1", None] and deltas == [0, 300]


def test_parse_v2_records_rejects_truncated_batches() -> None:
    raw = _memory_records([(0, [(0, None, b"value", [])], 0)])
    batch = kafka_records.MemoryRecords(raw).next_batch()
    with pytest.raises((ValueError, IndexError)):
        parse_v2_records(bytes(batch._buffer)[:-3], batch._pos, 0, 1)


def test_lean_records_install_on_a_consumer() -> None:
    kafka = pytest.importorskip("kafka")
    consumer = kafka.KafkaConsumer(bootstrap_servers="127.0.0.1:1", api_version=(2, 8))
    try:
        assert use_lean_records(consumer)
    finally:
        consumer.close()


@pytest.mark.integration
@pytest.mark.parametrize("parser", ["lean", "kafka-python"])
def test_learner_record_parser_follows_the_config(broker, topic_prefix, tmp_path, parser):  # type: ignore[no-untyped-def]
    from bandit.config import load_config
    from consumers.kafka_adapter import KafkaLearner
    from tests.test_learner_kafka import write_config

    cfg = write_config(tmp_path, broker.bootstrap_servers, topic_prefix, dim=4, store=False)
    config = load_config(cfg, env={"SWITCHBOARD_LEARNER__RECORD_PARSER": f'"{parser}"'})
    learner = KafkaLearner(config, lambda p: pytest.fail("no partition is assigned here"))
    learner._connect(give_up_after_s=60)
    try:
        fetcher = learner._consumer._fetcher
        assert learner._lean is (parser == "lean")
        assert (fetcher.PartitionRecords.__name__ == "LeanPartitionRecords") is (parser == "lean")
    finally:
        assert learner.shutdown()
