"""``switchboard topics``: list or create Switchboard's Kafka topics (idempotent)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bandit.cli.redaction import redact
from bandit.config import load_config

__all__ = ["register"]


def _run(args: argparse.Namespace) -> int:
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    from bandit.embedded.broker import create_topics, switchboard_topics

    cfg = load_config(args.config)
    k = cfg.kafka
    bootstrap = args.bootstrap_servers or k.bootstrap_servers
    topics = switchboard_topics(k)
    timeout_ms = int(args.timeout_s * 1000)
    try:
        if args.create:
            create_topics(bootstrap, topics, partitions=args.partitions or k.partitions,
                          timeout_s=args.timeout_s)
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms,
                                 bootstrap_timeout_ms=timeout_ms)
        try:
            existing = set(admin.list_topics())
        finally:
            admin.close()
    except KafkaError as exc:
        print(f"switchboard topics: error: no Kafka broker answered at {redact(bootstrap)} "
              f"within {args.timeout_s:g} s (kafka.bootstrap_servers; {type(exc).__name__})",
              file=sys.stderr)
        return 1
    for t in topics:
        print(f"{t}\t{'present' if t in existing else 'missing'}")
    return 0 if all(t in existing for t in topics) else 1


def register(sub: Any) -> None:
    p = sub.add_parser("topics", help="list (or --create) the Kafka topics Switchboard uses",
                       description="Print each topic Switchboard uses and whether the broker has "
                       "it; exit 1 if one is missing or no broker answers.")
    p.add_argument("--create", action="store_true", help="create missing topics")
    p.add_argument("--partitions", type=int, default=None,
                   help="partitions of created topics (default kafka.partitions)")
    p.add_argument("--bootstrap-servers", default=None,
                   help="broker addresses (default kafka.bootstrap_servers)")
    p.add_argument("--timeout-s", type=float, default=10.0,
                   help="seconds to wait for the broker")
    p.set_defaults(func=_run)
