"""``switchboard calibrate``: fit the surrogate index and print (or write) the reward α's.

The maths is :mod:`bandit.analysis.calibration`; this module parses, opens the store
read-only and prints a table, a JSON document or writes a ``[reward]`` config fragment.
``--publish`` appends the α's as a new version of the published calibration history
(:mod:`bandit.formats.calibration`, ``<model.dir>/reward-calibration.json``) that the
learner applies from ``--effective-from-ms`` on, by each decision's event time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bandit.analysis.calibration import Calibration, Units
    from bandit.config import Config, RewardConfig

__all__ = ["publish", "register", "reward_fragment"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "calibrate", help="fit a surrogate index of day-30 engagement; derive reward α's",
        description="Fit a cross-fitted surrogate index (Athey, Chetty, Imbens & Kang 2019) "
                    "of a day-N outcome from each user's early-window proxies on matured "
                    "users, and derive the reward weights α that make the per-message reward "
                    "the per-message share of the index.",
    )
    p.add_argument("--experiment", action="append", default=None,
                   help="experiment to learn from (repeatable; default: every experiment in "
                        "the store)")
    p.add_argument("--outcome", default="day30_engagement",
                   help="long-term outcome, a metric of `switchboard lift`")
    p.add_argument("--window-days", type=int, default=7,
                   help="early window: proxies of days 0 .. N-1 after first exposure")
    p.add_argument("--proxies", default="retry,rating,length",
                   help="comma-separated proxies to use")
    p.add_argument("--no-covariates", action="store_true",
                   help="leave the pre-exposure covariate out of the index")
    p.add_argument("--folds", type=int, default=5, help="cross-fitting folds")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples of users")
    p.add_argument("--seed", type=int, default=0, help="seed of folds and bootstrap")
    p.add_argument("--min-units", type=int, default=200,
                   help="fewest matured users to calibrate on")
    p.add_argument("--as-of-ms", type=int, default=None,
                   help="evaluate as of this epoch ms (default now)")
    p.add_argument("--dsn", default=None, help="store DSN (default: store.dsn from config)")
    p.add_argument("--database", default=None, help="store database (default: store.database)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--write-config", metavar="FILE", default=None,
                   help="write the [reward] fragment to FILE (refuses to overwrite; "
                        "default: print it only)")
    p.add_argument("--publish", action="store_true",
                   help="append the fitted α's as a new version of the published reward "
                        "calibration (model.dir/reward-calibration.json) the learner applies")
    p.add_argument("--publish-to", metavar="FILE", default=None,
                   help="publish to FILE instead (implies --publish; default: "
                        "model.dir/reward-calibration.json)")
    p.add_argument("--effective-from-ms", type=int, default=None,
                   help="decisions from this epoch ms on are scored with the published α's "
                        "(default now; not before the newest published version's)")
    p.set_defaults(func=_cmd_calibrate)


def reward_fragment(cal: Calibration, current: RewardConfig) -> str:
    """The ``[reward]`` TOML fragment of ``cal``'s α's (other reward settings kept)."""
    alphas = cal.reward_alphas()
    when = cal.meta.get("as_of_ms")
    stamp = (dt.datetime.fromtimestamp(when / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
             if isinstance(when, int) else "now")
    lines = [
        f"# switchboard calibrate: surrogate index of {cal.outcome} on {cal.n_units:,} matured "
        f"users as of {stamp}",
        f"# out-of-fold R² {cal.r2_oof:.3f}; window {cal.meta.get('window_days', '?')} days; "
        f"experiments {', '.join(cal.meta.get('experiments', [])) or '?'}",
    ]
    if cal.clipped:
        lines.append(f"# clipped to 0 (a negative weight on {cal.outcome}): {', '.join(cal.clipped)}")
    lines.append("[reward]")
    lines += [f"{k} = {v:.4f}" for k, v in alphas.items()]
    lines.append(f"length_cap = {current.length_cap}")
    lines.append(f"default_reward = {current.default_reward}")
    return "\n".join(lines) + "\n"


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from bandit.analysis.calibration import calibrate, load_units
    from bandit.cli.redaction import redact
    from bandit.cli.store import open_read_store
    from bandit.config import load_config
    from bandit.errors import InvalidInputError, StoreError

    cfg = load_config(getattr(args, "config", None))
    proxies = tuple(p.strip() for p in args.proxies.split(",") if p.strip())
    store = open_read_store(args, cfg, "calibrate")
    if store is None:
        return 2
    try:
        experiments = args.experiment or store.experiments()
        units = load_units(store, experiments, outcome=args.outcome,
                           window_days=args.window_days, as_of_ms=args.as_of_ms,
                           length_cap=cfg.reward.length_cap,
                           covariates=not args.no_covariates)
        meta = {"experiments": list(experiments), "window_days": args.window_days,
                "as_of_ms": args.as_of_ms, "notes": list(units.notes)}
        cal = calibrate(units.matured, outcome=units.outcome, proxies=proxies,
                        covariates=units.covariates, folds=args.folds,
                        n_bootstrap=args.bootstrap, seed=args.seed, min_units=args.min_units,
                        meta=meta)
    except (InvalidInputError, StoreError) as exc:
        print(f"switchboard calibrate: error: {redact(exc)}", file=sys.stderr)
        return 2
    finally:
        store.close()
    fragment = reward_fragment(cal, cfg.reward)
    published = None
    if args.publish or args.publish_to:
        try:
            published = publish(cal, cfg, path=args.publish_to,
                                effective_from_ms=args.effective_from_ms)
        except (InvalidInputError, OSError) as exc:
            print(f"switchboard calibrate: error: not published: {redact(exc)}", file=sys.stderr)
            return 2
    if args.write_config:
        path = Path(args.write_config)
        try:
            with path.open("x", encoding="utf-8") as fh:
                fh.write(fragment)
        except FileExistsError:
            print(f"switchboard calibrate: error: --write-config {path} already exists "
                  f"(remove it or name a new file)", file=sys.stderr)
            return 2
        except OSError as exc:
            print(f"switchboard calibrate: error: --write-config {path}: "
                  f"{exc.strerror or exc}", file=sys.stderr)
            return 2
    if args.json:
        doc = cal.to_dict()
        doc["current_reward"] = {f"alpha_{p}": getattr(cfg.reward, f"alpha_{p}")
                                 for p in ("retry", "rating", "length")}
        doc["config_fragment"] = fragment
        if published is not None:
            doc["published"] = published
        print(json.dumps(doc, indent=2, default=_json_default))
        return 0
    _print_rich(cal, units, cfg.reward, fragment, args.write_config)
    if published is not None:
        print(f"published {published['id']} to {published['path']} (decisions from "
              f"{published['effective_from_ms']} ms on)")
    return 0


def publish(cal: Calibration, cfg: Config, *, path: str | None = None,
            effective_from_ms: int | None = None) -> dict[str, Any]:
    """Append ``cal``'s α's as the next version of the published calibration history
    (``path``, default ``<model.dir>/reward-calibration.json``), signed with the learner's
    HMAC key when one is configured; returns what was published (id, version, path,
    effective_from_ms).

    Refuses (:class:`bandit.errors.InvalidInputError`) an index no better than the mean
    (out-of-fold R² <= 0: its α's would steer the bandit by noise), α's that are all zero,
    an effective time before the newest version's, and a file it cannot verify.
    """
    import time

    from bandit.config import RewardConfig
    from bandit.errors import ConfigError, InvalidInputError
    from bandit.formats.calibration import append_version
    from bandit.formats.paths import calibration_path
    from bandit.formats.state import read_key

    if not (math.isfinite(cal.r2_oof) and cal.r2_oof > 0):
        raise InvalidInputError(
            "r2_oof", round(cal.r2_oof, 4) if math.isfinite(cal.r2_oof) else cal.r2_oof,
            f"must be > 0 to publish: the index predicts {cal.outcome} no better than its "
            "mean out of fold, so its α's would steer the bandit by noise")
    try:
        reward = RewardConfig(**cal.reward_alphas(), length_cap=cfg.reward.length_cap,
                              default_reward=cfg.reward.default_reward)
    except ConfigError as exc:
        raise InvalidInputError(exc.field, exc.value,
                                f"{exc.reason} (every proxy's weight was clipped: raising "
                                f"any of them lowers {cal.outcome})") from None
    target = Path(path) if path else calibration_path(cfg.model.dir)
    now = int(time.time() * 1000)
    when = now if effective_from_ms is None else effective_from_ms
    as_of = cal.meta.get("as_of_ms")
    source = {
        "outcome": cal.outcome, "n_units": int(cal.n_units), "r2_oof": _finite(cal.r2_oof),
        "r2_oof_flexible": _finite(cal.r2_oof_flexible), "proxies": list(cal.proxies),
        "covariates": list(cal.covariates), "clipped": list(cal.clipped),
        "alpha_ci": {p: [_finite(lo), _finite(hi)] for p, (lo, hi) in cal.alpha_ci.items()},
        "level": cal.level, "folds": cal.folds, "bootstrap": cal.n_bootstrap, "seed": cal.seed,
        "experiments": list(cal.meta.get("experiments", [])),
        "window_days": cal.meta.get("window_days"),
        "as_of_ms": as_of if isinstance(as_of, int) else now,
    }
    key = read_key(cfg.learner.state_hmac_key_file)
    version = append_version(target, reward, effective_from_ms=when, source=source, key=key,
                             created_ms=now)
    return {"id": version.id, "version": version.version, "path": str(target),
            "effective_from_ms": version.effective_from_ms, "signed": key is not None,
            "reward": {k: getattr(reward, k) for k in ("alpha_retry", "alpha_rating",
                                                       "alpha_length", "length_cap",
                                                       "default_reward")}}


def _finite(v: float) -> float | None:
    f = float(v)
    return f if math.isfinite(f) else None


def _json_default(v: Any) -> Any:
    import numpy as np

    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        f = float(v)
        return f if math.isfinite(f) else None
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


def _print_rich(cal: Calibration, units: Units, current: RewardConfig, fragment: str,
                written: str | None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for note in units.notes:
        console.print(f"note: {note}", highlight=False)
    lvl = f"{cal.level:.0%}"
    t = Table(title=f"surrogate index of {cal.outcome}: {cal.n_units:,} matured users, "
                    f"{cal.folds}-fold cross-fitted")
    for name in ("proxy", f"β [{lvl} bootstrap]", f"α [{lvl} bootstrap]", "current α"):
        t.add_column(name, overflow="fold")
    for p in cal.proxies:
        lo, hi = cal.coef_ci[p]
        alo, ahi = cal.alpha_ci[p]
        clip = " (clipped: β < 0)" if p in cal.clipped else ""
        t.add_row(p, f"{cal.coef[p]:+.4g} [{lo:+.4g}, {hi:+.4g}]",
                  f"{cal.alpha[p]:.3f} [{alo:.3f}, {ahi:.3f}]{clip}",
                  f"{getattr(current, f'alpha_{p}'):.3f}")
    console.print(t)
    flex = (f"{cal.r2_oof_flexible:.3f}" if math.isfinite(cal.r2_oof_flexible) else "n/a")
    console.print(f"out-of-fold R²: linear index {cal.r2_oof:.3f}, gradient boosting {flex} "
                  f"(a much higher non-linear R² means the linear α's miss structure)",
                  highlight=False)
    q = cal.residual_quantiles
    console.print(f"residuals (out-of-fold): sd {cal.residual_sd:.4g}; 5/50/95% "
                  f"{q['q05']:+.4g} / {q['q50']:+.4g} / {q['q95']:+.4g}", highlight=False)
    c = Table(title="calibration (out-of-fold prediction bins)")
    for name in ("bin", "users", "predicted", "observed ± se"):
        c.add_column(name)
    for r in cal.calibration.to_dict("records"):
        c.add_row(str(r["bin"]), f"{r['n']:,}", f"{r['predicted']:.4g}",
                  f"{r['observed']:.4g} ± {r['observed_se']:.2g}")
    console.print(c)
    console.print("config fragment" + (f" (written to {written})" if written else "") + ":",
                  highlight=False)
    console.print(fragment, highlight=False, markup=False)
