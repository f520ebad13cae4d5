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
import dataclasses
import json
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import expit

from bandit.events import EngagementEvent, FeedbackEvent, encode_event
from simulations.world import World, make_world

__all__ = ["DemoResult", "TrafficGenerator", "TrafficStats"]

DAY_MS = 86_400_000
#: 2026-01-05 00:00 UTC — simulated calendar start
EPOCH_MS = 1_767_571_200_000


@dataclass
class TrafficStats:
    decisions: int = 0
    feedback: int = 0
    engagement: int = 0
    failed_requests: int = 0
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
    days: int
    users: int
    decisions: int
    feedback: int
    engagement: int
    failed_requests: int
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
    is active (per the world's retention model given the quality they were served) has
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
            except Exception:
                self.stats.failed_requests += 1
                return None
        if resp.status_code != 200:
            self.stats.failed_requests += 1
            return None
        out: dict[str, Any] = resp.json()
        return out

    def _engagement(self, day: int, present: np.ndarray, day_start: int,
                    send: Callable[[str, bytes, bytes], None]) -> None:
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
        done = ~np.isnan(self.expected_day30)
        t = self.expected_day30[done & (self.variant == treatment)]
        c = self.expected_day30[done & (self.variant == control)]
        if len(t) == 0 or len(c) == 0:
            return float("nan")
        return float(t.mean() / c.mean() - 1.0)


def demo_world(scenario: str, seed: int) -> World:
    return make_world(scenario, seed)


_ = Path


# --------------------------------------------------------------------------- orchestration


@dataclass(frozen=True)
class DemoOptions:
    """``duration_s`` None = interactive (keep serving until Ctrl-C after the last day)."""

    workdir: Path
    scenario: str = "lift68"
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


def _config_toml(opts: DemoOptions, world: World, bootstrap: str, paths: Any, server_port: int,
                 metrics_port: int) -> str:
    return f"""# generated by `switchboard demo`
[policy]
name = "linucb"
dim = {world.dim}
alpha = 0.3
probability_floor = 0.01
fixed_arm = "gpt35"

[experiment]
id = "{opts.experiment_id}"
salt = "demo-{opts.seed}"
control = "gpt35"
guardrails = []

[[experiment.variants]]
name = "gpt35"
weight = 0.5
policy = "fixed"
arm_kinds = ["baseline"]

[[experiment.variants]]
name = "bandit"
weight = 0.5
policy = "linucb"
arm_kinds = ["expert", "baseline"]

[kafka]
bootstrap_servers = "{bootstrap}"
partitions = {opts.partitions}
session_timeout_ms = 6000

[store]
dsn = "chdb://{paths.chdb}"

[learner]
attribution_window_s = 3600.0
commit_interval_s = 1.0
publish_interval_s = 1.0
state_dir = "{paths.learner_state}"
metrics_port = {metrics_port}

[serve]
port = {server_port}
tokens = ["{opts.token}"]
admin_tokens = ["{opts.admin_token}"]
snapshot_dir = "{paths.snapshots}"
spill_dir = "{paths.spill}"
reload_interval_s = 0.5
# the simulated calendar (from EPOCH_MS) is not the wall clock: accept its decision times
max_decision_skew_s = 3.2e8
"""


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
    from consumers.embedded import free_port
    from simulations.stack import Stack, StackPaths
    from simulations.world import planted_lift

    say = status or (lambda _line: None)
    world = demo_world(opts.scenario, opts.seed)
    paths = StackPaths(opts.workdir)
    stack = Stack(paths, "", with_dashboard=opts.dashboard)
    metrics_port = free_port()
    t0 = time.monotonic()
    result_codes: dict[str, int] = {}
    versions: list[str] = []
    gen: TrafficGenerator | None = None
    try:
        say("starting tansu broker")
        config_probe = None
        bootstrap = stack.start_broker(
            ["switchboard.decisions", "switchboard.feedback", "switchboard.engagement",
             "switchboard.dead-letter"], opts.partitions)
        stack.config_text = _config_toml(opts, world, bootstrap, paths, stack.server_port, metrics_port)
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
            dash = stack.start("dashboard", "dashboard", "--port", str(stack.dashboard_port),
                               "--snapshots", str(paths.snapshots))
        stack.wait_http(stack.server_url + "/healthz", 120, server)
        if opts.dashboard:
            stack.wait_http(stack.dashboard_url + "/_stcore/health", 120, dash)
        say(f"allocation API {stack.server_url}/docs · dashboard {stack.dashboard_url}")
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

        async def traffic() -> None:
            assert gen is not None
            limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
            async with httpx.AsyncClient(base_url=stack.server_url, headers=headers,
                                         timeout=10.0, limits=limits) as client:
                for day in range(opts.days):
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
                    stack.check_alive()
                    try:
                        health = (await client.get("/healthz")).json()
                        versions.append(str(health.get("model", {}).get("policy_version", "")))
                    except Exception:
                        pass
                    truth = gen.true_lift("bandit", "gpt35")
                    truth_s = "n/a before day 30" if np.isnan(truth) else f"{truth:+.1%}"
                    model = versions[-1] if versions else "?"
                    say(f"day {day + 1}/{opts.days} · {gen.stats.rate():,.0f} events/s · "
                        f"decisions {gen.stats.decisions:,} · model {model} · "
                        f"day-30 lift (simulator truth) {truth_s}")
                    if opts.duration_s is not None and time.monotonic() - t0 > opts.duration_s:
                        break
                    rest = opts.seconds_per_day - (time.monotonic() - day_t)
                    if rest > 0:
                        await asyncio.sleep(rest)

        asyncio.run(traffic())
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
        if opts.duration_s is None:
            say(f"done simulating; dashboard {stack.dashboard_url} — Ctrl-C to stop")
            try:
                while True:
                    time.sleep(1.0)
                    stack.check_alive()
            except KeyboardInterrupt:
                pass
        result_codes = stack.stop()
    except BaseException:
        stack.stop()
        raise
    # the learner has exited: this process may now open the embedded store
    from bandit.lift import lift_table
    from bandit.store import open_store

    store = open_store(f"chdb://{paths.chdb}")
    try:
        as_of = EPOCH_MS + opts.days * DAY_MS
        counts = {t: store.count(t) for t in ("decisions", "feedback", "rewards", "engagement")}
        table = lift_table(store, load_config(paths.config, env={}).experiment,
                           "day30_engagement", as_of_ms=as_of, cuped=False)
        rows = table.to_dict(orient="records")
    finally:
        store.close()
    assert gen is not None
    return DemoResult(
        days=opts.days, users=opts.users, decisions=gen.stats.decisions,
        feedback=gen.stats.feedback, engagement=gen.stats.engagement,
        failed_requests=gen.stats.failed_requests,
        true_lift_day30=gen.true_lift("bandit", "gpt35"),
        oracle_planted_lift=planted_lift(world),
        lift_table=rows, exit_codes=result_codes, snapshot_versions=versions, store_counts=counts,
    )


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run the whole loop on the embedded stack (simulated traffic)")
    p.add_argument("--duration", type=float, default=None,
                   help="run headless for at most this many seconds, print the lift table, exit")
    p.add_argument("--headless", action="store_true", help="no dashboard")
    p.add_argument("--scenario", default="lift68")
    p.add_argument("--users", type=int, default=800)
    p.add_argument("--days", type=int, default=36)
    p.add_argument("--seconds-per-day", type=float, default=None,
                   help="real seconds per simulated day (default 3 interactive, 0 headless)")
    p.add_argument("--seed", type=int, default=20261123)
    p.add_argument("--workdir", default=None, help="state folder (default var/demo-<time>)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: Any) -> int:
    from rich.console import Console

    console = Console() if sys.stdout.isatty() else Console(width=160)
    workdir = Path(args.workdir or f"var/demo-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    spd = args.seconds_per_day
    if spd is None:
        spd = 0.0 if args.duration is not None else 3.0
    opts = DemoOptions(workdir=workdir, scenario=args.scenario, users=args.users, days=args.days,
                       seconds_per_day=spd, seed=args.seed, duration_s=args.duration,
                       dashboard=not args.headless)
    live = console.is_terminal and not args.json

    def status(line: str) -> None:
        if live:
            console.print(f"[bold cyan]demo[/] {line}", highlight=False)
        else:
            print(f"demo: {line}", flush=True)

    result = run_demo(opts, status)
    if args.json:
        print(result.to_json())
    else:
        _print_result(console, result)
    bad = {k: v for k, v in result.exit_codes.items() if v != 0}
    if bad:
        console.print(f"[red]processes exited uncleanly: {bad}[/]")
        return 1
    return 0


def _print_result(console: Any, r: DemoResult) -> None:
    from rich.table import Table

    t = Table(title=f"day-30 engagement lift vs gpt35 ({r.users} users, {r.days} simulated days)")
    for col in ("variant", "n", "n control", "lift", "95% CI", "always-valid CI", "P(better)", "verdict"):
        t.add_column(col)
    for row in r.lift_table:
        t.add_row(row["variant"], str(row["n"]), str(row["n_control"]), f"{row['rel_lift']:+.1%}",
                  f"[{row['rel_ci_low']:+.1%}, {row['rel_ci_high']:+.1%}]",
                  f"[{row['seq_ci_low']:+.1%}, {row['seq_ci_high']:+.1%}]",
                  f"{row['prob_better']:.3f}", str(row["verdict"]))
    console.print(t)
    console.print(f"simulator truth for the arms actually served: {r.true_lift_day30:+.1%} "
                  f"(oracle expert mixture: {r.oracle_planted_lift:+.1%})")
    console.print(f"decisions {r.decisions:,} · feedback {r.feedback:,} · engagement {r.engagement:,} "
                  f"· failed requests {r.failed_requests} · store rows {r.store_counts} · "
                  f"exit codes {r.exit_codes}")
