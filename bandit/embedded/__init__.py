"""Embedded infrastructure for the demo, the tests and CI — never used in production.

:mod:`~bandit.embedded.broker` starts the ``tansu`` Kafka-protocol broker (and SeaweedFS
for durable storage) as subprocesses on 127.0.0.1, finds free ports and creates topics, so
``simulations`` and the tests need nothing from ``consumers``.
"""
