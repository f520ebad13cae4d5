"""``switchboard learn``: run one learner process of the consumer group.

SIGTERM / SIGINT stop it cleanly: flush to the store, snapshot, commit, publish.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import Iterator
from typing import Any

from bandit.config import Config, load_config

__all__ = ["build_learner", "register", "run_learner"]


def build_learner(
    config: Config,
    *,
    arms_path: str | None = None,
    use_store: bool = True,
    bootstrap_servers: str | None = None,
) -> Any:
    """Wire policy, prior, snapshot writer, sink and the Kafka adapter from ``config``."""
    from bandit.formats.paths import calibration_path
    from bandit.formats.registry import RegistryFile
    from bandit.formats.state import StateDir, read_key
    from consumers.join import JoinPartition, event_time_bounds
    from consumers.kafka_adapter import KafkaLearner
    from consumers.metrics import LearnerMetrics
    from consumers.model import (
        ArmFollower,
        RewardCalibration,
        SnapshotWriter,
        load_arms,
        load_or_create_prior,
    )
    from consumers.sink import Sink, StoreSink

    lc = config.learner
    state = StateDir(lc.state_dir, key=read_key(lc.state_hmac_key_file))
    state.check()  # refuse an older release's state before anything is built
    state.remove_stale_temp()
    registry = RegistryFile(config.model.dir)
    policy, arms = load_or_create_prior(config, load_arms(arms_path, config), registry)
    # arms registered at run time (POST /v1/arms) live in the shared registry file
    follower = ArmFollower(arms, registry)
    follower.sync()
    future_ms, past_ms = event_time_bounds(lc)
    metrics = LearnerMetrics(lc.metrics_port or None, lc.metrics_host)
    # published reward α's, applied by each decision's event time (bandit.formats.calibration)
    calibration = RewardCalibration(
        calibration_path(config.model.dir), key=state.key, metrics=metrics
    )

    def make_join(partition: int) -> JoinPartition:
        return JoinPartition(
            partition,
            policy,
            arm_ids=arms.ids(),
            dim=config.policy.dim,
            window_s=lc.attribution_window_s,
            reward=config.reward,
            arm_known=follower.known,
            max_future_ms=future_ms,
            max_past_ms=past_ms,
            calibration=calibration,
        )

    sink: Sink | None = (
        StoreSink.open(config.store.dsn, config.store.database) if use_store else None
    )
    snapshots = SnapshotWriter(config, arms, follower, calibration)
    return KafkaLearner(
        config,
        make_join,
        sink=sink,
        publish=snapshots.write,
        bootstrap_servers=bootstrap_servers,
        metrics=metrics,
    )


def run_learner(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # A stop asked for while the learner is still being built (connecting, loading the
    # prior) is remembered and honoured once it exists: it then shuts down cleanly
    # instead of dying of the signal half-started.
    stop_early: list[int] = []

    def _stop_early(signum: int, _frame: Any) -> None:
        stop_early.append(signum)

    signal.signal(signal.SIGTERM, _stop_early)
    signal.signal(signal.SIGINT, _stop_early)
    from consumers.kafka_adapter import LearnerStalledError

    config = load_config(args.config)
    # kafka-python logs every failed connection attempt (at ERROR); the learner logs one
    # line per backoff step instead
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    learner = build_learner(
        config,
        arms_path=args.arms,
        use_store=not args.no_store,
        bootstrap_servers=args.bootstrap_servers,
    )

    def _stop(signum: int, _frame: Any) -> None:
        learner.stop_event.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if stop_early:
        learner.stop_event.set()
    try:
        with _single_threaded_blas(), _batch_friendly_gc():
            learner.run(max_idle_s=args.max_idle_s)
    except LearnerStalledError as exc:
        print(f"switchboard learn: {exc}", file=sys.stderr)
        return 1
    return 0


#: Allocations (net) between young-generation collections while the learner runs.
LEARNER_GC_GEN0_THRESHOLD = 5000
#: Middle-generation collections before a full one is considered.
LEARNER_GC_GEN2_THRESHOLD = 100


@contextlib.contextmanager
def _batch_friendly_gc() -> Iterator[None]:
    """Run the cyclic GC less often while the learner runs; restore it on exit.

    The learner allocates a few long-lived objects per event (events, pending and
    closed decisions) and, while decoding a chunk, hundreds of short-lived JSON objects
    whose 64-float context lists are expensive to traverse. With CPython's default
    young-generation threshold (700) the collector ran about ten times as often as at
    5 000 over a ``bench/ingest.py`` run (figures in docs/learner.md). Full
    collections, which walk every pending and recently closed decision, wait for 100
    middle-generation ones instead of 10, and the objects that exist before the loop
    starts (modules, config, the prior) are frozen out of every collection. Reference
    counting still frees almost everything at once; only the rare reference cycle waits
    a little longer.
    """
    before = gc.get_threshold()
    gc.set_threshold(
        max(before[0], LEARNER_GC_GEN0_THRESHOLD), before[1], max(before[2], LEARNER_GC_GEN2_THRESHOLD)
    )
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def _single_threaded_blas() -> Any:
    """One BLAS thread: the per-batch GEMMs are small and extra threads only contend
    with the Kafka I/O thread (accumulate measured faster on 2 cores; docs/learner.md)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional (comes with scikit-learn)
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def register(sub: Any) -> None:
    p = sub.add_parser("learn", help="run a streaming learner (Kafka consumer group member)")
    p.add_argument(
        "--arms",
        default=None,
        help="JSON list of arms (needed on a first start unless a model snapshot or the "
        "shared arms registry names arms; default: none)",
    )
    p.add_argument("--no-store", action="store_true", help="do not write to the analytics store")
    p.add_argument("--bootstrap-servers", default=None,
                   help="broker addresses (default kafka.bootstrap_servers)")
    p.add_argument(
        "--max-idle-s",
        type=float,
        default=None,
        help="stop after this many seconds without messages (exit status 1 if the broker "
        "never answered, no partition was assigned or the final checkpoint failed; "
        "default: run until SIGTERM)",
    )
    p.add_argument("--log-level", default="info", help="logging level")
    p.set_defaults(func=run_learner)
