"""File formats on disk, shared by the learner, the servers and the tools.

What belongs here: the byte layout of every file one process writes and another reads —
model snapshots (:mod:`~bandit.formats.snapshot`), the arm-registry file
(:mod:`~bandit.formats.registry`), the learner's per-partition state
(:mod:`~bandit.formats.state`) — and :mod:`~bandit.formats.paths`, the one place that
names those files. No network I/O and no Kafka or store code.
"""
