"""A vectorised synthetic experiment with a planted engagement lift (ground truth).

Model, per unit u (a user):

* first exposure on a day drawn uniformly from ``[pre_days, days - 31)`` (so every unit's
  day 30 is inside the horizon) at a uniform time of that day;
* variant: ``treatment`` with probability ``treatment_share``, else ``control`` — or,
  with ``weight_change = (day, share)``, with probability ``share`` for units first
  exposed on or after calendar day ``day`` (the design records both weight sets);
* a share ``new_user_share`` of units are new users: no activity before their exposure
  (a CUPED covariate of 0), as on a platform where many experiment units sign up into it;
* ``cross_exposed`` units (drawn among the others) are also exposed, a day later, to the
  other variant — what a broken assignment looks like;
* a latent engagement level ``level_u ~ LogNormal(log(600 s), 0.8)`` and activity
  probability ``p_u ~ Beta(2, 2) · activity / 0.5`` (capped at 0.95): the same before and
  after exposure, which is what makes the pre-period a useful CUPED covariate;
* on each day relative to exposure the unit is active with probability ``p_u``; an
  active day has one engagement event with screen time ``level_u · LogNormal(-σ²/2, σ)``
  (mean ``level_u``) and ``Poisson(level_u / 60)`` messages;
* after exposure a treated unit's screen time is multiplied by ``1 + lift``.

So the true relative lift of day-N (and cumulative) screen-time engagement of treatment
over control is exactly ``lift``; retention and messages have no lift.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import numpy as np
import pandas as pd

from bandit.errors import InvalidInputError

if TYPE_CHECKING:
    from bandit.store.clickhouse import ClickHouseStore

__all__ = ["DAY_MS", "DEFAULT_NEW_USER_SHARE", "SyntheticExperiment", "generate_experiment",
           "insert_experiment"]

DAY_MS: Final = 86_400_000
#: 2026-01-01T00:00:00Z — a default start safely in the past
DEFAULT_START_MS: Final = 1_767_225_600_000
#: share of units with no activity before exposure (new users)
DEFAULT_NEW_USER_SHARE: Final = 0.3


@dataclass(frozen=True)
class SyntheticExperiment:
    """Generated data (tidy frames) and its ground truth."""

    experiment_id: str
    control: str
    treatment: str
    true_lift: float
    start_ms: int
    #: end of the simulated horizon; query with ``as_of_ms = end_ms``
    end_ms: int
    #: unit_id, experiment_id, variant, ts_ms
    exposures: pd.DataFrame
    #: event_id, ts_ms, unit_id, screen_time_s, messages
    engagement: pd.DataFrame
    #: the weight sets the assignment followed: (since_ms, {variant: weight}), in order
    design: tuple[tuple[int, dict[str, float]], ...] = ()
    #: units first exposed to one variant and later to the other
    cross_exposed: int = 0
    #: units with no activity before their exposure
    new_users: int = 0


def generate_experiment(
    n_users: int,
    lift: float,
    seed: int | np.random.SeedSequence,
    days: int = 45,
    *,
    experiment_id: str = "exp-synth",
    control: str = "gpt35",
    treatment: str = "bandit",
    treatment_share: float = 0.5,
    activity: float = 0.5,
    pre_days: int = 7,
    start_ms: int = DEFAULT_START_MS,
    first_unit: int = 0,
    new_user_share: float = DEFAULT_NEW_USER_SHARE,
    weight_change: tuple[int, float] | None = None,
    cross_exposed: int = 0,
) -> SyntheticExperiment:
    """Simulate ``n_users`` units over ``days`` days with a planted relative lift."""
    if n_users < 1:
        raise InvalidInputError("n_users", n_users, "must be >= 1")
    if days < pre_days + 32:
        raise InvalidInputError("days", days, f"must be >= pre_days + 32 = {pre_days + 32}")
    if not lift > -1:
        raise InvalidInputError("lift", lift, "must be > -1")
    if not 0 < activity < 1:
        raise InvalidInputError("activity", activity, "must be in (0, 1)")
    if not 0 <= new_user_share <= 1:
        raise InvalidInputError("new_user_share", new_user_share, "must be in [0, 1]")
    if not 0 < treatment_share < 1:
        raise InvalidInputError("treatment_share", treatment_share, "must be in (0, 1)")
    if weight_change is not None and not (
            pre_days <= weight_change[0] < days - 31 and 0 < weight_change[1] < 1):
        raise InvalidInputError("weight_change", weight_change,
                                f"must be (day in [{pre_days}, {days - 31}), share in (0, 1))")
    if not 0 <= cross_exposed <= n_users:
        raise InvalidInputError("cross_exposed", cross_exposed, f"must be in [0, {n_users}]")
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    rng = np.random.default_rng(ss)

    exp_day = rng.integers(pre_days, days - 31, size=n_users)
    share = np.full(n_users, treatment_share)
    design = [(start_ms, {treatment: treatment_share, control: 1 - treatment_share})]
    if weight_change is not None:
        change_day, new_share = weight_change
        share[exp_day >= change_day] = new_share
        design.append((start_ms + change_day * DAY_MS,
                       {treatment: new_share, control: 1 - new_share}))
    treated = rng.random(n_users) < share
    new_user = rng.random(n_users) < new_user_share
    exp_frac = rng.random(n_users)
    exposure_ts = start_ms + ((exp_day + exp_frac) * DAY_MS).astype(np.int64)
    level = np.exp(rng.normal(np.log(600.0), 0.8, size=n_users))
    p_active = np.minimum(rng.beta(2.0, 2.0, size=n_users) * activity / 0.5, 0.95)

    # Calendar slot k = 0..days-1 is relative day r = k - exp_day of each unit.
    k = np.arange(days)
    active = rng.random((n_users, days)) < p_active[:, None]
    ui, ki = np.nonzero(active)
    r = ki - exp_day[ui]
    within = rng.random(ui.size)
    ts = exposure_ts[ui] + ((r + within) * DAY_MS).astype(np.int64)
    keep = (ts < start_ms + days * DAY_MS) & ~(new_user[ui] & (ts < exposure_ts[ui]))
    ui, ki, r, ts = ui[keep], ki[keep], r[keep], ts[keep]
    sigma = 0.5
    screen = level[ui] * np.exp(rng.normal(-sigma**2 / 2, sigma, size=ui.size))
    screen = np.where((r >= 0) & treated[ui], screen * (1.0 + lift), screen)
    screen = np.minimum(screen, 86_400.0)
    messages = rng.poisson(level[ui] / 60.0).astype(np.uint32)

    unit_ids = pd.Series(np.arange(first_unit, first_unit + n_users)).astype(str).radd("u")
    variant = np.where(treated, treatment, control)
    cross = rng.choice(n_users, size=cross_exposed, replace=False)
    exposures = pd.DataFrame({
        "unit_id": np.concatenate([unit_ids.to_numpy(), unit_ids.to_numpy()[cross]]),
        "experiment_id": experiment_id,
        "variant": np.concatenate([variant, np.where(treated[cross], control, treatment)]),
        "ts_ms": np.concatenate([exposure_ts, exposure_ts[cross] + DAY_MS]),
    })
    uid = unit_ids.to_numpy()[ui]
    event_id = pd.Series(uid).str.cat(pd.Series(k[ki]).astype(str), sep="-d").to_numpy()
    engagement = pd.DataFrame({
        "event_id": event_id,
        "ts_ms": ts,
        "unit_id": uid,
        "screen_time_s": screen,
        "messages": messages,
    })
    return SyntheticExperiment(
        experiment_id=experiment_id, control=control, treatment=treatment,
        true_lift=float(lift), start_ms=start_ms, end_ms=start_ms + days * DAY_MS,
        exposures=exposures, engagement=engagement, design=tuple(design),
        cross_exposed=int(cross_exposed), new_users=int(new_user.sum()),
    )


def insert_experiment(store: ClickHouseStore, data: SyntheticExperiment, *,
                      record_design: bool = True) -> tuple[int, int]:
    """Insert the exposures and engagement of ``data`` and (unless ``record_design`` is
    False) its design; return (exposures, engagement) rows."""
    if record_design:
        for since_ms, weights in data.design:
            store.record_design(data.experiment_id, weights, since_ms)
    x = data.exposures
    e = data.engagement
    n_x = store.insert_exposure_columns(
        unit_id=x["unit_id"].to_numpy(), experiment_id=x["experiment_id"].to_numpy(),
        variant=x["variant"].to_numpy(), ts_ms=x["ts_ms"].to_numpy())
    n_e = store.insert_engagement_columns(
        event_id=e["event_id"].to_numpy(), ts_ms=e["ts_ms"].to_numpy(),
        unit_id=e["unit_id"].to_numpy(), screen_time_s=e["screen_time_s"].to_numpy(),
        messages=e["messages"].to_numpy())
    return n_x, n_e
