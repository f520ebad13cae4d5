"""The ``switchboard`` command line.

Subcommands are plugins: each package registers a function under the entry-point
group ``switchboard.commands`` (see ``pyproject.toml``) that adds its sub-parser and
sets ``func``. This keeps ``bandit`` free of imports from the other packages and the
CLI start-up cheap: heavy modules are imported inside each command's ``func``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

from bandit.errors import SwitchboardError

__all__ = ["build_parser", "main"]

GROUP = "switchboard.commands"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="switchboard",
        description="Online contextual-bandit experimentation engine for expert LLM routing.",
    )
    parser.add_argument("--config", help="TOML config file (default: $SWITCHBOARD_CONFIG)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        register = ep.load()
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        result = args.func(args)
    except SwitchboardError as exc:
        print(f"switchboard {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
