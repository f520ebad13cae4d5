"""``switchboard serve``: run the allocation server on uvicorn (httptools + uvloop), with
``POST /v1/allocate`` answered inline by :class:`~bandit.serving.http.AllocateFastProtocol`."""

from __future__ import annotations

import argparse
import logging
import signal
from typing import Any

__all__ = ["app_factory", "register", "run", "server_config"]

#: how ``--workers N`` hands each worker process what to serve: a JSON object with the
#: path of the resolved configuration (written by :func:`bandit.config.config_to_toml`,
#: owner-only: it holds the tokens), the ``--arms`` file and the seed
_ENV = "SWITCHBOARD_SERVE_ARGS"


def register(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "serve", help="run the allocation server (POST /v1/allocate)",
        description="Run the allocation server. Config: [serve], [experiment], [policy], "
                    "[kafka] sections; see docs/serving.md.")
    p.add_argument("--host", help="bind address (default serve.host)")
    p.add_argument("--port", type=int, help="port (default serve.port)")
    p.add_argument("--arms", help="JSON list of arms used when no model snapshot exists "
                                  '([{"arm_id": "gpt35", "kind": "baseline"}, ...]; default: none)')
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the allocation RNG (default: fresh OS entropy)")
    p.add_argument("--workers", type=int, default=1,
                   help="uvicorn worker processes (each runs its own publisher and reloader)")
    p.add_argument("--dev", action="store_true",
                   help="development only: accept the tokens dev-token / dev-admin-token when none "
                        "are configured (serve.insecure_dev_tokens); refused beyond loopback")
    p.add_argument("--log-level", default="warning", help="logging level")
    p.set_defaults(func=run)


def server_config(config_path: str | None, host: str | None, dev: bool) -> Any:
    """The configuration a server bound to ``host`` (default ``serve.host``) runs with.

    Tokens are resolved here, at start-up, by :func:`bandit.config.resolve_serve_tokens`:
    none configured is a :class:`~bandit.errors.ConfigError` (one line naming what to
    set), except with ``dev`` on loopback.
    """
    import dataclasses

    from bandit.config import load_config, resolve_serve_tokens

    config = load_config(config_path)
    serve = config.serve
    if dev:
        serve = dataclasses.replace(serve, insecure_dev_tokens=True)
    serve = resolve_serve_tokens(serve, host or serve.host)
    return dataclasses.replace(config, serve=serve)


def _build(config: Any, arms_path: str | None, seed: int | list[int] | None) -> Any:
    from bandit.cli.arms import read_arms_file
    from bandit.serving.app import create_app

    arms = None
    if arms_path:
        arms = read_arms_file(arms_path, feature_dim=config.policy.arm_feature_dim or None)
    return create_app(config, arms=arms, seed=seed)


def _freeze_heap() -> None:
    """Move everything built at start-up (modules, FastAPI, pydantic, the model) out of
    the collector's sight: a full collection then scans only what requests create, so
    a rare generation-2 pass costs microseconds instead of tens of milliseconds of
    stalled requests. Nothing is freed or leaked by it (the objects are long-lived)."""
    import gc

    gc.collect()
    gc.freeze()


def app_factory() -> Any:
    """uvicorn ``--factory`` entry for multi-worker runs: every worker serves the one
    configuration the parent resolved (``SWITCHBOARD_SERVE_ARGS``), tokens included."""
    import json
    import os

    from bandit.config import load_config

    opts = json.loads(os.environ[_ENV])
    seed = opts.get("seed")
    # distinct RNG streams per worker; propensities stay exact either way
    seed = None if seed is None else [int(seed), os.getpid()]
    app = _build(load_config(opts["config"], env={}), opts.get("arms"), seed)
    _freeze_heap()
    return app


def _graceful(_signum: int, _frame: Any) -> None:
    """Signal already handled by uvicorn's graceful shutdown."""


def run(args: argparse.Namespace) -> int:
    import json
    import os

    import uvicorn

    from bandit.config import DEV_TOKEN
    from bandit.serving.http import AllocateFastProtocol

    logging.basicConfig(level=args.log_level.upper())
    config_path = getattr(args, "config", None)
    # resolved before anything binds: no tokens (or weak ones beyond loopback) stop here
    config = server_config(config_path, args.host, args.dev)
    host, port = args.host or config.serve.host, args.port or config.serve.port
    if DEV_TOKEN in config.serve.tokens:
        logging.getLogger(__name__).warning(
            "serve.insecure_dev_tokens: accepting the development tokens on %s (never in production)",
            host)
    common: dict[str, Any] = {"host": host, "port": port, "loop": "uvloop",
                              "http": AllocateFastProtocol,
                              "log_level": args.log_level, "access_log": False}
    # uvicorn shuts down gracefully on SIGTERM/SIGINT and then re-raises the signal to the
    # handler installed before it ran; a no-op handler turns a graceful stop into exit 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _graceful)
    if args.workers > 1:
        import tempfile
        from pathlib import Path

        from bandit.config import config_to_toml

        with tempfile.TemporaryDirectory(prefix="switchboard-serve-") as tmp:  # mode 0700
            resolved = Path(tmp) / "switchboard.toml"
            resolved.touch(mode=0o600)
            resolved.write_text(config_to_toml(config))
            os.environ[_ENV] = json.dumps({"config": str(resolved), "arms": args.arms,
                                           "seed": args.seed})
            uvicorn.run("bandit.cli.serve:app_factory", factory=True, workers=args.workers,
                        **common)
    else:
        app = _build(config, args.arms, args.seed)
        _freeze_heap()
        uvicorn.run(app, **common)
    return 0
