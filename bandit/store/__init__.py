"""The analytics store: decisions, feedback, rewards, engagement, exposures and cohorts.

``open_store(dsn, database="switchboard", *, read_only=False)`` returns a
:class:`Store`; ``chdb:///path`` is the embedded engine, ``http(s)://...`` a ClickHouse
server. See ``docs/store.md``.
"""

from __future__ import annotations

from bandit.store.clickhouse import ClickHouseStore, open_store
from bandit.store.rows import ExposureRow, RewardRow

#: The store interface; one implementation serves chdb and ClickHouse servers.
Store = ClickHouseStore

__all__ = ["ClickHouseStore", "ExposureRow", "RewardRow", "Store", "open_store"]
