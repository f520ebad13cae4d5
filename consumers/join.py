"""The pure processing core of the learner: decode, join, window, reward, accumulate.

Nothing here touches Kafka, the store or the clock: a :class:`JoinPartition` receives the
raw bytes of one decisions partition and the co-partitioned feedback partition (same
partition number, both keyed by ``conversation_id``) and produces

* an additive statistics delta (``policy.accumulate`` over closed decisions, with each
  decision's logged propensity and eligible arms: what an off-policy learner such as
  Vowpal Wabbit's ``cb_explore_adf`` weighs its update by; the linear policies, which
  regress each arm's reward on its contexts, do not need them),
* rows for the store and dead letters, collected in an :class:`Outbox`,
* the next offsets to read — so state and offsets are snapshotted together.

Event time, not wall-clock time, drives the attribution window, so a replay after a
crash gives exactly the same statistics:

* feedback ``f`` joins decision ``d`` iff ``f.ts_ms <= d.ts_ms + window_ms``; later
  feedback is *late* (stored, flagged, never applied to the policy);
* the partition watermark is ``min(max decision ts, max feedback ts)`` — the two
  topics are fetched independently, so neither may close windows the other has not
  reached; a decision closes when ``watermark > d.ts_ms + window_ms`` and is then
  accumulated with the reward of its merged proxies, or ``reward.default_reward``
  when no feedback joined, under the α's in force at the decision's own ``ts_ms`` (a
  published calibration version from ``calibration``, a :class:`CalibrationSource`, or
  the config's ``[reward]``);
* feedback whose decision is not (yet) known is held until the decisions stream has
  passed its timestamp; then it is late (the decision closed earlier and is in the
  bounded set of recently closed ids) or dead-lettered as feedback for an unknown
  decision.

With each topic in event-time order per partition (how producers write them), the
result does not depend on how the consumer interleaves the two topics.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Final, Protocol, TypeVar

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from bandit.config import LearnerConfig, RewardConfig
from bandit.errors import EventDecodeError, InvalidInputError, SnapshotError
from bandit.events import (
    DecisionEvent,
    DesignEvent,
    EngagementEvent,
    ExposureEvent,
    FeedbackEvent,
    decode_batch,
)
from bandit.formats.calibration import CONFIG_VERSION, CalibrationHistory, CalibrationVersion
from bandit.formats.state import (
    WATERMARK_WINDOW,
    EngagementState,
    JoinState,
    VWDeltaState,
    state_delta,
)
from bandit.linear import RidgeStatistics
from bandit.reward import reward_from_proxies

_E = TypeVar("_E", DecisionEvent, FeedbackEvent, EngagementEvent, ExposureEvent, DesignEvent)
_first: Final = itemgetter(0)
#: what a saved delta's kind is called in errors
_KIND_NAMES: Final = {RidgeStatistics: "ridge (linear policy)", VWDeltaState: "Vowpal Wabbit"}

__all__ = [
    "DECISIONS",
    "DESIGNS",
    "ENGAGEMENT",
    "EXPOSURES",
    "FEEDBACK",
    "ClosedDecision",
    "DeadLetter",
    "EngagementPartition",
    "JoinPartition",
    "LateFeedback",
    "LowWatermark",
    "Outbox",
    "StatisticsModel",
    "event_time_bounds",
]

DECISIONS: Final = "decisions"
FEEDBACK: Final = "feedback"
ENGAGEMENT: Final = "engagement"
#: fallback exposures from the serving tier (keyed by unit_id like engagement, handled by
#: the same engagement partition): stored for cohorts, never learnt
EXPOSURES: Final = "exposures"
#: experiment designs from the allocation servers (keyed by experiment_id, handled by the
#: engagement partition of the same number): stored as design periods, never learnt
DESIGNS: Final = "designs"

#: Recently closed decision ids kept (per partition) to tell late feedback from unknown.
DEFAULT_CLOSED_CAPACITY: Final = 200_000
#: Distinct (retried, rating, length) proxy combinations whose reward is memoised.
_REWARD_MEMO_SIZE: Final = 65_536
#: The watermark ignores this many largest event times of every window: that many outliers
#: among any WATERMARK_WINDOW consecutive events cannot move it.
WATERMARK_OUTLIERS: Final = 7


def event_time_bounds(config: LearnerConfig) -> tuple[int | None, int | None]:
    """``(max_future_ms, max_past_ms)`` around the broker timestamp (None = unbounded)."""
    past = round(config.max_past_skew_s * 1000) if config.max_past_skew_s > 0 else None
    return round(config.max_future_skew_s * 1000), past


class LowWatermark:
    """How far one topic of a partition has got in event time, robust to outliers.

    After each accepted event the candidate is the ``(outliers + 1)``-th largest event time
    among the last ``WATERMARK_WINDOW`` accepted events (slots not yet filled count as -1);
    the watermark is the largest candidate so far. For a stream in event-time order it
    trails the newest event by ``outliers`` events; up to ``outliers`` events stamped in
    the future among any ``WATERMARK_WINDOW`` consecutive ones cannot move it, events
    stamped in the past only hold it back, and it never goes back. The value depends only
    on the sequence of accepted event times, not on how they were batched. ``outliers=0``
    is the plain running maximum (which one future event moves for good).
    """

    __slots__ = ("outliers", "recent", "value")

    def __init__(
        self,
        outliers: int = WATERMARK_OUTLIERS,
        recent: Sequence[int] | None = None,
        value: int = -1,
    ) -> None:
        if not 0 <= outliers < WATERMARK_WINDOW:
            raise ValueError(
                f"watermark outliers must be in [0, {WATERMARK_WINDOW - 1}], got {outliers}"
            )
        self.outliers = outliers
        self.recent: list[int] = (
            [-1] * (WATERMARK_WINDOW - 1) if recent is None else [int(t) for t in recent]
        )
        if len(self.recent) != WATERMARK_WINDOW - 1:
            raise ValueError(
                f"watermark window must hold {WATERMARK_WINDOW - 1} times, got {len(self.recent)}"
            )
        self.value = int(value)

    def observe(self, ts: Sequence[int]) -> None:
        """Take the event times of newly accepted events, in stream order."""
        if not ts:
            return
        arr = np.array([*self.recent, *ts], dtype=np.int64)
        rank = WATERMARK_WINDOW - self.outliers - 1
        if bool((arr[1:] >= arr[:-1]).all()):  # in order: the last window's is the largest
            candidate = int(arr[-self.outliers - 1])
        else:
            windows = sliding_window_view(arr, WATERMARK_WINDOW)
            candidate = int(np.partition(windows, rank, axis=1)[:, rank].max())
        if candidate > self.value:
            self.value = candidate
        self.recent = arr[len(arr) - WATERMARK_WINDOW + 1 :].tolist()


class CalibrationSource(Protocol):
    """Where a join partition gets the published reward α's (:mod:`bandit.formats.calibration`)
    from: :class:`consumers.model.RewardCalibration` follows the file."""

    def in_force(self) -> CalibrationHistory:
        """The history to score closing decisions with (cheap: called per close, not
        per event; the source decides when to re-read the file)."""
        ...

    def applied(self, version: CalibrationVersion) -> None:
        """``version`` scored a closing decision."""
        ...


class StatisticsModel(Protocol):
    """The part of :class:`bandit.policies.base.AdditivePolicy` the core needs."""

    def empty_statistics(self) -> Any: ...

    def accumulate(
        self,
        stats: Any,
        arm_ids: Sequence[str],
        contexts: Any,
        rewards: Any,
        *,
        propensities: Any = None,
        eligible: Sequence[Sequence[str] | None] | None = None,
    ) -> Any: ...

    def statistics_from_arrays(self, arrays: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected message: why, the original bytes, and where it came from.

    ``source`` is ``decisions``, ``feedback`` or ``engagement`` (``offset`` the record's),
    or the store table of a derived row the store refused (``rewards``, ``exposures``;
    ``raw`` is then the row as JSON and ``offset`` -1).
    """

    reason: str
    raw: bytes
    source: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class ClosedDecision:
    """A decision whose attribution window closed; its reward went into the statistics.

    ``reward_version`` names the α's the reward was computed with (``"config"`` or a
    published calibration's id, :mod:`bandit.formats.calibration`); ``retried``,
    ``rating`` and ``conversation_length`` are the merged proxies it was computed from
    (None: not observed), stored so the reward can be recomputed under other α's.
    """

    decision: DecisionEvent
    reward: float
    joined: bool
    n_feedback: int
    late: bool = False
    reward_version: str = "config"
    retried: bool | None = None
    rating: int | None = None
    conversation_length: int | None = None


@dataclass(frozen=True, slots=True)
class LateFeedback:
    """Feedback that arrived after its decision's window: stored, never applied.

    ``closed`` is the decision's already-credited outcome when it had closed (its reward
    row is re-written flagged late); None while the decision is still pending (its
    closing reward row will carry the flag).
    """

    feedback: FeedbackEvent
    closed: ClosedDecision | None


@dataclass(slots=True)
class Outbox:
    """Rows produced since the last flush, for the store and the dead-letter topic."""

    decisions: list[DecisionEvent] = field(default_factory=list)
    feedback: list[FeedbackEvent] = field(default_factory=list)
    late: list[LateFeedback] = field(default_factory=list)
    rewards: list[ClosedDecision] = field(default_factory=list)
    engagement: list[EngagementEvent] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    #: fallback exposures (``kafka.exposures_topic``)
    exposures: list[ExposureEvent] = field(default_factory=list)
    #: experiment designs (``kafka.designs_topic``), in topic order
    designs: list[DesignEvent] = field(default_factory=list)
    #: event_id → (partition, offset, original bytes) of every event above, so that a row
    #: the store refuses can be dead-lettered with the bytes that arrived
    raw: dict[str, tuple[int, int, bytes | None]] = field(default_factory=dict)

    def __len__(self) -> int:
        return (
            len(self.decisions)
            + len(self.feedback)
            + len(self.late)
            + len(self.rewards)
            + len(self.engagement)
            + len(self.dead_letters)
            + len(self.exposures)
            + len(self.designs)
        )

    def drain(self) -> Outbox:
        """Return the current contents and leave this outbox empty."""
        out = Outbox(
            self.decisions,
            self.feedback,
            self.late,
            self.rewards,
            self.engagement,
            self.dead_letters,
            self.exposures,
            self.designs,
            self.raw,
        )
        self.decisions, self.feedback, self.late = [], [], []
        self.rewards, self.engagement, self.dead_letters = [], [], []
        self.exposures, self.designs = [], []
        self.raw = {}
        return out

    def extend(self, other: Outbox) -> None:
        self.decisions += other.decisions
        self.feedback += other.feedback
        self.late += other.late
        self.rewards += other.rewards
        self.engagement += other.engagement
        self.dead_letters += other.dead_letters
        self.exposures += other.exposures
        self.designs += other.designs
        self.raw.update(other.raw)


@dataclass(slots=True)
class _Pending:
    event: DecisionEvent
    retried: bool | None = None
    rating: int | None = None
    length: int | None = None
    n_feedback: int = 0
    rating_ts: int = -1
    late: int = 0

    def merge(self, fb: FeedbackEvent) -> None:
        # Retried at any point means the answer failed; the latest rating (by event time)
        # and the longest observed conversation length are the most informative. Every
        # rule is order-independent, so the merge does not depend on arrival order.
        if fb.retried is not None:
            self.retried = bool(self.retried) or fb.retried
        if fb.rating is not None and (
            fb.ts_ms > self.rating_ts
            or (fb.ts_ms == self.rating_ts and fb.rating > (self.rating or 0))
        ):
            self.rating, self.rating_ts = fb.rating, fb.ts_ms
        if fb.conversation_length is not None:
            self.length = max(self.length or 0, fb.conversation_length)
        self.n_feedback += 1


@dataclass(slots=True)
class Counters:
    consumed: int = 0
    decisions: int = 0
    feedback: int = 0
    joined: int = 0
    late: int = 0
    closed: int = 0
    defaulted: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    out_of_time: int = 0

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__slots__}  # type: ignore[attr-defined]


class _Partition:
    """What every partition's state shares: offsets, counters, an outbox, dead-lettering,
    and the event-time bound against the records' broker timestamps.

    ``max_future_ms`` / ``max_past_ms`` (None = unbounded) bound ``ts_ms`` around the
    broker timestamp of the record that carried the event, when the caller gives one
    (``timestamps`` of :meth:`ingest`; a negative timestamp means the broker gave none).
    The broker stamps records as they arrive and replays carry the same stamps, so the
    bound gives the same answer on every replay.
    """

    partition: int
    offsets: dict[str, int]
    counters: Counters
    outbox: Outbox
    max_future_ms: int | None = None
    max_past_ms: int | None = None

    def _dead(self, reason: str, raw: bytes | None, source: str, offset: int) -> None:
        self.counters.dead_lettered += 1
        self.outbox.dead_letters.append(
            DeadLetter(reason, raw or b"", source, self.partition, offset)
        )

    def _time_error(self, ts_ms: int, broker_ms: int) -> str | None:
        """Why ``ts_ms`` is outside the bound around ``broker_ms``, or None."""
        if broker_ms < 0:
            return None
        if self.max_future_ms is not None and ts_ms > broker_ms + self.max_future_ms:
            return (
                f"ts_ms must be at most {self.max_future_ms / 1000:g} s after the record's "
                f"broker timestamp {broker_ms}, got {ts_ms}"
            )
        if self.max_past_ms is not None and ts_ms < broker_ms - self.max_past_ms:
            return (
                f"ts_ms must be at most {self.max_past_ms / 1000:g} s before the record's "
                f"broker timestamp {broker_ms}, got {ts_ms}"
            )
        return None

    def _decoded(
        self,
        source: str,
        cls: type[_E],
        records: Iterable[tuple[int, bytes | None]],
        timestamps: Sequence[int] | None,
    ) -> Iterator[tuple[int, bytes | None, _E]]:
        """The new records of ``source`` decoded, in offset order, by the one batch decoder
        (:func:`bandit.events.decode_batch`); replayed offsets skipped, undecodable ones
        and those outside the event-time bound dead-lettered with their reason and
        original bytes. ``timestamps`` are the records' broker timestamps, aligned with
        ``records``. The topic's next offset advances before the first event is yielded."""
        records = records if isinstance(records, list) else list(records)
        nxt = self.offsets[source]
        if records and records[0][0] >= nxt and all(
            map(int.__lt__, map(_first, records), map(_first, records[1:]))
        ):
            fresh: Sequence[int] = range(len(records))  # increasing and new: the common case
            nxt = records[-1][0] + 1
        else:
            fresh = []
            for i, offset in enumerate(map(_first, records)):
                if offset >= nxt:  # below it: applied already (a redelivery)
                    fresh.append(i)
                    nxt = offset + 1
        self.offsets[source] = nxt
        self.counters.consumed += len(fresh)
        decoded = decode_batch(cls, [records[i][1] for i in fresh])
        future, past = self.max_future_ms, self.max_past_ms
        bounded = timestamps is not None and (future is not None or past is not None)
        for i, item in zip(fresh, decoded, strict=True):
            offset, raw = records[i][0], records[i][1]
            if isinstance(item, EventDecodeError):
                self._dead(str(item), raw, source, offset)
                continue
            if bounded:
                reason = self._time_error(item.ts_ms, timestamps[i])  # type: ignore[index]
                if reason is not None:
                    self.counters.out_of_time += 1
                    self._dead(reason, raw, source, offset)
                    continue
            yield offset, raw, item


class JoinPartition(_Partition):
    """State of one co-partitioned (decisions, feedback) partition pair.

    ``arm_ids`` are the arms the policy knows; for a decision naming another arm,
    ``arm_known`` (if given) is asked once — it may learn the arm from the shared arm
    registry (:class:`consumers.model.ArmFollower`) — and the arm joins ``arm_ids`` if
    it answers True; otherwise the decision is dead-lettered. The registry is written
    before any server can choose a new arm, so the answer for a given decision does not
    depend on timing and a replay gives the same state. ``dim`` is the context length.
    The statistics delta, pending decisions, held feedback, recently closed ids,
    watermarks, counters and the next offsets form the state that :meth:`to_state` /
    :meth:`from_state` snapshot together.
    """

    def __init__(
        self,
        partition: int,
        model: StatisticsModel,
        *,
        arm_ids: Iterable[str],
        dim: int,
        window_s: float,
        reward: RewardConfig,
        closed_capacity: int = DEFAULT_CLOSED_CAPACITY,
        late_horizon_windows: float = 3.0,
        arm_known: Callable[[str], bool] | None = None,
        max_future_ms: int | None = None,
        max_past_ms: int | None = None,
        watermark_outliers: int = WATERMARK_OUTLIERS,
        calibration: CalibrationSource | None = None,
    ) -> None:
        self.partition = partition
        self.calibration = calibration
        self.max_future_ms = max_future_ms
        self.max_past_ms = max_past_ms
        self.watermark_outliers = watermark_outliers
        self.model = model
        self.arm_ids = frozenset(arm_ids)
        self.arm_known = arm_known
        self.dim = dim
        self.window_ms = round(window_s * 1000)
        self.reward = reward
        self.closed_capacity = closed_capacity
        # a closed decision is remembered (to classify its feedback as late, not unknown)
        # until the watermark passes ts + window * (1 + late_horizon_windows)
        self.closed_horizon_ms = round(self.window_ms * (1.0 + late_horizon_windows))
        self.delta: Any = model.empty_statistics()
        self.offsets: dict[str, int] = {DECISIONS: 0, FEEDBACK: 0}
        self._wm_decisions = LowWatermark(watermark_outliers)
        self._wm_feedback = LowWatermark(watermark_outliers)
        # event ids already applied: those of pending and recently closed decisions, and
        # of feedback in (ts_ms, event_id) arrival order, forgotten with the closed ids
        self._decision_eids: set[str] = set()
        self._feedback_eids: set[str] = set()
        self._feedback_eid_order: deque[tuple[int, str]] = deque()
        self.pending: dict[str, _Pending] = {}
        self._heap: list[tuple[int, int, str]] = []
        self._seq = 0
        # min-heap of (ts_ms, offset, feedback, original bytes): out-of-order feedback must
        # not block newer; (ts_ms, offset) is unique, so the heap never compares the rest
        self.held: list[tuple[int, int, FeedbackEvent, bytes]] = []
        # decision ids of held feedback (a superset: popped entries linger until the next
        # rescan), and whether a decision that some held feedback waits for has arrived
        self._held_ids: set[str] = set()
        self._held_arrived = False
        self.closed: dict[str, ClosedDecision] = {}
        self.counters = Counters()
        self.outbox = Outbox()
        self._rewards: dict[tuple[str, bool | None, int | None, int | None], float] = {}

    # ------------------------------------------------------------------ ingest

    @property
    def wm_decisions(self) -> int:
        """The decisions topic's robust watermark (:class:`LowWatermark`)."""
        return self._wm_decisions.value

    @property
    def wm_feedback(self) -> int:
        """The feedback topic's robust watermark (:class:`LowWatermark`)."""
        return self._wm_feedback.value

    @property
    def watermark(self) -> int:
        return min(self.wm_decisions, self.wm_feedback)

    def ingest(
        self,
        source: str,
        records: Iterable[tuple[int, bytes | None]],
        timestamps: Sequence[int] | None = None,
    ) -> None:
        """Apply raw messages ``(offset, value)`` of ``source`` (decisions or feedback).

        The one ingest path: a fetched batch is decoded at once by the batch decoder
        (:func:`bandit.events.decode_batch`), then every event is applied in offset order
        (a message's outcome never depends on how the messages were batched, tested in
        ``tests/test_learner_ingest.py``). ``timestamps`` (aligned with ``records``) are
        the records' broker timestamps for the event-time bound. Messages below the
        snapshot offset (already applied) are skipped, so a redelivery after a rebalance
        is harmless.
        """
        if source == DECISIONS:
            self._ingest_decisions(records, timestamps)
        elif source == FEEDBACK:
            self._ingest_feedback(records, timestamps)
        else:
            raise ValueError(f"source must be {DECISIONS!r} or {FEEDBACK!r}, got {source!r}")
        self.advance()

    def _duplicate_event(self, event_id: str, raw: bytes | None, source: str, offset: int) -> None:
        """A reused event id: applied once already, so reported and never applied again."""
        self.counters.duplicates += 1
        self._dead(
            f"event_id is a duplicate (an event with this id was already applied), "
            f"got {event_id!r}",
            raw,
            source,
            offset,
        )

    def _ingest_decisions(
        self, records: Iterable[tuple[int, bytes | None]], timestamps: Sequence[int] | None
    ) -> None:
        c = self.counters
        eids, pending, closed = self._decision_eids, self.pending, self.closed
        held_ids = self._held_ids
        dim, part = self.dim, self.partition
        raws = self.outbox.raw
        accepted: list[DecisionEvent] = []
        for offset, raw, ev in self._decoded(DECISIONS, DecisionEvent, records, timestamps):
            eid, did = ev.event_id, ev.decision_id
            if eid in eids:
                self._duplicate_event(eid, raw, DECISIONS, offset)
                continue
            if ev.arm_id not in self.arm_ids and not self._learn_arm(ev.arm_id):
                self._dead(f"arm_id is not a known arm, got {ev.arm_id!r}", raw, DECISIONS, offset)
                continue
            if len(ev.context) != dim:
                self._dead(
                    f"context must have length {dim}, got {len(ev.context)}",
                    raw,
                    DECISIONS,
                    offset,
                )
                continue
            if did in pending or did in closed:
                # A producer retry or a duplicate id: applying it twice would count twice.
                c.duplicates += 1
                self._dead(f"decision_id is a duplicate, got {did!r}", raw, DECISIONS, offset)
                continue
            eids.add(eid)
            pending[did] = _Pending(ev)
            if did in held_ids:
                self._held_arrived = True
            accepted.append(ev)
            raws[eid] = (part, offset, raw)
        if not accepted:
            return
        n = len(accepted)
        c.decisions += n
        ts = [ev.ts_ms for ev in accepted]
        seq, heap = self._seq, self._heap
        entries = zip(ts, range(seq, seq + n), [ev.decision_id for ev in accepted], strict=True)
        if heap:
            heap.extend(entries)
            heapq.heapify(heap)  # pops in the same (ts, seq) order as n heappush calls
        else:
            heap.extend(sorted(entries))
        self._seq = seq + n
        self._wm_decisions.observe(ts)
        self.outbox.decisions.extend(accepted)

    def _learn_arm(self, arm_id: str) -> bool:
        """Ask ``arm_known`` about an arm outside ``arm_ids``; add it if known."""
        if self.arm_known is None or not self.arm_known(arm_id):
            return False
        self.arm_ids = self.arm_ids | {arm_id}
        return True

    def _ingest_feedback(
        self, records: Iterable[tuple[int, bytes | None]], timestamps: Sequence[int] | None
    ) -> None:
        c = self.counters
        eids, order = self._feedback_eids, self._feedback_eid_order
        pending, window, part = self.pending, self.window_ms, self.partition
        joined, raws = self.outbox.feedback, self.outbox.raw
        accepted: list[int] = []
        for offset, raw, fb in self._decoded(FEEDBACK, FeedbackEvent, records, timestamps):
            eid = fb.event_id
            if eid in eids:
                self._duplicate_event(eid, raw, FEEDBACK, offset)
                continue
            eids.add(eid)
            order.append((fb.ts_ms, eid))
            accepted.append(fb.ts_ms)
            pend = pending.get(fb.decision_id)
            if pend is None:
                self._hold(fb, offset, raw)
            elif fb.ts_ms <= pend.event.ts_ms + window:
                pend.merge(fb)
                c.joined += 1
                joined.append(fb)
                raws[eid] = (part, offset, raw)
            else:
                self._resolve(fb, offset, raw)
        c.feedback += len(accepted)
        self._wm_feedback.observe(accepted)

    def _hold(self, fb: FeedbackEvent, offset: int, raw: bytes | None) -> None:
        """Keep feedback whose decision is not (yet) pending until it can be resolved."""
        heapq.heappush(self.held, (fb.ts_ms, offset, fb, raw if raw is not None else b""))
        self._held_ids.add(fb.decision_id)

    def _resolve(self, fb: FeedbackEvent, offset: int, raw: bytes | None) -> None:
        pend = self.pending.get(fb.decision_id)
        if pend is not None:
            if fb.ts_ms <= pend.event.ts_ms + self.window_ms:
                pend.merge(fb)
                self.counters.joined += 1
                self.outbox.feedback.append(fb)
            else:
                pend.late += 1
                self.counters.late += 1
                self.outbox.late.append(LateFeedback(fb, None))
            self.outbox.raw[fb.event_id] = (self.partition, offset, raw)
            return
        closed = self.closed.get(fb.decision_id)
        if closed is not None:
            self.counters.late += 1
            if not closed.late:
                closed = dataclasses.replace(closed, late=True)
                self.closed[fb.decision_id] = closed
            self.outbox.late.append(LateFeedback(fb, closed))
            self.outbox.raw[fb.event_id] = (self.partition, offset, raw)
            return
        self._dead(
            "feedback for unknown decision "
            f"(decision_id {fb.decision_id!r} not seen in this partition)",
            raw,
            FEEDBACK,
            offset,
        )

    # ------------------------------------------------------------------ windows

    def advance(self) -> None:
        """Resolve held feedback the decisions stream has passed, join held feedback
        whose decision has arrived, then close windows."""
        held = self.held
        while held and held[0][0] <= self.wm_decisions:
            _, offset, fb, raw = heapq.heappop(held)
            self._resolve(fb, offset, raw)
        if self._held_arrived:
            self._join_arrived()
        self._close_until(self.watermark)

    def _join_arrived(self) -> None:
        """Join held feedback whose decision is now pending and whose time is inside the
        decision's window.

        Without this, such feedback would wait until the decisions stream passes its own
        timestamp — at the end of a stream, possibly for ever, and unstored. Joining now
        gives the same statistics: the decision cannot close before the decisions
        watermark passes ``d.ts + window >= fb.ts``, which is when the held feedback
        would have joined anyway, and merging proxies is order-independent
        (:meth:`_Pending.merge`). Feedback outside the window stays held and resolves as
        before (late).
        """
        self._held_arrived = False
        pending, window = self.pending, self.window_ms
        keep: list[tuple[int, int, FeedbackEvent, bytes]] = []
        ready: list[tuple[int, int, FeedbackEvent, bytes]] = []
        for item in self.held:
            fb = item[2]
            pend = pending.get(fb.decision_id)
            if pend is not None and fb.ts_ms <= pend.event.ts_ms + window:
                ready.append(item)
            else:
                keep.append(item)
        self._held_ids = {item[2].decision_id for item in keep}
        if ready:
            heapq.heapify(keep)
            self.held = keep
            for _, offset, fb, raw in sorted(ready, key=lambda item: (item[0], item[1])):
                self._resolve(fb, offset, raw)

    def flush_all(self) -> None:
        """Close every pending decision now (end of a bounded replay, not used online)."""
        while self.held:
            _, offset, fb, raw = heapq.heappop(self.held)
            self._resolve(fb, offset, raw)
        self._close_until(np.iinfo(np.int64).max)

    def _close_until(self, watermark: int) -> None:
        heap = self._heap
        limit = watermark - self.window_ms
        if not heap or heap[0][0] >= limit:
            return
        closing: list[_Pending] = []
        while heap and heap[0][0] < limit:
            _, _, did = heapq.heappop(heap)
            closing.append(self.pending.pop(did))
        n = len(closing)
        events = [p.event for p in closing]
        arms = [ev.arm_id for ev in events]
        X = np.array([ev.context for ev in events], dtype=np.float64)
        # The α's in force at each DECISION's event time (the config's before the first
        # published version), so a replay or a restart scores every decision alike.
        history = self.calibration.in_force() if self.calibration is not None else None
        versions = history.versions if history is not None else ()
        scored = [(CONFIG_VERSION, self.reward)] + [(v.id, v.reward) for v in versions]
        if history is not None and versions:
            at = [history.index_at(ev.ts_ms) for ev in events]
        else:
            at = [-1] * n
        # reward_from_proxies is pure and the proxies take few distinct values, so a
        # memo gives bit-identical rewards for a dict lookup
        memo = self._rewards
        values: list[float] = []
        version_ids: list[str] = []
        for p, i in zip(closing, at, strict=True):
            vid, cfg = scored[i + 1]
            version_ids.append(vid)
            if p.n_feedback:
                key = (vid, p.retried, p.rating, p.length)
                reward = memo.get(key)
                if reward is None:
                    reward = float(
                        reward_from_proxies(
                            cfg, retried=p.retried, rating=p.rating, conversation_length=p.length
                        )
                    )
                    if len(memo) < _REWARD_MEMO_SIZE:
                        memo[key] = reward
                values.append(reward)
            else:
                values.append(float(cfg.default_reward))
        newest = max(at)
        if newest >= 0 and self.calibration is not None:
            self.calibration.applied(versions[newest])
        n_feedback = [p.n_feedback for p in closing]
        joined = [k > 0 for k in n_feedback]
        done = list(
            map(
                ClosedDecision,
                events,
                values,
                joined,
                n_feedback,
                [p.late > 0 for p in closing],
                version_ids,
                [p.retried for p in closing],
                [p.rating for p in closing],
                [p.length for p in closing],
            )
        )
        self.outbox.rewards.extend(done)
        self.closed.update(zip([ev.decision_id for ev in events], done, strict=True))
        self.delta = self.model.accumulate(
            self.delta,
            arms,
            X,
            np.array(values, dtype=np.float64),
            propensities=np.array([ev.propensity for ev in events], dtype=np.float64),
            eligible=[ev.eligible or None for ev in events],
        )
        self.counters.closed += n
        self.counters.defaulted += n - sum(joined)
        # closed in event-time order, so the oldest are first; evict by horizon and capacity
        closed = self.closed
        horizon = watermark - self.closed_horizon_ms
        excess = len(closed) - self.closed_capacity
        stale = []
        for k, cd in closed.items():
            if excess <= 0 and cd.decision.ts_ms >= horizon:
                break
            stale.append(k)
            excess -= 1
        eids = self._decision_eids
        for k in stale:
            eids.discard(closed.pop(k).decision.event_id)
        order, fb_eids = self._feedback_eid_order, self._feedback_eids
        while order and (order[0][0] < horizon or len(order) > self.closed_capacity):
            fb_eids.discard(order.popleft()[1])

    # ------------------------------------------------------------------ snapshot

    def to_state(self) -> JoinState:
        """Everything needed to resume exactly here (no outbox)."""
        return JoinState(
            partition=self.partition,
            delta=state_delta(self.delta),
            offsets=dict(self.offsets),
            wm_decisions=(self._wm_decisions.value, *self._wm_decisions.recent),
            wm_feedback=(self._wm_feedback.value, *self._wm_feedback.recent),
            feedback_ids=tuple(self._feedback_eid_order),
            pending=tuple(
                (p.event, p.retried, p.rating, p.length, p.n_feedback, p.rating_ts, p.late)
                for p in self.pending.values()
            ),
            heap=tuple(self._heap),
            seq=self._seq,
            held=tuple(self.held),
            # (a closed decision's context is not needed again: the file leaves it out)
            closed=tuple(
                (c.decision, c.reward, c.joined, c.n_feedback, c.late, c.reward_version,
                 c.retried, c.rating, c.conversation_length)
                for c in self.closed.values()
            ),
            counters=self.counters.as_dict(),
        )

    def load_state(self, state: JoinState) -> None:
        """Replace this partition's state with one from :meth:`to_state`."""
        if not isinstance(state, JoinState) or state.partition != self.partition:
            raise ValueError(f"state is not for join partition {self.partition}")
        self.delta = self._restored_delta(state.delta)
        self.offsets = dict(state.offsets)
        wm_d, wm_f = state.wm_decisions, state.wm_feedback
        self._wm_decisions = LowWatermark(self.watermark_outliers, wm_d[1:], wm_d[0])
        self._wm_feedback = LowWatermark(self.watermark_outliers, wm_f[1:], wm_f[0])
        self._feedback_eid_order = deque(state.feedback_ids)
        self._feedback_eids = {e for _, e in self._feedback_eid_order}
        self.pending = {}
        for ev, *merged in state.pending:
            self.pending[ev.decision_id] = _Pending(ev, *merged)
            # a restored decision may name an arm learnt from the registry before the crash
            if ev.arm_id not in self.arm_ids:
                self._learn_arm(ev.arm_id)
        self._heap = list(state.heap)
        heapq.heapify(self._heap)
        self._seq = state.seq
        self.held = list(state.held)
        self._held_ids = {item[2].decision_id for item in self.held}
        self._held_arrived = any(d in self.pending for d in self._held_ids)
        heapq.heapify(self.held)
        self.closed = {}
        for ev, reward, joined, n_fb, late, version, retried, rating, length in state.closed:
            self.closed[ev.decision_id] = ClosedDecision(
                ev, reward, joined, n_fb, late, version, retried, rating, length
            )
        self._decision_eids = {p.event.event_id for p in self.pending.values()}
        self._decision_eids.update(c.decision.event_id for c in self.closed.values())
        self.counters = Counters(**state.counters)
        self.outbox = Outbox()


    def _restored_delta(self, delta: Any) -> Any:
        """The policy's statistics for a saved delta: ridge statistics are used as they are,
        a Vowpal Wabbit delta is rebuilt by the policy on its model (the prior). A delta of
        another kind than the policy learns, or one its model cannot take, is refused."""
        where = f"state of join partition {self.partition}"
        learns = RidgeStatistics if isinstance(self.delta, RidgeStatistics) else VWDeltaState
        if not isinstance(delta, learns):
            raise SnapshotError(
                f"{where} holds a {_KIND_NAMES[type(delta)]} delta, this learner's policy "
                f"learns {_KIND_NAMES[learns]} deltas: the state directory belongs to "
                "another policy"
            )
        if isinstance(delta, VWDeltaState):
            try:
                return self.model.statistics_from_arrays(delta.to_arrays())
            except InvalidInputError as exc:
                raise SnapshotError(
                    f"{where} holds a Vowpal Wabbit delta this learner's model cannot take "
                    f"({exc})"
                ) from None
        return delta


class EngagementPartition(_Partition):
    """One engagement partition (with the same partition of exposures and designs):
    decode, validate, pass to the store; state is the offsets."""

    def __init__(
        self,
        partition: int,
        *,
        max_future_ms: int | None = None,
        max_past_ms: int | None = None,
    ) -> None:
        self.partition = partition
        self.max_future_ms = max_future_ms
        self.max_past_ms = max_past_ms
        self.offsets: dict[str, int] = {ENGAGEMENT: 0, EXPOSURES: 0, DESIGNS: 0}
        self.counters = Counters()
        self.outbox = Outbox()

    def ingest(
        self,
        source: str,
        records: Iterable[tuple[int, bytes | None]],
        timestamps: Sequence[int] | None = None,
    ) -> None:
        """Apply raw messages ``(offset, value)`` of ``source`` (engagement, exposures or
        designs)."""
        raws = self.outbox.raw
        if source == EXPOSURES:
            for offset, raw, exp in self._decoded(source, ExposureEvent, records, timestamps):
                self.outbox.exposures.append(exp)
                raws[exp.event_id] = (self.partition, offset, raw)
        elif source == ENGAGEMENT:
            for offset, raw, ev in self._decoded(source, EngagementEvent, records, timestamps):
                self.outbox.engagement.append(ev)
                raws[ev.event_id] = (self.partition, offset, raw)
        elif source == DESIGNS:
            for offset, raw, des in self._decoded(source, DesignEvent, records, timestamps):
                self.outbox.designs.append(des)
                raws[des.event_id] = (self.partition, offset, raw)
        else:
            raise ValueError(f"source must be {ENGAGEMENT!r}, {EXPOSURES!r} or {DESIGNS!r}, "
                             f"got {source!r}")

    def advance(self) -> None:
        return None

    def to_state(self) -> EngagementState:
        return EngagementState(self.partition, dict(self.offsets), self.counters.as_dict())

    def load_state(self, state: EngagementState) -> None:
        if not isinstance(state, EngagementState) or state.partition != self.partition:
            raise ValueError(f"state is not for engagement partition {self.partition}")
        # state written before exposures or designs existed has no offset for them: from
        # the start
        self.offsets = {ENGAGEMENT: 0, EXPOSURES: 0, DESIGNS: 0, **state.offsets}
        self.counters = Counters(**state.counters)
        self.outbox = Outbox()
