"""``switchboard dashboard``: run the Streamlit app on 127.0.0.1 (headless, no telemetry)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["build_command", "free_port", "register"]

APP = Path(__file__).with_name("app.py")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "dashboard",
        help="run the Streamlit dashboard",
        description="Serve the experiment dashboard (Streamlit) on HOST:PORT. The store is opened "
        "read-only, so it can run beside the learner that owns an embedded store.",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    p.add_argument("--dsn", help="store DSN (default store.dsn)")
    p.add_argument("--database", help="store database (default store.database)")
    p.add_argument("--snapshots", help="model snapshot folder (default model.dir)")
    p.add_argument("--results", default=None,
                   help="folder of offline runs (default dashboard.results_dir, ./results)")
    p.add_argument("--as-of-ms", type=int, default=None,
                   help="fixed \"now\" of every view, epoch ms (default: the data's clock, the "
                        "latest decision's time; dashboard.as_of_ms)")
    p.set_defaults(func=run)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def build_command(host: str, port: int) -> list[str]:
    """``streamlit run`` through :mod:`dashboards.server`, which imports the pages' heavy
    libraries when the server starts instead of during the first visitor's page load."""
    return [
        sys.executable,
        "-m",
        "dashboards.server",
        "run",
        str(APP),
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
        "--client.toolbarMode",
        "viewer",
        "--global.developmentMode",
        "false",
        # widgets in a neutral blue: the default primary red reads as "bad" next to results
        "--theme.primaryColor",
        "#4e79a7",
    ]


def build_env(args: argparse.Namespace, base: dict[str, str] | None = None) -> dict[str, str]:
    """The app's environment: the flags become the config's own overrides
    (``SWITCHBOARD_<SECTION>__<FIELD>``), so the app reads one validated config."""
    env = dict(os.environ if base is None else base)
    if getattr(args, "config", None):
        env["SWITCHBOARD_CONFIG"] = str(Path(args.config).resolve())
    if args.dsn:
        env["SWITCHBOARD_STORE__DSN"] = args.dsn
    if args.database:
        env["SWITCHBOARD_STORE__DATABASE"] = args.database
    if args.snapshots:
        env["SWITCHBOARD_MODEL__DIR"] = _toml_string(args.snapshots)
    if args.results:
        env["SWITCHBOARD_DASHBOARD__RESULTS_DIR"] = _toml_string(args.results)
    if args.as_of_ms is not None:
        env["SWITCHBOARD_DASHBOARD__AS_OF_MS"] = str(args.as_of_ms)
    # the app imports dashboards/bandit from wherever this process found them
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["STREAMLIT_BROWSER_GATHER_USAGE_STATS"] = "false"
    return env


def _toml_string(value: str) -> str:
    """``value`` as a TOML string: an override is read as TOML first (a path such as
    ``1e3`` or ``true`` must stay a string)."""
    return json.dumps(value)


def run(args: argparse.Namespace) -> int:
    from bandit.config import load_config

    env = build_env(args)
    load_config(None, env)  # fail fast on a bad config or flag, before Streamlit starts
    port = args.port or free_port(args.host)
    print(f"switchboard dashboard: http://{args.host}:{port}", file=sys.stderr, flush=True)
    proc = subprocess.Popen(build_command(args.host, port), env=env)
    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        return 130
