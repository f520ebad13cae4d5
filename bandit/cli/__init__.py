"""The ``switchboard`` command line.

Subcommands are plugins: each package registers a function under the entry-point
group ``switchboard.commands`` (see ``pyproject.toml``) that adds its sub-parser and
sets ``func``. This keeps ``bandit`` free of imports from the other packages and the
CLI start-up cheap: heavy modules are imported inside each command's ``func``, and
``switchboard COMMAND ...`` loads only that command's plugin (the full list is loaded for
the top-level help and for a name that is not a command, so argparse can list them).

Every option's help shows its default (:class:`HelpFormatter`); a user mistake or a
missing service ends in one error line (secrets redacted), never a traceback — set
``SWITCHBOARD_TRACEBACK=1`` to see one for an unexpected error.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import Any

from bandit.cli.redaction import redact
from bandit.errors import SwitchboardError

__all__ = ["HelpFormatter", "build_parser", "main"]

GROUP = "switchboard.commands"
ENV_TRACEBACK = "SWITCHBOARD_TRACEBACK"
ENV_EXIT_WITH_PARENT = "SWITCHBOARD_EXIT_WITH_PARENT"


class HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to an option's help unless the help already states its
    default; a flag's ``False`` reads "off". Options whose default is None must say in
    words what they default to."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text.lower() or action.default in (None, argparse.SUPPRESS):
            return text
        if not action.option_strings or isinstance(action, argparse._HelpAction | argparse._VersionAction):
            return text
        default = action.default
        shown = ("on" if default else "off") if isinstance(default, bool) else "%(default)s"
        return f"{text} (default: {shown})" if text else f"(default: {shown})"


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``switchboard`` parser with every sub-command, or only ``command``'s when it
    names one (what :func:`main` asks for, so a command does not pay for the others'
    imports)."""
    parser = _Parser(
        prog="switchboard",
        description="Online contextual-bandit experimentation engine for expert LLM routing.",
    )
    parser.add_argument("--config", help="TOML config file (default: $SWITCHBOARD_CONFIG, else "
                                         "built-in defaults)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    plugins = sorted(entry_points(group=GROUP), key=lambda e: e.name)
    if any(ep.name == command for ep in plugins):
        plugins = [ep for ep in plugins if ep.name == command]
    for ep in plugins:
        register = ep.load()
        register(sub)
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    """The sub-command ``argv`` names, or None when the top-level parser must see them all
    (no command yet, or a top-level ``-h`` before it)."""
    words = iter(argv)
    for word in words:
        if word in ("-h", "--help"):
            return None
        if word == "--config":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The sub-command parsers of ``parser`` by name."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _quiet_drivers() -> None:
    """clickhouse-connect logs a warning before raising each connection error it raises;
    the raised error (one line, redacted) is what a person needs to see."""
    logging.getLogger("clickhouse_connect").setLevel(logging.ERROR)


def _redact_logs() -> None:
    """Every log record any command emits has DSN passwords and tokens masked (the
    message; formatted tracebacks are the handler's)."""
    make = logging.getLogRecordFactory()
    if getattr(make, "_switchboard_redacts", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        try:
            text = record.getMessage()
        except (TypeError, ValueError):
            return record
        masked = redact(text)
        if masked != text:
            record.msg, record.args = masked, None
        return record

    factory._switchboard_redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def _exit_with_parent() -> None:
    """Stop (SIGTERM to ourselves) when the process named by ``SWITCHBOARD_EXIT_WITH_PARENT``
    is no longer our parent: the demo's services (``simulations/stack.py``) must not run on
    as orphans when the demo is killed, even by SIGKILL, which no handler of its own sees.

    The variable is removed from our environment so that processes we start do not
    inherit a parent id that is not theirs."""
    want = os.environ.pop(ENV_EXIT_WITH_PARENT, "")
    if not want.isdigit():
        return
    parent = int(want)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _receive_stop_signals() -> None:
    """Unblock SIGINT and SIGTERM: every command stops on one of them, and a blocked mask
    is inherited across ``exec`` from whatever started this process."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


def main(argv: Sequence[str] | None = None) -> int:
    _receive_stop_signals()
    _exit_with_parent()
    _quiet_drivers()
    _redact_logs()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_of(argv))
    args, extra = parser.parse_known_args(argv)
    if extra:
        # a bad flag is reported with the usage of the sub-command it was given to
        sub = subparsers(parser).get(args.command or "")
        (sub or parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        result = args.func(args)
    except SwitchboardError as exc:
        print(f"switchboard {args.command}: error: {redact(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except (OSError, TimeoutError) as exc:
        if os.environ.get(ENV_TRACEBACK):
            raise
        print(f"switchboard {args.command}: error: {redact(_one_line(exc))}", file=sys.stderr)
        return 1
    except Exception as exc:
        if os.environ.get(ENV_TRACEBACK):
            raise
        print(f"switchboard {args.command}: unexpected error: {type(exc).__name__}: "
              f"{redact(_one_line(exc))} (set {ENV_TRACEBACK}=1 for the traceback)", file=sys.stderr)
        return 1
    return int(result or 0)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

