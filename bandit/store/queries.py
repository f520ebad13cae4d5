"""SQL of the cohort queries. Values are bound server-side (``{name:Type}``) only.

The text below is fixed at import time; nothing a caller passes is spliced into it.
Per-unit joins go through ``unit_key = cityHash64(unit_id)``, the integer key the
engagement table is sorted by (see ``schema.py``).
"""

from __future__ import annotations

from typing import Final

__all__ = ["ARM_PROXIES", "COHORT_MOMENTS", "COHORT_MOMENTS_MANY", "COHORT_MOMENTS_WITH_CROSS",
           "DAYS", "DECISION_SPAN", "EARLY_COLUMNS", "EARLY_MOMENTS", "EARLY_PROXIES",
           "EXPERIMENTS", "EXPERIMENT_DESIGN", "EXPOSURE_PERIODS",
           "EXPOSURE_SOURCES",
           "HORIZONS", "MEAN_REWARDS", "MOMENT_PAIRS", "RETENTION_CURVE", "REWARD_VERSIONS",
           "TRAFFIC_SHARE",
           "UNIT_METRICS", "moments_many_sql"]

#: days after first exposure reported per unit
DAYS: Final = (1, 7, 14, 30)
#: days before exposure summed into the CUPED covariate
PRE_DAYS: Final = 7


def _exposed(with_unit_id: bool, include_cross: bool = False,
             count_variants: bool = False) -> str:
    """A unit's first exposure: the min over inserted exposures and its decisions (the
    allocation server logs a decision at the unit's first conversation in the variant).

    A unit seen in more than one variant of the experiment (cross-exposed: a broken
    assignment, a shared device, a salt change) has no single treatment to attribute its
    outcome to: it is left out (``HAVING``) unless ``include_cross``, where it counts in
    the variant of its first exposure. :data:`EXPOSURE_PERIODS` counts them."""
    uid = ", unit_id" if with_unit_id else ""
    any_uid = " any(unit_id) AS unit_id," if with_unit_id else ""
    having = "" if include_cross else "\n    HAVING uniqExact(v) = 1"
    n_variants = ", uniqExact(v) AS n_variants" if count_variants else ""
    return f"""
exp AS (
    SELECT unit_key,{any_uid} argMin(v, ts_ms) AS variant,
           min(ts_ms) AS exposure_ts{n_variants}
    FROM (
        SELECT unit_key{uid}, variant AS v, ts_ms FROM exposures
        WHERE experiment_id = {{experiment_id:String}} AND ts_ms < {{as_of:Int64}}
        UNION ALL
        SELECT cityHash64(unit_id) AS unit_key{uid}, variant AS v, ts_ms FROM decisions
        WHERE experiment_id = {{experiment_id:String}} AND ts_ms < {{as_of:Int64}}
    )
    GROUP BY unit_key{having}
)"""


_EXPOSED: Final = _exposed(True)
_EXPOSED_KEYS: Final = _exposed(False)

# Day index of an engagement row relative to exposure: floor, so the hours just
# before exposure are day -1, not day 0.
_DAY: Final = "toInt64(floor((e.ts_ms - x.exposure_ts) / {day_ms:Int64}))"

# Active engagement rows, deduplicated (FINAL) and cut at as_of.
_ENGAGEMENT: Final = """(
        SELECT unit_key, ts_ms, screen_time_s AS st, toFloat64(messages) AS msg
        FROM engagement FINAL
        WHERE ts_ms < {as_of:Int64} AND (screen_time_s > 0 OR messages > 0)
    ) AS e"""


def _complete(n: int) -> str:
    return f"x.exposure_ts + {n + 1} * {{day_ms:Int64}} <= {{as_of:Int64}}"


def _unit_metrics() -> str:
    agg = []
    out = []
    for n in DAYS:
        agg.append(f"maxIf(1, d = {n}) AS a{n}")
        agg.append(f"sumIf(st, d = {n}) AS st{n}")
        agg.append(f"sumIf(msg, d = {n}) AS msg{n}")
        ok = _complete(n)
        out.append(f"if({ok}, toFloat64(a.a{n}), NULL) AS retained_d{n}")
        out.append(f"if({ok}, toFloat64(a.st{n}), NULL) AS engagement_d{n}")
        out.append(f"if({ok}, toFloat64(a.msg{n}), NULL) AS messages_d{n}")
    agg.append("sumIf(st, d BETWEEN 0 AND 30) AS st_cum")
    agg.append("sumIf(msg, d BETWEEN 0 AND 30) AS msg_cum")
    agg.append("sumIf(st, d < 0) AS pre_st")
    agg.append("sumIf(msg, d < 0) AS pre_msg")
    out.append(f"if({_complete(30)}, toFloat64(a.st_cum), NULL) AS cum_engagement_30")
    out.append(f"if({_complete(30)}, toFloat64(a.msg_cum), NULL) AS cum_messages_30")
    out.append("toFloat64(a.pre_st) AS pre_engagement")
    out.append("toFloat64(a.pre_msg) AS pre_messages")
    return f"""
WITH {_EXPOSED.strip()},
agg AS (
    SELECT e.unit_key AS unit_key, {", ".join(agg)}
    FROM {_ENGAGEMENT}
    INNER JOIN exp AS x ON e.unit_key = x.unit_key
    WHERE ({_DAY} AS d) BETWEEN -{PRE_DAYS} AND 30
    GROUP BY e.unit_key
)
SELECT x.unit_id AS unit_id, toString(x.variant) AS variant, x.exposure_ts AS exposure_ts,
       {", ".join(out)}
FROM exp AS x LEFT JOIN agg AS a ON a.unit_key = x.unit_key
ORDER BY unit_id
"""


UNIT_METRICS: Final = _unit_metrics()

RETENTION_CURVE: Final = f"""
WITH {_EXPOSED_KEYS.strip()},
act AS (
    SELECT e.unit_key AS unit_key, groupUniqArray({_DAY}) AS days
    FROM {_ENGAGEMENT}
    INNER JOIN exp AS x ON e.unit_key = x.unit_key
    GROUP BY e.unit_key
)
SELECT variant, toInt64(day) AS day,
       countIf(exposure_ts + (toInt64(day) + 1) * {{day_ms:Int64}} <= {{as_of:Int64}}) AS units,
       countIf(exposure_ts + (toInt64(day) + 1) * {{day_ms:Int64}} <= {{as_of:Int64}}
               AND has(days, toInt64(day))) AS retained
FROM (
    SELECT toString(x.variant) AS variant, x.exposure_ts AS exposure_ts, a.days AS days
    FROM exp AS x LEFT JOIN act AS a ON a.unit_key = x.unit_key
)
ARRAY JOIN range(toUInt64({{max_day:UInt32}}) + 1) AS day
GROUP BY variant, day
ORDER BY variant, day
"""

# Per-variant sufficient statistics of one metric y and its pre-exposure covariate x
# over units whose horizon is complete: everything the lift needs (Welch, delta method,
# CUPED with pooled θ) without shipping a row per unit. Units with no activity in the
# window have y = x = 0; they are counted from the exposure side.
_Y: Final = {
    **{f"retained_d{n}": (f"maxIf(1, d = {n})", n) for n in DAYS},
    **{f"engagement_d{n}": (f"sumIf(st, d = {n})", n) for n in DAYS},
    **{f"messages_d{n}": (f"sumIf(msg, d = {n})", n) for n in DAYS},
    "cum_engagement_30": ("sumIf(st, d BETWEEN 0 AND 30)", 30),
    "cum_messages_30": ("sumIf(msg, d BETWEEN 0 AND 30)", 30),
}
_X: Final = {"pre_engagement": "sumIf(st, d < 0)", "pre_messages": "sumIf(msg, d < 0)"}


#: the third and fourth power sums Σ yᵃ xᵇ (name -> (a, b)): the skew correction and the
#: variance guard of the fixed-horizon intervals (bandit.stats.ratio_bounds), of y and of
#: CUPED's y - θx (bandit.stats.cuped_sums)
_POWERS: Final = {
    "syyy": (3, 0),
    "syyyy": (4, 0),
    "sxxx": (0, 3),
    "sxxxx": (0, 4),
    "sxxy": (1, 2),
    "sxyy": (2, 1),
    "sxxxy": (1, 3),
    "sxxyy": (2, 2),
    "sxyyy": (3, 1),
}


_POWER_SUMS: Final = ", ".join(f"sum({' * '.join(['y'] * a + ['xc'] * b)}) AS {name}"
                               for name, (a, b) in _POWERS.items())


def _moments(y_expr: str, horizon: int, x_expr: str, include_cross: bool = False) -> str:
    return f"""
WITH {_exposed(False, include_cross).strip()},
u AS (
    SELECT e.unit_key AS unit_key, any(x.variant) AS variant,
           toFloat64({y_expr}) AS y, toFloat64({x_expr}) AS xc
    FROM {_ENGAGEMENT}
    INNER JOIN exp AS x ON e.unit_key = x.unit_key
    WHERE {_complete(horizon)} AND ({_DAY} AS d) BETWEEN -{PRE_DAYS} AND {horizon}
    GROUP BY e.unit_key
)
SELECT toString(variant) AS variant, toUInt64(0) AS n_exposed, toUInt64(0) AS n,
       sum(y) AS sy, sum(y * y) AS syy, sum(xc) AS sx, sum(xc * xc) AS sxx, sum(y * xc) AS sxy,
       {_POWER_SUMS}
FROM u GROUP BY variant
UNION ALL
SELECT toString(variant) AS variant, count() AS n_exposed,
       countIf(exposure_ts + {horizon + 1} * {{day_ms:Int64}} <= {{as_of:Int64}}) AS n,
       {", ".join(["0."] * (5 + len(_POWERS)))}
FROM exp GROUP BY variant
"""


#: (metric column, covariate column) -> SQL; only these fixed pairs exist
COHORT_MOMENTS: Final[dict[tuple[str, str], str]] = {
    (y, x): _moments(y_expr, horizon, x_expr)
    for y, (y_expr, horizon) in _Y.items() for x, x_expr in _X.items()
}
#: the same with cross-exposed units counted in their first variant
COHORT_MOMENTS_WITH_CROSS: Final[dict[tuple[str, str], str]] = {
    (y, x): _moments(y_expr, horizon, x_expr, include_cross=True)
    for y, (y_expr, horizon) in _Y.items() for x, x_expr in _X.items()
}

TRAFFIC_SHARE: Final = """
SELECT {bucket_fn}(toDateTime(intDiv(ts_ms, 1000), 'UTC')) AS bucket_start,
       toString(variant) AS variant, toString(arm_id) AS arm_id, count() AS decisions
FROM decisions FINAL
WHERE experiment_id = {experiment_id:String}
GROUP BY bucket_start, variant, arm_id
ORDER BY bucket_start, variant, arm_id
"""


# First and last decision per variant and arm. min/max are insensitive to duplicates, so
# this reads without FINAL: a few columns of the decisions table, no merge of the string
# sorting key (what makes TRAFFIC_SHARE slow at 10^6 decisions; bench/dashboard.py measures it).
DECISION_SPAN: Final = """
SELECT toString(variant) AS variant, toString(arm_id) AS arm_id,
       min(ts_ms) AS first_ms, max(ts_ms) AS last_ms
FROM decisions
WHERE experiment_id = {experiment_id:String}
GROUP BY variant, arm_id
ORDER BY variant, arm_id
"""

# Exposure rows per variant up to the as-of, and how many were fallbacks (the serving
# tier answered without a decision; schema migration 4): one row per allocation.
EXPOSURE_SOURCES: Final = """
SELECT toString(variant) AS variant, count() AS exposures,
       countIf(source = 'fallback') AS fallbacks, max(ts_ms) AS last_ms
FROM exposures FINAL
WHERE experiment_id = {experiment_id:String} AND ts_ms <= {as_of:Int64}
GROUP BY variant
ORDER BY variant
"""


# The latest feedback of each decision of the experiment (a later event supersedes an
# earlier one), as CTE `f`: shared by ARM_PROXIES and EARLY_PROXIES.
_LATEST_FEEDBACK: Final = """f AS (
    SELECT decision_id,
           argMax(retried, ts_ms) AS retried,
           argMax(rating, ts_ms) AS rating,
           argMax(conversation_length, ts_ms) AS len
    FROM feedback FINAL
    WHERE decision_id IN (
        SELECT decision_id FROM decisions WHERE experiment_id = {experiment_id:String})
    GROUP BY decision_id
)"""


def _arm_proxies() -> str:
    cols = []
    for name, expr in (("retry", "f.retried"), ("rating", "f.rating"), ("length", "f.len")):
        y = f"toFloat64({expr})"
        ok = f"isNotNull({expr})"
        cols += [
            f"countIf({ok}) AS {name}_n",
            f"sumIf({y}, {ok}) AS {name}_s1",
            f"sumIf({y} * {y}, {ok}) AS {name}_s2",
            f"sumIf(1 / d.propensity, {ok}) AS {name}_w",
            f"sumIf({y} / d.propensity, {ok}) AS {name}_wy",
            f"sumIf(1 / (d.propensity * d.propensity), {ok}) AS {name}_w2",
            f"sumIf({y} / (d.propensity * d.propensity), {ok}) AS {name}_w2y",
            f"sumIf({y} * {y} / (d.propensity * d.propensity), {ok}) AS {name}_w2y2",
        ]
    return f"""
WITH {_LATEST_FEEDBACK}
SELECT toString(d.arm_id) AS arm_id, toString(d.variant) AS variant, count() AS n,
       countIf(f.decision_id != '') AS n_feedback,
       min(d.propensity) AS p_min, max(d.propensity) AS p_max,
       {", ".join(cols)}
FROM (
    SELECT decision_id, arm_id, variant, propensity FROM decisions FINAL
    WHERE experiment_id = {{experiment_id:String}}
) AS d
LEFT JOIN f ON f.decision_id = d.decision_id
GROUP BY arm_id, variant
ORDER BY variant, arm_id
"""


ARM_PROXIES: Final = _arm_proxies()

MEAN_REWARDS: Final = """
SELECT toString(variant) AS variant, toString(arm_id) AS arm_id, count() AS n,
       avg(reward) AS mean_reward, avg(joined) AS joined_share, avg(late) AS late_share
FROM rewards FINAL
WHERE experiment_id = {experiment_id:String}
GROUP BY variant, arm_id
ORDER BY variant, arm_id
"""

# The α's each stretch of an experiment's decisions was rewarded with (schema migration 5:
# 'config' or a published calibration's id), by the decisions' own times.
REWARD_VERSIONS: Final = """
SELECT toString(reward_version) AS reward_version, min(ts_ms) AS since_ms,
       max(ts_ms) AS until_ms, count() AS decisions
FROM rewards FINAL
WHERE experiment_id = {experiment_id:String}
GROUP BY reward_version
ORDER BY since_ms, reward_version
"""

EXPERIMENTS: Final = """
SELECT DISTINCT toString(experiment_id) AS experiment_id FROM (
    SELECT experiment_id FROM exposures
    UNION ALL SELECT experiment_id FROM decisions
    UNION ALL SELECT experiment_id FROM rewards
)
ORDER BY experiment_id
"""


# A unit's engagement as three parallel arrays (event time, screen time, messages), for the
# per-unit array formulation below. Grouping the engagement table by its own sorting key
# BEFORE the join means the join matches one row per unit (10^6) instead of one per event
# (10^7), and the day-N sums become array expressions per unit instead of 16 conditional
# aggregates updated per event in a hash table keyed by unit: less CPU at 10^7 rows
# (docs/store.md, "The overview's cohort query"). Rows are deduplicated (FINAL), cut at as_of and start
# 7 days before the experiment's first exposure: exact (an earlier row has d < -7 for
# every unit), and the engine skips the older monthly partitions of a long-lived store.
_UNIT_EVENTS: Final = f"""
ev AS (
    SELECT unit_key, groupArray(ts_ms) AS ts, groupArray(screen_time_s) AS st,
           groupArray(toFloat64(messages)) AS msg
    FROM engagement FINAL
    WHERE ts_ms < {{as_of:Int64}} AND (screen_time_s > 0 OR messages > 0)
      AND ts_ms >= (
          SELECT min(ts_ms) FROM (
              SELECT ts_ms FROM exposures
              WHERE experiment_id = {{experiment_id:String}} AND ts_ms < {{as_of:Int64}}
              UNION ALL
              SELECT ts_ms FROM decisions
              WHERE experiment_id = {{experiment_id:String}} AND ts_ms < {{as_of:Int64}}
          )) - {PRE_DAYS} * {{day_ms:Int64}}
    GROUP BY unit_key
)"""

# the same per-unit values as _Y / _X, as array expressions over the unit's day indices
# `ds` (floor, as _DAY) and its `e.st` / `e.msg` arrays
_Y_ARRAY: Final = {
    **{f"retained_d{n}": f"toFloat64(has(ds, {n}))" for n in DAYS},
    **{f"engagement_d{n}": f"arraySum((d, v) -> if(d = {n}, v, 0.), ds, e.st)" for n in DAYS},
    **{f"messages_d{n}": f"arraySum((d, v) -> if(d = {n}, v, 0.), ds, e.msg)" for n in DAYS},
    "cum_engagement_30": "arraySum((d, v) -> if(d BETWEEN 0 AND 30, v, 0.), ds, e.st)",
    "cum_messages_30": "arraySum((d, v) -> if(d BETWEEN 0 AND 30, v, 0.), ds, e.msg)",
}
_X_ARRAY: Final = {
    "pre_engagement": f"arraySum((d, v) -> if(d BETWEEN -{PRE_DAYS} AND -1, v, 0.), ds, e.st)",
    "pre_messages": f"arraySum((d, v) -> if(d BETWEEN -{PRE_DAYS} AND -1, v, 0.), ds, e.msg)",
}


def moments_many_sql(pairs: tuple[tuple[str, str], ...], include_cross: bool = False) -> str:
    """SQL of :meth:`Store.cohort_moments_many` for ``pairs`` (keys of
    :data:`COHORT_MOMENTS`, validated by the caller): per variant, exposed units
    (``n_exposed``), units with a complete horizon (``n_h{h}`` per horizon h in days) and
    per pair i the sums ``{name}_i`` of every name in :data:`MOMENT_SUMS`.

    Each unit's engagement is first collected into arrays (``ev``, grouped on the
    engagement table's sorting key), then joined to its exposure — one row per unit — and
    every metric is an array expression over the unit's day indices. Units with no
    engagement get empty arrays (y = x = 0), so counts and sums come from one pass over
    the exposed units. Only the metrics and covariates the pairs use are computed. Same
    values as :data:`COHORT_MOMENTS` (the row-level form, kept as the reference; the tests
    compare the two pair by pair). The text depends only on which fixed pairs are asked
    for: nothing a caller passes is spliced into it. ``include_cross`` counts
    cross-exposed units in their first variant instead of leaving them out.
    """
    for pair in pairs:
        if pair not in COHORT_MOMENTS:
            raise ValueError(f"unknown (metric, covariate) pair {pair!r}")
    metrics = sorted({y for y, _x in pairs})
    covariates = sorted({x for _y, x in pairs})
    horizons = sorted({_Y[y][1] for y in metrics})
    cols = [f"{_Y_ARRAY[y]} AS y_{y}" for y in metrics]
    cols += [f"{_X_ARRAY[x]} AS x_{x}" for x in covariates]
    oks = [f"x.exposure_ts + {h + 1} * {{day_ms:Int64}} <= {{as_of:Int64}} AS ok{h}"
           for h in horizons]
    aggs = [f"countIf(ok{h}) AS n_h{h}" for h in horizons]
    for i, (y, x) in enumerate(pairs):
        ok = f"ok{_Y[y][1]}"
        aggs += [f"sumIf(y_{y}, {ok}) AS sy_{i}", f"sumIf(y_{y} * y_{y}, {ok}) AS syy_{i}",
                 f"sumIf(x_{x}, {ok}) AS sx_{i}", f"sumIf(x_{x} * x_{x}, {ok}) AS sxx_{i}",
                 f"sumIf(y_{y} * x_{x}, {ok}) AS sxy_{i}"]
        aggs += [f"sumIf({' * '.join([f'y_{y}'] * a + [f'x_{x}'] * b)}, {ok}) AS {name}_{i}"
                 for name, (a, b) in _POWERS.items()]
    return f"""
WITH {_exposed(False, include_cross).strip()},{_UNIT_EVENTS},
u AS (
    SELECT toString(x.variant) AS variant, {", ".join(oks)},
           arrayMap(t -> toInt64(floor((t - x.exposure_ts) / {{day_ms:Int64}})), e.ts) AS ds,
           {", ".join(cols)}
    FROM ev AS e RIGHT JOIN exp AS x ON e.unit_key = x.unit_key
)
SELECT variant, count() AS n_exposed, {", ".join(aggs)}
FROM u GROUP BY variant
ORDER BY variant
SETTINGS join_use_nulls = 0
"""


#: the (metric, covariate) pairs of :data:`COHORT_MOMENTS_MANY`, in its column order
MOMENT_PAIRS: Final[tuple[tuple[str, str], ...]] = tuple(COHORT_MOMENTS)
#: the sums every cohort-moments row carries, per variant (and pair), name -> (a, b) of
#: Σ yᵃ xᵇ: Σy, Σy², Σx, Σx², Σxy for the means, variances and CUPED, then the higher
#: power sums of _POWERS — the fields of bandit.stats.CovSums after n
MOMENT_POWERS: Final[dict[str, tuple[int, int]]] = {
    "sy": (1, 0), "syy": (2, 0), "sx": (0, 1), "sxx": (0, 2), "sxy": (1, 1), **_POWERS}
MOMENT_SUMS: Final = tuple(MOMENT_POWERS)
#: horizon (days) of each metric column
HORIZONS: Final[dict[str, int]] = {y: h for y, (_e, h) in _Y.items()}
#: :func:`moments_many_sql` of every pair
COHORT_MOMENTS_MANY: Final = moments_many_sql(MOMENT_PAIRS)


#: every recorded weight set of an experiment: one row per (since_ms, variant)
EXPERIMENT_DESIGN: Final = """
SELECT toInt64(since_ms) AS since_ms, toString(variant) AS variant, weight
FROM experiment_designs FINAL
WHERE experiment_id = {experiment_id:String}
ORDER BY since_ms, variant
"""

# Units per design period and variant, by the time of their first exposure; period k
# holds the units first exposed at or after bounds[k-1] and before bounds[k] (the
# caller passes the starts of the second and later weight sets). Cross-exposed units
# (seen in more than one variant) are counted apart, in the period and variant of
# their first exposure.
EXPOSURE_PERIODS: Final = f"""
WITH {_exposed(False, include_cross=True, count_variants=True).strip()}
SELECT toUInt32(arrayCount(b -> b <= exposure_ts, {{bounds:Array(Int64)}})) AS period,
       toString(variant) AS variant, countIf(n_variants = 1) AS units,
       countIf(n_variants > 1) AS cross_exposed
FROM exp
GROUP BY period, variant
ORDER BY period, variant
"""


# Each unit's decisions in its early window [exposure, exposure + window_days), joined
# with their latest feedback `f` and the unit's exposure `x`, as the FROM ... WHERE of a
# query grouped per unit; and the counts and sums of each proxy over them, normalised as
# bandit.reward does (retry: 1 - retried; rating: (stars - 1) / 4; length: min(len, cap)
# / cap). Shared by EARLY_PROXIES (a row per unit) and the early read's moments.
_EARLY_WINDOW_DECISIONS: Final = """d AS (
    SELECT decision_id, cityHash64(unit_id) AS unit_key, ts_ms FROM decisions FINAL
    WHERE experiment_id = {experiment_id:String} AND ts_ms < {as_of:Int64}
)"""
_EARLY_WINDOW_JOIN: Final = """FROM d
INNER JOIN exp AS x ON d.unit_key = x.unit_key
LEFT JOIN f ON f.decision_id = d.decision_id
WHERE d.ts_ms >= x.exposure_ts
  AND d.ts_ms < x.exposure_ts + {window_days:Int64} * {day_ms:Int64}"""
_EARLY_PROXY_SUMS: Final = """countIf(isNotNull(f.retried)) AS retry_n,
       sumIf(1 - toFloat64(f.retried), isNotNull(f.retried)) AS retry_sum,
       countIf(isNotNull(f.rating)) AS rating_n,
       sumIf((toFloat64(f.rating) - 1) / 4, isNotNull(f.rating)) AS rating_sum,
       countIf(isNotNull(f.len)) AS length_n,
       sumIf(least(toFloat64(f.len), {length_cap:Float64}) / {length_cap:Float64},
             isNotNull(f.len)) AS length_sum"""


# Per unit, the proxies of its decisions in the early window [exposure, exposure +
# window_days) — counts and sums of each proxy normalised as bandit.reward does (retry:
# 1 - retried; rating: (stars - 1) / 4; length: min(len, cap) / cap) — for the surrogate
# index (bandit.analysis.calibration). Feedback is deduplicated per decision (the latest
# event wins, as in ARM_PROXIES); a decision without feedback counts in `decisions` only.
EARLY_PROXIES: Final = f"""
WITH {_EXPOSED.strip()},
{_LATEST_FEEDBACK},
{_EARLY_WINDOW_DECISIONS}
SELECT x.unit_id AS unit_id, toString(x.variant) AS variant, x.exposure_ts AS exposure_ts,
       count() AS decisions,
       {_EARLY_PROXY_SUMS}
{_EARLY_WINDOW_JOIN}
GROUP BY x.unit_id, x.variant, x.exposure_ts
ORDER BY unit_id
"""



# The early read's sufficient statistics (bandit.analysis.calibration.early_read): per
# user with decisions in its early window, the window means of the three proxies (0 where
# a proxy is not observed: `has_*` says which are), its pre-exposure covariate x (days
# -7..-1) and its outcome y (a unit_metrics column; 0 until its horizon is complete),
# then summed per group of users — variant, matured / window-complete, which proxies are
# observed and `block` = unit_key % blocks — as n, Σv and Σv·vᵀ over v = EARLY_COLUMNS.
# The surrogate index is linear, so its fit and the projection need only these moments;
# hash blocks of users are what their bootstraps resample. The same users and values as
# EARLY_PROXIES joined with UNIT_METRICS (the tests compare the two). The engagement rows
# are probed against the users with a window (a hash table of those few), not grouped
# per unit first.
EARLY_COLUMNS: Final = ("retry", "rating", "length", "x", "y")
_X_BOUNDED: Final = {"pre_engagement": f"sumIf(st, d BETWEEN -{PRE_DAYS} AND -1)",
                     "pre_messages": f"sumIf(msg, d BETWEEN -{PRE_DAYS} AND -1)"}


def _early_moments(y_expr: str, horizon: int, x_expr: str) -> str:
    cols = EARLY_COLUMNS
    sums = [f"sum({c}) AS s_{c}" for c in cols]
    sums += [f"sum({a} * {b}) AS c_{a}_{b}" for i, a in enumerate(cols) for b in cols[i:]]
    window = "exposure_ts + {window_days:Int64} * {day_ms:Int64} <= {as_of:Int64}"
    return f"""
WITH {_EXPOSED_KEYS.strip()},
{_LATEST_FEEDBACK},
{_EARLY_WINDOW_DECISIONS},
p AS (
    SELECT x.unit_key AS unit_key, any(x.variant) AS variant,
           any(x.exposure_ts) AS exposure_ts,
           {_EARLY_PROXY_SUMS}
    {_EARLY_WINDOW_JOIN}
    GROUP BY x.unit_key
),
e AS (
    SELECT unit_key, ts_ms, screen_time_s AS st, toFloat64(messages) AS msg
    FROM engagement FINAL
    WHERE ts_ms < {{as_of:Int64}} AND (screen_time_s > 0 OR messages > 0)
      AND ts_ms >= (
          SELECT min(ts_ms) FROM (
              SELECT ts_ms FROM exposures
              WHERE experiment_id = {{experiment_id:String}} AND ts_ms < {{as_of:Int64}}
              UNION ALL
              SELECT ts_ms FROM decisions
              WHERE experiment_id = {{experiment_id:String}} AND ts_ms < {{as_of:Int64}}
          )) - {PRE_DAYS} * {{day_ms:Int64}}
),
u AS (
    SELECT unit_key, any(variant) AS variant, any(exposure_ts) AS exposure_ts,
           any(retry_n) AS retry_n, any(retry_sum) AS retry_sum,
           any(rating_n) AS rating_n, any(rating_sum) AS rating_sum,
           any(length_n) AS length_n, any(length_sum) AS length_sum,
           toFloat64({y_expr}) AS y_raw, toFloat64({x_expr}) AS x
    FROM (
        SELECT p.unit_key AS unit_key, p.variant AS variant, p.exposure_ts AS exposure_ts,
               p.retry_n AS retry_n, p.retry_sum AS retry_sum, p.rating_n AS rating_n,
               p.rating_sum AS rating_sum, p.length_n AS length_n,
               p.length_sum AS length_sum, e.st AS st, e.msg AS msg,
               toInt64(floor((e.ts_ms - p.exposure_ts) / {{day_ms:Int64}})) AS d
        FROM e RIGHT JOIN p ON e.unit_key = p.unit_key
    )
    GROUP BY unit_key
),
v AS (
    SELECT toString(variant) AS variant, unit_key % {{blocks:UInt64}} AS block,
           {window} AS window_complete,
           window_complete AND exposure_ts + {horizon + 1} * {{day_ms:Int64}} <= {{as_of:Int64}}
               AS matured,
           retry_n > 0 AS has_retry, rating_n > 0 AS has_rating, length_n > 0 AS has_length,
           if(has_retry, retry_sum / retry_n, 0.) AS retry,
           if(has_rating, rating_sum / rating_n, 0.) AS rating,
           if(has_length, length_sum / length_n, 0.) AS length,
           if(matured, y_raw, 0.) AS y, x
    FROM u
)
SELECT variant, toUInt8(matured) AS matured, toUInt8(window_complete) AS window_complete,
       toUInt8(has_retry) AS has_retry, toUInt8(has_rating) AS has_rating,
       toUInt8(has_length) AS has_length, toUInt64(block) AS block, count() AS n,
       {", ".join(sums)}
FROM v
GROUP BY variant, matured, window_complete, has_retry, has_rating, has_length, block
ORDER BY variant, matured, window_complete, has_retry, has_rating, has_length, block
SETTINGS join_use_nulls = 0
"""


#: (metric column, covariate column) -> SQL of Store.early_moments; only these fixed pairs
EARLY_MOMENTS: Final[dict[tuple[str, str], str]] = {
    (y, x): _early_moments(y_expr, horizon, x_expr)
    for y, (y_expr, horizon) in _Y.items() for x, x_expr in _X_BOUNDED.items()
}
