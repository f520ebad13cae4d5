"""Versioned schema migrations for the analytics store.

Each migration is ``(version, name, statements)``; :meth:`ClickHouseStore.migrate`
applies, in order, every version above the highest one recorded in
``schema_migrations`` and records it. Migrations are append-only: never edit a
released one, add a new version instead.

Design (see ``docs/store.md``):

* every table is a ``ReplacingMergeTree`` whose sorting key ends in the event's
  identity (``event_id``; ``decision_id`` for rewards; ``(unit_key, ts_ms, event_key)``
  for engagement; ``(experiment_id, unit_key, ts_ms)`` for exposures), so a replay after
  a crash collapses to one row; decisions and feedback are keyed (and partitioned by a
  hash of) ``event_id`` alone since migration 3, so a reused event id never gives two
  rows whatever else it changes; queries read with ``FINAL`` or aggregate with
  ``min``/``argMin`` so they never count a duplicate that has not been merged yet;
* the hot path (engagement ⋈ exposures per unit over millions of rows) joins and
  deduplicates on 64-bit integer keys — ``unit_key = cityHash64(unit_id)`` and
  ``event_key = cityHash64(event_id)``, materialised at insert — because string keys
  made the day-30 query several times slower; a collision needs two events of one unit
  with the same millisecond and the same 64-bit hash (≈ 10⁻¹² at 10⁷ events);
* partitions are by month of the event time (``ts_ms``) — few, large partitions —
  except decisions and feedback (16 hash partitions of ``event_id``);
* sorting keys start with the columns the cohort queries filter and join on:
  ``experiment_id`` for decisions/exposures/rewards, ``unit_id`` for engagement
  (joined to exposures per unit), ``decision_id`` for feedback (joined to decisions).
"""

from __future__ import annotations

from typing import Final

__all__ = ["EXPOSURE_SOURCES", "MIGRATIONS", "MIGRATIONS_TABLE", "TABLES"]

MIGRATIONS_TABLE: Final = "schema_migrations"

_MONTH: Final = "toYYYYMM(toDateTime(intDiv(ts_ms, 1000), 'UTC'))"

_DECISION_COLUMNS: Final = """
    event_id String, decision_id String, ts_ms Int64, unit_id String,
    conversation_id String, experiment_id LowCardinality(String),
    variant LowCardinality(String), arm_id LowCardinality(String), propensity Float64,
    policy_version LowCardinality(String), context Array(Float32),
    eligible Array(LowCardinality(String))
"""
_FEEDBACK_COLUMNS: Final = """
    event_id String, decision_id String, ts_ms Int64, unit_id String,
    conversation_id String, retried Nullable(UInt8), rating Nullable(UInt8),
    conversation_length Nullable(UInt32)
"""

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
                messages UInt32,
                unit_key UInt64 MATERIALIZED cityHash64(unit_id),
                event_key UInt64 MATERIALIZED cityHash64(event_id)
            ) ENGINE = ReplacingMergeTree
            PARTITION BY {_MONTH}
            ORDER BY (unit_key, ts_ms, event_key)
            """,
            """
            CREATE TABLE IF NOT EXISTS exposures (
                unit_id String,
                experiment_id LowCardinality(String),
                variant LowCardinality(String),
                ts_ms Int64,
                unit_key UInt64 MATERIALIZED cityHash64(unit_id)
            ) ENGINE = ReplacingMergeTree
            ORDER BY (experiment_id, unit_key, ts_ms)
            """,
        ),
    ),
    (
        2,
        "experiment designs",
        (
            # each weight set an experiment ran with and when it took effect, so lift
            # and the dashboard test the sample ratio against the weights in force
            """
            CREATE TABLE IF NOT EXISTS experiment_designs (
                experiment_id LowCardinality(String),
                since_ms Int64,
                variant LowCardinality(String),
                weight Float64
            ) ENGINE = ReplacingMergeTree
            ORDER BY (experiment_id, since_ms, variant)
            """,
        ),
    ),
    (
        3,
        "decisions and feedback keyed on event_id alone",
        # A reused event_id must never give two rows, whatever else differs (its unit,
        # experiment, decision or event time): the rows are re-keyed on event_id and
        # partitioned by a hash of it, not by month (a ReplacingMergeTree collapses
        # rows only within a partition). Re-runnable: every step may be repeated.
        tuple(
            stmt
            for table, columns in (
                ("decisions", _DECISION_COLUMNS),
                ("feedback", _FEEDBACK_COLUMNS),
            )
            for stmt in (
                f"DROP TABLE IF EXISTS {table}_v1",
                f"""
                CREATE TABLE IF NOT EXISTS {table}_by_event ({columns})
                ENGINE = ReplacingMergeTree
                PARTITION BY cityHash64(event_id) % 16
                ORDER BY event_id
                """,
                f"INSERT INTO {table}_by_event SELECT * FROM {table}",
                f"RENAME TABLE {table} TO {table}_v1, {table}_by_event TO {table}",
                f"DROP TABLE IF EXISTS {table}_v1",
            )
        ),
    ),
    (
        4,
        "exposure source",
        # Whether an exposure row was written for a decision the allocation server made
        # ('decision') or for a fallback the serving tier answered without one
        # ('fallback', from kafka.exposures_topic), so the dashboard can say how many
        # allocations were fallbacks. Rows written before it read 'decision' (the only
        # exposures the learner wrote then besides fallbacks, which it could not mark).
        (
            "ALTER TABLE exposures ADD COLUMN IF NOT EXISTS "
            "source LowCardinality(String) DEFAULT 'decision'",
        ),
    ),
    (
        5,
        "reward version and proxies",
        # Which published reward calibration (bandit.formats.calibration) scored each
        # decision ('config': the config's [reward] α's), and the merged proxies the
        # reward was computed from, so an offline replay can re-score any decision under
        # other α's. Rows written before it read 'config' and NULL proxies (unknown).
        (
            "ALTER TABLE rewards ADD COLUMN IF NOT EXISTS "
            "reward_version LowCardinality(String) DEFAULT 'config'",
            "ALTER TABLE rewards ADD COLUMN IF NOT EXISTS retried Nullable(UInt8)",
            "ALTER TABLE rewards ADD COLUMN IF NOT EXISTS rating Nullable(UInt8)",
            "ALTER TABLE rewards ADD COLUMN IF NOT EXISTS conversation_length Nullable(UInt32)",
        ),
    ),
)

#: what an exposure row's ``source`` may say (migration 4)
EXPOSURE_SOURCES: Final = ("decision", "fallback")

#: tables a caller may name in :meth:`Store.count`, with the key that identifies a row
TABLES: Final[dict[str, str]] = {
    "decisions": "event_id",
    "feedback": "event_id",
    "rewards": "decision_id",
    "engagement": "(unit_key, ts_ms, event_key)",
    "exposures": "(experiment_id, unit_key, ts_ms)",
    "experiment_designs": "(experiment_id, since_ms, variant)",
}
