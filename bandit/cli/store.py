"""The analytics store as a read-only CLI command opens it (``switchboard lift``,
``switchboard calibrate``): DSN and database from the flags, else the config."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bandit.config import Config
    from bandit.store import Store


def open_read_store(args: argparse.Namespace, cfg: Config, command: str) -> Store | None:
    """The store named by ``--dsn``/``--database`` or ``[store]``, opened read-only; on
    failure one redacted line ``switchboard COMMAND: error: ...`` on stderr and None."""
    from bandit.cli.redaction import redact
    from bandit.store import open_store

    try:
        return open_store(args.dsn or cfg.store.dsn, args.database or cfg.store.database,
                          read_only=True)
    except Exception as exc:
        print(f"switchboard {command}: error: {redact(exc)}", file=sys.stderr)
        return None
