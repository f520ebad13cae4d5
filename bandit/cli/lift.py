"""``switchboard lift``: the lift table of an experiment, as a rich table or JSON.

The maths is :mod:`bandit.analysis.lift`; this module only parses, opens the store and
prints.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from bandit.analysis.lift import ExperimentHealth
    from bandit.config import ExperimentConfig

__all__ = ["register"]


def register(subparsers: Any) -> None:
    from bandit.analysis.metrics import METRICS

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
                        "default: bandit.stats.DEFAULT_PLANNED_N total units)")
    p.add_argument("--include-cross-exposed", action="store_true",
                   help="count units seen in more than one variant in their first variant "
                        "(default: left out of the lift, and counted)")
    p.add_argument("--dsn", default=None, help="store DSN (default: store.dsn from config)")
    p.add_argument("--database", default=None, help="store database (default: store.database)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--projection", action="store_true",
                   help="also project the lift from the first 7 days with a surrogate index "
                        "calibrated on matured users (switchboard calibrate)")
    p.set_defaults(func=_cmd_lift)


def _jsonable(v: Any) -> Any:
    import numpy as np

    if isinstance(v, float | np.floating):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def _cmd_lift(args: argparse.Namespace) -> int:
    from bandit.analysis.lift import experiment_health, guardrail_table, lift_table
    from bandit.cli.redaction import redact
    from bandit.cli.store import open_read_store
    from bandit.config import load_config
    from bandit.errors import InvalidInputError

    cfg = load_config(getattr(args, "config", None))
    experiment: ExperimentConfig | str = (
        cfg.experiment if cfg.experiment.id == args.experiment else args.experiment)
    store = open_read_store(args, cfg, "lift")
    if store is None:
        return 2
    try:
        health = experiment_health(store, experiment, args.as_of_ms)
        table = lift_table(store, experiment, args.metric, args.as_of_ms,
                           cuped=not args.no_cuped, planned_n=args.planned_n,
                           include_cross_exposed=args.include_cross_exposed, health=health)
        guards = guardrail_table(store, experiment, args.as_of_ms)
        projection = _projection(store, args, table) if args.projection else None
    except InvalidInputError as exc:
        print(f"switchboard lift: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        print(f"switchboard lift: error: {type(exc).__name__}: {redact(exc)}", file=sys.stderr)
        return 2
    finally:
        store.close()
    if args.json:
        out: dict[str, Any] = {
            name: [{k: _jsonable(v) for k, v in r.items()} for r in frame.to_dict("records")]
            for name, frame in (("lift", table), ("guardrails", guards))
        }
        out["health"] = _health_json(health, excluded=not args.include_cross_exposed)
        if projection is not None:
            out["projection"] = projection
        print(json.dumps(out, indent=2))
        return 0
    _print_rich(table, guards, health, excluded=not args.include_cross_exposed)
    if projection is not None:
        _print_projection(projection)
    return 0


def _projection(store: Any, args: argparse.Namespace, table: pd.DataFrame) -> dict[str, Any]:
    """The early read (:func:`bandit.analysis.calibration.early_read`) beside the measured
    lift, or the reason there is none; never fails the command."""
    from bandit.analysis.calibration import SURROGACY, early_read
    from bandit.errors import InvalidInputError

    control = str(table.iloc[0]["control"])
    try:
        rows = early_read(store, args.experiment, control, as_of_ms=args.as_of_ms,
                          outcome=args.metric)
    except InvalidInputError as exc:
        return {"note": SURROGACY, "unavailable": str(exc), "rows": []}
    measured = {str(r["variant"]): r["rel_lift"] for r in table.to_dict("records")}
    out = []
    for r in rows.to_dict("records"):
        m = measured.get(str(r["variant"]), math.nan)
        r["measured_lift"] = m
        r["measured_minus_projected"] = m - r["projected_lift"]
        out.append({k: _jsonable(v) for k, v in r.items()})
    return {"note": SURROGACY, "unavailable": None, "rows": out}


def _print_projection(projection: dict[str, Any]) -> None:
    from rich.console import Console

    console = Console()
    if projection["unavailable"]:
        console.print(f"projected lift: not available ({projection['unavailable']})",
                      highlight=False)
        return
    for r in projection["rows"]:
        gap = r["measured_minus_projected"]
        since = (f"; measured − projected {_pct(gap)}" if gap is not None else
                 "; no measurement yet")
        console.print(f"projected lift of {r['variant']} from days 0-6: "
                      f"{_pct(r['projected_lift'])} "
                      f"{_interval(r['ci_low'], r['ci_high'])} ({r['n']} / {r['n_control']} "
                      f"users){since}", highlight=False)
    console.print(f"({projection['note']})", highlight=False)


def _health_json(h: ExperimentHealth, *, excluded: bool) -> dict[str, Any]:
    return {
        "srm_p": _jsonable(h.srm_p), "srm_flag": h.srm_flag, "srm_detail": h.srm_detail,
        "design_source": h.source,
        "design": [{"since_ms": p.since_ms, "weights": p.weights} for p in h.periods],
        "units": h.units, "cross_exposed": h.cross_exposed,
        "cross_exposed_excluded": excluded,
    }


def _pct(x: float) -> str:
    if x == math.inf:
        return "unbounded"
    return f"{100 * x:+.1f}%" if math.isfinite(x) else "n/a"


def _num(x: float) -> str:
    return f"{x:+.4g}" if math.isfinite(x) else "n/a"


def _interval(lo: float, hi: float, fmt: Any = _pct) -> str:
    if not (math.isfinite(lo) or math.isfinite(hi)):
        return "n/a"
    return f"[{fmt(lo)}, {fmt(hi)}]"


def _print_rich(table: pd.DataFrame, guards: pd.DataFrame, health: ExperimentHealth, *,
                excluded: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"health: {health.srm_detail}", highlight=False)
    if health.cross_exposed:
        how = "left out of the lift" if excluded else "counted in their first variant"
        console.print(f"health: {health.cross_exposed:,} units were exposed to more than one "
                      f"variant ({how})", highlight=False)
    first = table.iloc[0]
    t = Table(title=f"{first['experiment_id']}: {first['metric']} vs {first['control']}")
    t.add_column("")
    records = table.to_dict("records")
    for r in records:
        t.add_column(str(r["variant"]), overflow="fold")
    fields: list[tuple[str, Any]] = [
        ("units (treatment / control)", lambda r: f"{r['n']} / {r['n_control']}"),
        ("mean (treatment / control)",
         lambda r: f"{_num(r['mean']).lstrip('+')} / {_num(r['mean_control']).lstrip('+')}"),
        ("verdict", lambda r: str(r["verdict"])),
        (f"decided by: {first['decided_by']}",
         lambda r: _interval(r["seq_ci_low"], r["seq_ci_high"])),
        ("relative lift", lambda r: _pct(r["rel_lift"])),
        ("fixed-horizon 95% CI (one look)",
         lambda r: _interval(r["rel_ci_low"], r["rel_ci_high"])),
        ("difference [fixed-horizon 95% CI]",
         lambda r: f"{_num(r['abs_diff'])} {_interval(r['abs_ci_low'], r['abs_ci_high'], _num)}"),
        ("CUPED variance reduction",
         lambda r: f"{100 * r['variance_reduction']:.0f}%" if r["cuped"] else "off"),
        ("P(better than control)",
         lambda r: f"{r['prob_better']:.3f}" if math.isfinite(r["prob_better"]) else "n/a"),
        ("SRM p-value", lambda r: f"{r['srm_p']:.3g}" + (" (MISMATCH)" if r["srm_flag"] else "")),
    ]
    for name, fmt in fields:
        t.add_row(name, *[fmt(r) for r in records])
    console.print(t)
    if not guards.empty:
        g = Table(title="guardrails (relative, one-sided; must not degrade beyond the margin)")
        for name in ("metric", "variant", "lift [one-sided bounds]", "margin", "status"):
            g.add_column(name, overflow="fold")
        for r in guards.to_dict("records"):
            g.add_row(r["metric"], r["variant"],
                      f"{_pct(r['estimate'])} {_interval(r['ci_low'], r['ci_high'])}",
                      f"-{100 * r['margin']:.1f}%", str(r["detail"] or r["status"]))
        console.print(g)
