"""``switchboard demo``: the whole loop on the embedded stack with a compressed clock.

A simulated chat platform (:mod:`simulations.world`, scenario ``lift68`` by default) drives
real traffic: simulated users chat, the traffic generator POSTs each conversation's
context to ``/v1/allocate`` on the real allocation server, turns the world's proxies for
the served arm into feedback events and the users' daily activity into engagement events
on the real (tansu) broker. The real learner joins, learns and publishes snapshots the
server hot-reloads; ClickHouse (chdb) holds the cohorts; the dashboard reads them. Event
time is simulated (``ts_ms`` runs ``seconds_per_day`` real seconds per simulated day).

Ground truth: the world knows every served arm's true expected reward, so the *expected*
day-30 engagement of every user given what they were served is known; the demo reports
the resulting true lift of the bandit variant over GPT-3.5 next to the lift table the
store and the stats module estimate from the sampled events.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import signal
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bandit.config import (
    Config,
    DashboardConfig,
    ExperimentConfig,
    KafkaConfig,
    LearnerConfig,
    ModelConfig,
    PolicyConfig,
    ServeConfig,
    StoreConfig,
    VariantConfig,
    config_to_toml,
)
from bandit.errors import InvalidInputError

if TYPE_CHECKING:
    import numpy as np

    from simulations.world import World

# numpy, scipy and the simulated world are imported where the traffic runs, not here:
# ``switchboard --help`` imports this module to register the command.

__all__ = ["DemoResult", "TrafficGenerator", "TrafficStats"]

DAY_MS = 86_400_000
#: how long the traffic generator waits for one allocation's answer before counting it
#: failed (generous: correctness must not depend on how busy the machine is)
REQUEST_READ_TIMEOUT_S = 120.0

#: 2026-01-05 00:00 UTC — simulated calendar start
EPOCH_MS = 1_767_571_200_000


@dataclass
class TrafficStats:
    decisions: int = 0
    feedback: int = 0
    engagement: int = 0
    failed_requests: int = 0
    #: why the latest failed request failed (status and body, or the exception)
    last_failure: str = ""
    day: int = 0
    started: float = dataclasses.field(default_factory=time.monotonic)
    variant_counts: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def events(self) -> int:
        return self.decisions + self.feedback + self.engagement

    def rate(self) -> float:
        return self.events / max(time.monotonic() - self.started, 1e-9)


@dataclass(frozen=True)
class DemoResult:
    """What a demo run did. ``days`` were configured, ``days_simulated`` ran (fewer only
    when the run was interrupted); every figure is as of the end of the last simulated day
    (``as_of_ms``)."""

    days: int
    days_simulated: int
    as_of_ms: int
    wall_s: float
    users: int
    decisions: int
    feedback: int
    engagement: int
    failed_requests: int
    #: why the latest failed request failed ("" when none did)
    last_failure: str
    true_lift_day30: float
    oracle_planted_lift: float
    lift_table: list[dict[str, Any]]
    exit_codes: dict[str, int]
    snapshot_versions: list[str]
    store_counts: dict[str, int]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, default=str)


class TrafficGenerator:
    """Simulated users of the world, chatting day by day against the real server.

    ``users`` join over the first ``join_days`` days; each simulated day, every user who
    is active (per the world's retention curve given the quality they were served) has
    ``conversations_per_day`` conversations.
    """

    def __init__(
        self,
        world: World,
        *,
        server_url: str,
        token: str,
        experiment_id: str,
        users: int,
        seed: int,
        join_days: int = 3,
        conversations_per_day: int = 1,
        concurrency: int = 16,
    ) -> None:
        import numpy as np

        self.world = world
        self.server_url = server_url
        self.token = token
        self.experiment_id = experiment_id
        self.n_users = users
        self.rng = np.random.default_rng(seed)
        self.conversations_per_day = conversations_per_day
        self.concurrency = concurrency
        self.unit_ids = [f"u{i:06d}" for i in range(users)]
        self.prefs = world.sample_users(self.rng, users)
        self.base = self.rng.gamma(4.0, 300.0 / 4.0, size=users)
        self.activity = self.rng.normal(1.5, 0.5, size=users)
        self.join_day = self.rng.integers(0, join_days, size=users)
        self.qsum = np.zeros(users)
        self.qcount = np.zeros(users)
        self.variant = np.array([""] * users, dtype=object)
        self.expected_day30 = np.full(users, np.nan)
        self.stats = TrafficStats()
        self.arm_index = {a.arm_id: i for i, a in enumerate(world.arms)}

    # ------------------------------------------------------------------ one day
    async def run_day(self, day: int, client: Any, send: Callable[[str, bytes, bytes], None]) -> None:
        """Allocate, emit feedback and engagement for simulated ``day``."""
        import numpy as np

        from bandit.events import FeedbackEvent, encode_event

        self.stats.day = day
        present = np.flatnonzero(self.join_day <= day)
        day_start = EPOCH_MS + day * DAY_MS
        for c in range(self.conversations_per_day):
            x, topics = self.world.sample_conversations(self.rng, self.prefs[present])
            offsets = np.sort(self.rng.integers(0, DAY_MS // 2, size=len(present)))
            sem = asyncio.Semaphore(self.concurrency)
            bodies = [
                {
                    "unit_id": self.unit_ids[u],
                    "conversation_id": f"{self.unit_ids[u]}-d{day}-c{c}",
                    "embedding": x[j].tolist(),
                    "experiment_id": self.experiment_id,
                    "ts_ms": int(day_start + offsets[j]),
                }
                for j, u in enumerate(present)
            ]
            outs = await asyncio.gather(*(self._allocate(client, b, sem) for b in bodies))
            arms = np.full(len(present), -1)
            decision_ids: list[str | None] = [None] * len(present)
            for j, out in enumerate(outs):
                if out is None:
                    continue
                arms[j] = self.arm_index.get(out["arm_id"], -1)
                self.variant[present[j]] = out["variant"]
                counts = self.stats.variant_counts
                counts[out["variant"]] = counts.get(out["variant"], 0) + 1
                decision_ids[j] = out["decision_id"]
                self.stats.decisions += 1
            ok = arms >= 0
            if not ok.any():
                continue
            rows = np.flatnonzero(ok)
            prox = self.world.sample_proxies(self.rng, topics[rows], arms[rows], day)
            mu = self.world.expected_rewards(topics[rows], day)[np.arange(len(rows)), arms[rows]]
            users_ok = present[rows]
            self.qsum[users_ok] += mu
            self.qcount[users_ok] += 1
            for k, j in enumerate(rows):
                u = int(present[j])
                rating = int(prox.rating[k])
                fb = FeedbackEvent(
                    event_id=uuid.uuid4().hex,
                    decision_id=str(decision_ids[j]),
                    ts_ms=int(day_start + offsets[j] + 60_000),
                    unit_id=self.unit_ids[u],
                    conversation_id=f"{self.unit_ids[u]}-d{day}-c{c}",
                    retried=bool(prox.retried[k]),
                    rating=rating if rating > 0 else None,
                    conversation_length=int(prox.conversation_length[k]),
                )
                send("feedback", fb.key, encode_event(fb))
                self.stats.feedback += 1
        self._engagement(day, present, day_start, send)

    async def _allocate(self, client: Any, body: dict[str, Any],
                        sem: asyncio.Semaphore) -> dict[str, Any] | None:
        async with sem:
            try:
                resp = await client.post("/v1/allocate", json=body)
            except Exception as exc:
                self.stats.failed_requests += 1
                self.stats.last_failure = f"{type(exc).__name__}: {exc}"
                return None
        if resp.status_code != 200:
            self.stats.failed_requests += 1
            self.stats.last_failure = f"HTTP {resp.status_code}: {resp.text[:200]}"
            return None
        out: dict[str, Any] = resp.json()
        return out

    def _engagement(self, day: int, present: np.ndarray, day_start: int,
                    send: Callable[[str, bytes, bytes], None]) -> None:
        import numpy as np
        from scipy.special import expit

        from bandit.events import EngagementEvent, encode_event

        w, sc = self.world, self.world.scenario
        served = present[self.qcount[present] > 0]
        if len(served) == 0:
            return
        q = self.qsum[served] / self.qcount[served]
        rel_day = day - self.join_day[served]
        mean = w.day_engagement_mean(self.base[served], self.activity[served], q, rel_day)  # type: ignore[arg-type]
        p_active = expit(self.activity[served] - rel_day / sc.retention_tau_days
                         + sc.retention_beta * w.engagement_scale * (q - w.reference_quality))
        at30 = rel_day == 30
        self.expected_day30[served[at30]] = mean[at30]
        active = self.rng.random(len(served)) < p_active
        cond = mean / np.maximum(p_active, 1e-12)
        screen = self.rng.gamma(2.0, cond / 2.0)
        msgs = self.rng.poisson(cond / 30.0)
        for k in np.flatnonzero(active):
            u = int(served[k])
            ev = EngagementEvent(
                event_id=uuid.uuid4().hex,
                ts_ms=int(day_start + DAY_MS // 2 + int(self.rng.integers(0, DAY_MS // 4))),
                unit_id=self.unit_ids[u],
                screen_time_s=float(min(screen[k], 86_400.0)),
                messages=int(min(msgs[k], 100_000)),
            )
            send("engagement", ev.key, encode_event(ev))
            self.stats.engagement += 1

    def true_lift(self, treatment: str, control: str) -> float:
        """Expected day-30 screen time lift of ``treatment`` over ``control`` given the arms
        each user was actually served (the simulator's ground truth of this run)."""
        import numpy as np

        done = ~np.isnan(self.expected_day30)
        t = self.expected_day30[done & (self.variant == treatment)]
        c = self.expected_day30[done & (self.variant == control)]
        if len(t) == 0 or len(c) == 0:
            return float("nan")
        return float(t.mean() / c.mean() - 1.0)


def demo_world(scenario: str, seed: int) -> World:
    from simulations.world import make_world

    return make_world(scenario, seed)


# --------------------------------------------------------------------------- orchestration


@dataclass(frozen=True)
class DemoOptions:
    """``duration_s`` None = interactive (keep serving until Ctrl-C after the last day)."""

    workdir: Path
    scenario: str = "lift68"
    #: the bearer tokens the demo configures (and prints): no built-in default tokens
    users: int = 800
    days: int = 36
    seconds_per_day: float = 0.5
    seed: int = 20261123
    duration_s: float | None = None
    dashboard: bool = True
    partitions: int = 2
    token: str = "demo-token"
    admin_token: str = "demo-admin-token"
    experiment_id: str = "demo"


def _config(opts: DemoOptions, world: World, bootstrap: str, paths: Any, server_port: int,
            metrics_port: int) -> Config:
    """The one config every demo service reads (written with :func:`config_to_toml`)."""
    return Config(
        policy=PolicyConfig(name="linucb", dim=world.dim, alpha=0.3, probability_floor=0.01,
                            fixed_arm="gpt35"),
        experiment=ExperimentConfig(
            id=opts.experiment_id, salt=f"demo-{opts.seed}", control="gpt35", guardrails=(),
            variants=(VariantConfig("gpt35", 0.5, "fixed", ("baseline",)),
                      VariantConfig("bandit", 0.5, "linucb", ("expert", "baseline")))),
        kafka=KafkaConfig(bootstrap_servers=bootstrap, partitions=opts.partitions,
                          session_timeout_ms=6000),
        store=StoreConfig(dsn=f"chdb://{paths.chdb}"),
        learner=LearnerConfig(attribution_window_s=3600.0, commit_interval_s=1.0,
                              publish_interval_s=1.0, state_dir=str(paths.learner_state),
                              metrics_port=metrics_port),
        # the simulated calendar is in the past: accept its decision times
        serve=ServeConfig(port=server_port, tokens=(opts.token,),
                          admin_tokens=(opts.admin_token,), spill_dir=str(paths.spill),
                          reload_interval_s=0.5, max_decision_skew_s=315360000.0),
        model=ModelConfig(dir=str(paths.snapshots)),
        # ... and the dashboard measures freshness against the data's own clock
        dashboard=DashboardConfig(clock="simulated"),
    )


def _metric(url: str, name: str) -> float:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith(name + " ") or line.startswith(name + "{"):
                    return float(line.rsplit(" ", 1)[1])
    except OSError:
        return float("nan")
    return 0.0


def run_demo(opts: DemoOptions, status: Callable[[str], None] | None = None) -> DemoResult:
    """Run the whole loop; return what happened. ``status`` receives live one-line updates."""
    import httpx
    from kafka import KafkaProducer

    from bandit.config import load_config
    from bandit.embedded.broker import free_port
    from simulations.stack import Stack, StackPaths
    from simulations.world import planted_lift

    say = status or (lambda _line: None)
    if opts.days < 1:
        raise InvalidInputError("days", opts.days, "must be >= 1")
    if opts.users < 2:
        raise InvalidInputError("users", opts.users, "must be >= 2")
    if opts.seconds_per_day < 0:
        raise InvalidInputError("seconds_per_day", opts.seconds_per_day, "must be >= 0")
    if opts.duration_s is not None and opts.duration_s <= 0:
        raise InvalidInputError("duration", opts.duration_s, "must be > 0 seconds")
    world = demo_world(opts.scenario, opts.seed)
    paths = StackPaths(opts.workdir)
    stack = Stack(paths, "", with_dashboard=opts.dashboard)
    metrics_port = free_port()
    t0 = time.monotonic()
    result_codes: dict[str, int] = {}
    versions: list[str] = []
    gen: TrafficGenerator | None = None
    days_done = 0
    try:
        say("starting tansu broker")
        config_probe = None
        from bandit.embedded.broker import switchboard_topics

        # every topic the config below names (its Kafka section keeps the default names)
        bootstrap = stack.start_broker(switchboard_topics(KafkaConfig()), opts.partitions)
        stack.config_text = config_to_toml(
            _config(opts, world, bootstrap, paths, stack.server_port, metrics_port))
        stack.write_config()
        config_probe = load_config(paths.config, env={})
        # learner and server start with the day-0 arms only; experts arriving later are
        # registered through the server's /v1/arms, as in production, and reach the
        # learner through the shared arms registry next to the model snapshot
        day0 = [a for a in world.arms if a.arrive_day == 0]
        day0_file = paths.root / "arms-day0.json"
        day0_file.write_text(json.dumps([
            {"arm_id": a.arm_id, "kind": "baseline" if a.kind == "baseline" else "expert",
             "features": None, "active": True} for a in day0]))
        say("starting learner, allocation server" + (", dashboard" if opts.dashboard else ""))
        stack.start("learner", "learn", "--arms", str(day0_file))
        server = stack.start("server", "serve", "--arms", str(day0_file), "--seed", str(opts.seed))
        if opts.dashboard:
            # the calendar is simulated (and lies in the past): the config's dashboard.clock
            # makes it measure freshness against the data's own clock, not the wall clock
            dash = stack.start("dashboard", "dashboard", "--port", str(stack.dashboard_port))
        stack.wait_http(stack.server_url + "/healthz", 120, server)
        if opts.dashboard:
            stack.wait_http(stack.dashboard_url + "/_stcore/health", 120, dash)
        say(f"allocation API {stack.server_url} (docs {stack.server_url}/docs)"
            + (f" · dashboard {stack.dashboard_url}" if opts.dashboard else ""))
        say(f"experiment id {opts.experiment_id} · API token {opts.token} · admin token "
            f"{opts.admin_token} · config {paths.config}")
        producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all",
                                 retries=5, max_in_flight_requests_per_connection=1)
        topics = {"feedback": config_probe.kafka.feedback_topic,
                  "engagement": config_probe.kafka.engagement_topic}

        def send(kind: str, key: bytes, value: bytes) -> None:
            producer.send(topics[kind], key=key, value=value)

        gen = TrafficGenerator(world, server_url=stack.server_url, token=opts.token,
                               experiment_id=opts.experiment_id, users=opts.users, seed=opts.seed)
        headers = {"Authorization": f"Bearer {opts.token}"}
        admin = {"Authorization": f"Bearer {opts.admin_token}"}

        stop_requested = False

        def request_stop() -> None:
            nonlocal stop_requested
            stop_requested = True

        async def traffic() -> None:
            nonlocal days_done
            assert gen is not None
            # Ctrl-C / SIGTERM end the traffic after the day in progress (every service is
            # then stopped as after the last day); a signal never lands inside a request
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.add_signal_handler(sig, request_stop)
            limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
            # a slow answer is not a failed one: on busy cores a request may queue behind a
            # model reload for seconds, so only a server that stops answering fails it
            timeout = httpx.Timeout(connect=10.0, read=REQUEST_READ_TIMEOUT_S, write=30.0,
                                    pool=None)
            async with httpx.AsyncClient(base_url=stack.server_url, headers=headers,
                                         timeout=timeout, limits=limits) as client:
                for day in range(opts.days):
                    if stop_requested:
                        break
                    day_t = time.monotonic()
                    for a in world.arms:  # experts arrive and retire at run time
                        if a.arrive_day == day and day > 0:
                            r = await client.post("/v1/arms", headers=admin, json={
                                "arm_id": a.arm_id, "kind": "expert"})
                            if r.status_code != 201:
                                raise RuntimeError(f"registering {a.arm_id}: {r.text}")
                        if a.retire_day == day:
                            r = await client.delete(f"/v1/arms/{a.arm_id}", headers=admin)
                            if r.status_code != 200:
                                raise RuntimeError(f"retiring {a.arm_id}: {r.text}")
                    await gen.run_day(day, client, send)
                    producer.flush()
                    days_done = day + 1
                    stack.check_alive()
                    try:
                        health = (await client.get("/healthz")).json()
                        versions.append(str(health.get("model", {}).get("policy_version", "")))
                    except Exception:
                        pass
                    truth = gen.true_lift("bandit", "gpt35")
                    truth_s = "n/a before day 30" if math.isnan(truth) else f"{truth:+.1%}"
                    model = versions[-1] if versions else "?"
                    say(f"day {day + 1}/{opts.days} · {gen.stats.rate():,.0f} events/s · "
                        f"decisions {gen.stats.decisions:,} · model {model} · "
                        f"day-30 lift (simulator truth) {truth_s}"
                        + (f" · failed requests {gen.stats.failed_requests:,} (last: "
                           f"{gen.stats.last_failure})" if gen.stats.failed_requests else ""))
                    rest = _pace(opts, day, time.monotonic() - t0, time.monotonic() - day_t)
                    if rest > 0:
                        await asyncio.sleep(rest)

        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            asyncio.run(traffic())
        except KeyboardInterrupt:
            stop_requested = True
        finally:
            for sig, handler in handlers.items():  # the loop's handlers left with it
                signal.signal(sig, handler)
        # interrupted: keep what was simulated, every figure as of the last full day
        interrupted = stop_requested or days_done < opts.days
        if interrupted:
            say(f"interrupted after {days_done} of {opts.days} simulated days")
        producer.flush()
        producer.close()
        say("waiting for the learner to drain")
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        last, stable_since = -1.0, time.monotonic()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            consumed = _metric(url, "switchboard_learner_consumed_total")
            if consumed != last:
                last, stable_since = consumed, time.monotonic()
            elif time.monotonic() - stable_since > 3.0:
                break
            time.sleep(0.5)
        if opts.duration_s is None and not interrupted:
            where = f"dashboard {stack.dashboard_url} · " if opts.dashboard else ""
            say(f"done simulating {days_done} days; {where}Ctrl-C to stop")
            try:
                while True:
                    time.sleep(1.0)
                    stack.check_alive()
            except KeyboardInterrupt:
                pass
        say("stopping the services")
        result_codes = stack.stop(say)
    except BaseException:
        stack.stop()
        raise
    # the learner has exited: this process may now open the embedded store
    from bandit.store import open_store

    say("reading the final figures from the store")
    as_of = EPOCH_MS + days_done * DAY_MS
    store = open_store(f"chdb://{paths.chdb}")
    try:
        counts = {t: store.count(t) for t in ("decisions", "feedback", "rewards", "engagement")}
        rows = final_lift_rows(store, load_config(paths.config, env={}).experiment, as_of)
    finally:
        store.close()
    assert gen is not None
    if days_done < opts.days:
        say(f"figures as of the end of simulated day {days_done} of {opts.days}")
    return DemoResult(
        days=opts.days, days_simulated=days_done, as_of_ms=as_of,
        wall_s=round(time.monotonic() - t0, 1), users=opts.users, decisions=gen.stats.decisions,
        feedback=gen.stats.feedback, engagement=gen.stats.engagement,
        failed_requests=gen.stats.failed_requests, last_failure=gen.stats.last_failure,
        true_lift_day30=gen.true_lift("bandit", "gpt35"),
        oracle_planted_lift=planted_lift(world),
        lift_table=rows, exit_codes=result_codes, snapshot_versions=versions, store_counts=counts,
    )


def _pace(opts: DemoOptions, day: int, elapsed_s: float, day_s: float) -> float:
    """Seconds to sleep after simulated ``day`` (0-based) took ``day_s`` of real time.

    The simulated calendar never depends on the machine: every configured day is
    simulated. Pacing is ``seconds_per_day`` per day, shrunk so that the remaining days fit
    in what is left of the ``duration_s`` budget (keeping a quarter of it for the learner to
    drain and the final figures); once the budget is spent the remaining days run unpaced.
    """
    rest = opts.seconds_per_day - day_s
    if opts.duration_s is None:
        return max(rest, 0.0)
    days_left = opts.days - day - 1
    if days_left <= 0:
        return 0.0
    budget_left = 0.75 * opts.duration_s - elapsed_s
    return max(min(rest, budget_left / days_left), 0.0)


def final_lift_rows(store: Any, experiment: Any, as_of_ms: int,
                    metric: str = "day30_engagement") -> list[dict[str, Any]]:
    """The demo's lift table as of ``as_of_ms``; never an exception: a cohort too young or
    too degenerate for a lift gives one row per variant that says so."""
    from bandit.analysis.lift import lift_table
    from bandit.errors import SwitchboardError

    try:
        table = lift_table(store, experiment, metric, as_of_ms=as_of_ms, cuped=False)
        rows: list[dict[str, Any]] = table.to_dict(orient="records")
    except (SwitchboardError, ZeroDivisionError, FloatingPointError) as exc:
        return [{"variant": v.name, "control": experiment.control, "metric": metric,
                 "verdict": f"no lift yet: {exc}"}
                for v in experiment.variants if v.name != experiment.control]
    return rows


def register(sub: Any) -> None:
    d = DemoOptions(workdir=Path("."))
    p = sub.add_parser(
        "demo", help="run the whole loop on the embedded stack (simulated traffic)",
        description="Simulated users chat against the real allocation server, learner, broker "
        "and store; the dashboard shows the experiment live. The simulated calendar does not "
        "depend on the machine's speed: every configured day is simulated.")
    p.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                   help="headless run with a wall-clock budget: pace the days to fit it (or "
                        "finish unpaced), print the lift table and exit (default: interactive, "
                        "keep serving until Ctrl-C)")
    p.add_argument("--headless", action="store_true", help="no dashboard (default: off)")
    p.add_argument("--scenario", default=d.scenario,
                   help=f"simulated world (simulations.world scenarios; default {d.scenario})")
    p.add_argument("--users", type=int, default=d.users, help=f"simulated users (default {d.users})")
    p.add_argument("--days", type=int, default=d.days,
                   help=f"simulated days (default {d.days}; day-30 lift needs >= 33)")
    p.add_argument("--seconds-per-day", type=float, default=None,
                   help="real seconds per simulated day (default 3 interactive, 0 with --duration)")
    p.add_argument("--seed", type=int, default=d.seed,
                   help=f"seed of the simulated world and the server's RNG (default {d.seed})")
    p.add_argument("--workdir", default=None,
                   help="state folder (default var/demo-<UTC time>)")
    p.add_argument("--json", action="store_true",
                   help="print only the result as JSON on stdout; status lines go to stderr "
                        "(default: off)")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: Any) -> int:
    from rich.console import Console

    out = Console(stderr=args.json) if sys.stdout.isatty() else Console(width=160, stderr=args.json)
    err = Console(stderr=True)
    workdir = Path(args.workdir or f"var/demo-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}")
    spd = args.seconds_per_day
    if spd is None:
        spd = 0.0 if args.duration is not None else 3.0
    opts = DemoOptions(workdir=workdir.resolve(), scenario=args.scenario, users=args.users,
                       days=args.days, seconds_per_day=spd, seed=args.seed,
                       duration_s=args.duration, dashboard=not args.headless)
    live = err.is_terminal

    def status(line: str) -> None:
        if live:
            err.print(f"[bold cyan]demo[/] {line}", highlight=False)
        else:
            print(f"demo: {line}", file=sys.stderr, flush=True)

    def on_term(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    # SIGTERM stops the demo as Ctrl-C does: traffic stops, every service is stopped
    signal.signal(signal.SIGTERM, on_term)
    result = run_demo(opts, status)
    if args.json:
        print(result.to_json(), flush=True)
    else:
        _print_result(out, result)
    bad = {k: v for k, v in result.exit_codes.items() if v != 0}
    if bad:
        err.print(f"[red]processes exited uncleanly: {bad}[/]")
        return 1
    return 0


def _pct(row: dict[str, Any], key: str) -> str:
    """A lift as a signed percentage; an unbounded interval end reads "unbounded" (as in
    ``switchboard lift``), a missing one "—"."""
    v = row.get(key)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, float) and math.isinf(v):
        return "unbounded"
    return f"{v:+.1%}"


def _interval(row: dict[str, Any], low: str, high: str) -> str:
    if _pct(row, low) == "—" or _pct(row, high) == "—":
        return "—"
    return f"[{_pct(row, low)}, {_pct(row, high)}]"


def _print_result(console: Any, r: DemoResult) -> None:
    from rich.table import Table

    ran = (f"{r.days} simulated days" if r.days_simulated == r.days
           else f"{r.days_simulated} of {r.days} simulated days")
    t = Table(title=f"day-30 engagement lift vs gpt35 ({r.users} users, {ran})")
    # the verdict sits right beside the always-valid interval it was decided by
    for col in ("variant", "n", "n control", "mean", "mean control", "lift", "P(better)",
                "one-look 95% CI", "always-valid 95% CI", "verdict (by it)"):
        t.add_column(col)
    for row in _table_rows(r.lift_table):
        t.add_row(*row)
    console.print(t)
    truth = "n/a (no user reached day 30)" if math.isnan(r.true_lift_day30) else f"{r.true_lift_day30:+.1%}"
    console.print(f"simulator truth for the arms actually served: {truth} "
                  f"(oracle expert mixture: {r.oracle_planted_lift:+.1%})")
    console.print(f"decisions {r.decisions:,} · feedback {r.feedback:,} · engagement {r.engagement:,} "
                  f"· failed requests {r.failed_requests} · store rows {r.store_counts} · "
                  f"exit codes {r.exit_codes} · {r.wall_s:.0f} s")


def _table_rows(rows: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """The final table's cells, in the order of its columns (see :func:`_print_result`)."""
    out: list[tuple[str, ...]] = []
    for row in rows:
        pb = row.get("prob_better")
        out.append((str(row.get("variant", "")), str(row.get("n", "—")),
                    str(row.get("n_control", "—")), _num(row.get("mean")),
                    _num(row.get("mean_control")), _pct(row, "rel_lift"),
                    "—" if pb is None or math.isnan(pb) else f"{pb:.3f}",
                    _interval(row, "rel_ci_low", "rel_ci_high"),
                    _interval(row, "seq_ci_low", "seq_ci_high"), str(row.get("verdict", ""))))
    return out


def _num(v: Any) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:,.0f}"
