"""The analytics store: decisions, feedback, rewards, engagement, exposures and cohorts.

``open_store(dsn, database="switchboard", *, read_only=False)`` returns a
:class:`Store` (the protocol, :mod:`bandit.store.protocol`; one implementation,
:class:`ClickHouseStore`); ``chdb:///path`` is the embedded engine, ``http(s)://...`` a ClickHouse
server. See ``docs/store.md``.
"""

from __future__ import annotations

from bandit.store.clickhouse import ClickHouseStore, open_store
from bandit.store.protocol import CohortSource, DesignSource, Store
from bandit.store.rows import ExposureRow, RewardRow

__all__ = ["ClickHouseStore", "CohortSource", "DesignSource", "ExposureRow", "RewardRow", "Store",
           "open_store"]
