"""The store's interface: what the learner, the servers, the dashboard and lift call.

:class:`Store` is the whole seam; :class:`CohortSource` and :class:`DesignSource` are the
slices :mod:`bandit.analysis.lift` reads, so a view that answers from rows fetched once
(the dashboard's ``MomentsView``) can stand in for a store there. One implementation,
:class:`bandit.store.clickhouse.ClickHouseStore`, serves the embedded chdb engine and
ClickHouse servers; ``tests/test_store_contract.py`` runs the behaviour every
implementation owes over both. Frames are pandas DataFrames with the columns each
method's docstring in ``clickhouse.py`` names; every method raises
:class:`bandit.errors.InvalidInputError` for a bad argument and
:class:`bandit.errors.StoreError` when the engine fails (``RowsRejectedError`` when an
insert's rows can never succeed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, Self, runtime_checkable

import pandas as pd

from bandit.events import DecisionEvent, EngagementEvent, FeedbackEvent
from bandit.store.rows import ExposureRow, RewardRow

__all__ = ["CohortSource", "DesignSource", "Store"]


@runtime_checkable
class CohortSource(Protocol):
    """Per-variant sums of a user-level metric: what the lift table reads."""

    def experiments(self) -> list[str]:
        """Experiment ids with any exposure, decision or reward."""
        ...

    def cohort_moments(self, experiment_id: str, metric: str, covariate: str,
                       as_of_ms: int | None = None, *,
                       include_cross_exposed: bool = False) -> pd.DataFrame:
        """Per variant: n_exposed, n (complete horizon) and the power sums of
        ``bandit.store.queries.MOMENT_SUMS`` (sy, syy, sx, sxx, sxy, then Σyᵃxᵇ, a + b <= 4)."""
        ...


@runtime_checkable
class DesignSource(Protocol):
    """An experiment's recorded weight sets and its units per period: what the
    sample-ratio test reads."""

    def experiment_design(self, experiment_id: str) -> pd.DataFrame:
        """Every recorded weight set: since_ms, variant, weight."""
        ...

    def exposure_periods(self, experiment_id: str, bounds: Sequence[int],
                         as_of_ms: int | None = None) -> pd.DataFrame:
        """Units per design period and variant by first exposure: period, variant, units,
        cross_exposed."""
        ...


@runtime_checkable
class Store(CohortSource, DesignSource, Protocol):
    """Switchboard's tables and cohort queries (see ``docs/store.md``)."""

    database: str
    read_only: bool

    # lifecycle
    def migrate(self) -> list[int]: ...

    def schema_version(self) -> int: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...

    # inserts (idempotent: a replayed row counts once)
    def insert_decisions(self, events: Sequence[DecisionEvent]) -> int: ...

    def insert_feedback(self, events: Sequence[FeedbackEvent]) -> int: ...

    def insert_rewards(self, rows: Sequence[RewardRow]) -> int: ...

    def insert_engagement(self, events: Sequence[EngagementEvent]) -> int: ...

    def insert_exposures(self, rows: Sequence[ExposureRow], *,
                         source: str = "decision") -> int: ...

    def insert_engagement_columns(self, *, event_id: Any, ts_ms: Any, unit_id: Any,
                                  screen_time_s: Any, messages: Any) -> int: ...

    def insert_exposure_columns(self, *, unit_id: Any, experiment_id: Any, variant: Any,
                                ts_ms: Any, source: str = "decision") -> int: ...

    def record_design(self, experiment_id: str, weights: Mapping[str, float],
                      since_ms: int) -> int: ...

    # reads
    def count(self, table: str) -> int: ...

    def unit_metrics(self, experiment_id: str, as_of_ms: int | None = None) -> pd.DataFrame: ...

    def cohort_moments_many(self, experiment_id: str,
                            pairs: Sequence[tuple[str, str]] | None = None,
                            as_of_ms: int | None = None, *,
                            include_cross_exposed: bool = False) -> pd.DataFrame: ...

    def retention_curve(self, experiment_id: str, as_of_ms: int | None = None,
                        max_day: int = 30) -> pd.DataFrame: ...

    def traffic_share(self, experiment_id: str, bucket: str = "day") -> pd.DataFrame: ...

    def decision_span(self, experiment_id: str) -> pd.DataFrame: ...

    def exposure_sources(self, experiment_id: str,
                         as_of_ms: int | None = None) -> pd.DataFrame: ...

    def arm_proxies(self, experiment_id: str) -> pd.DataFrame: ...

    def early_proxies(self, experiment_id: str, as_of_ms: int | None = None, *,
                      window_days: int = 7, length_cap: int = 20) -> pd.DataFrame: ...

    def early_moments(self, experiment_id: str, metric: str = "engagement_d30",
                      covariate: str = "pre_engagement", as_of_ms: int | None = None, *,
                      window_days: int = 7, length_cap: int = 20,
                      blocks: int = 2048) -> pd.DataFrame: ...

    def mean_rewards(self, experiment_id: str) -> pd.DataFrame: ...

    def reward_versions(self, experiment_id: str) -> pd.DataFrame: ...
