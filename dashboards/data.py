"""Data access for the dashboard: settings, the cached read-only store, cached queries.

Nothing here runs at import time. The store connection is one per process, shared by all
sessions and reopened every ``dashboard.store_ttl_s`` (default 300 s) so a
read-only snapshot of an embedded store that the learner owns is refreshed; every query
is a ``st.cache_data(ttl=QUERY_TTL_S, refresh_mode="background")`` keyed by its plain
arguments: after the TTL the last result is served at once while a fresh one is computed
in the background (stale-while-revalidate), so only the very first visitor waits for the
cohort query. A "live" view passes ``as_of_ms=None`` (now), keeping the key stable.

An embedded chdb store can be owned by one process only: the dashboard always opens it
with ``open_store(dsn, database, read_only=True)``, which reads the live directory when it
is free and a private snapshot of it when the learner holds the lock. chdb serves one data
directory per process at a time, and every reopen after the TTL is a new directory (a fresh
snapshot, or the live one once the learner has gone): so the old store is closed *before*
the new one opens, and a query that raced with the reopen retries once on the new store.

The dashboard's "now" is the data's clock (:func:`data_clock`): the configured as-of, else
the latest decision's event time. A simulated calendar (``switchboard demo``) then reads
as of its last simulated moment, and days not yet reached never count as complete.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import streamlit as st

from bandit.cli.redaction import redact
from bandit.config import Config, load_config
from bandit.errors import StoreError, SwitchboardError

__all__ = [
    "QUERY_TTL_S",
    "DashboardSettings",
    "PolicyView",
    "data_clock",
    "freshness_reference",
    "get_store",
    "latest_snapshot",
    "load_policy_view",
    "settings_from_env",
]

QUERY_TTL_S = 60


@dataclass(frozen=True)
class DashboardSettings:
    """What the app reads: the store, the snapshot and results folders, health thresholds."""

    dsn: str
    database: str
    snapshot_dir: str
    results_dir: str
    control: str
    variant_weights: tuple[tuple[str, float], ...]
    guardrails: tuple[str, ...]
    guardrail_margin: float
    alpha: float
    ridge_lambda: float
    stale_after_s: float = 6 * 3600.0
    lag_after_s: float = 900.0
    #: the configured experiment (variants, weights, control, guardrails)
    experiment: Any = None
    #: fixed "now" (epoch ms) for reproducible views and tests; None = wall clock
    as_of_ms: int | None = None
    #: "wall" (events follow the wall clock) or "simulated" (a simulated calendar)
    clock: str = "wall"
    #: the config's ``[reward]`` (a RewardConfig): the α's of reward version "config"
    reward: Any = None

    def now_ms(self) -> int:
        """The as-of time of queries: fixed, or the wall clock floored to the query TTL so
        that consecutive reruns hit the query cache."""
        if self.as_of_ms is not None:
            return self.as_of_ms
        step = QUERY_TTL_S * 1000
        return int(time.time() * 1000) // step * step


def settings_from_env(env: Mapping[str, str] | None = None) -> DashboardSettings:
    """Settings from the one config: ``SWITCHBOARD_CONFIG`` and the ``SWITCHBOARD_*``
    overrides (the ``[dashboard]`` section, ``model.dir``, the store and the experiment).

    A bad value raises :class:`~bandit.errors.ConfigError` naming the field."""
    cfg: Config = load_config(None, os.environ if env is None else env)
    dash = cfg.dashboard
    return DashboardSettings(
        dsn=cfg.store.dsn,
        database=cfg.store.database,
        snapshot_dir=cfg.model.dir,
        results_dir=dash.results_dir,
        control=cfg.experiment.control,
        variant_weights=tuple((v.name, float(v.weight)) for v in cfg.experiment.variants),
        guardrails=tuple(cfg.experiment.guardrails),
        guardrail_margin=float(cfg.experiment.guardrail_margin),
        alpha=float(cfg.policy.alpha),
        ridge_lambda=float(cfg.policy.ridge_lambda),
        stale_after_s=dash.stale_after_s,
        lag_after_s=dash.lag_after_s,
        experiment=cfg.experiment,
        as_of_ms=dash.as_of_ms or None,
        clock=dash.clock,
        reward=cfg.reward,
    )


# --------------------------------------------------------------------------- store


class _StoreHolder:
    """The process's one open store, reopened once it is older than its time-to-live.

    chdb lets a process use one data directory at a time, and each reopen of an embedded
    store the learner owns reads a new private snapshot: the old store is closed before the
    new one opens (under the lock, so concurrent sessions and background refreshes agree on
    one store). A failed open is not remembered: the next call tries again.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._store: Any = None
        self._key: tuple[str, str] | None = None
        self._opened = 0.0

    def get(self, dsn: str, database: str, ttl_s: float) -> Any:
        from bandit.store import open_store

        with self._lock:
            fresh = time.monotonic() - self._opened < ttl_s
            if self._store is not None and self._key == (dsn, database) and fresh:
                return self._store
            self._close_locked()
            store = open_store(dsn, database, read_only=True)
            self._store, self._key, self._opened = store, (dsn, database), time.monotonic()
            return store

    def current(self) -> Any:
        return self._store

    def close(self) -> None:
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        store, self._store, self._key = self._store, None, None
        if store is not None:
            store.close()


_HOLDER = _StoreHolder()


def store_ttl_s(env: Mapping[str, str] | None = None) -> float:
    """Seconds an opened store is reused (``dashboard.store_ttl_s``)."""
    return load_config(None, os.environ if env is None else env).dashboard.store_ttl_s


def get_store(dsn: str, database: str) -> Any:
    """The store, opened read-only (never migrates, never writes). Raises StoreError.

    Reopened after ``store_ttl_s()``: for an embedded store that the learner owns this
    takes a fresh snapshot (the previous one is closed first).
    """
    return _HOLDER.get(dsn, database, store_ttl_s())


def close_stores() -> None:
    """Close the store this process opened.

    chdb serves one data directory per process: tests (and anything else that wants a
    different directory afterwards) call this to let go of the dashboard's.
    """
    _HOLDER.close()


_T = TypeVar("_T")


def _read(key: tuple[str, str], query: Callable[[Any], _T]) -> _T:
    """``query(store)`` on the current store; retried once when a reopen closed the store
    between fetching it and querying it."""
    store = get_store(*key)
    try:
        return query(store)
    except StoreError:
        if _HOLDER.current() is store:
            raise
    return query(get_store(*key))


def data_clock(settings: DashboardSettings, last_event_ms: int | None) -> int:
    """The dashboard's "now" (epoch ms): the configured as-of, else the latest event time
    the store holds (never after the wall clock), else the wall clock."""
    if settings.as_of_ms is not None:
        return settings.as_of_ms
    wall = settings.now_ms()
    return wall if last_event_ms is None else min(int(last_event_ms), wall)


def freshness_reference(settings: DashboardSettings, newest_exposure_ms: int | None) -> int:
    """The time the newest decision's age is measured against by the stale-data check.

    * a configured as-of: that as-of (the view is "as of then": data is stale when the
      decisions had stopped well before it);
    * a simulated calendar (``clock == "simulated"``): the newest exposure of any source,
      the data's own clock — decisions are stale when fallback allocations went on
      without them (the allocation server down or unreachable), never because the
      simulated calendar lies in the past;
    * otherwise the wall clock: production data is stale when nothing was decided lately.
    """
    if settings.as_of_ms is not None:
        return settings.as_of_ms
    if settings.clock == "simulated":
        return settings.now_ms() if newest_exposure_ms is None else int(newest_exposure_ms)
    return settings.now_ms()


def open_or_none(settings: DashboardSettings) -> tuple[Any | None, str | None]:
    """(store, None) or (None, reason) when there is no readable store yet."""
    try:
        return get_store(settings.dsn, settings.database), None
    except SwitchboardError as exc:
        return None, redact(str(exc))


# --------------------------------------------------------------------------- queries
# Each is keyed by (DSN, database) and resolves the cached store itself, so a
# background refresh never holds on to a store that has since been reopened.


@st.cache_data(ttl=QUERY_TTL_S, refresh_mode="background", show_spinner=False)
def experiments(key: tuple[str, str]) -> list[str]:
    try:
        return list(_read(key, lambda st_: st_.experiments()))
    except SwitchboardError:
        return []


@st.cache_data(ttl=QUERY_TTL_S, refresh_mode="background", show_spinner="Loading units…")
def unit_metrics(key: tuple[str, str], experiment_id: str, as_of_ms: int | None) -> pd.DataFrame:
    return _read(key, lambda st_: st_.unit_metrics(experiment_id, as_of_ms))


@st.cache_data(ttl=QUERY_TTL_S, refresh_mode="background", show_spinner="Loading cohorts…")
def cohort_moments(
    key: tuple[str, str],
    experiment_id: str,
    as_of_ms: int | None,
    pairs: tuple[tuple[str, str], ...] | None = None,
) -> pd.DataFrame:
    """Per-variant sums of the lift metrics ``pairs`` ((metric, covariate); None = all) from
    one aggregate query (``Store.cohort_moments_many``): a few hundred numbers, whatever the
    number of units. Callers that share a result pass the same ``pairs``
    (``analysis.overview_pairs``)."""
    return _read(key, lambda st_: st_.cohort_moments_many(experiment_id, pairs, as_of_ms))


@st.cache_data(ttl=QUERY_TTL_S, refresh_mode="background", show_spinner=False)
def retention_curve(key: tuple[str, str], experiment_id: str, as_of_ms: int | None) -> pd.DataFrame:
    return _read(key, lambda st_: st_.retention_curve(experiment_id, as_of_ms, max_day=30))


@st.cache_data(ttl=QUERY_TTL_S, refresh_mode="background", show_spinner=False)
def traffic_share(key: tuple[str, str], experiment_id: str, bucket: str) -> pd.DataFrame:
    return _read(key, lambda st_: st_.traffic_share(experiment_id, bucket=bucket))


@st.cache_data(ttl=QUERY_TTL_S, refresh_mode="background", show_spinner=False)
def decision_span(key: tuple[str, str], experiment_id: str) -> pd.DataFrame:
    """First and last decision per variant and arm (``Store.decision_span``): the sidebar's
    variant and arm lists and first date, and the overview's freshness check, without the
    per-bucket traffic query."""
    return _read(key, lambda st_: st_.decision_span(experiment_id))


@st.cache_data(ttl=QUERY_TTL_S, refresh_mode="background", show_spinner=False)
def exposure_sources(key: tuple[str, str], experiment_id: str, as_of_ms: int | None) -> pd.DataFrame:
    """Exposures per variant and how many were fallback allocations
    (``Store.exposure_sources``): the overview's fallback count and freshness clock."""
    return _read(key, lambda st_: st_.exposure_sources(experiment_id, as_of_ms))


@st.cache_data(ttl=QUERY_TTL_S, refresh_mode="background", show_spinner=False)
def arm_proxies(key: tuple[str, str], experiment_id: str) -> pd.DataFrame:
    return _read(key, lambda st_: st_.arm_proxies(experiment_id))


@st.cache_data(ttl=QUERY_TTL_S, refresh_mode="background", show_spinner=False)
def reward_versions(key: tuple[str, str], experiment_id: str) -> pd.DataFrame:
    """The reward versions the experiment's decisions were scored with and when
    (``Store.reward_versions``): where the Allocation page shows a re-calibration."""
    return _read(key, lambda st_: st_.reward_versions(experiment_id))


def calibration_history(snapshot_dir: str | Path) -> tuple[Any, str | None]:
    """The published reward calibration history in ``snapshot_dir`` (``model.dir``,
    :mod:`bandit.formats.calibration`) and None, or an empty history and why the file
    could not be read. Re-read only when the file changes (its mtime and size key the
    cache). Only the checksum is verified: the dashboard displays the α's, the learner
    (which holds the HMAC key) is what applies them."""
    from bandit.formats.calibration import CalibrationHistory
    from bandit.formats.paths import calibration_path

    path = calibration_path(snapshot_dir)
    try:
        st_ = path.stat()
    except FileNotFoundError:
        return CalibrationHistory(), None
    except OSError as exc:
        return CalibrationHistory(), f"{path}: cannot be read ({exc.strerror or exc})"
    return _calibration_history(str(path), st_.st_mtime_ns, st_.st_size)


@st.cache_data(max_entries=8, show_spinner=False)
def _calibration_history(path: str, mtime_ns: int, size: int) -> tuple[Any, str | None]:
    from bandit.formats.calibration import CalibrationHistory, load_history

    del mtime_ns, size  # cache key only
    try:
        return load_history(path), None
    except SwitchboardError as exc:
        return CalibrationHistory(), str(exc)


# --------------------------------------------------------------------------- snapshots

_SNAPSHOT_SUFFIXES = (".npz", ".snap", ".snapshot", ".bin", ".pkl")


def latest_snapshot(snapshot_dir: str | Path) -> Path | None:
    """The newest model snapshot file in ``snapshot_dir`` (by modification time), or None.

    Temporary files of an atomic write (``*.tmp``, dot-files) are ignored.
    """
    d = Path(snapshot_dir)
    if not d.is_dir():
        return None
    files = [
        p
        for p in d.rglob("*")
        if p.is_file()
        and not p.name.startswith(".")
        and not p.name.endswith((".tmp", ".partial", ".lock"))
        and (p.suffix in _SNAPSHOT_SUFFIXES or p.suffix == "")
    ]
    if not files:
        files = [
            p
            for p in d.rglob("*")
            if p.is_file() and not p.name.startswith(".") and not p.name.endswith(".tmp")
        ]
    return max(files, key=lambda p: p.stat().st_mtime) if files else None


@dataclass(frozen=True)
class PolicyView:
    """What the allocation page shows of a model snapshot."""

    path: str
    mtime_ms: int
    policy_name: str
    version: str
    estimates: pd.DataFrame
    kinds: dict[str, str]
    meta: dict[str, Any]


@st.cache_data(ttl=QUERY_TTL_S, refresh_mode="background", show_spinner=False)
def load_policy_view(path: str, mtime_ms: int, alpha: float, ridge_lambda: float) -> PolicyView:
    """Load a snapshot with ``bandit.formats.snapshot.load_policy_snapshot`` and reduce it per arm.

    The score of arm m at the mean context x̄ is the policy's mean θ_m·x̄ (θ_m = A_m⁻¹ b_m,
    A_m = λI + S_m; hybrid LinUCB adds its shared term) and its width α·sqrt(x̄ᵀA_m⁻¹x̄)
    (the LinUCB bonus), both from the core's public ``score_batch``. x̄ is the snapshot's
    ``mean_context`` (in its meta or ``extra``) when it carries one, else the pooled second-moment's leading
    direction (for contexts with a constant feature this is close to the mean).
    Raises SnapshotError for an unreadable snapshot.
    """
    from bandit.formats.snapshot import load_policy_snapshot
    from dashboards.transforms import arm_estimates

    policy, arms, meta = load_policy_snapshot(path)
    stats = policy.statistics
    arrays = stats.to_arrays() if hasattr(stats, "to_arrays") else {}
    kinds = {a.arm_id: a.kind for a in arms}
    alpha = float(getattr(getattr(policy, "config", None), "alpha", alpha))
    score = getattr(policy, "score_batch", None)
    if {"arm_ids", "S", "b", "n"} <= set(arrays) and callable(score):
        ids = [str(a) for a in np.asarray(arrays["arm_ids"]).reshape(-1)]
        S = np.asarray(arrays["S"], dtype=float)
        b = np.asarray(arrays["b"], dtype=float)
        n = np.asarray(arrays["n"], dtype=float)
        xbar = _mean_context(meta, S, b, n)
        # the policy's own public scoring (hybrid LinUCB: with its shared term); arms it
        # cannot choose (retired, unregistered) have no estimate
        live = [a for a in ids if a in arms and arms.get(a).active]
        est, quad = np.full(len(ids), np.nan), np.full(len(ids), np.nan)
        if live:
            sc = score(xbar.reshape(1, -1), live)
            at = [ids.index(a) for a in sc.arms]
            est[at], quad[at] = sc.means[0], np.square(sc.widths[0])
        table = arm_estimates(ids, est, quad, n, alpha)
    else:
        ids = [a.arm_id for a in arms]
        table = arm_estimates(ids, np.full(len(ids), np.nan), None, np.zeros(len(ids)), alpha)
    table["kind"] = table["arm_id"].map(kinds).fillna("expert")
    # arms in the registry that the statistics have never seen are cold-start too
    missing = [a.arm_id for a in arms if a.arm_id not in set(table["arm_id"]) and a.active]
    if missing:
        extra = pd.DataFrame(
            {
                "arm_id": missing,
                "estimate": np.nan,
                "width": np.nan,
                "low": np.nan,
                "high": np.nan,
                "n": 0.0,
                "cold_start": True,
                "kind": [kinds.get(m, "expert") for m in missing],
            }
        )
        table = pd.concat([table, extra], ignore_index=True)
    name = str(meta.get("policy", meta.get("policy_name", type(policy).__name__)))
    version = str(meta.get("policy_version", meta.get("version", "")))
    return PolicyView(path, mtime_ms, name, version, table, kinds, dict(meta))


def _mean_context(meta: Mapping[str, Any], S: np.ndarray, b: np.ndarray, n: np.ndarray) -> np.ndarray:
    d = S.shape[1]
    mc = meta.get("mean_context") if isinstance(meta, Mapping) else None
    extra = meta.get("extra") if isinstance(meta, Mapping) else None
    if mc is None and isinstance(extra, Mapping):
        mc = extra.get("mean_context")
    if mc is not None and len(mc) == d:
        return np.asarray(mc, dtype=float)
    total_n = float(n.sum())
    if total_n <= 0:
        return np.full(d, 1.0 / np.sqrt(d))
    M = S.sum(axis=0) / total_n
    w, v = np.linalg.eigh(M)
    lead = v[:, -1] * np.sqrt(max(w[-1], 0.0))
    # eigenvectors have no sign: orient along the pooled Σ r·x
    if float(lead @ b.sum(axis=0)) < 0:
        lead = -lead
    return np.asarray(lead, dtype=float)


def arm_kinds(snapshot_dir: str, control: str) -> dict[str, str]:
    """Arm id -> kind from the newest snapshot's arm registry ({} when there is none)."""
    from bandit.errors import SwitchboardError as _Err

    snap = latest_snapshot(snapshot_dir)
    if snap is None:
        return {}
    try:
        settings = settings_from_env()
        view = load_policy_view(
            str(snap), int(snap.stat().st_mtime * 1000), settings.alpha, settings.ridge_lambda
        )
    except (_Err, OSError, ValueError):
        return {}
    return dict(view.kinds)
