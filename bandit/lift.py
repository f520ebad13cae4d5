"""Lift of a user-level metric, each variant vs control, and the ``switchboard lift`` CLI.

:func:`lift_table` reads per-variant sums of the metric and its pre-exposure covariate
from the store (:meth:`Store.cohort_moments`, computed in the engine) and applies
:mod:`bandit.stats`: Welch difference, delta-method relative lift, an always-valid
interval, CUPED, P(better) and the SRM check. Only complete cohorts count: a unit enters
the day-N metric once its day N is entirely in the past.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import pandas as pd

from bandit import stats
from bandit.config import ExperimentConfig, VariantConfig
from bandit.errors import InvalidInputError

if TYPE_CHECKING:
    from bandit.store.clickhouse import ClickHouseStore

__all__ = ["METRICS", "guardrail_table", "lift_table", "register"]

#: metric name -> (unit_metrics column, CUPED covariate column)
METRICS: Final[dict[str, tuple[str, str]]] = {
    **{f"day{n}_retention": (f"retained_d{n}", "pre_engagement") for n in (1, 7, 14, 30)},
    **{f"day{n}_engagement": (f"engagement_d{n}", "pre_engagement") for n in (1, 7, 14, 30)},
    **{f"day{n}_messages": (f"messages_d{n}", "pre_messages") for n in (1, 7, 14, 30)},
    "cum30_engagement": ("cum_engagement_30", "pre_engagement"),
    "cum30_messages": ("cum_messages_30", "pre_messages"),
}


def _experiment_config(experiment: ExperimentConfig | str, observed: list[str]) -> ExperimentConfig:
    if isinstance(experiment, ExperimentConfig):
        return experiment
    cfg = ExperimentConfig(id=experiment)
    names = {v.name for v in cfg.variants}
    if set(observed) <= names:
        return cfg
    # An experiment this config does not describe: equal split over what was observed.
    control = cfg.control if cfg.control in observed else sorted(observed)[0]
    variants = tuple(VariantConfig(v, 1.0, "fixed") for v in sorted(observed))
    return dataclasses.replace(cfg, control=control, variants=variants)


@dataclass(frozen=True)
class _Cohorts:
    config: ExperimentConfig
    #: variant -> units exposed before as_of (for SRM)
    exposed: dict[str, int]
    #: variant -> sums over units whose horizon is complete
    sums: dict[str, stats.CovSums]


def _cohorts(store: ClickHouseStore, experiment: ExperimentConfig | str, metric: str,
             as_of_ms: int | None) -> _Cohorts:
    if metric not in METRICS:
        raise InvalidInputError("metric", metric, f"must be one of {sorted(METRICS)}")
    exp_id = experiment.id if isinstance(experiment, ExperimentConfig) else experiment
    col, cov = METRICS[metric]
    m = store.cohort_moments(exp_id, col, cov, as_of_ms)
    m = m[m["n_exposed"] > 0]
    if m.empty:
        known = store.experiments()
        raise InvalidInputError("experiment", exp_id,
                                f"has no exposed units (known experiments: {known or 'none'})")
    cfg = _experiment_config(experiment, sorted(m["variant"]))
    if cfg.control not in set(m["variant"]):
        raise InvalidInputError("experiment.control", cfg.control, "has no exposed units")
    exposed = {str(r.variant): int(r.n_exposed) for r in m.itertuples()}
    sums = {str(r.variant): stats.CovSums(int(r.n), float(r.sy), float(r.syy), float(r.sx),
                                          float(r.sxx), float(r.sxy)) for r in m.itertuples()}
    return _Cohorts(cfg, exposed, sums)


def _verdict(srm: stats.SRMResult, diff: stats.DiffResult, seq: stats.SequentialResult) -> str:
    if srm.flagged:
        return f"sample-ratio mismatch (p={srm.p_value:.1e}): do not trust this comparison"
    if seq.ci_low > 0:
        return "better than control (always-valid interval excludes 0)"
    if seq.ci_high < 0:
        return "worse than control (always-valid interval excludes 0)"
    if diff.ci_low > 0:
        return "likely better (fixed-horizon only; keep running for an always-valid call)"
    if diff.ci_high < 0:
        return "likely worse (fixed-horizon only; keep running for an always-valid call)"
    return "no detectable difference yet"


def _complete(c: _Cohorts, variant: str, metric: str, role: str) -> stats.CovSums:
    s = c.sums.get(variant)
    if s is None or s.n < 2:
        n = 0 if s is None else s.n
        raise InvalidInputError(
            role, variant,
            f"has {n} units with a complete {metric} (cohort not old enough yet?)")
    return s


def lift_table(
    store: ClickHouseStore,
    experiment: ExperimentConfig | str,
    metric: str = "day30_engagement",
    as_of_ms: int | None = None,
    cuped: bool = True,
    *,
    alpha: float = 0.05,
    planned_n: int | None = None,
) -> pd.DataFrame:
    """One row per non-control variant: the metric vs control with every interval.

    Computed from per-variant sums (:meth:`Store.cohort_moments`) — identical to the
    per-unit computation of :mod:`bandit.stats` on :meth:`Store.unit_metrics`.
    ``planned_n`` tunes the always-valid interval (tightest at that many units). For the
    guarantee under daily peeking it must be fixed in advance (the planned sample size);
    the default, the number of units exposed so far, is a convenience that drifts.
    Relative columns (``rel_*``, ``seq_*``) are fractions (0.2 = +20 %).
    """
    c = _cohorts(store, experiment, metric, as_of_ms)
    cfg = c.config
    weights = {v.name: v.weight for v in cfg.variants}
    srm = stats.srm_test({k: c.exposed.get(k, 0) for k in weights}, weights)
    n_plan = planned_n if planned_n is not None else max(sum(c.exposed.values()), 2)
    control = _complete(c, cfg.control, metric, "control")
    rows: list[dict[str, Any]] = []
    for v in cfg.variants:
        if v.name == cfg.control:
            continue
        treat = _complete(c, v.name, metric, "variant")
        raw_t = stats.Summary.from_sums(treat.n, treat.sy, treat.syy)
        raw_c = stats.Summary.from_sums(control.n, control.sy, control.syy)
        reduction = 0.0
        at, ac = raw_t, raw_c
        if cuped:
            at, ac, _theta, reduction = stats.cuped_sums(treat, control)
        diff = stats.absolute_diff(at, ac, alpha=alpha)
        rel = stats.relative_lift(at, ac, alpha=alpha)
        seq = stats.sequential_lift(at, ac, alpha=alpha, planned_n=n_plan)
        seq_diff = stats.sequential_diff(at, ac, alpha=alpha, planned_n=n_plan)
        rows.append({
            "experiment_id": cfg.id, "metric": metric, "variant": v.name,
            "control": cfg.control, "n": raw_t.n, "n_control": raw_c.n,
            "mean": raw_t.mean, "mean_control": raw_c.mean,
            "abs_diff": diff.estimate, "abs_ci_low": diff.ci_low, "abs_ci_high": diff.ci_high,
            "rel_lift": rel.estimate, "rel_ci_low": rel.ci_low, "rel_ci_high": rel.ci_high,
            "seq_ci_low": seq.ci_low, "seq_ci_high": seq.ci_high, "p_value": diff.p_value,
            "prob_better": stats.prob_better(at, ac), "cuped": bool(cuped),
            "variance_reduction": reduction, "srm_p": srm.p_value, "srm_flag": srm.flagged,
            "verdict": _verdict(srm, diff, seq_diff),
        })
    return pd.DataFrame(rows)


def guardrail_table(store: ClickHouseStore, experiment: ExperimentConfig | str,
                    as_of_ms: int | None = None, *, alpha: float = 0.05) -> pd.DataFrame:
    """Each configured guardrail metric of each variant vs control (non-inferiority)."""
    exp_id = experiment.id if isinstance(experiment, ExperimentConfig) else experiment
    cfg = experiment if isinstance(experiment, ExperimentConfig) else None
    rows: list[dict[str, Any]] = []
    guard_names = (cfg or ExperimentConfig(id=exp_id)).guardrails
    for metric in guard_names:
        if metric not in METRICS:
            raise InvalidInputError("experiment.guardrails", metric,
                                    f"must be one of {sorted(METRICS)}")
        c = _cohorts(store, experiment, metric, as_of_ms)
        for v in c.config.variants:
            if v.name == c.config.control:
                continue
            try:
                t = _complete(c, v.name, metric, "variant")
                k = _complete(c, c.config.control, metric, "control")
                g = stats.guardrail(metric, stats.Summary.from_sums(t.n, t.sy, t.syy),
                                    stats.Summary.from_sums(k.n, k.sy, k.syy),
                                    margin=c.config.guardrail_margin, alpha=alpha)
            except InvalidInputError as exc:
                rows.append({"metric": metric, "variant": v.name, "status": "no data",
                             "estimate": math.nan, "ci_low": math.nan, "ci_high": math.nan,
                             "margin": c.config.guardrail_margin, "detail": str(exc)})
                continue
            rows.append({"metric": metric, "variant": v.name, "status": g.status,
                         "estimate": g.estimate, "ci_low": g.ci_low, "ci_high": g.ci_high,
                         "margin": g.margin, "detail": ""})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------- CLI


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "lift", help="lift of a user-level metric vs control",
        description="Lift of each variant over control, with honest intervals.",
    )
    p.add_argument("--experiment", required=True, help="experiment id")
    p.add_argument("--metric", default="day30_engagement",
                   help=f"one of {', '.join(sorted(METRICS))}")
    p.add_argument("--as-of-ms", type=int, default=None,
                   help="evaluate as of this epoch ms (default now)")
    p.add_argument("--no-cuped", action="store_true",
                   help="do not adjust with the pre-period covariate")
    p.add_argument("--planned-n", type=int, default=None,
                   help="units the always-valid interval is tuned for (fix it in advance; "
                        "default: units exposed so far)")
    p.add_argument("--dsn", default=None, help="store DSN (default: store.dsn from config)")
    p.add_argument("--database", default=None, help="store database (default: store.database)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_lift)


def _jsonable(v: Any) -> Any:
    if isinstance(v, float | np.floating):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def _cmd_lift(args: argparse.Namespace) -> int:
    from bandit.config import load_config
    from bandit.store import open_store

    cfg = load_config(getattr(args, "config", None))
    dsn = args.dsn or cfg.store.dsn
    database = args.database or cfg.store.database
    experiment: ExperimentConfig | str = (
        cfg.experiment if cfg.experiment.id == args.experiment else args.experiment)
    try:
        store = open_store(dsn, database, read_only=True)
    except Exception as exc:
        print(f"switchboard lift: error: cannot open store {dsn!r}: {exc}", file=sys.stderr)
        return 2
    try:
        table = lift_table(store, experiment, args.metric, args.as_of_ms,
                           cuped=not args.no_cuped, planned_n=args.planned_n)
        guards = guardrail_table(store, experiment, args.as_of_ms)
    except InvalidInputError as exc:
        print(f"switchboard lift: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        print(f"switchboard lift: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    if args.json:
        out = {
            name: [{k: _jsonable(v) for k, v in r.items()} for r in frame.to_dict("records")]
            for name, frame in (("lift", table), ("guardrails", guards))
        }
        print(json.dumps(out, indent=2))
        return 0
    _print_rich(table, guards)
    return 0


def _pct(x: float) -> str:
    return f"{100 * x:+.1f}%" if math.isfinite(x) else "n/a"


def _print_rich(table: pd.DataFrame, guards: pd.DataFrame) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    first = table.iloc[0]
    t = Table(title=f"{first['experiment_id']}: {first['metric']} vs {first['control']}")
    t.add_column("")
    records = table.to_dict("records")
    for r in records:
        t.add_column(str(r["variant"]), overflow="fold")
    fields: list[tuple[str, Any]] = [
        ("units (treatment / control)", lambda r: f"{r['n']} / {r['n_control']}"),
        ("mean (treatment / control)", lambda r: f"{r['mean']:.4g} / {r['mean_control']:.4g}"),
        ("difference [95% CI]",
         lambda r: f"{r['abs_diff']:+.4g} [{r['abs_ci_low']:+.4g}, {r['abs_ci_high']:+.4g}]"),
        ("relative lift [95% CI]",
         lambda r: f"{_pct(r['rel_lift'])} [{_pct(r['rel_ci_low'])}, {_pct(r['rel_ci_high'])}]"),
        ("always-valid 95% CI", lambda r: f"[{_pct(r['seq_ci_low'])}, {_pct(r['seq_ci_high'])}]"),
        ("CUPED variance reduction",
         lambda r: f"{100 * r['variance_reduction']:.0f}%" if r["cuped"] else "off"),
        ("P(better than control)", lambda r: f"{r['prob_better']:.3f}"),
        ("SRM p-value", lambda r: f"{r['srm_p']:.3g}" + (" (MISMATCH)" if r["srm_flag"] else "")),
        ("verdict", lambda r: str(r["verdict"])),
    ]
    for name, fmt in fields:
        t.add_row(name, *[fmt(r) for r in records])
    console.print(t)
    if not guards.empty:
        g = Table(title="guardrails (relative, must not degrade beyond margin)")
        for name in ("metric", "variant", "lift [95% CI]", "margin", "status"):
            g.add_column(name)
        for r in guards.to_dict("records"):
            g.add_row(r["metric"], r["variant"],
                      f"{_pct(r['estimate'])} [{_pct(r['ci_low'])}, {_pct(r['ci_high'])}]",
                      f"-{100 * r['margin']:.1f}%", r["status"])
        console.print(g)
