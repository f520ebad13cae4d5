"""Fallback exposures from the serving tier reach the store's cohorts: the learner's
engagement partitions decode them from ``kafka.exposures_topic`` (dead-lettering bad
ones, as for every topic) and the store sink writes them as exposure rows."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from bandit.events import ExposureEvent, encode_event
from consumers.join import DESIGNS, ENGAGEMENT, EXPOSURES, EngagementPartition, Outbox
from consumers.sink import StoreSink

DAY_MS = 86_400_000
T0 = 1_767_571_200_000


def _exposure(i: int, **over: Any) -> ExposureEvent:
    fields: dict[str, Any] = {
        "event_id": f"exp-{i}", "ts_ms": T0 + i, "unit_id": f"user-{i}",
        "conversation_id": f"c-{i}", "experiment_id": "exp-default",
        "variant": "bandit" if i % 2 else "gpt35", "arm_id": "gpt35", "reason": "timeout",
        **over}
    return ExposureEvent(**fields)


def test_engagement_partition_decodes_exposures_and_dead_letters_bad_ones() -> None:
    part = EngagementPartition(0)
    good = [encode_event(_exposure(i)) for i in range(5)]
    bad = orjson.dumps({**orjson.loads(good[0]), "event_id": "bad", "variant": ""})
    part.ingest(EXPOSURES, list(enumerate([*good[:3], bad, *good[3:]])))
    assert [e.event_id for e in part.outbox.exposures] == [f"exp-{i}" for i in range(5)]
    assert part.offsets == {ENGAGEMENT: 0, EXPOSURES: 6, DESIGNS: 0}
    [dead] = part.outbox.dead_letters
    assert "variant" in dead.reason and dead.raw == bad and dead.offset == 3
    # replayed offsets are skipped; the offset is part of the partition's state
    part.ingest(EXPOSURES, list(enumerate(good)))
    assert len(part.outbox.exposures) == 5
    again = EngagementPartition(0)
    again.load_state(part.to_state())
    assert again.offsets[EXPOSURES] == 6
    # state saved before exposures existed: they are read from the start
    old = dataclasses.replace(part.to_state(), offsets={ENGAGEMENT: 7})
    again.load_state(old)
    assert again.offsets == {ENGAGEMENT: 7, EXPOSURES: 0, DESIGNS: 0}


def test_store_sink_writes_fallback_exposures_into_the_cohorts(store: Any) -> None:
    outbox = Outbox()
    outbox.exposures = [_exposure(i) for i in range(6)]
    outbox.exposures.append(_exposure(0))  # a re-sent one counts once
    assert StoreSink(store).write(outbox) == []
    assert store.count("exposures") == 6
    units = store.unit_metrics("exp-default", as_of_ms=T0 + 40 * DAY_MS)
    got = dict(zip(units["unit_id"], units["variant"], strict=True))
    assert got == {f"user-{i}": ("bandit" if i % 2 else "gpt35") for i in range(6)}
