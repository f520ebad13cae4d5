"""``switchboard replay``, ``switchboard evaluate`` and ``switchboard tune``: offline evaluation.

Every command reads a log (``--log`` JSONL/DSJSON/CSV/Parquet with a ``--field`` column
mapping, or ``--store``), prints a table (or one JSON object with ``--json``), and with
``--out DIR`` writes ``summary.json``, ``results.csv`` and a PNG plot there — the folder
the dashboard's offline page lists. Warnings (too few events, tiny propensities, method
switched, unsupported target mass, malformed lines) go to stderr and into the JSON;
``--strict`` turns any warning into exit status 3. User mistakes are one clear line
(``InvalidInputError``), never a traceback. Heavy imports happen inside each command.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["register_evaluate", "register_replay", "register_tune"]

STRICT_EXIT = 3
_FMT = argparse.ArgumentDefaultsHelpFormatter


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf -> null, numpy scalars -> Python, tuples -> lists."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, int):
        return obj
    try:
        f = float(obj)
    except (TypeError, ValueError):
        return str(obj)
    if isinstance(obj, float) or hasattr(obj, "dtype"):
        if hasattr(obj, "dtype") and getattr(obj.dtype, "kind", "") in "iu":
            return int(obj)
        return f if math.isfinite(f) else None
    return f


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(_clean(obj), indent=2) + "\n")


# ----------------------------------------------------------------------------- log source


def _pair(text: str, what: str) -> tuple[float, float]:
    from bandit.errors import InvalidInputError

    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise InvalidInputError(what, text, "must be two numbers LOW,HIGH") from None
    return lo, hi


def _add_source(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--log", help="log file: JSON Lines, DSJSON, CSV or Parquet")
    src.add_argument("--store", metavar="DSN",
                     help="read decisions joined with rewards from a store (chdb:// or http://)")
    p.add_argument("--experiment", help="experiment id (with --store)")
    p.add_argument("--variant", default="", help="only this variant (with --store; empty: all)")
    p.add_argument("--format", default="auto",
                   choices=("auto", "jsonl", "dsjson", "csv", "parquet"),
                   help="log format (auto: by suffix, then by content)")
    p.add_argument("--field", action="append", default=[], metavar="NAME=COLUMN",
                   help="map a logical field (arm, propensity, reward, cost, context, "
                        "probabilities, eligible, decision_id, timestamp, and the reward "
                        "proxies retried, rating, conversation_length) to the log's column; "
                        "context may be a glob such as x_*; repeatable")
    p.add_argument("--reward-range", default="0,1", metavar="LOW,HIGH",
                   help="declared range of rewards; rewards outside it are refused (or clipped)")
    p.add_argument("--clip-rewards", action="store_true",
                   help="clip rewards outside --reward-range (counted) instead of refusing the line")
    p.add_argument("--cost-scale", type=float, default=-1.0,
                   help="reward = cost-offset + cost-scale * cost (DSJSON _label_cost, --field cost)")
    p.add_argument("--cost-offset", type=float, default=0.0, help="see --cost-scale")
    p.add_argument("--features", default="auto", choices=("auto", "dense", "hash", "named"),
                   help="context mapping: dense array, hashed features, or named columns")
    p.add_argument("--dim", type=int, default=None,
                   help="context dimension (dense: else the majority of lines; hash: default 64)")
    p.add_argument("--action-id", default="auto",
                   help="DSJSON: dotted path of the arm id in each _multi object (e.g. i.id)")
    p.add_argument("--action-features", default="none", choices=("none", "hash"),
                   help="DSJSON: the _multi actions' other features as arm content features "
                        "(hybrid_linucb), hashed into --action-feature-dim columns")
    p.add_argument("--action-feature-dim", type=int, default=16,
                   help="columns of the hashed action features")
    p.add_argument("--min-events", type=int, default=100,
                   help="warn when fewer events (or effective sample size) than this are used")
    p.add_argument("--strict", action="store_true",
                   help=f"exit with status {STRICT_EXIT} when there is any warning")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="write summary.json, results.csv and a plot here (the dashboard's "
                        "offline page reads this folder)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _spec(args: argparse.Namespace) -> Any:
    from bandit.errors import InvalidInputError
    from simulations.logs import LogSpec

    fields: dict[str, str] = {}
    for item in args.field:
        name, sep, col = item.partition("=")
        if not sep or not name.strip() or not col.strip():
            raise InvalidInputError("--field", item, "must be NAME=COLUMN (e.g. arm=item_id)")
        fields[name.strip()] = col.strip()
    return LogSpec(fields=fields, cost_scale=args.cost_scale, cost_offset=args.cost_offset,
                   reward_range=_pair(args.reward_range, "--reward-range"),
                   out_of_range="clip" if args.clip_rewards else "refuse",
                   features=args.features, dim=args.dim, action_id=args.action_id,
                   action_features=args.action_features,
                   action_feature_dim=args.action_feature_dim)


def _load_log(args: argparse.Namespace) -> tuple[Any, Any, list[str]]:
    from bandit.errors import InvalidInputError
    from simulations.logs import read_log

    spec = _spec(args)
    if args.store:
        from bandit.store import open_store
        from simulations.logs import read_store

        if not args.experiment:
            raise InvalidInputError("--experiment", args.experiment, "is required with --store")
        with open_store(args.store, read_only=True) as store:
            data, report = read_store(store, args.experiment, variant=args.variant, spec=spec)
    else:
        data, report = read_log(args.log, fmt=args.format, spec=spec)
    notes = []
    if report.malformed:
        first = ", ".join(f"line {n}: {r}" for n, r in report.errors[:3])
        notes.append(f"malformed lines: {report.malformed} of {report.lines} skipped ({first})")
    if report.clipped:
        notes.append(f"clipped rewards: {report.clipped} rewards clipped into {spec.reward_range}")
    if data.n == 0:
        first = f"; line {report.errors[0][0]}: {report.errors[0][1]}" if report.errors else ""
        raise InvalidInputError("log", report.path, f"has no usable event ({report.lines} lines, "
                                f"{report.malformed} malformed, {report.skipped} skipped{first}; "
                                "map the log's columns with --field NAME=COLUMN)")
    return data, report, notes


def _finish(args: argparse.Namespace, command: str, report: Any, notes: Sequence[str],
            results: list[dict[str, Any]], extra: dict[str, Any], table: str,
            plot: Any = None) -> int:
    out = {"command": command, "log": report.to_dict(), "warnings": list(notes),
           "results": results, **extra}
    if args.out:
        _write_out(Path(args.out), out, plot)
        out["out"] = args.out
    if args.json:
        _emit(out)
    else:
        for n in notes:
            print(f"warning: {n}", file=sys.stderr)
        print(table)
        if args.out:
            print(f"results in {args.out}/ (summary.json, results.csv, plot.png)")
    return STRICT_EXIT if args.strict and notes else 0


def _write_out(folder: Path, summary: dict[str, Any], plot: Any) -> None:
    import pandas as pd

    from bandit.errors import InvalidInputError

    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "summary.json").write_text(json.dumps(_clean(summary), indent=2) + "\n")
        pd.DataFrame(summary["results"]).to_csv(folder / "results.csv", index=False)
        if plot is not None:
            plot(folder / "plot.png")
    except OSError as exc:
        raise InvalidInputError("--out", str(folder), f"cannot be written ({exc.strerror or exc})") from None


def _interval_plot(rows: list[dict[str, Any]], label: str, title: str) -> Any:
    def draw(path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names = [str(r[label]) for r in rows]
        vals = [r["value"] if r["value"] is not None and math.isfinite(r["value"]) else float("nan")
                for r in rows]
        lo = [v - r["ci_low"] if math.isfinite(v) else 0.0 for v, r in zip(vals, rows, strict=True)]
        hi = [r["ci_high"] - v if math.isfinite(v) else 0.0 for v, r in zip(vals, rows, strict=True)]
        # wide enough for the longest label beside the axes
        width = max(7.0, 4.0 + 0.075 * max((len(n) for n in names), default=0))
        fig, ax = plt.subplots(figsize=(width, 0.5 + 0.45 * len(rows)))
        ax.errorbar(vals, range(len(rows)), xerr=[lo, hi], fmt="o", capsize=4)
        ax.set_yticks(range(len(rows)), names)
        ax.set_xlabel("estimated value (95% interval)")
        ax.set_title(title)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)

    return draw


# ----------------------------------------------------------------------------- policies


def _arm_registry(data: Any, arm_features: str | None) -> Any:
    """The log's arms, with content features from an ``--arm-features`` file when given.

    Without a file, the features the log itself carries (DSJSON ``--action-features``).
    """
    from bandit.arms import Arm, ArmRegistry
    from bandit.errors import InvalidInputError

    if not arm_features:
        return data.arm_registry()
    path = Path(arm_features)
    try:
        raw = json.loads(path.read_text())
    except OSError as exc:
        raise InvalidInputError("--arm-features", str(path), f"cannot be read ({exc.strerror})") from None
    except ValueError as exc:
        raise InvalidInputError("--arm-features", str(path), f"is not JSON ({exc})") from None
    rows = raw.get("arms") if isinstance(raw, dict) else raw
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise InvalidInputError("--arm-features", str(path),
                                "must be a list of arm rows (or {\"arms\": [...]}) as in arms.json")
    arms: dict[str, Any] = {}
    for i, row in enumerate(rows):
        if "arm_id" not in row:
            raise InvalidInputError(f"--arm-features row {i}", row, "has no arm_id")
        try:
            arm = Arm.from_row(row)
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"--arm-features row {i}", row.get("arm_id"), str(exc)) from None
        arms[arm.arm_id] = arm
    dims = {len(a.features) for a in arms.values() if a.features}
    if len(dims) > 1:
        raise InvalidInputError("--arm-features", sorted(dims), "features must all have one length")
    for a in data.arm_ids:
        arms.setdefault(a, Arm(a))
    return ArmRegistry(arms.values(), feature_dim=dims.pop() if dims else None)


def _make_policy(name: str, data: Any, args: argparse.Namespace, **overrides: Any) -> Any:
    from bandit.config import PolicyConfig
    from bandit.errors import ConfigError, InvalidInputError
    from bandit.policies import make_policy

    reg = _arm_registry(data, getattr(args, "arm_features", None))
    fdim = reg.feature_dim or 0
    if name == "hybrid_linucb" and not fdim:
        raise InvalidInputError("--arm-features", None,
                                "is required by hybrid_linucb (a file of arm rows with features, "
                                "or a DSJSON log's action features: --action-features hash)")
    params = {"alpha": args.alpha, "probability_floor": args.probability_floor,
              "epsilon": args.epsilon, "thompson_v": args.thompson_v}
    params = {k: v for k, v in params.items() if v is not None}
    params.update(overrides)
    try:
        cfg = PolicyConfig(name=name, dim=data.dim, fixed_arm=data.arm_ids[0],  # type: ignore[arg-type]
                           arm_feature_dim=fdim if name == "hybrid_linucb" else 0, **params)
        return make_policy(cfg, reg)
    except ConfigError:
        raise
    except TypeError as exc:
        raise InvalidInputError("policy", name, str(exc)) from None


def _add_policy_params(p: argparse.ArgumentParser) -> None:
    p.add_argument("--alpha", type=float, default=None,
                   help="α of LinUCB / hybrid LinUCB (default: the policy config's, 1.0)")
    p.add_argument("--probability-floor", type=float, default=None,
                   help="minimum probability of every eligible arm (default: config's, 0.01)")
    p.add_argument("--epsilon", type=float, default=None, help="ε of epsilon_greedy (default 0.05)")
    p.add_argument("--thompson-v", type=float, default=None,
                   help="posterior scale v of linear Thompson sampling (default 0.5)")
    p.add_argument("--arm-features", metavar="FILE", default=None,
                   help="arms with content features (arms.json rows) for hybrid_linucb")
    p.add_argument("--arms", default=None,
                   help="comma-separated subset of arms the policy may choose (default: all)")


def _arms_subset(args: argparse.Namespace, data: Any) -> list[str] | None:
    from bandit.errors import InvalidInputError

    if not args.arms:
        return None
    subset = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in subset if a not in data.arm_ids]
    if unknown or not subset:
        raise InvalidInputError("--arms", unknown[0] if unknown else args.arms,
                                f"must name arms of the log ({list(data.arm_ids)[:10]})")
    return subset


# ----------------------------------------------------------------------------- replay


def register_replay(sub: Any) -> None:
    """Entry point ``replay``."""
    p = sub.add_parser("replay", help="replay learning policies on a logged decision log",
                       formatter_class=_FMT)
    _add_source(p)
    p.add_argument("--policies", default="linucb,linear_thompson,greedy,uniform",
                   help="comma-separated policy names")
    _add_policy_params(p)
    p.add_argument("--batch-size", type=int, default=100,
                   help="accepted events between policy updates (1: learn every event)")
    p.add_argument("--method", default="auto", choices=("auto", "replay", "rejection"),
                   help="replay needs a uniform log; rejection works with any logger")
    p.add_argument("--reward-config", action="append", default=[], metavar="SOURCE",
                   help="re-score every event's reward from its proxies under these α's and "
                        "compare the policies learnt under each (give 2 or more): a TOML file "
                        "with a [reward] table (switchboard calibrate --write-config), "
                        "FILE.json@ID or FILE.json@latest (a version of a published "
                        "calibration history), or config (the loaded config's [reward])")
    p.set_defaults(func=_replay)


def reward_config_from(source: str, config_path: str | None = None) -> Any:
    """The :class:`bandit.config.RewardConfig` a ``--reward-config`` SOURCE names.

    ``config``: the ``[reward]`` of the loaded config (``--config``, else
    ``$SWITCHBOARD_CONFIG``, else the defaults); ``FILE.json@ID`` / ``FILE.json@latest``: a
    version of a published calibration history (:mod:`bandit.formats.calibration`, its
    checksum verified); otherwise a TOML file with a ``[reward]`` table, read by
    :func:`bandit.config.load_config` (no environment overrides), so its validation is
    the config's.
    """
    import tomllib

    from bandit.config import load_config
    from bandit.errors import InvalidInputError

    if source == "config":
        return load_config(config_path).reward
    head, at, version = source.rpartition("@")
    if at and head.lower().endswith(".json"):
        return _history_reward(source, head, version)
    path = Path(source)
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise InvalidInputError("--reward-config", source,
                                f"cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise InvalidInputError("--reward-config", source, "is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInputError("--reward-config", source, f"is not valid TOML ({exc})") from None
    if not isinstance(raw.get("reward"), dict):
        raise InvalidInputError("--reward-config", source,
                                "has no [reward] table (switchboard calibrate --write-config "
                                "writes one)")
    return load_config(path, env={}).reward


def _history_reward(source: str, path: str, version: str) -> Any:
    """The α's of version ``version`` (an id, or ``latest``) of the calibration history."""
    from bandit.errors import InvalidInputError
    from bandit.formats.calibration import load_history

    if not Path(path).is_file():
        raise InvalidInputError("--reward-config", source,
                                f"names a calibration history {path} that does not exist")
    history = load_history(path)
    chosen = history.newest if version == "latest" else history.get(version)
    if chosen is None:
        ids = ", ".join(v.id for v in history.versions) or "none"
        raise InvalidInputError("--reward-config", source,
                                f"names no version of {path} (its versions: {ids}; or @latest)")
    return chosen.reward


def _replay(args: argparse.Namespace) -> int:
    from simulations.replay import replay_many
    from simulations.runner import policies_from_arg

    data, report, notes = _load_log(args)
    subset = _arms_subset(args, data)
    if args.reward_config:
        return _replay_rewards(args, data, report, notes, subset)
    policies = {n: _make_policy(n, data, args) for n in policies_from_arg(args.policies)}
    df = replay_many(data, policies, seed=args.seed, batch_size=args.batch_size,
                     method=args.method, reward_range=_spec(args).reward_range,
                     min_events=args.min_events, eligible_arms=subset)
    for name, ws in zip(df["policy"], df["warnings"], strict=True):
        notes.extend(f"{name}: {w}" for w in ws)
    rows = df.drop(columns=["warnings"]).to_dict(orient="records")
    return _finish(args, "replay", report, notes, rows, {"events": data.n},
                   df.drop(columns=["warnings"]).to_string(index=False),
                   _interval_plot(rows, "policy", "replay: mean reward of each policy"))


def _replay_rewards(args: argparse.Namespace, data: Any, report: Any, notes: list[str],
                    subset: list[str] | None) -> int:
    """``replay --reward-config A --reward-config B ...``: the cross table of rewards."""
    import dataclasses

    from bandit.errors import InvalidInputError
    from simulations.replay import replay_rewards
    from simulations.runner import policies_from_arg

    sources = list(args.reward_config)
    if len(sources) < 2:
        raise InvalidInputError("--reward-config", sources,
                                "must be given at least twice, to compare (e.g. "
                                "--reward-config config --reward-config new.toml)")
    twice = sorted({s for s in sources if sources.count(s) > 1})
    if twice:
        raise InvalidInputError("--reward-config", twice[0], "is given twice")
    rewards = {s: reward_config_from(s, getattr(args, "config", None)) for s in sources}
    names = policies_from_arg(args.policies)
    for n in names:  # a bad policy name or parameter is refused before any replay
        _make_policy(n, data, args)
    policies = {n: (lambda n=n: _make_policy(n, data, args)) for n in names}
    out = replay_rewards(data, policies, rewards, seed=args.seed, batch_size=args.batch_size,
                         method=args.method, reward_range=_spec(args).reward_range,
                         min_events=args.min_events, eligible_arms=subset)
    if out.not_rescorable:
        notes.append(f"not re-scored: {out.not_rescorable} of {data.n} events have feedback "
                     "whose proxies were not kept (store rows written before migration 5); "
                     f"every reward is replayed on the other {out.rescored}")
    notes.extend(dict.fromkeys(out.warnings))
    values = out.values
    rows = values.to_dict(orient="records")
    shares = out.shares.to_dict(orient="records")
    extra = {"events": out.rescored, "not_rescorable": out.not_rescorable,
             "rewards": {k: dataclasses.asdict(v) for k, v in rewards.items()},
             "shares": shares}
    cell = values.apply(lambda r: f"{r['value']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
                        + ("*" if r["own"] else " "), axis=1)
    cross = values.assign(cell=cell).pivot_table(
        index=["policy", "learnt_under", "events_used"], columns="judged_by", values="cell",
        aggfunc="first", sort=False)[sources]
    cross.columns.name = None
    alphas = "\n".join(
        f"  {k}: " + ", ".join(f"{f} {getattr(v, f):g}" for f in
                               ("alpha_retry", "alpha_rating", "alpha_length", "length_cap",
                                "default_reward"))
        for k, v in rewards.items())
    by_arm = out.shares.drop(columns="events_used").set_index(["policy", "learnt_under"]).T
    by_arm.columns = [f"{p} / {r}" for p, r in by_arm.columns]
    share_table = by_arm.round(3).rename_axis("arm").to_string()
    table = (f"re-scored {out.rescored} of {data.n} events from their proxies under:\n{alphas}\n\n"
             "mean reward [95% interval] of each policy learnt under one reward (row), judged "
             "by each reward (column; * its own):\n"
             f"{cross.reset_index().to_string(index=False)}\n\n"
             "arm shares of the events each learnt policy (policy / learnt under) accepted:\n"
             f"{share_table}")
    def short(source: str) -> str:  # a file's name, not its whole path, on the plot
        return Path(source).name or source

    labels = [dict(r, label=f"{r['policy']}: {short(r['learnt_under'])} → "
                            f"{short(r['judged_by'])}") for r in rows]
    return _finish(args, "replay", report, notes, rows, extra, table,
                   _interval_plot(labels, "label", "replay: policy learnt under → judged by"))


# ----------------------------------------------------------------------------- evaluate


def register_evaluate(sub: Any) -> None:
    """Entry point ``evaluate``."""
    p = sub.add_parser("evaluate", help="off-policy evaluation (IPS, SNIPS, DM, DR, switch-DR)",
                       formatter_class=_FMT)
    _add_source(p)
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--policy", help="a named policy, trained on --train-fraction of the log")
    target.add_argument("--snapshot", help="a frozen policy snapshot file")
    target.add_argument("--target", metavar="SPEC",
                        help="package.module:function (returns (n, K) probabilities), "
                             "uniform:ARM,ARM,..., dist:ARM=P,ARM=P, file:PATH (per-event "
                             "probabilities), argmax:PATH (per-arm linear weights, JSON)")
    _add_policy_params(p)
    p.add_argument("--greedy", action="store_true",
                   help="with --policy/--snapshot: the deterministic argmax of the policy's mean "
                        "(no bonus, no floor; ties share equally, the core's rule)")
    p.add_argument("--ties", default="first", choices=("first", "split"),
                   help="argmax:PATH tie rule: the first listed arm wins, or tied arms share")
    p.add_argument("--train-fraction", type=float, default=0.5,
                   help="with --policy: share of the log (its start) used to train it")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples for intervals")
    p.add_argument("--switch-tau", type=float, default=50.0, help="τ of switch-DR")
    p.set_defaults(func=_evaluate)


def _import_callable(spec: str) -> Any:
    from bandit.errors import InvalidInputError

    module, _, attr = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except ImportError as exc:
        raise InvalidInputError("--target", spec, f"cannot import {module!r} ({exc})") from None
    except AttributeError:
        raise InvalidInputError("--target", spec, f"{module!r} has no {attr!r}") from None
    if not callable(obj):
        raise InvalidInputError("--target", spec, "is not callable")
    return obj


def _argmax_from_file(path: str, ties: str) -> Any:
    import numpy as np

    from bandit.errors import InvalidInputError
    from simulations.ope import ArgmaxPolicy

    try:
        raw = json.loads(Path(path).read_text())
    except OSError as exc:
        raise InvalidInputError("--target argmax", path, f"cannot be read ({exc.strerror})") from None
    except ValueError as exc:
        raise InvalidInputError("--target argmax", path, f"is not JSON ({exc})") from None
    if not isinstance(raw, dict) or not raw:
        raise InvalidInputError("--target argmax", path, "must be a JSON object {arm: [weights]}")
    try:
        weights = np.array([[float(v) for v in w] for w in raw.values()])
    except (TypeError, ValueError):
        raise InvalidInputError("--target argmax", path, "weights must be lists of numbers") from None
    return ArgmaxPolicy(weights, tuple(str(a) for a in raw), ties)


def parse_target(spec: str, args: argparse.Namespace) -> Any:
    """The ``--target`` SPEC as a target for :func:`simulations.ope.target_probabilities`."""
    from bandit.errors import InvalidInputError

    kind, sep, rest = spec.partition(":")
    if kind == "uniform" and sep:
        arms = [a.strip() for a in rest.split(",") if a.strip()]
        if not arms:
            raise InvalidInputError("--target", spec, "must list arms: uniform:ARM,ARM")
        return dict.fromkeys(arms, 1.0 / len(arms))
    if kind == "dist" and sep:
        dist: dict[str, float] = {}
        for item in rest.split(","):
            a, eq, v = item.partition("=")
            try:
                dist[a.strip()] = float(v)
            except ValueError:
                raise InvalidInputError("--target", item, "must be ARM=PROBABILITY") from None
            if not eq:
                raise InvalidInputError("--target", item, "must be ARM=PROBABILITY")
        return dist
    if kind == "file" and sep:
        return ("file", rest)
    if kind == "argmax" and sep:
        return _argmax_from_file(rest, args.ties)
    if sep and rest and all(part.isidentifier() for part in kind.split(".")):
        return _import_callable(spec)
    raise InvalidInputError("--target", spec, "must be package.module:function, uniform:..., "
                            "dist:..., file:PATH or argmax:PATH")


def _greedy(policy: Any) -> Any:
    """The same learnt policy as a deterministic argmax of its mean (public API only)."""
    import dataclasses

    from bandit.errors import InvalidInputError
    from bandit.policies import make_policy

    if policy.name not in ("linucb", "linear_thompson", "greedy", "epsilon_greedy"):
        raise InvalidInputError("--greedy", policy.name,
                                "applies to linucb, linear_thompson, greedy and epsilon_greedy")
    cfg = dataclasses.replace(policy.config, name="greedy", probability_floor=0.0)
    greedy = make_policy(cfg, policy.arms)
    greedy.set_statistics(policy.statistics)
    return greedy


def _evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from bandit.errors import InvalidInputError
    from simulations.ope import OPEWarning, evaluate_policy, read_target_file

    data, report, notes = _load_log(args)
    rng = np.random.default_rng(args.seed)
    subset = _arms_subset(args, data)
    test = data
    label = ""
    if args.target:
        target = parse_target(args.target, args)
        if isinstance(target, tuple):
            target = read_target_file(target[1], data)
        label = args.target
    elif args.snapshot:
        from bandit.formats.snapshot import load_policy_snapshot

        target, _arms, _meta = load_policy_snapshot(args.snapshot)
        label = f"snapshot {args.snapshot}"
    else:
        if not 0 <= args.train_fraction < 1:
            raise InvalidInputError("--train-fraction", args.train_fraction, "must be in [0, 1)")
        target = _make_policy(args.policy, data, args)
        cut = int(data.n * args.train_fraction)
        if cut:
            train = data.subset(np.arange(cut))
            target.update_batch([data.arm_ids[i] for i in train.arm_index], train.contexts,
                                train.reward)
        test = data.subset(np.arange(cut, data.n))
        label = f"{args.policy} trained on {cut} events"
        if test.n == 0:
            raise InvalidInputError("--train-fraction", args.train_fraction, "leaves no event to evaluate")
    if args.greedy:
        if args.target:
            raise InvalidInputError("--greedy", True, "applies to --policy or --snapshot")
        target = _greedy(target)
        label += " (greedy)"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", OPEWarning)
        df = evaluate_policy(test, target, rng=rng, n_bootstrap=args.bootstrap,
                             switch_tau=args.switch_tau, eligible_arms=subset,
                             reward_range=_spec(args).reward_range, min_events=args.min_events)
    notes.extend(str(w.message) for w in caught if issubclass(w.category, OPEWarning))
    rows = df.to_dict(orient="records")
    return _finish(args, "evaluate", report, notes, rows, {"events": test.n, "target": label},
                   df.to_string(index=False),
                   _interval_plot(rows, "estimator", f"off-policy value of {label}"[:80]))


# ----------------------------------------------------------------------------- tune


#: hyper-parameters searched per policy (the PolicyConfig field of each grid option)
_TUNED = {
    "linucb": ("alpha", "probability_floor"),
    "hybrid_linucb": ("alpha", "probability_floor"),
    "linear_thompson": ("thompson_v", "probability_floor"),
    "epsilon_greedy": ("epsilon", "probability_floor"),
    "greedy": ("probability_floor",),
}


def register_tune(sub: Any) -> None:
    """Entry point ``tune``."""
    p = sub.add_parser("tune", help="grid-search policy hyper-parameters by replay on a log",
                       formatter_class=_FMT)
    _add_source(p)
    p.add_argument("--policies", default="linucb,linear_thompson,epsilon_greedy",
                   help=f"comma-separated policies among {', '.join(_TUNED)}")
    p.add_argument("--alpha", default="0,0.1,0.3,1.0", help="grid of LinUCB α")
    p.add_argument("--probability-floor", default="0,0.005,0.01,0.02",
                   help="grid of the probability floor")
    p.add_argument("--epsilon", default="0.01,0.05,0.1", help="grid of ε (epsilon_greedy)")
    p.add_argument("--thompson-v", default="0.05,0.1,0.3,0.5",
                   help="grid of the linear Thompson posterior scale v")
    p.add_argument("--arm-features", metavar="FILE", default=None,
                   help="arms with content features (arms.json rows) for hybrid_linucb")
    p.add_argument("--batch-size", type=int, default=100,
                   help="accepted events between policy updates (1: learn every event)")
    p.add_argument("--method", default="auto", choices=("auto", "replay", "rejection"),
                   help="replay needs a uniform log; rejection works with any logger")
    p.add_argument("--write-config", metavar="PATH", default=None,
                   help="write the best setting as a [policy] TOML fragment (with --out: "
                        "DIR/policy.toml as well)")
    p.set_defaults(func=_tune)


def _grid(text: str, option: str) -> list[float]:
    from bandit.errors import InvalidInputError

    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InvalidInputError(option, text, "must be comma-separated numbers") from None
    if not values:
        raise InvalidInputError(option, text, "must list at least one value")
    return values


def tune_grid(policies: Sequence[str], grids: dict[str, list[float]]) -> list[tuple[str, dict[str, float]]]:
    """Every (policy, hyper-parameters) combination of the grids, policy by policy."""
    import itertools

    from bandit.errors import InvalidInputError

    out: list[tuple[str, dict[str, float]]] = []
    for name in policies:
        if name not in _TUNED:
            raise InvalidInputError("--policies", name, f"must be among {list(_TUNED)} for tune")
        keys = _TUNED[name]
        for combo in itertools.product(*(grids[k] for k in keys)):
            out.append((name, dict(zip(keys, combo, strict=True))))
    return out


def _tune(args: argparse.Namespace) -> int:
    from bandit.errors import InvalidInputError
    from simulations.replay import tune
    from simulations.runner import policies_from_arg

    data, report, notes = _load_log(args)
    grids = {"alpha": _grid(args.alpha, "--alpha"),
             "probability_floor": _grid(args.probability_floor, "--probability-floor"),
             "epsilon": _grid(args.epsilon, "--epsilon"),
             "thompson_v": _grid(args.thompson_v, "--thompson-v")}
    combos = tune_grid(policies_from_arg(args.policies), grids)
    df = tune(data, combos, arms=_arm_registry(data, args.arm_features), seed=args.seed,
              batch_size=args.batch_size, method=args.method,
              reward_range=_spec(args).reward_range, min_events=args.min_events)
    for w in sorted({w for ws in df["warnings"] for w in ws}):
        notes.append(w)
    df = df.drop(columns=["warnings"])
    ok = df["value"].notna()
    if not ok.any():
        raise InvalidInputError("log", report.path, "no setting accepted any event in replay")
    best = df[ok].sort_values("value", ascending=False, kind="stable").iloc[0]
    params = {k: float(best[k]) for k in _TUNED[str(best["policy"])]}
    fragment = _toml_fragment(str(best["policy"]), params)
    for path in [args.write_config, str(Path(args.out) / "policy.toml") if args.out else None]:
        if path:
            _write_text(Path(path), fragment)
    records = df.to_dict(orient="records")
    extra = {"events": data.n, "best": {"policy": str(best["policy"]), **params,
                                        "value": float(best["value"]),
                                        "ci_low": float(best["ci_low"]),
                                        "ci_high": float(best["ci_high"])},
             "config_fragment": fragment}
    shown = df.sort_values("value", ascending=False, kind="stable").to_string(index=False)
    table = f"{shown}\n\nbest (replay value; settings whose interval overlaps it are not " \
            f"distinguishable on this log):\n{fragment}"
    labels = [dict(r, label=f"{r['policy']} " + " ".join(
        f"{k}={r[k]:g}" for k in _TUNED[r["policy"]])) for r in records]
    return _finish(args, "tune", report, notes, records, extra, table,
                   _interval_plot(labels, "label", "tune: replay value per setting"))


def _toml_fragment(name: str, params: dict[str, float]) -> str:
    lines = ["[policy]", f'name = "{name}"'] + [f"{k} = {v!r}" for k, v in params.items()]
    return "\n".join(lines) + "\n"


def _write_text(path: Path, text: str) -> None:
    from bandit.errors import InvalidInputError

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as exc:
        raise InvalidInputError("--write-config", str(path), f"cannot be written ({exc.strerror})") from None
