"""A service the demo starts stops by itself when the demo dies, even by SIGKILL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ARMS = Path(__file__).resolve().parents[1] / "arms.json"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_service_stops_when_its_parent_is_killed(tmp_path: Path) -> None:
    port = _free_port()
    # the parent starts the service as simulations/stack.py does, then waits to be killed
    parent_code = textwrap.dedent(f"""
        import os, subprocess, sys, time
        env = {{**os.environ, "SWITCHBOARD_EXIT_WITH_PARENT": str(os.getpid()),
               "SWITCHBOARD_SERVE__SPILL_DIR": {str(tmp_path / "spill")!r},
               "SWITCHBOARD_SERVE__SNAPSHOT_DIR": {str(tmp_path / "snap")!r},
               "SWITCHBOARD_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1"}}
        p = subprocess.Popen([sys.executable, "-m", "bandit.cli", "serve", "--dev",
                              "--host", "127.0.0.1", "--port", "{port}", "--arms", {str(ARMS)!r}],
                             env=env, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(p.pid, flush=True)
        time.sleep(600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the service is up and serving
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert _alive(child), "the service exited before it served"
                time.sleep(0.2)
        else:
            raise AssertionError("the service did not listen within 120 s")
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 60
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(child), "the service ran on as an orphan after its parent was killed"
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)
        if parent.poll() is None:
            parent.kill()
