"""Benchmark of the allocation server and the MiniLM encoder; prints one JSON object.

* starts ``switchboard serve`` (one uvicorn worker, uvloop + httptools) as a subprocess
  with K=100 arms, a trained LinUCB snapshot (d=64) and every unit in the learning
  variant, publishing decisions to an embedded tansu broker (``--no-broker``: decisions
  spill to disk instead);
* drives it from a *separate* load-generating process for ``--seconds`` per level at 1
  and 64 concurrent connections, with a precomputed 64-d embedding per request (unit
  and conversation ids vary): ``wrk`` (C, one thread, a POST Lua script) when it is
  installed — the bench tries ``apt-get install wrk`` when it runs as root — and the
  Python generator (asyncio + uvloop, raw HTTP/1.1 keep-alive) otherwise. ``--generator
  both`` (the default when wrk is there) runs both; ``http`` holds the figures of the
  lighter one (wrk), ``http_by_generator`` all of them, ``load_generator`` says which;
* reads the server-side compute histograms (``switchboard_allocate_compute_seconds``
  and ``_cpu_seconds``) from ``/metrics`` before and after each level, and the CPU time
  of the server and broker processes (all threads: HTTP, allocation, Kafka producer) per
  request, which is the figure to judge on a shared machine;
* feedback over HTTP on the same single worker (``--feedback-seconds`` per level, Python
  generator): ``POST /v1/feedback`` with one event per post, alone and beside a
  concurrent allocation load, and with batches of 100 events per post beside
  allocations — posts/s, events/s and latency of each, and the allocations/s next to them;
* ``--transports inline asgi`` also serves the same app on uvicorn's plain httptools
  protocol, every request through the edge, FastAPI's stack and its route
  (``http_by_transport``): what the inline protocol saves;
* times in-process the whole ASGI app, the allocator alone and the inline protocol
  (``in_process``), ``policy.choose``, and MiniLM texts/s (batches of 32).

Usage: ``python bench/serve.py [--seconds 10] [--feedback-seconds 5] [--no-broker]
[--skip-encoder] [--skip-feedback] [--generator auto|wrk|python|both]
[--transports inline asgi]``.
All processes share this machine's cores: on a 2-core box the load generator, the
server and the broker compete, so the figures are a lower bound of the server alone.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DIM = 64
K = 100

LOADGEN = r'''
import asyncio, json, sys, time, random
try:
    import uvloop
    uvloop.install()
except ImportError:
    pass

host, port, conc, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
dim = int(sys.argv[5])
# "allocate", or "feedback:N" (N feedback events per POST /v1/feedback; 1 = a single event)
mode = sys.argv[6] if len(sys.argv) > 6 else "allocate"
per_post = int(mode.split(":")[1]) if mode.startswith("feedback:") else 1
rng = random.Random(1)
emb = json.dumps([round(rng.uniform(-1, 1), 4) for _ in range(dim)])

def feedback(i):
    return ('{"schema_version":1,"event_id":"fb-%d","decision_id":"d-%d","ts_ms":%d,'
            '"unit_id":"user-%d","conversation_id":"conv-%d","retried":false,"rating":%d,'
            '"conversation_length":%d}' % (i, i, 1767571200000 + i, i % 5000, i, 1 + i % 5,
                                            i % 40))

def request(i):
    if mode == "allocate":
        path = b"/v1/allocate"
        body = ('{"unit_id":"user-%d","conversation_id":"conv-%d","embedding":%s}'
                % (i % 5000, i, emb)).encode()
    else:
        path = b"/v1/feedback"
        if per_post == 1:
            body = feedback(i).encode()
        else:
            body = ("[" + ",".join(feedback(i * per_post + k) for k in range(per_post))
                    + "]").encode()
    return (b"POST " + path + b" HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer dev-token\r\n"
            b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode()
            + b"\r\n\r\n" + body)

async def worker(wid, stop_at, lat, errors):
    reader, writer = await asyncio.open_connection(host, port)
    i = wid * 10_000_000
    while time.perf_counter() < stop_at:
        i += 1
        t0 = time.perf_counter()
        writer.write(request(i))
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        n = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                n = int(line[15:])
        await reader.readexactly(n)
        lat.append(time.perf_counter() - t0)
        if status not in (200, 202):
            errors.append(status)
    writer.close()

async def main():
    lat, errors = [], []
    # warm-up
    await asyncio.gather(*(worker(w, time.perf_counter() + 0.5, [], []) for w in range(conc)))
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w, t0 + seconds, lat, errors) for w in range(conc)))
    wall = time.perf_counter() - t0
    lat.sort()
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000
    print(json.dumps({"mode": mode, "connections": conc, "requests": len(lat),
                      "errors": len(errors), "requests_per_s": round(len(lat) / wall, 1),
                      "events_per_s": round(len(lat) * per_post / wall, 1),
                      "p50_ms": round(q(0.5), 3), "p99_ms": round(q(0.99), 3),
                      "max_ms": round(lat[-1] * 1000, 3)}))

asyncio.run(main())
'''


WRK_SCRIPT = r'''
-- POST /v1/allocate with a fixed 64-d embedding; unit and conversation ids vary over
-- 4096 requests formatted up front (so the generator spends its CPU on sockets)
local emb = "%(emb)s"
local reqs = {}
local n = 4096
local i = 0
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer dev-token"
wrk.headers["Content-Type"] = "application/json"
for k = 1, n do
  local body = '{"unit_id":"user-' .. (k %% 5000) .. '","conversation_id":"conv-' .. k ..
               '","embedding":' .. emb .. '}'
  reqs[k] = wrk.format(nil, "/v1/allocate", nil, body)
end
request = function()
  i = i %% n + 1
  return reqs[i]
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests": %%d, "duration_us": %%d, "non_2xx": %%d, ' ..
    '"socket_errors": %%d, "p50_us": %%d, "p99_us": %%d, "max_us": %%d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
'''


def _find_wrk(install: bool) -> str | None:
    """``wrk`` on PATH, installing Debian's package when allowed and possible."""
    found = shutil.which("wrk")
    if found or not install or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "install", "-y", "-q", "wrk"], ["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "wrk"]):
        try:
            ok = subprocess.run(cmd, capture_output=True, env=env, timeout=300).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        if ok and shutil.which("wrk"):
            break
    return shutil.which("wrk")


def _embedding_json() -> str:
    import random

    rng = random.Random(1)
    return json.dumps([round(rng.uniform(-1, 1), 4) for _ in range(DIM)])


def _run_wrk(wrk: str, work: Path, port: int, conc: int, seconds: float) -> dict[str, object]:
    script = work / "allocate.lua"
    script.write_text(WRK_SCRIPT % {"emb": _embedding_json()})
    url = f"http://127.0.0.1:{port}"
    warm = subprocess.run([wrk, "-t1", f"-c{conc}", "-d1s", "-s", str(script), url],
                          capture_output=True, text=True, timeout=60)
    if warm.returncode != 0:
        raise RuntimeError(f"wrk failed: {warm.stderr[-500:]}")
    out = subprocess.run([wrk, "-t1", f"-c{conc}", f"-d{max(1, round(seconds))}s", "-s",
                          str(script), url], capture_output=True, text=True, timeout=seconds + 60)
    r = json.loads([x for x in out.stdout.splitlines() if x.startswith("{")][-1])
    return {"connections": conc, "requests": r["requests"],
            "errors": r["non_2xx"] + r["socket_errors"],
            "requests_per_s": round(r["requests"] / (r["duration_us"] / 1e6), 1),
            "p50_ms": round(r["p50_us"] / 1000, 3), "p99_ms": round(r["p99_us"] / 1000, 3),
            "max_ms": round(r["max_us"] / 1000, 3)}


def _run_python(port: int, conc: int, seconds: float) -> dict[str, object]:
    return _run_concurrently(port, seconds, [("allocate", conc)])[0]


def _run_concurrently(port: int, seconds: float, loads: list[tuple[str, int]]
                      ) -> list[dict[str, object]]:
    """Python generators, one process per ``(mode, connections)``, all at once."""
    procs = [subprocess.Popen(
        [sys.executable, "-c", LOADGEN, "127.0.0.1", str(port), str(conc), str(seconds),
         str(DIM), mode], stdout=subprocess.PIPE, text=True) for mode, conc in loads]
    out = []
    for proc in procs:
        stdout, _ = proc.communicate(timeout=seconds + 120)
        if proc.returncode != 0:
            raise RuntimeError(f"load generator failed ({proc.returncode})")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def _feedback_levels(port: int, seconds: float, url: str, server_pid: int
                     ) -> dict[str, object]:
    """Feedback posts on the one worker: alone, and beside an allocation load; with the
    server process's CPU per accepted feedback event and per request (all threads)."""
    import httpx

    plans = {
        "single_alone": [("feedback:1", 16)],
        "batch100_alone": [("feedback:100", 4)],
        "single_beside_allocations": [("feedback:1", 16), ("allocate", 16)],
        "batch100_beside_allocations": [("feedback:100", 4), ("allocate", 16)],
    }
    out: dict[str, object] = {}
    for name, loads in plans.items():
        before = httpx.get(url + "/metrics").text
        cpu0 = _cpu_s(server_pid)
        levels = _run_concurrently(port, seconds, loads)
        cpu1 = _cpu_s(server_pid)
        after = httpx.get(url + "/metrics").text
        entry: dict[str, object] = {"feedback": levels[0]}
        if len(levels) > 1:
            entry["allocate"] = levels[1]
        entry["accepted_by_server"] = (_counter(after, "switchboard_events_accepted_total",
                                                'kind="feedback"')
                                       - _counter(before, "switchboard_events_accepted_total",
                                                  'kind="feedback"'))
        accepted = float(entry["accepted_by_server"])  # type: ignore[arg-type]
        # the generators' 0.5 s warm-up is in both the CPU time and the server's counter
        entry["server_cpu_s"] = round(cpu1 - cpu0, 2)
        if len(levels) == 1:
            entry["server_cpu_us_per_feedback_event"] = round(
                (cpu1 - cpu0) / max(accepted, 1) * 1e6, 1)
        out[name] = entry
    return out


def _counter(text: str, name: str, labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(f"{name}{{{labels}}}"):
            return float(line.split()[-1])
    return 0.0


def _cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of a process, all its threads (0 if unknown)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children_cpu_s() -> float:
    """CPU seconds of this process's finished children (the load generator runs)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _histogram(text: str, name: str) -> tuple[list[tuple[float, float]], float, float]:
    buckets: list[tuple[float, float]] = []
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith(name + "_bucket{"):
            le = line.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.split()[-1])))
        elif line.startswith(name + "_sum"):
            total = float(line.split()[-1])
        elif line.startswith(name + "_count"):
            count = float(line.split()[-1])
    return buckets, total, count


def _compute_stats(before: str, after: str,
                   name: str = "switchboard_allocate_compute_seconds") -> dict[str, float | None]:
    b0, s0, c0 = _histogram(before, name)
    b1, s1, c1 = _histogram(after, name)
    n = c1 - c0
    if n <= 0:
        return {"count": 0, "mean_us": None, "p50_us_le": None, "p99_us_le": None}
    prev = dict(b0)
    diff = [(le, v - prev.get(le, 0.0)) for le, v in b1]

    def q(p: float) -> float:
        for le, v in diff:
            if v >= p * n:
                return le * 1e6
        return float("inf")

    return {"count": n, "mean_us": round((s1 - s0) / n * 1e6, 1), "p50_us_le": q(0.5),
            "p99_us_le": q(0.99)}


def _setup(work: Path, bootstrap: str, topic: str) -> tuple[Path, Path]:
    from bandit.arms import Arm, ArmRegistry
    from bandit.config import (
        Config,
        ExperimentConfig,
        KafkaConfig,
        ModelConfig,
        PolicyConfig,
        ServeConfig,
        VariantConfig,
        config_to_toml,
    )
    from bandit.formats.paths import snapshot_path
    from bandit.formats.snapshot import save_policy_snapshot
    from bandit.policies import make_policy

    arms = ArmRegistry([Arm("gpt35", kind="baseline"), *(Arm(f"expert-{i}") for i in range(K - 1))])
    policy = make_policy(PolicyConfig(name="linucb", dim=DIM), arms)
    rng = np.random.default_rng(np.random.SeedSequence(2024))
    n = 20_000
    policy.update_batch([arms.ids()[i % K] for i in range(n)], rng.normal(size=(n, DIM)),
                        rng.random(n))
    save_policy_snapshot(snapshot_path(work / "snap"), policy, arms)
    (work / "arms.json").write_text(json.dumps(arms.to_list()))
    config = Config(
        policy=PolicyConfig(name="linucb", dim=DIM),
        experiment=ExperimentConfig(control="gpt35", variants=(
            VariantConfig("gpt35", 0.0, "fixed", ("baseline",)),
            VariantConfig("bandit", 1.0, "linucb", ("expert", "baseline")))),
        kafka=KafkaConfig(bootstrap_servers=bootstrap, decisions_topic=topic,
                          feedback_topic=f"{topic}.feedback",
                          engagement_topic=f"{topic}.engagement",
                          exposures_topic=f"{topic}.exposures"),
        serve=ServeConfig(tokens=("dev-token",), spill_dir=str(work / "spill"),
                          reload_interval_s=5.0),
        model=ModelConfig(dir=str(work / "snap")))
    cfg = work / "switchboard.toml"
    cfg.write_text(config_to_toml(config))
    return cfg, work / "arms.json"


def _choose_us() -> float:
    from bandit.arms import Arm, ArmRegistry
    from bandit.config import PolicyConfig
    from bandit.policies import make_policy

    arms = ArmRegistry([Arm(f"a{i}") for i in range(K)])
    policy = make_policy(PolicyConfig(name="linucb", dim=DIM), arms)
    rng = np.random.default_rng(1)
    policy.update_batch([f"a{i % K}" for i in range(5000)], rng.normal(size=(5000, DIM)),
                        rng.random(5000))
    x = rng.normal(size=DIM)
    ids = tuple(arms.ids())
    for _ in range(200):
        policy.choose(x, rng, ids)
    t0 = time.perf_counter()
    n = 3000
    for _ in range(n):
        policy.choose(x, rng, ids)
    return (time.perf_counter() - t0) / n * 1e6


class _NullSink:
    depth = 0
    backlog = 0
    healthy = True

    def publish(self, event: object) -> None:
        pass

    def start(self) -> None:
        pass

    def close(self, timeout_s: float = 5.0) -> None:
        pass


def _in_process_us(work: Path) -> dict[str, float]:
    """One allocation in-process (no sockets, no Kafka): through the whole ASGI app (edge,
    FastAPI's stack and route, the allocator), through the allocator alone (auth,
    validation, assignment, choose, response bytes), and through the inline protocol."""
    import asyncio

    from bandit.config import load_config
    from bandit.serving.app import create_app

    app = create_app(load_config(work / "switchboard.toml", env={}), sink=_NullSink(), seed=1)
    rng = np.random.default_rng(3)
    body = json.dumps({"unit_id": "user-1", "conversation_id": "c",
                       "embedding": rng.uniform(-1, 1, DIM).round(4).tolist()}).encode()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "path": "/v1/allocate", "raw_path": b"/v1/allocate",
             "query_string": b"", "root_path": "", "scheme": "http",
             "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1),
             "headers": [(b"authorization", b"Bearer dev-token"),
                         (b"content-length", str(len(body)).encode())]}

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Any) -> None:
        pass

    async def run(n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            await app(dict(scope), receive, send)
        return (time.perf_counter() - t0) / n * 1e6

    asyncio.run(run(300))
    allocator = app.allocator

    def core(n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            allocator.allocate_now("Bearer dev-token", body)
        return (time.perf_counter() - t0) / n * 1e6

    core(300)
    return {"asgi_app_us": round(asyncio.run(run(3000)), 1),
            "allocator_us": round(core(3000), 1),
            "inline_protocol_us": round(_inline_protocol_us(app, body), 1)}


def _inline_protocol_us(app: Any, body: bytes, n: int = 3000) -> float:
    """One allocation as ``switchboard serve`` handles it — bytes in, HTTP parsing by
    :class:`~bandit.serving.http.AllocateFastProtocol`, the handler, response bytes out —
    with a fake transport: everything but the socket system calls."""
    import asyncio

    from uvicorn.config import Config as UvicornConfig
    from uvicorn.server import ServerState

    from bandit.serving.allocator import ALLOCATOR_STATE_KEY
    from bandit.serving.http import AllocateFastProtocol

    class Transport(asyncio.Transport):
        def __init__(self) -> None:
            super().__init__()
            self.out = 0

        def write(self, data: bytes | bytearray | memoryview) -> None:
            self.out += 1

        def is_closing(self) -> bool:
            return False

        def get_extra_info(self, name: str, default: object = None) -> object:
            return default

    config = UvicornConfig(app, http=AllocateFastProtocol, access_log=False,
                           log_level="warning", lifespan="off")
    config.load()
    loop = asyncio.new_event_loop()
    try:
        # the allocator as create_app's lifespan hands it to every connection
        proto = AllocateFastProtocol(config=config, server_state=ServerState(),
                                     app_state={ALLOCATOR_STATE_KEY: app.allocator}, _loop=loop)
        transport = Transport()
        proto.connection_made(transport)
        raw = (b"POST /v1/allocate HTTP/1.1\r\nHost: bench\r\n"
               b"Authorization: Bearer dev-token\r\nContent-Type: application/json\r\n"
               b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        for _ in range(300):
            proto.data_received(raw)
        t0 = time.perf_counter()
        for _ in range(n):
            proto.data_received(raw)
        us = (time.perf_counter() - t0) / n * 1e6
        if transport.out != n + 300:
            raise RuntimeError("the inline path did not answer every request")
        return us
    finally:
        loop.close()


def _encoder_bench() -> dict[str, object]:
    os.environ["HF_HUB_OFFLINE"] = "1"
    from bandit.adapters.minilm import MiniLMEncoder

    texts = [f"user: can you help me write a short story about a dragon named {i}? "
             f"assistant: of course, here is a tale about dragon {i}." for i in range(256)]
    out: dict[str, object] = {"device": "cpu", "tokens_per_text": "~35"}
    for threads in (1, 2):  # on an oversubscribed box fewer torch threads can be faster
        enc = MiniLMEncoder(device="cpu", threads=threads)
        enc.encode(texts[:32])
        t0 = time.perf_counter()
        for i in range(0, len(texts), 32):
            enc.encode(texts[i:i + 32])
        batched = len(texts) / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for t in texts[:16]:
            enc.encode([t])
        single_ms = (time.perf_counter() - t0) / 16 * 1000
        out[f"torch_threads_{threads}"] = {"texts_per_s_batch32": round(batched, 1),
                                           "single_text_ms": round(single_ms, 2)}
    return out


#: the ``asgi`` transport: the same app on uvicorn's plain httptools protocol, so every
#: request goes through the edge, FastAPI's middleware stack and its route (what the
#: inline protocol of ``switchboard serve`` saves is the difference)
ASGI_SERVER = r'''
import gc, sys
import uvicorn
from bandit.cli.arms import read_arms_file
from bandit.config import load_config
from bandit.serving.app import create_app
cfg, arms, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
app = create_app(load_config(cfg, env={}), arms=read_arms_file(arms), seed=1)
gc.collect()
gc.freeze()
uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", http="httptools",
            access_log=False, log_level="warning")
'''


def _start_server(transport: str, work: Path, cfg: Path, arms: Path, port: int
                  ) -> subprocess.Popen[bytes]:
    """``switchboard serve`` (``inline``) or the plain ASGI server (``asgi``)."""
    if transport == "inline":
        argv = [str(Path(sys.executable).parent / "switchboard"), "--config", str(cfg), "serve",
                "--port", str(port), "--arms", str(arms), "--seed", "1"]
    else:
        argv = [sys.executable, "-c", ASGI_SERVER, str(cfg), str(arms), str(port)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                            stderr=open(work / f"serve-{transport}.log", "wb"),
                            start_new_session=True)


def _wait_healthy(url: str, server: subprocess.Popen[bytes], log: Path) -> dict[str, Any]:
    import httpx

    deadline = time.monotonic() + 60
    while True:
        try:
            health: dict[str, Any] = httpx.get(url + "/healthz", timeout=1).json()
            return health
        except httpx.HTTPError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(log.read_text()[-2000:]) from None
            time.sleep(0.2)


def _level(generator: str, wrk: str | None, work: Path, port: int, url: str, conc: int,
           seconds: float, server_pid: int, broker_pid: int | None) -> dict[str, object]:
    """One load level, with the server-side histograms and CPU per request."""
    import httpx

    before = httpx.get(url + "/metrics").text
    cpu0, bcpu0 = _cpu_s(server_pid), _cpu_s(broker_pid)
    gen0 = _children_cpu_s()
    if generator == "wrk" and wrk is not None:
        level = _run_wrk(wrk, work, port, conc, seconds)
    else:
        level = _run_python(port, conc, seconds)
    cpu1, bcpu1 = _cpu_s(server_pid), _cpu_s(broker_pid)
    gen1 = _children_cpu_s()
    after = httpx.get(url + "/metrics").text
    level["generator"] = generator
    level["server_compute_wall"] = _compute_stats(before, after)
    level["server_compute_cpu"] = _compute_stats(before, after, "switchboard_allocate_cpu_seconds")
    n = _compute_stats(before, after)["count"] or 1
    # includes the warm-up: divide by what the server counted
    level["server_process_cpu_us_per_req"] = round((cpu1 - cpu0) / n * 1e6, 1)
    if broker_pid is not None:
        level["broker_cpu_us_per_req"] = round((bcpu1 - bcpu0) / n * 1e6, 1)
    level["generator_cpu_us_per_req"] = round((gen1 - gen0) / n * 1e6, 1)
    return level


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--connections", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--no-broker", action="store_true")
    ap.add_argument("--skip-encoder", action="store_true")
    ap.add_argument("--feedback-seconds", type=float, default=5.0)
    ap.add_argument("--skip-feedback", action="store_true")
    ap.add_argument("--generator", choices=["auto", "wrk", "python", "both"], default="auto",
                    help="load generator: auto = both if wrk is (or can be) installed, "
                         "else python")
    ap.add_argument("--transports", nargs="+", choices=["inline", "asgi"], default=["inline"],
                    help="inline: switchboard serve (the inline HTTP protocol); asgi: the same "
                         "app on uvicorn's plain protocol, through FastAPI's route (its "
                         "baseline). Feedback levels run on the first one only")
    ap.add_argument("--no-install", action="store_true",
                    help="do not try to apt-get install wrk")
    args = ap.parse_args()

    wrk = None if args.generator == "python" else _find_wrk(not args.no_install)
    if args.generator == "wrk" and wrk is None:
        raise SystemExit("wrk is not installed and could not be installed")
    generators = (["wrk", "python-asyncio"] if wrk and args.generator in ("auto", "both")
                  else ["wrk"] if wrk and args.generator == "wrk" else ["python-asyncio"])

    import httpx

    from bandit.serving.live import free_port

    result: dict[str, object] = {"arms": K, "dim": DIM, "cpus": os.cpu_count()}
    broker = None
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        work = Path(tmp)
        if args.no_broker:
            bootstrap, topic = "127.0.0.1:1", "decisions"
        else:
            from bandit.embedded.broker import EmbeddedBroker, create_topics

            broker = EmbeddedBroker(log_path=work / "tansu.log").start()
            bootstrap, topic = broker.bootstrap_servers, "bench.decisions"
            create_topics(bootstrap, [topic, *(f"{topic}.{kind}" for kind in (
                "feedback", "engagement", "exposures"))], partitions=4)
        result["broker"] = "tansu" if broker else "none (decisions spill to disk)"
        cfg, arms = _setup(work, bootstrap, topic)
        # the broker's process, to count its CPU per request (EmbeddedBroker keeps it private)
        proc = getattr(broker, "_proc", None)
        broker_pid = proc.pid if proc is not None else None
        by_transport: dict[str, dict[str, list[dict[str, object]]]] = {}
        try:
            for transport in args.transports:
                first = transport == args.transports[0]
                port = free_port()
                server = _start_server(transport, work, cfg, arms, port)
                url = f"http://127.0.0.1:{port}"
                try:
                    h = _wait_healthy(url, server, work / f"serve-{transport}.log")
                    result["model"] = {"source": h["model"]["source"],
                                       "policy_version": h["model"]["policy_version"]}
                    by_generator: dict[str, list[dict[str, object]]] = {}
                    for generator in generators:
                        by_generator[generator] = [
                            _level(generator, wrk, work, port, url, conc, args.seconds,
                                   server.pid, broker_pid)
                            for conc in args.connections]
                    by_transport[transport] = by_generator
                    if first:
                        result["transport"] = transport
                        result["load_generator"] = generators[0]
                        result["http"] = by_generator[generators[0]]
                        result["http_by_generator"] = by_generator
                        if not args.skip_feedback:
                            result["feedback_http"] = _feedback_levels(
                                port, args.feedback_seconds, url, server.pid)
                        time.sleep(1.0)
                        result["publisher"] = httpx.get(url + "/healthz").json()["publisher"]
                finally:
                    server.terminate()
                    try:
                        server.wait(20)
                    except subprocess.TimeoutExpired:
                        server.kill()
        finally:
            if broker is not None:
                broker.stop()
        if len(by_transport) > 1:
            result["http_by_transport"] = by_transport
        result["in_process"] = _in_process_us(work)
    result["choose_us_k100_d64"] = round(_choose_us(), 1)
    if not args.skip_encoder:
        result["encoder_minilm"] = _encoder_bench()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
