"""``switchboard topics``: list or create Switchboard's Kafka topics (idempotent)."""

from __future__ import annotations

import argparse
from typing import Any

from bandit.config import load_config

__all__ = ["register"]


def _run(args: argparse.Namespace) -> int:
    from kafka import KafkaAdminClient

    from consumers.embedded import create_topics

    cfg = load_config(args.config)
    k = cfg.kafka
    bootstrap = args.bootstrap_servers or k.bootstrap_servers
    topics = [k.decisions_topic, k.feedback_topic, k.engagement_topic, k.dead_letter_topic]
    if args.create:
        create_topics(bootstrap, topics, partitions=args.partitions or k.partitions)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        existing = set(admin.list_topics())
    finally:
        admin.close()
    for t in topics:
        print(f"{t}\t{'present' if t in existing else 'missing'}")
    return 0 if all(t in existing for t in topics) else 1


def register(sub: Any) -> None:
    p = sub.add_parser("topics", help="list (or --create) the Kafka topics Switchboard uses")
    p.add_argument("--create", action="store_true", help="create missing topics")
    p.add_argument("--partitions", type=int, default=None, help="partitions (default kafka.partitions)")
    p.add_argument("--bootstrap-servers", default=None, help="override kafka.bootstrap_servers")
    p.set_defaults(func=_run)
