"""Versioned schema migrations for the analytics store.

Each migration is ``(version, name, statements)``; :meth:`ClickHouseStore.migrate`
applies, in order, every version above the highest one recorded in
``schema_migrations`` and records it. Migrations are append-only: never edit a
released one, add a new version instead.

Design (see ``docs/store.md``):

* every table is a ``ReplacingMergeTree`` whose sorting key ends in the event's
  identity (``event_id``; ``decision_id`` for rewards; ``(experiment_id, unit_id, ts_ms)``
  for exposures), so a replay after a crash collapses to one row; queries read with
  ``FINAL`` or aggregate with ``min``/``uniqExact`` so they never count a duplicate
  that has not been merged yet;
* partitions are by month of the event time (``ts_ms``) — few, large partitions;
* sorting keys start with the columns the cohort queries filter and join on:
  ``experiment_id`` for decisions/exposures/rewards, ``unit_id`` for engagement
  (joined to exposures per unit), ``decision_id`` for feedback (joined to decisions).
"""

from __future__ import annotations

from typing import Final

__all__ = ["MIGRATIONS", "MIGRATIONS_TABLE", "TABLES"]

MIGRATIONS_TABLE: Final = "schema_migrations"

_MONTH: Final = "toYYYYMM(toDateTime(intDiv(ts_ms, 1000), 'UTC'))"

MIGRATIONS: Final[tuple[tuple[int, str, tuple[str, ...]], ...]] = (
    (
        1,
        "core tables",
        (
            f"""
            CREATE TABLE IF NOT EXISTS decisions (
                event_id String,
                decision_id String,
                ts_ms Int64,
                unit_id String,
                conversation_id String,
                experiment_id LowCardinality(String),
                variant LowCardinality(String),
                arm_id LowCardinality(String),
                propensity Float64,
                policy_version LowCardinality(String),
                context Array(Float32),
                eligible Array(LowCardinality(String))
            ) ENGINE = ReplacingMergeTree
            PARTITION BY {_MONTH}
            ORDER BY (experiment_id, unit_id, event_id)
            """,
            f"""
            CREATE TABLE IF NOT EXISTS feedback (
                event_id String,
                decision_id String,
                ts_ms Int64,
                unit_id String,
                conversation_id String,
                retried Nullable(UInt8),
                rating Nullable(UInt8),
                conversation_length Nullable(UInt32)
            ) ENGINE = ReplacingMergeTree
            PARTITION BY {_MONTH}
            ORDER BY (decision_id, event_id)
            """,
            f"""
            CREATE TABLE IF NOT EXISTS rewards (
                decision_id String,
                experiment_id LowCardinality(String),
                variant LowCardinality(String),
                arm_id LowCardinality(String),
                unit_id String,
                reward Float64,
                propensity Float64,
                joined UInt8,
                late UInt8,
                ts_ms Int64,
                policy_version LowCardinality(String)
            ) ENGINE = ReplacingMergeTree
            PARTITION BY {_MONTH}
            ORDER BY (experiment_id, arm_id, decision_id)
            """,
            f"""
            CREATE TABLE IF NOT EXISTS engagement (
                event_id String,
                ts_ms Int64,
                unit_id String,
                screen_time_s Float64,
                messages UInt32
            ) ENGINE = ReplacingMergeTree
            PARTITION BY {_MONTH}
            ORDER BY (unit_id, event_id)
            """,
            """
            CREATE TABLE IF NOT EXISTS exposures (
                unit_id String,
                experiment_id LowCardinality(String),
                variant LowCardinality(String),
                ts_ms Int64
            ) ENGINE = ReplacingMergeTree
            ORDER BY (experiment_id, unit_id, ts_ms)
            """,
        ),
    ),
)

#: tables a caller may name in :meth:`Store.count`, with the key that identifies a row
TABLES: Final[dict[str, str]] = {
    "decisions": "event_id",
    "feedback": "event_id",
    "rewards": "decision_id",
    "engagement": "event_id",
    "exposures": "(experiment_id, unit_id, ts_ms)",
}
