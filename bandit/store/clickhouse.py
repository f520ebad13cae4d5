"""The analytics store over ``clickhouse-connect``: an embedded chdb engine or a server.

One class, :class:`ClickHouseStore` (the :class:`bandit.store.protocol.Store` protocol's
implementation), talks to both: ``chdb:///path`` (or
``chdb://memory``) selects clickhouse-connect's in-process chdb backend and
``http(s)://user:pass@host:8123`` a ClickHouse server — the SQL is the same.

Every value reaches SQL as a server-side bound parameter (``{name:Type}``) or as a
column of a Native-format insert; the only identifiers ever spliced into SQL text
come from fixed tables in this module (table names, bucket functions), never from
the caller.

Ownership of an embedded store: chdb lets one *process* own a data directory (a
second process fails with "Cannot lock file"); threads of that process share the
engine. The learner owns the store and writes; a reader in another process (the
dashboard, ``switchboard lift``) opens it with ``read_only=True``, which falls back
to a private copy of the data directory when the directory is locked — a snapshot
as of the open; reopen to refresh. See ``docs/store.md``.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import numpy as np
import pandas as pd

from bandit.errors import InvalidInputError, StoreError
from bandit.events import DecisionEvent, EngagementEvent, Event, FeedbackEvent, field_names
from bandit.store import queries
from bandit.store.protocol import Store
from bandit.store.rows import ExposureRow, RewardRow
from bandit.store.schema import EXPOSURE_SOURCES, MIGRATIONS, MIGRATIONS_TABLE, TABLES

__all__ = ["ClickHouseStore", "RowsRejectedError", "open_store"]

log = logging.getLogger(__name__)

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_BUCKETS: Final = {"hour": "toStartOfHour", "day": "toStartOfDay", "week": "toMonday"}
_DAY_MS: Final = 86_400_000


def _chdb_path(dsn: str) -> str | None:
    """The data directory of a ``chdb://`` DSN, or None for memory / non-chdb DSNs."""
    if not dsn.startswith("chdb:"):
        return None
    rest = dsn[len("chdb:"):]
    if rest.startswith("///"):
        path = rest[2:]
    elif rest.startswith("//"):
        loc = rest[2:].split("?", 1)[0]
        if loc.split("/", 1)[0] in ("", "memory", ":memory:"):
            return None
        path = loc
    else:
        path = rest
    return path.split("?", 1)[0] or None


class RowsRejectedError(StoreError):
    """The store refused the rows themselves (a value out of a column's range, a
    constraint, a value it cannot convert): retrying the same rows cannot succeed.

    Any other :class:`StoreError` from an insert (server down, lock, timeout) is
    transient: the same rows may succeed later.
    """


#: ClickHouse error codes that name a property of the inserted rows (not of the server or
#: the schema): CANNOT_PARSE_TEXT, CANNOT_PARSE_INPUT_ASSERTION_FAILED, TYPE_MISMATCH,
#: ARGUMENT_OUT_OF_BOUND, CANNOT_CONVERT_TYPE, CANNOT_PARSE_NUMBER, INCORRECT_DATA,
#: TOO_LARGE_STRING_SIZE, VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE, VIOLATED_CONSTRAINT,
#: TOO_LARGE_ARRAY_SIZE.
_ROW_ERROR_CODES: Final = frozenset({6, 27, 53, 69, 70, 72, 117, 128, 131, 321, 469})
_CODE: Final = re.compile(r"Code: (\d+)\.")


def _rows_rejected(exc: BaseException) -> bool:
    """Whether an insert failed because of the rows it carried (see RowsRejectedError)."""
    from clickhouse_connect.driver.exceptions import DataError

    if isinstance(exc, DataError | TypeError | ValueError | OverflowError | UnicodeError):
        return True  # the client could not serialise a value into its column type
    match = _CODE.search(str(exc))
    return match is not None and int(match.group(1)) in _ROW_ERROR_CODES


def _is_lock_error(exc: BaseException) -> bool:
    text = str(exc)
    if "already initialized with path" in text:  # this process holds another path
        return False
    return "Cannot lock file" in text or "Error initializing EmbeddedServer" in text


class ClickHouseStore:
    """Switchboard's tables and cohort queries over one clickhouse-connect client.

    Use :func:`open_store` rather than the constructor. Thread-safe: calls serialise on
    a lock (clickhouse-connect clients are not safe for concurrent queries).
    """

    def __init__(self, client: Any, database: str, *, read_only: bool,
                 snapshot_dir: str | None = None) -> None:
        self._client = client
        self.database = database
        self.read_only = read_only
        self._snapshot_dir = snapshot_dir
        self._lock = threading.RLock()
        self._closed = False

    # ------------------------------------------------------------------ plumbing

    def _query_df(self, sql: str, params: Mapping[str, Any]) -> pd.DataFrame:
        with self._lock:
            self._require_open()
            try:
                df = self._client.query_df(sql, parameters=dict(params))
                if len(df.columns) == 0:
                    # an empty result comes back without columns; ask for the names
                    desc = self._client.query(f"DESCRIBE ({sql})", parameters=dict(params))
                    df = pd.DataFrame({row[0]: pd.Series([], dtype=_dtype(row[1]))
                                       for row in desc.result_rows})
                return df
            except Exception as exc:
                raise StoreError(f"query failed: {_first_line(exc)}") from exc

    def _rows(self, sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        with self._lock:
            self._require_open()
            try:
                return list(self._client.query(sql, parameters=dict(params)).result_rows)
            except Exception as exc:
                raise StoreError(f"query failed: {_first_line(exc)}") from exc

    def _command(self, sql: str, params: Mapping[str, Any] | None = None) -> Any:
        with self._lock:
            self._require_open()
            try:
                return self._client.command(sql, parameters=dict(params or {}))
            except Exception as exc:
                raise StoreError(f"statement failed: {_first_line(exc)}") from exc

    def _insert(self, table: str, columns: Mapping[str, Any]) -> int:
        if self.read_only:
            raise StoreError(f"store opened read-only; cannot insert into {table}")
        names = list(columns)
        data = [columns[n] for n in names]
        n = len(data[0]) if data else 0
        if n == 0:
            return 0
        with self._lock:
            self._require_open()
            try:
                self._client.insert(table, data, column_names=names, column_oriented=True)
            except Exception as exc:
                error = RowsRejectedError if _rows_rejected(exc) else StoreError
                raise error(f"insert into {table} failed: {_first_line(exc)}") from exc
        return n

    def _require_open(self) -> None:
        if self._closed:
            raise StoreError("store is closed")

    # ------------------------------------------------------------------ lifecycle

    def migrate(self) -> list[int]:
        """Create the database and apply pending migrations; return the versions applied."""
        if self.read_only:
            return []
        self._command(
            f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (version UInt32, name String, "
            "applied_ms Int64) ENGINE = ReplacingMergeTree ORDER BY version"
        )
        done = {row[0] for row in self._rows(f"SELECT version FROM {MIGRATIONS_TABLE} FINAL", {})}
        applied = []
        for version, name, statements in MIGRATIONS:
            if version in done:
                continue
            for stmt in statements:
                self._command(stmt)
            self._insert(MIGRATIONS_TABLE, {
                "version": [version], "name": [name], "applied_ms": [int(time.time() * 1000)],
            })
            log.info("store: applied migration %d (%s)", version, name)
            applied.append(version)
        return applied

    def schema_version(self) -> int:
        """Highest applied migration (0 on an empty store)."""
        try:
            rows = self._rows(f"SELECT max(version) FROM {MIGRATIONS_TABLE}", {})
        except StoreError:
            return 0
        return int(rows[0][0])

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._client.close()
            finally:
                if self._snapshot_dir is not None:
                    shutil.rmtree(self._snapshot_dir, ignore_errors=True)
                    _SNAPSHOTS.discard(self._snapshot_dir)

    def __enter__(self) -> ClickHouseStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ inserts

    def insert_decisions(self, events: Sequence[DecisionEvent]) -> int:
        return self._insert("decisions", _event_columns(DecisionEvent, events))

    def insert_feedback(self, events: Sequence[FeedbackEvent]) -> int:
        cols = _event_columns(FeedbackEvent, events)
        cols["retried"] = [None if v is None else int(v) for v in cols["retried"]]
        return self._insert("feedback", cols)

    def insert_rewards(self, rows: Sequence[RewardRow]) -> int:
        return self._insert("rewards", {
            "decision_id": [r.decision_id for r in rows],
            "experiment_id": [r.experiment_id for r in rows],
            "variant": [r.variant for r in rows],
            "arm_id": [r.arm_id for r in rows],
            "unit_id": [r.unit_id for r in rows],
            "reward": [r.reward for r in rows],
            "propensity": [r.propensity for r in rows],
            "joined": [int(r.joined) for r in rows],
            "late": [int(r.late) for r in rows],
            "ts_ms": [r.ts_ms for r in rows],
            "policy_version": [r.policy_version for r in rows],
            "reward_version": [r.reward_version for r in rows],
            "retried": [None if r.retried is None else int(r.retried) for r in rows],
            "rating": [r.rating for r in rows],
            "conversation_length": [r.conversation_length for r in rows],
        })

    def insert_engagement(self, events: Sequence[EngagementEvent]) -> int:
        return self._insert("engagement", _event_columns(EngagementEvent, events))

    def insert_exposures(self, rows: Sequence[ExposureRow], *, source: str = "decision") -> int:
        """Insert exposures; ``source`` says what they stand for: ``"decision"`` (the
        allocation server decided) or ``"fallback"`` (the serving tier fell back)."""
        src = _source(source)
        return self._insert("exposures", {
            "unit_id": [r.unit_id for r in rows],
            "experiment_id": [r.experiment_id for r in rows],
            "variant": [r.variant for r in rows],
            "ts_ms": [r.ts_ms for r in rows],
            "source": [src] * len(rows),
        })

    def insert_engagement_columns(self, *, event_id: Any, ts_ms: Any, unit_id: Any,
                                  screen_time_s: Any, messages: Any) -> int:
        """Bulk column-oriented insert (numpy arrays or lists) for generators and backfills."""
        cols = {"event_id": event_id, "ts_ms": ts_ms, "unit_id": unit_id,
                "screen_time_s": screen_time_s, "messages": messages}
        _same_length(cols)
        return self._insert("engagement", cols)

    def insert_exposure_columns(self, *, unit_id: Any, experiment_id: Any, variant: Any,
                                ts_ms: Any, source: str = "decision") -> int:
        """Bulk column-oriented insert of exposures, all of one ``source`` (see
        :meth:`insert_exposures`)."""
        src = _source(source)
        cols = {"unit_id": unit_id, "experiment_id": experiment_id, "variant": variant,
                "ts_ms": ts_ms}
        _same_length(cols)
        cols["source"] = [src] * len(unit_id)
        return self._insert("exposures", cols)

    # ------------------------------------------------------------------ reads

    def count(self, table: str) -> int:
        """Rows of ``table`` after deduplication (replayed inserts count once)."""
        if table not in TABLES:
            raise InvalidInputError("table", table, f"must be one of {sorted(TABLES)}")
        return int(self._rows(f"SELECT count() FROM {table} FINAL", {})[0][0])

    def experiments(self) -> list[str]:
        return [str(r[0]) for r in self._rows(queries.EXPERIMENTS, {})]

    def unit_metrics(self, experiment_id: str, as_of_ms: int | None = None) -> pd.DataFrame:
        """One row per exposed unit: variant, exposure time, day-N retention and engagement.

        Day N (N = 0, 1, ...) is the N-th whole 24 h after the unit's first exposure.
        ``retained_dN`` is 1.0 if the unit was active on day N, 0.0 if not, and NaN when
        day N is not entirely before ``as_of_ms`` (no partial cohorts). ``engagement_dN``
        is screen time (s) on day N, ``messages_dN`` messages on day N,
        ``cum_engagement_30`` / ``cum_messages_30`` sum days 0..30 (NaN unless day 30 is
        complete), ``pre_engagement`` / ``pre_messages`` the 7 days before exposure
        (the CUPED covariate).
        """
        as_of = _as_of(as_of_ms)
        params = {"experiment_id": _experiment(experiment_id), "as_of": as_of,
                  "day_ms": _DAY_MS}
        df = self._query_df(queries.UNIT_METRICS, params)
        df["exposure_ts"] = df["exposure_ts"].astype("int64")
        for col in df.columns:
            if col.startswith(("retained_", "engagement_", "messages_", "cum_", "pre_")):
                df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
        df["variant"] = df["variant"].astype(str)
        df["unit_id"] = df["unit_id"].astype(str)
        return df

    def cohort_moments(self, experiment_id: str, metric: str, covariate: str,
                       as_of_ms: int | None = None, *,
                       include_cross_exposed: bool = False) -> pd.DataFrame:
        """Per variant: exposed units, units with a complete horizon for ``metric`` and
        the sums Σy, Σy², Σx, Σx², Σxy over them (x = ``covariate``).

        ``metric`` is a :meth:`unit_metrics` column (``engagement_d30``, ``retained_d7``,
        ``cum_engagement_30``...), ``covariate`` ``pre_engagement`` or ``pre_messages``.
        Equal to aggregating :meth:`unit_metrics` but computed in the engine, so the
        lift of a million units ships two rows, not a million. Units exposed to more than
        one variant are left out unless ``include_cross_exposed`` (then they count in
        their first variant).
        """
        sql = (queries.COHORT_MOMENTS_WITH_CROSS if include_cross_exposed
               else queries.COHORT_MOMENTS).get((metric, covariate))
        if sql is None:
            names = sorted({m for m, _ in queries.COHORT_MOMENTS})
            raise InvalidInputError("metric", (metric, covariate),
                                    f"must be one of {names} with pre_engagement or pre_messages")
        params = {"experiment_id": _experiment(experiment_id), "as_of": _as_of(as_of_ms),
                  "day_ms": _DAY_MS}
        df = self._query_df(sql, params)
        df["variant"] = df["variant"].astype(str)
        out = df.groupby("variant", as_index=False).sum(numeric_only=True)
        for col in ("n_exposed", "n"):
            out[col] = out[col].astype("int64")
        for col in queries.MOMENT_SUMS:
            out[col] = out[col].astype("float64")
        return out[["variant", "n_exposed", "n", *queries.MOMENT_SUMS]]

    def cohort_moments_many(self, experiment_id: str,
                            pairs: Sequence[tuple[str, str]] | None = None,
                            as_of_ms: int | None = None, *,
                            include_cross_exposed: bool = False) -> pd.DataFrame:
        """:meth:`cohort_moments` of many (metric, covariate) pairs from one query.

        One row per pair and variant: ``metric``, ``covariate``, ``variant``,
        ``n_exposed``, ``n`` and the sums of :data:`bandit.store.queries.MOMENT_SUMS` — per
        pair the same
        values as :meth:`cohort_moments`. ``pairs`` defaults to every supported pair;
        asking only for the pairs a view needs computes only their metrics (cheaper).
        """
        wanted = list(queries.MOMENT_PAIRS) if pairs is None else [tuple(p) for p in pairs]
        for p in wanted:
            if p not in queries.COHORT_MOMENTS:
                names = sorted({m for m, _ in queries.COHORT_MOMENTS})
                raise InvalidInputError("metric", p, f"must be one of {names} with "
                                        "pre_engagement or pre_messages")
        cols = ["metric", "covariate", "variant", "n_exposed", "n", *queries.MOMENT_SUMS]
        unique = tuple(dict.fromkeys((str(m), str(c)) for m, c in wanted))
        if not unique:
            return pd.DataFrame({c: pd.Series(dtype=object if c in cols[:3] else "float64")
                                 for c in cols})
        params = {"experiment_id": _experiment(experiment_id), "as_of": _as_of(as_of_ms),
                  "day_ms": _DAY_MS}
        df = self._query_df(_moments_many_sql(unique, include_cross_exposed), params)
        index = {p: i for i, p in enumerate(unique)}
        parts = []
        for metric, cov in wanted:
            i = index[(metric, cov)]
            part = pd.DataFrame({
                "metric": metric, "covariate": cov,
                "variant": df["variant"].astype(str),
                "n_exposed": df["n_exposed"].astype("int64"),
                "n": df[f"n_h{queries.HORIZONS[metric]}"].astype("int64"),
                **{k: pd.to_numeric(df[f"{k}_{i}"], errors="coerce").fillna(0.0).astype("float64")
                   for k in queries.MOMENT_SUMS},
            })
            parts.append(part)
        return pd.concat(parts, ignore_index=True)[cols]

    def retention_curve(self, experiment_id: str, as_of_ms: int | None = None,
                        max_day: int = 30) -> pd.DataFrame:
        """Per variant and day 0..max_day: units whose day is complete, retained share, SE."""
        if not isinstance(max_day, int) or isinstance(max_day, bool) or not 0 <= max_day <= 365:
            raise InvalidInputError("max_day", max_day, "must be an integer in [0, 365]")
        params = {"experiment_id": _experiment(experiment_id), "as_of": _as_of(as_of_ms),
                  "day_ms": _DAY_MS, "max_day": max_day}
        df = self._query_df(queries.RETENTION_CURVE, params)
        df["variant"] = df["variant"].astype(str)
        df["day"] = df["day"].astype("int64")
        df["units"] = df["units"].astype("int64")
        df["retained"] = df["retained"].astype("int64")
        with np.errstate(invalid="ignore", divide="ignore"):
            p = df["retained"] / df["units"].where(df["units"] > 0)
        df["retention"] = p.astype("float64")
        df["se"] = np.sqrt(p * (1 - p) / df["units"].where(df["units"] > 0)).astype("float64")
        return df

    def traffic_share(self, experiment_id: str, bucket: str = "day") -> pd.DataFrame:
        """Decisions per time bucket, variant and arm, with the arm's share within the
        variant (``arm_share``) and the variant's share of the bucket (``variant_share``)."""
        fn = _BUCKETS.get(bucket)
        if fn is None:
            raise InvalidInputError("bucket", bucket, f"must be one of {sorted(_BUCKETS)}")
        sql = queries.TRAFFIC_SHARE.replace("{bucket_fn}", fn)
        df = self._query_df(sql, {"experiment_id": _experiment(experiment_id)})
        df["bucket_start"] = pd.to_datetime(df["bucket_start"], utc=True)
        df["variant"] = df["variant"].astype(str)
        df["arm_id"] = df["arm_id"].astype(str)
        df["decisions"] = df["decisions"].astype("int64")
        vtot = df.groupby(["bucket_start", "variant"])["decisions"].transform("sum")
        btot = df.groupby("bucket_start")["decisions"].transform("sum")
        df["arm_share"] = (df["decisions"] / vtot).astype("float64")
        df["variant_share"] = (vtot / btot).astype("float64")
        return df

    def decision_span(self, experiment_id: str) -> pd.DataFrame:
        """Per variant and arm that has decisions: ``first_ms`` and ``last_ms``, the times of
        its first and last decision (epoch ms). Cheap (no deduplication needed for a min or
        a max): what the dashboard's filters and freshness check read."""
        df = self._query_df(queries.DECISION_SPAN, {"experiment_id": _experiment(experiment_id)})
        df["variant"] = df["variant"].astype(str)
        df["arm_id"] = df["arm_id"].astype(str)
        for col in ("first_ms", "last_ms"):
            df[col] = df[col].astype("int64")
        return df

    def exposure_sources(self, experiment_id: str, as_of_ms: int | None = None) -> pd.DataFrame:
        """Per variant, exposures up to ``as_of_ms`` (one per allocation: a decision or a
        fallback), how many of them were fallbacks, and the newest one's time:
        variant, exposures, fallbacks, last_ms."""
        params = {"experiment_id": _experiment(experiment_id), "as_of": _as_of(as_of_ms)}
        df = self._query_df(queries.EXPOSURE_SOURCES, params)
        df["variant"] = df["variant"].astype(str)
        for col in ("exposures", "fallbacks", "last_ms"):
            df[col] = df[col].astype("int64")
        return df

    def arm_proxies(self, experiment_id: str) -> pd.DataFrame:
        """Per arm: decisions, feedback, retry rate, mean rating, mean conversation length.

        Each proxy is reported as the plain mean over decisions with that proxy observed
        and as a self-normalised IPS mean (weights 1/propensity; Swaminathan & Joachims
        2015), which corrects for context-dependent allocation when the policy was
        adaptive (``adaptive``: propensities of the arm's decisions vary). Standard
        errors: sd/√n for the plain mean, the delta-method
        √Σw²(y-μ)² / Σw for the weighted one (:func:`bandit.stats.ratio_mean_se`).
        """
        from bandit.stats import ratio_mean_se  # scipy: only when the leaderboard asks

        df = self._query_df(queries.ARM_PROXIES, {"experiment_id": _experiment(experiment_id)})
        out = pd.DataFrame({
            "arm_id": df["arm_id"].astype(str),
            "variant": df["variant"].astype(str),
            "n": df["n"].astype("int64"),
            "n_feedback": df["n_feedback"].astype("int64"),
            "adaptive": (df["p_max"] - df["p_min"]).astype("float64") > 1e-9,
        })
        for proxy in ("retry", "rating", "length"):
            n = df[f"{proxy}_n"].astype("float64")
            s1 = df[f"{proxy}_s1"].astype("float64")
            s2 = df[f"{proxy}_s2"].astype("float64")
            w = df[f"{proxy}_w"].astype("float64")
            wy = df[f"{proxy}_wy"].astype("float64")
            w2 = df[f"{proxy}_w2"].astype("float64")
            w2y = df[f"{proxy}_w2y"].astype("float64")
            w2y2 = df[f"{proxy}_w2y2"].astype("float64")
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = s1 / n
                var = (s2 - n * mean**2) / (n - 1)
            # y = v / p and weights w = 1 / p: the self-normalised mean of v and its
            # linearised standard error, from the sums (Σwv, Σw, Σw²v², Σw², Σw²v)
            ips, ips_se = ratio_mean_se(wy, w, w2y2, w2, w2y)
            name = {"retry": "retry_rate", "rating": "mean_rating", "length": "mean_length"}[proxy]
            out[f"{name}_n"] = n.astype("int64")
            out[name] = mean
            out[f"{name}_se"] = np.sqrt(np.clip(var, 0, None) / n)
            out[f"{name}_ips"] = ips
            out[f"{name}_ips_se"] = ips_se
        return out.sort_values(["variant", "arm_id"], ignore_index=True)

    def early_proxies(self, experiment_id: str, as_of_ms: int | None = None, *,
                      window_days: int = 7, length_cap: int = 20) -> pd.DataFrame:
        """Per unit with decisions in its early window (days 0 .. ``window_days`` - 1 after
        first exposure, before ``as_of_ms``): unit_id, variant, exposure_ts, decisions and,
        per proxy (retry, rating, length), ``<proxy>_n`` decisions with it observed and
        ``<proxy>_sum`` of its normalised value (as :mod:`bandit.reward`). What the
        surrogate index (:mod:`bandit.analysis.calibration`) averages per user."""
        if isinstance(window_days, bool) or not isinstance(window_days, int) or window_days < 1:
            raise InvalidInputError("window_days", window_days, "must be an integer >= 1")
        if isinstance(length_cap, bool) or not isinstance(length_cap, int) or length_cap < 1:
            raise InvalidInputError("length_cap", length_cap, "must be an integer >= 1")
        params = {"experiment_id": _experiment(experiment_id), "as_of": _as_of(as_of_ms),
                  "day_ms": _DAY_MS, "window_days": window_days,
                  "length_cap": float(length_cap)}
        df = self._query_df(queries.EARLY_PROXIES, params)
        df["unit_id"] = df["unit_id"].astype(str)
        df["variant"] = df["variant"].astype(str)
        for col in ("exposure_ts", "decisions", "retry_n", "rating_n", "length_n"):
            df[col] = df[col].astype("int64")
        for col in ("retry_sum", "rating_sum", "length_sum"):
            df[col] = df[col].astype("float64")
        return df

    def early_moments(self, experiment_id: str, metric: str = "engagement_d30",
                      covariate: str = "pre_engagement", as_of_ms: int | None = None, *,
                      window_days: int = 7, length_cap: int = 20,
                      blocks: int = 2048) -> pd.DataFrame:
        """The early read's sufficient statistics: the users of :meth:`early_proxies`,
        each with its window means of the proxies (0 where not observed), its
        ``covariate`` x and its ``metric`` y (:meth:`unit_metrics` columns; y is 0 unless
        the user has matured: window and horizon complete), summed per group. One row per
        variant, ``matured``, ``window_complete``, ``has_retry`` / ``has_rating`` /
        ``has_length`` (which proxies the group's users have observed) and ``block``
        (``cityHash64(unit_id) % blocks``): ``n``, ``s_<c>``
        = Σc and ``c_<a>_<b>`` = Σa·b over c, a, b in
        :data:`bandit.store.queries.EARLY_COLUMNS` (retry, rating, length, x, y). What
        the surrogate index and its projection need, without a row per user."""
        sql = queries.EARLY_MOMENTS.get((metric, covariate))
        if sql is None:
            names = sorted({m for m, _ in queries.EARLY_MOMENTS})
            raise InvalidInputError("metric", (metric, covariate),
                                    f"must be one of {names} with pre_engagement or pre_messages")
        if isinstance(window_days, bool) or not isinstance(window_days, int) or window_days < 1:
            raise InvalidInputError("window_days", window_days, "must be an integer >= 1")
        if isinstance(length_cap, bool) or not isinstance(length_cap, int) or length_cap < 1:
            raise InvalidInputError("length_cap", length_cap, "must be an integer >= 1")
        if isinstance(blocks, bool) or not isinstance(blocks, int) or not 1 <= blocks <= 1 << 20:
            raise InvalidInputError("blocks", blocks, "must be an integer in [1, 1048576]")
        params = {"experiment_id": _experiment(experiment_id), "as_of": _as_of(as_of_ms),
                  "day_ms": _DAY_MS, "window_days": window_days,
                  "length_cap": float(length_cap), "blocks": blocks}
        df = self._query_df(sql, params)
        df["variant"] = df["variant"].astype(str)
        for col in ("matured", "window_complete", "has_retry", "has_rating", "has_length"):
            df[col] = df[col].astype(bool)
        for col in ("block", "n"):
            df[col] = df[col].astype("int64")
        for col in df.columns:
            if col.startswith(("s_", "c_")):
                df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
        return df

    def mean_rewards(self, experiment_id: str) -> pd.DataFrame:
        """Per variant and arm: rewarded decisions, mean reward, joined and late shares."""
        df = self._query_df(queries.MEAN_REWARDS, {"experiment_id": _experiment(experiment_id)})
        df["variant"] = df["variant"].astype(str)
        df["arm_id"] = df["arm_id"].astype(str)
        return df

    def reward_versions(self, experiment_id: str) -> pd.DataFrame:
        """The reward α's the experiment's decisions were scored with, one row per
        version (``config`` or a published calibration's id, :mod:`bandit.formats.
        calibration`): reward_version, since_ms and until_ms (its first and last
        decision's time), decisions; ordered by since_ms. Where the dashboard shows a
        re-calibration taking effect."""
        df = self._query_df(queries.REWARD_VERSIONS,
                            {"experiment_id": _experiment(experiment_id)})
        df["reward_version"] = df["reward_version"].astype(str)
        for col in ("since_ms", "until_ms", "decisions"):
            df[col] = df[col].astype("int64")
        return df

    # ------------------------------------------------------------------ experiment designs

    def record_design(self, experiment_id: str, weights: Mapping[str, float],
                      since_ms: int) -> int:
        """Record the variant weights ``experiment_id`` runs with from ``since_ms`` on.

        Idempotent (a replay of the same set collapses). The latest set recorded at or
        before a unit's first exposure is the one its assignment followed; lift tests
        the sample ratio per period against them. Returns the rows written.
        """
        exp = _experiment(experiment_id)
        if not weights:
            raise InvalidInputError("weights", weights, "must name at least one variant")
        for variant, w in weights.items():
            if not isinstance(variant, str) or not variant:
                raise InvalidInputError("weights", variant, "variant names must be non-empty")
            if not (isinstance(w, int | float) and np.isfinite(w) and w >= 0):
                raise InvalidInputError(f"weights[{variant}]", w, "must be a number >= 0")
        if sum(weights.values()) <= 0:
            raise InvalidInputError("weights", dict(weights), "must sum to > 0")
        names = list(weights)
        return self._insert("experiment_designs", {
            "experiment_id": [exp] * len(names), "since_ms": [int(since_ms)] * len(names),
            "variant": names, "weight": [float(weights[v]) for v in names]})

    def experiment_design(self, experiment_id: str) -> pd.DataFrame:
        """Every weight set recorded for ``experiment_id``: since_ms, variant, weight."""
        df = self._query_df(queries.EXPERIMENT_DESIGN,
                            {"experiment_id": _experiment(experiment_id)})
        df["since_ms"] = df["since_ms"].astype("int64")
        df["variant"] = df["variant"].astype(str)
        df["weight"] = df["weight"].astype("float64")
        return df

    def exposure_periods(self, experiment_id: str, bounds: Sequence[int],
                         as_of_ms: int | None = None) -> pd.DataFrame:
        """Units per design period and variant by first exposure (period k: first
        exposed in [bounds[k-1], bounds[k])), and the cross-exposed ones (seen in more
        than one variant) apart: period, variant, units, cross_exposed."""
        params = {"experiment_id": _experiment(experiment_id), "as_of": _as_of(as_of_ms),
                  "bounds": [int(b) for b in bounds]}
        df = self._query_df(queries.EXPOSURE_PERIODS, params)
        df["variant"] = df["variant"].astype(str)
        for col in ("period", "units", "cross_exposed"):
            df[col] = df[col].astype("int64")
        return df


# ---------------------------------------------------------------------- helpers


def _event_columns(cls: type[Event], events: Sequence[Event]) -> dict[str, list[Any]]:
    """An event table's insert columns: the event's fields as :func:`field_names` lists
    them, less ``schema_version`` (the migrations version the tables, not each row)."""
    return {name: [getattr(e, name) for e in events] for name in _STORED_FIELDS[cls]}


_STORED_FIELDS: Final[dict[type, tuple[str, ...]]] = {
    cls: tuple(n for n in field_names(cls) if n != "schema_version")
    for cls in (DecisionEvent, FeedbackEvent, EngagementEvent)
}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:500] if text else type(exc).__name__


def _dtype(ch_type: str) -> str:
    """The pandas dtype of an empty column of ClickHouse type ``ch_type``."""
    t = ch_type.removeprefix("LowCardinality(").removeprefix("Nullable(")
    if t.startswith("String"):
        return "object"
    if t.startswith(("DateTime", "Date")):
        return "datetime64[ns, UTC]"
    if t.startswith(("Int", "UInt")) and not ch_type.startswith("Nullable"):
        return "int64"
    return "float64"


def _same_length(cols: Mapping[str, Any]) -> None:
    lengths = {k: len(v) for k, v in cols.items()}
    if len(set(lengths.values())) > 1:
        raise InvalidInputError("columns", lengths, "must all have the same length")


@functools.lru_cache(maxsize=32)
def _moments_many_sql(pairs: tuple[tuple[str, str], ...], include_cross: bool = False) -> str:
    return queries.moments_many_sql(pairs, include_cross)


def _experiment(experiment_id: str) -> str:
    if not isinstance(experiment_id, str) or not experiment_id or len(experiment_id) > 256:
        raise InvalidInputError("experiment_id", experiment_id, "must be a non-empty string")
    return experiment_id


def _source(source: str) -> str:
    if source not in EXPOSURE_SOURCES:
        raise InvalidInputError("source", source, f"must be one of {list(EXPOSURE_SOURCES)}")
    return source


def _as_of(as_of_ms: int | None) -> int:
    if as_of_ms is None:
        return int(time.time() * 1000)
    if isinstance(as_of_ms, bool) or not isinstance(as_of_ms, int | np.integer) or as_of_ms < 0:
        raise InvalidInputError("as_of_ms", as_of_ms, "must be a non-negative integer (epoch ms)")
    return int(as_of_ms)


_SNAPSHOTS: set[str] = set()


@atexit.register
def _remove_snapshots() -> None:
    """Delete snapshot copies whose store was never closed (a reader that exited early)."""
    for d in list(_SNAPSHOTS):
        shutil.rmtree(d, ignore_errors=True)
    _SNAPSHOTS.clear()


#: Copies of a live directory tried before a snapshot fails: a merge that removes a part
#: while it is being copied spoils one copy, and the next starts from the new listing.
_SNAPSHOT_ATTEMPTS: Final = 5


def _snapshot_copy(path: str, *, copy_function: Callable[[str, str], object] = shutil.copy2,
                   attempts: int = _SNAPSHOT_ATTEMPTS) -> str:
    """Copy a locked chdb data directory to a private temporary directory.

    MergeTree parts are immutable once renamed into place, so copying the live
    directory yields a consistent set of parts (a merge in flight may leave both the
    sources and the merged part; the engine drops covered parts when it loads).
    Temporary parts and the lock file are skipped. The owner removes merged-away parts
    while we copy, so a file or directory that vanished between listing and copying
    (and only that) starts the copy again, up to ``attempts`` times; any other error,
    or parts that keep vanishing, is a :class:`StoreError`. ``copy_function`` copies
    one file (``shutil.copytree``'s hook; tests race it against a deletion).
    """
    dest = tempfile.mkdtemp(prefix="switchboard-store-ro-")
    target = os.path.join(dest, "data")

    def ignore(_dir: str, names: list[str]) -> list[str]:
        return [n for n in names if n == "status" or n.startswith(("tmp_", "tmp-", "delete_tmp_"))]

    for attempt in range(1, attempts + 1):
        try:
            shutil.copytree(path, target, symlinks=True, ignore=ignore,
                            copy_function=copy_function, dirs_exist_ok=False)
            break
        except (OSError, shutil.Error) as exc:
            shutil.rmtree(target, ignore_errors=True)
            vanished = os.path.isdir(path) and _only_vanished(exc)
            if attempt < attempts and vanished:
                log.info("store: a part of %s vanished while it was copied (attempt %d of "
                         "%d); copying again", path, attempt, attempts)
                continue
            shutil.rmtree(dest, ignore_errors=True)
            why = (f"parts kept vanishing while they were copied ({attempts} attempts): "
                   if vanished else "")
            raise StoreError(f"cannot snapshot store at {path}: {why}{exc}") from exc
    _relink(target, os.path.realpath(path))
    _SNAPSHOTS.add(dest)
    return dest


def _only_vanished(exc: BaseException) -> bool:
    """Whether every file ``copytree`` failed on is gone from the source now (a part the
    owner merged away), rather than unreadable."""
    if isinstance(exc, shutil.Error) and isinstance(exc.args[0], list):
        failed = [entry[0] for entry in exc.args[0]]
        return bool(failed) and not any(os.path.lexists(src) for src in failed)
    return isinstance(exc, FileNotFoundError) and exc.filename is not None and not (
        os.path.lexists(exc.filename))


def _relink(root: str, original: str) -> None:
    """Point absolute symlinks that lead into ``original`` at the copy instead."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            if os.path.islink(p):
                dest = os.readlink(p)
                if os.path.isabs(dest) and dest.startswith(original + os.sep):
                    os.unlink(p)
                    os.symlink(root + dest[len(original):], p)


def _connect(dsn: str, database: str | None, chdb_path: str | None) -> Any:
    import clickhouse_connect

    if chdb_path is not None:
        return clickhouse_connect.get_client(interface="chdb", path=chdb_path, database=database)
    return clickhouse_connect.get_client(dsn=dsn, database=database)


def open_store(dsn: str, database: str = "switchboard", *,
               read_only: bool = False) -> Store:
    """Open the store at ``dsn`` and, unless ``read_only``, apply pending migrations.

    ``dsn``: ``chdb:///abs/path`` or ``chdb://relative/path`` (embedded, on disk),
    ``chdb://memory`` (embedded, in memory) or ``http(s)://user:pass@host:port``
    (server). ``read_only=True`` never writes; for an embedded store whose directory
    another process owns it reads a private snapshot taken at open time.
    """
    if not isinstance(dsn, str) or not dsn:
        raise InvalidInputError("store.dsn", dsn, "must be a non-empty DSN string")
    if not isinstance(database, str) or not _IDENT.match(database):
        raise InvalidInputError("store.database", database,
                                "must be an identifier [A-Za-z_][A-Za-z0-9_]*")
    path = _chdb_path(dsn)
    snapshot: str | None = None
    if path is not None and read_only and not os.path.isdir(path):
        raise StoreError(f"no store at {path} (nothing has written to {dsn!r} yet)")
    if path is not None and not read_only:
        os.makedirs(path, exist_ok=True)
    client: Any = None
    try:
        try:
            client = _connect(dsn, None, path)
        except Exception as exc:
            if not (read_only and path is not None and _is_lock_error(exc)):
                raise
            log.info("store: %s is owned by another process; reading a snapshot", path)
            snapshot = _snapshot_copy(path)
            client = _connect(dsn, None, os.path.join(snapshot, "data"))
            # The copy is private and thrown away at close: merging its parts would only
            # compete with the reader's queries for CPU (a 10^7-row merge starts as soon
            # as a freshly written store is opened). The engine is this process's alone.
            client.command("SYSTEM STOP MERGES")
        if not read_only:
            client.command("CREATE DATABASE IF NOT EXISTS {db:Identifier}",
                           parameters={"db": database})
        elif not client.command("SELECT count() FROM system.databases WHERE name = {db:String}",
                                parameters={"db": database}):
            raise StoreError(f"store {dsn!r} has no database {database!r} (nothing written yet?)")
        client.database = database
        store = ClickHouseStore(client, database, read_only=read_only, snapshot_dir=snapshot)
        if not read_only:
            store.migrate()
    except Exception as exc:
        if client is not None:
            client.close()
        if snapshot is not None:
            shutil.rmtree(snapshot, ignore_errors=True)
        if isinstance(exc, StoreError):
            raise
        raise StoreError(f"cannot open store {dsn!r}: {_first_line(exc)}") from exc
    return store
