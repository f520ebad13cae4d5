"""Where the learner's rows go: a small :class:`Sink` protocol and the store-backed sink.

The pure core fills an :class:`~consumers.join.Outbox`; the adapter hands it to a sink
before snapshotting and committing. Store inserts are idempotent on event id, so a
replay after a crash writes nothing twice.
"""

from __future__ import annotations

from typing import Any, Protocol

from consumers.join import Outbox

__all__ = ["MemorySink", "Sink", "StoreSink"]


class Sink(Protocol):
    def write(self, outbox: Outbox) -> None:
        """Persist every row of ``outbox`` (raise to have the same rows retried later)."""
        ...

    def close(self) -> None: ...


class MemorySink:
    """Keeps everything in lists (tests, benchmarks without a store)."""

    def __init__(self) -> None:
        self.written = Outbox()

    def write(self, outbox: Outbox) -> None:
        self.written.extend(outbox)

    def close(self) -> None:
        return None


class StoreSink:
    """Writes decisions, feedback, rewards, exposures and engagement to ``bandit.store``."""

    def __init__(self, store: Any) -> None:
        self.store = store

    @classmethod
    def open(cls, dsn: str, database: str | None = None) -> StoreSink:
        from bandit.store import open_store

        return cls(open_store(dsn, database or "switchboard"))

    def write(self, outbox: Outbox) -> None:
        from bandit.store import RewardRow

        s = self.store
        decisions = outbox.decisions
        if decisions:
            s.insert_decisions(decisions)
            # exposures straight from the decision columns (no per-row objects)
            s.insert_exposure_columns(
                unit_id=[d.unit_id for d in decisions],
                experiment_id=[d.experiment_id for d in decisions],
                variant=[d.variant for d in decisions],
                ts_ms=[d.ts_ms for d in decisions],
            )
        feedback = outbox.feedback + [lf.feedback for lf in outbox.late]
        if feedback:
            s.insert_feedback(feedback)
        # One reward row per decision (a replay overwrites): late feedback re-writes the
        # closed decision's row with the same credited reward, flagged late.
        closed = list(outbox.rewards) + [lf.closed for lf in outbox.late if lf.closed]
        if closed:
            s.insert_rewards(
                [
                    RewardRow(
                        decision_id=c.decision.decision_id,
                        experiment_id=c.decision.experiment_id,
                        variant=c.decision.variant,
                        arm_id=c.decision.arm_id,
                        unit_id=c.decision.unit_id,
                        reward=c.reward,
                        propensity=c.decision.propensity,
                        joined=c.joined,
                        late=c.late,
                        ts_ms=c.decision.ts_ms,
                        policy_version=c.decision.policy_version,
                    )
                    for c in closed
                ]
            )
        if outbox.engagement:
            s.insert_engagement(outbox.engagement)

    def close(self) -> None:
        close = getattr(self.store, "close", None)
        if close is not None:
            close()
