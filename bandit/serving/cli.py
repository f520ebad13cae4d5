"""``switchboard serve``: run the allocation server on uvicorn (httptools + uvloop)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "serve", help="run the allocation server (POST /v1/allocate)",
        description="Run the allocation server. Config: [serve], [experiment], [policy], "
                    "[kafka] sections; see docs/serving.md.")
    p.add_argument("--host", help="bind address (default serve.host)")
    p.add_argument("--port", type=int, help="port (default serve.port)")
    p.add_argument("--arms", help="JSON list of arms used when no model snapshot exists "
                                  '([{"arm_id": "gpt35", "kind": "baseline"}, ...])')
    p.add_argument("--seed", type=int, default=None, help="seed of the allocation RNG")
    p.add_argument("--log-level", default="warning")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import uvicorn

    from bandit.arms import ArmRegistry
    from bandit.config import load_config
    from bandit.errors import ConfigError
    from bandit.serving.app import create_app

    logging.basicConfig(level=args.log_level.upper())
    config = load_config(getattr(args, "config", None))
    arms = None
    if args.arms:
        try:
            rows = json.loads(Path(args.arms).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError("arms", args.arms, f"is not a readable JSON list ({exc})") from None
        fdim = config.policy.arm_feature_dim or None
        arms = list(ArmRegistry.from_list(rows, feature_dim=fdim))
    app = create_app(config, arms=arms, seed=args.seed)
    uvicorn.run(app, host=args.host or config.serve.host, port=args.port or config.serve.port,
                loop="uvloop", http="httptools", log_level=args.log_level, access_log=False)
    return 0
