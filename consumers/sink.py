"""Where the learner's rows go: a small :class:`Sink` protocol and the store-backed sink.

The pure core fills an :class:`~consumers.join.Outbox`; the adapter hands it to a sink
before snapshotting and committing. Store inserts are idempotent on event id, so a
replay after a crash writes nothing twice.

Poison isolation: a row the store refuses for what it holds
(:class:`bandit.store.clickhouse.RowsRejectedError`: a value out of a column's range, a
constraint) can never be written, so the sink finds it by bisecting the refused insert
and returns it as a :class:`~consumers.join.DeadLetter` (with the original bytes of its
event) while every other row is written. Any other error is transient (store down) and
is raised, so the adapter retries the whole outbox later with backoff.

Experiment designs (:class:`~bandit.events.DesignEvent`, from the allocation servers)
become design periods in the store only when the weights change
(:func:`bandit.analysis.lift.record_design_change`), so a replay, a restarted server or a
second server with the same weights writes nothing new.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import orjson

from bandit.events import encode_event
from consumers.join import (
    DECISIONS,
    DESIGNS,
    ENGAGEMENT,
    EXPOSURES,
    FEEDBACK,
    DeadLetter,
    Outbox,
)

__all__ = ["MemorySink", "Sink", "StoreSink", "insert_isolating"]

_R = TypeVar("_R")


class Sink(Protocol):
    def write(self, outbox: Outbox) -> list[DeadLetter]:
        """Persist every row of ``outbox``; return the rows refused for good as dead
        letters (raise to have the same rows retried later)."""
        ...

    def close(self) -> None: ...


class MemorySink:
    """Keeps everything in lists (tests, benchmarks without a store)."""

    def __init__(self) -> None:
        self.written = Outbox()

    def write(self, outbox: Outbox) -> list[DeadLetter]:
        self.written.extend(outbox)
        return []

    def close(self) -> None:
        return None


def insert_isolating(
    insert: Callable[[Sequence[_R]], Any], rows: Sequence[_R]
) -> list[tuple[_R, str]]:
    """Insert ``rows``; when the store refuses them for what they hold, bisect to write
    every row it accepts. Returns the refused rows with the store's reason; transient
    errors propagate."""
    from bandit.store.clickhouse import RowsRejectedError

    refused: list[tuple[_R, str]] = []
    todo = [rows] if rows else []
    while todo:
        part = todo.pop()
        try:
            insert(part)
        except RowsRejectedError as exc:
            if len(part) == 1:
                refused.append((part[0], str(exc)))
            else:
                mid = len(part) // 2
                todo += [part[mid:], part[:mid]]
    return refused


class StoreSink:
    """Writes decisions, feedback, rewards, exposures, engagement and design periods to
    ``bandit.store``."""

    def __init__(self, store: Any) -> None:
        self.store = store

    @classmethod
    def open(cls, dsn: str, database: str | None = None) -> StoreSink:
        from bandit.store import open_store

        return cls(open_store(dsn, database or "switchboard"))

    def write(self, outbox: Outbox) -> list[DeadLetter]:
        from bandit.store import RewardRow

        s = self.store
        dead: list[DeadLetter] = []

        def event_dead(source: str, rows: list[tuple[Any, str]]) -> None:
            for ev, reason in rows:
                partition, offset, raw = outbox.raw.get(ev.event_id, (-1, -1, None))
                dead.append(
                    DeadLetter(
                        f"store refused the row permanently: {reason}",
                        raw if raw is not None else encode_event(ev),
                        source,
                        partition,
                        offset,
                    )
                )

        def row_dead(table: str, rows: list[tuple[Any, str]], as_json: Callable[[Any], Any]) -> None:
            for row, reason in rows:
                dead.append(
                    DeadLetter(
                        f"store refused the row permanently: {reason}",
                        orjson.dumps(as_json(row)),
                        table,
                        -1,
                        -1,
                    )
                )

        decisions = outbox.decisions
        if decisions:
            event_dead(DECISIONS, insert_isolating(s.insert_decisions, decisions))

            def exposures(rows: Sequence[Any]) -> Any:
                # exposures straight from the decision columns (no per-row objects)
                return s.insert_exposure_columns(
                    unit_id=[d.unit_id for d in rows],
                    experiment_id=[d.experiment_id for d in rows],
                    variant=[d.variant for d in rows],
                    ts_ms=[d.ts_ms for d in rows],
                )

            row_dead(
                "exposures",
                insert_isolating(exposures, decisions),
                lambda d: {
                    "unit_id": d.unit_id,
                    "experiment_id": d.experiment_id,
                    "variant": d.variant,
                    "ts_ms": d.ts_ms,
                },
            )
        feedback = outbox.feedback + [lf.feedback for lf in outbox.late]
        if feedback:
            event_dead(FEEDBACK, insert_isolating(s.insert_feedback, feedback))
        # One reward row per decision (a replay overwrites): late feedback re-writes the
        # closed decision's row with the same credited reward, flagged late.
        closed = list(outbox.rewards) + [lf.closed for lf in outbox.late if lf.closed]
        if closed:
            rewards = [
                RewardRow(
                    decision_id=c.decision.decision_id,
                    experiment_id=c.decision.experiment_id,
                    variant=c.decision.variant,
                    arm_id=c.decision.arm_id,
                    unit_id=c.decision.unit_id,
                    reward=c.reward,
                    propensity=c.decision.propensity,
                    joined=c.joined,
                    late=c.late,
                    ts_ms=c.decision.ts_ms,
                    policy_version=c.decision.policy_version,
                    reward_version=c.reward_version,
                    retried=c.retried,
                    rating=c.rating,
                    conversation_length=c.conversation_length,
                )
                for c in closed
            ]
            row_dead(
                "rewards",
                insert_isolating(s.insert_rewards, rewards),
                lambda r: {k: getattr(r, k) for k in r.__slots__},
            )
        if outbox.engagement:
            event_dead(ENGAGEMENT, insert_isolating(s.insert_engagement, outbox.engagement))
        if outbox.exposures:
            from bandit.store import ExposureRow

            def fallback_exposures(rows: Sequence[Any]) -> Any:
                # marked, so the dashboard can tell fallback allocations from decisions
                return s.insert_exposures(
                    [ExposureRow(e.unit_id, e.experiment_id, e.variant, e.ts_ms) for e in rows],
                    source="fallback")

            event_dead(EXPOSURES, insert_isolating(fallback_exposures, outbox.exposures))
        if outbox.designs:
            event_dead(DESIGNS, self._record_designs(outbox.designs))
        return dead

    def _record_designs(self, designs: Sequence[Any]) -> list[tuple[Any, str]]:
        """A design period for each event whose weights change the recorded design, in
        order; the events the store refuses for what they hold, with its reason."""
        from bandit.analysis.lift import record_design_change
        from bandit.errors import InvalidInputError
        from bandit.store.clickhouse import RowsRejectedError

        refused: list[tuple[Any, str]] = []
        for ev in designs:
            try:
                record_design_change(self.store, ev.experiment_id, dict(ev.weights), ev.ts_ms)
            except (InvalidInputError, RowsRejectedError) as exc:
                refused.append((ev, str(exc)))
        return refused

    def close(self) -> None:
        close = getattr(self.store, "close", None)
        if close is not None:
            close()
