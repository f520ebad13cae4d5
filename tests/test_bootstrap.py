"""Start-up safety and first start from nothing.

* The server has no built-in credentials: with none configured it refuses to start (one
  line naming what to set), except on loopback with the explicit development flag; tokens
  come from files (Kubernetes / Docker secrets); a token never appears in an error.
* ``switchboard arms seed FILE`` registers the initial experts in the shared registry,
  idempotently.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from bandit.cli import main
from bandit.config import (
    DEV_ADMIN_TOKEN,
    DEV_TOKEN,
    MIN_TOKEN_CHARS,
    ServeConfig,
    is_loopback,
    load_config,
    resolve_serve_tokens,
)
from bandit.errors import ConfigError
from bandit.formats.registry import RegistryFile

STRONG = "s" * MIN_TOKEN_CHARS
STRONG_ADMIN = "a" * (MIN_TOKEN_CHARS + 4)
EXE = Path(sys.executable).parent / "switchboard"


# --------------------------------------------------------------------------- credentials


def test_config_has_no_builtin_tokens() -> None:
    serve = load_config(env={}).serve
    assert serve.tokens == () and serve.admin_tokens == ()
    assert not serve.insecure_dev_tokens


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("10.1.2.3", False), ("server", False), ("", False),
])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


# (serve settings, bind host, field named by the error, description)
REFUSED = [
    ({}, "127.0.0.1", "serve.tokens", "no tokens, even on loopback"),
    ({}, "0.0.0.0", "serve.tokens", "no tokens beyond loopback"),
    ({"insecure_dev_tokens": True}, "0.0.0.0", "serve.insecure_dev_tokens", "dev flag beyond loopback"),
    ({"insecure_dev_tokens": True, "tokens": (STRONG,)}, "10.0.0.5", "serve.insecure_dev_tokens",
     "dev flag beyond loopback even with tokens"),
    ({"tokens": ("change-me",)}, "0.0.0.0", "serve.tokens[0]", "short token beyond loopback"),
    ({"tokens": (STRONG,), "admin_tokens": (DEV_ADMIN_TOKEN,)}, "0.0.0.0", "serve.admin_tokens[0]",
     "development admin token beyond loopback"),
]


@pytest.mark.parametrize(("settings", "host", "field", "description"), REFUSED,
                         ids=[r[3] for r in REFUSED])
def test_resolve_serve_tokens_refuses(settings: dict[str, object], host: str, field: str,
                                      description: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_serve_tokens(ServeConfig(**settings), host)  # type: ignore[arg-type]
    assert info.value.field == field, description
    assert "\n" not in str(info.value)
    assert "change-me" not in str(info.value)


def test_dev_flag_on_loopback_accepts_the_development_tokens() -> None:
    serve = resolve_serve_tokens(ServeConfig(insecure_dev_tokens=True), "127.0.0.1")
    assert serve.tokens == (DEV_TOKEN,) and serve.admin_tokens == (DEV_ADMIN_TOKEN,)
    # configured tokens win over the flag: the development tokens are then not accepted
    serve = resolve_serve_tokens(ServeConfig(insecure_dev_tokens=True, tokens=("mine",)), "::1")
    assert serve.tokens == ("mine",) and serve.admin_tokens == ()


def test_tokens_from_files_are_added(tmp_path: Path) -> None:
    (tmp_path / "tokens").write_text(f"\n  {STRONG}  \n{STRONG}x\n\n")
    (tmp_path / "admin").write_text(STRONG_ADMIN)
    env = {"SWITCHBOARD_SERVE__TOKENS_FILE": str(tmp_path / "tokens"),
           "SWITCHBOARD_SERVE__ADMIN_TOKENS_FILE": str(tmp_path / "admin"),
           "SWITCHBOARD_SERVE__TOKENS": f'["{STRONG}"]'}
    serve = resolve_serve_tokens(load_config(env=env).serve, "0.0.0.0")
    assert serve.tokens == (STRONG, STRONG + "x")
    assert serve.admin_tokens == (STRONG_ADMIN,)


@pytest.mark.parametrize(("content", "reason"), [
    (None, "cannot be read"), ("\n \n", "contains no token"), (b"\xff\xfe", "UTF-8"),
])
def test_unusable_token_file_is_named(tmp_path: Path, content: str | bytes | None, reason: str) -> None:
    path = tmp_path / "tokens"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=reason) as info:
        resolve_serve_tokens(ServeConfig(tokens_file=str(path)), "127.0.0.1")
    assert info.value.field == "serve.tokens_file" and str(path) in str(info.value)


def test_token_errors_and_reprs_never_show_a_token() -> None:
    secret = "pl4nted-secret value"
    with pytest.raises(ConfigError) as info:
        ServeConfig(tokens=(secret,))
    assert "pl4nted" not in str(info.value)
    assert "pl4nted" not in repr(ServeConfig(tokens=("pl4nted-ok",), admin_tokens=("pl4nted-adm",)))


def _write_config(tmp_path: Path, serve: str) -> Path:
    cfg = tmp_path / "switchboard.toml"
    cfg.write_text(f'[kafka]\nbootstrap_servers = "127.0.0.1:1"\n\n[serve]\n'
                   f'snapshot_dir = "{tmp_path / "snap"}"\nspill_dir = "{tmp_path / "spill"}"\n{serve}\n')
    return cfg


def test_serve_without_tokens_exits_with_one_line(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _write_config(tmp_path, "")
    assert main(["--config", str(cfg), "serve", "--port", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "serve.tokens" in err and "SWITCHBOARD_SERVE__TOKENS_FILE" in err and "--dev" in err
    assert main(["--config", str(cfg), "serve", "--dev", "--host", "0.0.0.0", "--port", "1"]) == 2
    assert "serve.insecure_dev_tokens" in capsys.readouterr().err


def test_serve_refusal_from_the_real_entry_point(tmp_path: Path) -> None:
    """What an operator sees: exit status 2 and one line, no traceback, nothing bound."""
    cfg = _write_config(tmp_path, 'host = "0.0.0.0"\ntokens = ["change-me"]')
    proc = subprocess.run([str(EXE), "--config", str(cfg), "serve", "--port", "1"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "SWITCHBOARD_CONFIG": ""})
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "change-me" not in proc.stderr
    assert "serve.tokens[0]" in proc.stderr


# --------------------------------------------------------------------------- arms seed

ARMS = [{"arm_id": "gpt35", "kind": "baseline"},
        {"arm_id": "roleplay-7b", "kind": "expert"},
        {"arm_id": "writer-13b"}]


def _seed(tmp_path: Path, arms: object, *extra: str) -> int:
    path = tmp_path / "arms.json"
    path.write_text(json.dumps(arms))
    cfg = _write_config(tmp_path, "")
    return main(["--config", str(cfg), "arms", "seed", str(path), *extra])


def test_arms_seed_registers_from_nothing_and_is_idempotent(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert _seed(tmp_path, ARMS) == 0
    registry = RegistryFile(tmp_path / "snap")
    first = registry.read()
    assert first.arm_ids() == ["gpt35", "roleplay-7b", "writer-13b"]
    assert first.get("gpt35").kind == "baseline" and first.get("writer-13b").kind == "expert"
    assert "3 registered" in capsys.readouterr().out
    # a second run (every `compose up`, a re-run Job) changes nothing
    assert _seed(tmp_path, ARMS) == 0
    assert registry.read() == first
    assert "0 registered, 3 already present" in capsys.readouterr().out


def test_arms_seed_never_reactivates_a_retired_arm(tmp_path: Path) -> None:
    assert _seed(tmp_path, ARMS) == 0
    registry = RegistryFile(tmp_path / "snap")
    registry.retire("roleplay-7b")
    assert _seed(tmp_path, [*ARMS, {"arm_id": "new-expert"}]) == 0
    state = registry.read()
    assert not state.get("roleplay-7b").active
    assert state.get("new-expert").active


@pytest.mark.parametrize(("arms", "needle"), [
    ({"arm_id": "x"}, "must be a JSON list"),
    ([], "names no arm"),
    ([{"kind": "expert"}], "arm_id"),
    ([{"arm_id": "a"}, {"arm_id": "a"}], "twice"),
])
def test_arms_seed_rejects_a_bad_file_and_writes_nothing(tmp_path: Path, arms: object, needle: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert _seed(tmp_path, arms) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "snap" / "arms-registry.json").exists()


def test_image_entrypoint_makes_every_created_file_private(tmp_path: Path) -> None:
    """The Dockerfile's ENTRYPOINT, run as the image runs it (this checkout's switchboard on
    PATH): arguments reach the command unchanged and what it creates is owner-only."""
    dockerfile = (Path(__file__).resolve().parent.parent / "deploy" / "Dockerfile").read_text()
    entrypoint = json.loads(re.findall(r"^ENTRYPOINT (\[.*\])$", dockerfile, re.M)[0])
    (tmp_path / "arms.json").write_text(json.dumps(ARMS))
    cfg = _write_config(tmp_path, "")
    env = {**os.environ, "PATH": f"{EXE.parent}{os.pathsep}{os.environ['PATH']}",
           "SWITCHBOARD_CONFIG": str(cfg)}
    proc = subprocess.run([*entrypoint, "arms", "seed", str(tmp_path / "arms.json")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "3 registered" in proc.stdout
    created = [p for p in (tmp_path / "snap").rglob("*")] + [tmp_path / "snap"]
    assert {p.name for p in created} >= {"arms-registry.json", "arms-registry.json.lock"}
    for path in created:
        assert path.stat().st_mode & 0o077 == 0, f"{path} is {oct(path.stat().st_mode)}"


# --------------------------------------------------------------------------- from nothing
#
# The manifests' own command lines, in their dependency order, on the embedded stack:
# each switchboard container of compose.yaml / k8s/switchboard.yaml becomes a local
# process with the container's argv and environment (compose `environment`, k8s
# ConfigMap/Secret/env), the image's SWITCHBOARD_CONFIG (deploy/switchboard.toml, per the
# Dockerfile's COPY), and each mounted path replaced by a fresh empty directory. Kafka
# and ClickHouse are replaced by tansu and a chdb DSN. Test-only settings, all through the
# same environment variables an operator would use: one partition and a 10 s attribution
# window (so a handful of later events closes the first decisions' windows), a 1 s publish
# interval, the hashing encoder instead of MiniLM (its own tests cover it), free ports,
# and one replica of each workload. The dashboard and the third-party proxies are not run.

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
WINDOW_S = 10.0
TEST_SETTINGS = {
    "SWITCHBOARD_KAFKA__PARTITIONS": "1",
    "SWITCHBOARD_KAFKA__SESSION_TIMEOUT_MS": "6000",
    "SWITCHBOARD_LEARNER__ATTRIBUTION_WINDOW_S": f"{WINDOW_S}",
    "SWITCHBOARD_LEARNER__PUBLISH_INTERVAL_S": "1.0",
    "SWITCHBOARD_LEARNER__COMMIT_INTERVAL_S": "1.0",
    "SWITCHBOARD_SERVE__ENCODER": '"hashing"',
    "SWITCHBOARD_SERVE__RELOAD_INTERVAL_S": "0.2",
}
NOT_RUN = {"dashboard"}


class Step:
    """One container as a local process: argv after ``switchboard``, its environment,
    and whether it runs to completion (one-shot / init container) or keeps serving."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], oneshot: bool) -> None:
        self.name, self.argv, self.env, self.oneshot = name, argv, env, oneshot

    def __repr__(self) -> str:
        return f"{self.name}: switchboard {' '.join(self.argv)}"


class Stack:
    """Maps the image's paths and the deployment's endpoints onto this machine."""

    def __init__(self, root: Path, bootstrap_servers: str) -> None:
        import secrets

        self.root = root
        self.bootstrap_servers = bootstrap_servers
        self.token = secrets.token_hex(24)
        self.admin_token = secrets.token_hex(24)
        self.port = _free_port()
        self.metrics_port = _free_port()
        dockerfile = (DEPLOY / "Dockerfile").read_text()
        # COPY deploy/x /etc/... : image path -> repository file
        self.copies = {dst: DEPLOY.parent / src
                       for src, dst in re.findall(r"^COPY (deploy/\S+) (\S+)$", dockerfile, re.M)}
        (config,) = re.findall(r"^ENV SWITCHBOARD_CONFIG=(\S+)$", dockerfile, re.M)
        self.config = self.copies[config]
        self.mounts: dict[str, Path] = {}

    def local(self, path: str) -> str:
        """An image path as the local path a mount (or the image's COPY) gives it."""
        for target, local in sorted(self.mounts.items(), key=lambda kv: -len(kv[0])):
            if path == target or path.startswith(target.rstrip("/") + "/"):
                return str(local / os.path.relpath(path, target)) if path != target else str(local)
        if path in self.copies:
            return str(self.copies[path])
        return path

    def mount_dir(self, target: str, name: str) -> None:
        local = self.root / "volumes" / name
        local.mkdir(parents=True, exist_ok=True)
        self.mounts[target] = local

    def mount_file(self, target: str, content: str | Path) -> None:
        local = self.root / "files" / target.strip("/").replace("/", "_")
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_text(content.read_text() if isinstance(content, Path) else content)
        self.mounts[target] = local

    def step(self, name: str, argv: list[str], env: dict[str, str], oneshot: bool) -> Step:
        baked = load_config(self.config, env={})
        out = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
        out.update(env)
        out["SWITCHBOARD_CONFIG"] = str(self.config)
        # every directory setting of the baked config lives on a mount (or the image's
        # read-only root, which the deployment never writes)
        for setting, value in (("LEARNER__STATE_DIR", baked.learner.state_dir),
                               ("MODEL__DIR", baked.model.dir),
                               ("SERVE__SPILL_DIR", baked.serve.spill_dir)):
            out[f"SWITCHBOARD_{setting}"] = self.local(value)
        for key, value in list(out.items()):
            if key.startswith("SWITCHBOARD_") and key.endswith("_FILE"):
                out[key] = self.local(value)
        out["SWITCHBOARD_KAFKA__BOOTSTRAP_SERVERS"] = self.bootstrap_servers
        out["SWITCHBOARD_STORE__DSN"] = f"chdb://{self.root / 'chdb'}"
        out["SWITCHBOARD_LEARNER__METRICS_PORT"] = str(self.metrics_port)
        if out.get("SWITCHBOARD_LEARNER__METRICS_HOST") == "<pod IP>":
            out["SWITCHBOARD_LEARNER__METRICS_HOST"] = "127.0.0.1"
        out.update(TEST_SETTINGS)
        argv = [self.local(a) if a.startswith("/") else a for a in argv]
        if "--port" in argv:
            argv[argv.index("--port") + 1] = str(self.port)
        return Step(name, argv, out, oneshot)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _compose_plan(stack: Stack) -> list[Step]:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = {name: svc for name, svc in compose["services"].items()
                if str(svc.get("image", "")).startswith("switchboard:") and name not in NOT_RUN}
    secrets = {"tokens": f"{stack.token}\n", "admin-tokens": f"{stack.admin_token}\n"}
    for svc in services.values():
        for vol in svc.get("volumes", []):
            source, target = vol.split(":")[:2]
            stack.mount_dir(target, source)
        for ref in svc.get("secrets", []):
            stack.mount_file(f"/run/secrets/{ref}", secrets[ref])
        for ref in svc.get("configs", []):
            stack.mount_file(ref["target"], DEPLOY / compose["configs"][ref["source"]]["file"])
    order: list[str] = []

    def visit(name: str) -> None:
        for dep in services[name].get("depends_on", {}):
            if dep in services and dep not in order:
                visit(dep)
        if name not in order:
            order.append(name)

    for name in services:
        visit(name)
    interpolate = {"CLICKHOUSE_PASSWORD": "not-used-by-chdb"}

    def env_of(svc: dict[str, Any]) -> dict[str, str]:
        return {k: re.sub(r"\$\{(\w+)[^}]*\}", lambda m: interpolate[m.group(1)], str(v))
                for k, v in svc.get("environment", {}).items()}

    return [stack.step(name, list(services[name]["command"]), env_of(services[name]),
                       services[name].get("restart") == "no") for name in order]


def _k8s_plan(stack: Stack) -> list[Step]:
    docs = [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "switchboard.yaml").read_text()) if d]
    maps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    secret_data = {d["metadata"]["name"]: dict(d["stringData"]) for d in docs if d["kind"] == "Secret"}
    # the operator fills the Secrets in before applying: here with this test's tokens
    secret_data["switchboard-tokens"] = {"tokens": f"{stack.token}\n",
                                         "admin-tokens": f"{stack.admin_token}\n"}
    steps: list[Step] = []
    # kubectl applies everything at once; the learner pod's init containers create topics
    for kind, name in (("Deployment", "switchboard-learner"), ("StatefulSet", "switchboard-server")):
        (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
        pod = doc["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in pod.get("initContainers", []) + pod["containers"]:
            for m in container.get("volumeMounts", []):
                vol = volumes.get(m["name"], {})
                if "configMap" in vol or "secret" in vol:
                    data = (maps[vol["configMap"]["name"]] if "configMap" in vol
                            else secret_data[vol["secret"]["secretName"]])
                    for key, value in data.items():
                        stack.mount_file(f"{m['mountPath']}/{key}", value)
                elif m["mountPath"] != "/tmp":
                    claim = vol.get("persistentVolumeClaim", {}).get("claimName", f"{name}-{m['name']}")
                    stack.mount_dir(m["mountPath"], claim)
            env: dict[str, str] = {}
            for src in container.get("envFrom", []):
                if "configMapRef" in src:
                    env.update(maps[src["configMapRef"]["name"]])
                else:
                    env.update(secret_data[src["secretRef"]["name"]])
            for e in container.get("env", []):
                env[e["name"]] = e["value"] if "value" in e else "<pod IP>"
            oneshot = container in pod.get("initContainers", [])
            steps.append(stack.step(f"{name}/{container['name']}", list(container["args"]), env, oneshot))
    return steps


def _allocate(url: str, token: str, i: int, ts_ms: int) -> dict[str, Any]:
    import httpx

    body = {"unit_id": f"user-{i}", "conversation_id": f"conv-{i}", "embedding": [0.1] * 64,
            "ts_ms": ts_ms}
    r = httpx.post(f"{url}/v1/allocate", json=body, headers={"authorization": f"Bearer {token}"},
                   timeout=30)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def _send_feedback(stack: Stack, topic: str, decisions: list[dict[str, Any]], ts_ms: int) -> None:
    from kafka import KafkaProducer

    from bandit.events import FeedbackEvent, encode_event

    producer = KafkaProducer(bootstrap_servers=stack.bootstrap_servers, acks="all")
    try:
        for d in decisions:
            event = FeedbackEvent(event_id=f"fb-{d['decision_id']}", decision_id=d["decision_id"],
                                  ts_ms=ts_ms, unit_id=d["unit_id"], conversation_id=d["conversation_id"],
                                  rating=5, retried=False)
            producer.send(topic, encode_event(event), key=event.key, partition=0)
        producer.flush()
    finally:
        producer.close()


def _wait(cond: Any, what: str, procs: list[tuple[Step, subprocess.Popen[bytes]]],
          timeout_s: float = 120) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not cond():
        for step, proc in procs:
            if proc.poll() is not None:
                raise AssertionError(f"{step} exited with {proc.returncode} while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.2)


def _ready(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.integration
@pytest.mark.parametrize("topology", ["compose", "k8s"])
def test_manifests_come_up_from_nothing(topology: str, tmp_path: Path) -> None:
    import signal
    import time

    from bandit.embedded.broker import EmbeddedBroker
    from bandit.formats.snapshot import load_policy_snapshot
    from bandit.store import open_store

    broker = EmbeddedBroker(log_path=tmp_path / "tansu.log").start()
    stack = Stack(tmp_path, broker.bootstrap_servers)
    plan = _compose_plan(stack) if topology == "compose" else _k8s_plan(stack)
    names = [s.name for s in plan]
    seeded = [a["arm_id"] for a in json.loads((DEPLOY / "arms.json").read_text())]
    running: list[tuple[Step, subprocess.Popen[bytes]]] = []
    try:
        assert any(s.argv[:2] == ["arms", "seed"] for s in plan), names
        assert not any(s.argv[:1] == ["learn"] and "--arms" in s.argv for s in plan), \
            "the learner gets its arms from the shared registry, not --arms"
        for step in plan:
            log = open(tmp_path / f"{step.name.replace('/', '_')}.log", "wb")
            cmd = [str(EXE), *step.argv, *(["--log-level", "warning"] if step.argv[0] == "learn" else [])]
            if step.oneshot:
                rc = subprocess.run(cmd, env=step.env, stdout=log, stderr=subprocess.STDOUT,
                                    timeout=180).returncode
                assert rc == 0, f"{step} exited {rc}: {(tmp_path / log.name).read_text()[-2000:]}"
            else:
                running.append((step, subprocess.Popen(cmd, env=step.env, stdout=log,
                                                       stderr=subprocess.STDOUT)))
        config_env = running[0][0].env
        config = load_config(stack.config, env=config_env)
        url = f"http://127.0.0.1:{stack.port}"
        _wait(lambda: _ready(url), "the server to be ready", running)

        import httpx

        arms = httpx.get(f"{url}/v1/arms", headers={"authorization": f"Bearer {stack.token}"},
                         timeout=10).json()
        assert sorted(a["arm_id"] for a in arms) == sorted(seeded)
        assert httpx.post(f"{url}/v1/allocate", json={}, timeout=10).status_code == 401

        # event times are given (as a serving tier may), so what joins and what closes does
        # not depend on how fast this machine sends: feedback 0.1 s after its decision, and
        # later traffic 3 windows on moves the watermark past the first decisions' windows
        t0 = int(time.time() * 1000)
        t1 = t0 + int(3 * WINDOW_S * 1000)
        first = [_allocate(url, stack.token, i, t0) for i in range(12)]
        assert {d["arm_id"] for d in first} <= set(seeded)
        for d, i in zip(first, range(12), strict=True):
            d.update(unit_id=f"user-{i}", conversation_id=f"conv-{i}")
        _send_feedback(stack, config.kafka.feedback_topic, first, t0 + 100)
        later = [_allocate(url, stack.token, i, t1) for i in range(100, 110)]
        for d, i in zip(later, range(100, 110), strict=True):
            d.update(unit_id=f"user-{i}", conversation_id=f"conv-{i}")
        _send_feedback(stack, config.kafka.feedback_topic, later, t1 + 100)

        snapshot = Path(config.serve.snapshot_dir) / "policy.snapshot"

        def learnt() -> bool:
            if not snapshot.exists():
                return False
            st = load_policy_snapshot(snapshot)[0].statistics
            return float(st.n.sum()) >= len(first)

        _wait(learnt, "the first decisions in a published snapshot", running, timeout_s=180)
        policy, snap_arms, _ = load_policy_snapshot(snapshot)
        st = policy.statistics
        assert sorted(snap_arms.ids()) == sorted(seeded), "learner and servers agree on the arms"
        served = {d["arm_id"] for d in first}
        # rating 5, not retried: a positive reward was learnt for every arm served first
        unrewarded = sorted(a for a in served if not float(np.abs(st.b[st.slot(a)]).sum()) > 0)
        assert not unrewarded, f"feedback not learnt for {unrewarded}"

        # the one-shot steps are idempotent: a second `up` changes nothing (in the k8s plan
        # the server pod's own `arms seed` init container already ran after the learner's)
        registry = RegistryFile(config.serve.snapshot_dir).read()
        for step in plan if topology == "compose" else []:
            if step.oneshot:
                rc = subprocess.run([str(EXE), *step.argv], env=step.env, capture_output=True,
                                    timeout=180).returncode
                assert rc == 0, step
        assert RegistryFile(config.serve.snapshot_dir).read() == registry
    finally:
        for _, proc in running:
            proc.send_signal(signal.SIGTERM)
        codes = {step.name: proc.wait(90) for step, proc in running}
        broker.stop()
    assert set(codes.values()) == {0}, codes
    logs = "".join(p.read_text(errors="replace") for p in tmp_path.glob("*.log"))
    assert stack.token not in logs and stack.admin_token not in logs, "a token reached a log"
    # what the learner wrote to the analytics store (one process owns chdb: read after it exits)
    with open_store(f"chdb://{tmp_path / 'chdb'}", config.store.database) as store:
        assert store.count("decisions") == len(first) + len(later)
        assert store.count("feedback") == len(first) + len(later)
        assert store.count("rewards") >= len(first)
