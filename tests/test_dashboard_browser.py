"""End to end: ``switchboard dashboard`` on a free port, every page loaded in headless
Chromium, a screenshot of each saved under ``test-artifacts/`` and no exception box.

Chromium is Debian's ``chromium`` (``.ci/ensure-test-tools`` installs it). A page counts as
loaded when its DOM holds the element the page exists for (a Vega chart, a table, an
image): the first load after a fresh Streamlit start can come back blank, so the test
polls the DOM rather than sleeping.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_dashboard import fill_store

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "dashboard"
#: page -> (url path, CSS selector of the element the page exists for)
PAGES = {
    "overview": ("", '[data-testid="stVegaLiteChart"]'),
    "retention": ("retention", '[data-testid="stVegaLiteChart"]'),
    "allocation": ("allocation", '[data-testid="stVegaLiteChart"]'),
    "leaderboard": ("leaderboard", '[data-testid="stVegaLiteChart"]'),
    "offline": ("offline", '[data-testid="stImage"] img'),
    # the history page's scatter needs an experiment whose day 30 has matured: before
    # that (a ten-day demo) the page says so in words
    "history": ("history", '[data-testid="stVegaLiteChart"], [data-testid="stAlertContainer"]'),
}
#: pages whose chart the filled store (a matured experiment) must show in the browser
CHARTED = {"history"}
_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--window-size=1400,1800",
    "--remote-debugging-port=0",
]


#: Streamlit's "running" indicator: present while a script run is in progress
_RUNNING = '[data-testid="stStatusWidget"] [data-testid="stStatusWidgetRunningIcon"]'


class Browser:
    """Headless Chromium driven over the DevTools protocol (one page, flat commands)."""

    def __init__(self, profile: Path) -> None:
        self.proc = subprocess.Popen(
            [CHROMIUM, *_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        ws_url = ""
        deadline = time.monotonic() + 30
        assert self.proc.stderr is not None
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if "DevTools listening on " in line:
                ws_url = line.split("DevTools listening on ", 1)[1].strip()
                break
            if not line and self.proc.poll() is not None:
                break
        if not ws_url:
            self.close()
            raise RuntimeError("chromium did not open its DevTools endpoint")
        http = ws_url.split("/devtools/")[0].replace("ws://", "http://")
        with urllib.request.urlopen(f"{http}/json/list", timeout=5) as r:
            targets = json.loads(r.read())
        page = next(t for t in targets if t.get("type") == "page")
        from websockets.sync.client import connect

        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(connect(page["webSocketDebuggerUrl"], max_size=64 * 2**20))
        self._id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return dict(msg.get("result", {}))

    def evaluate(self, expression: str) -> Any:
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return res.get("result", {}).get("value")

    def wait_for(self, selector: str, timeout_s: float = 60.0) -> bool:
        """Poll until ``selector`` is in the DOM and Streamlit is not running a script."""
        js = (
            f"!!document.querySelector({json.dumps(selector)}) && "
            f"!document.querySelector({json.dumps(_RUNNING)})"
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.evaluate(js):
                return True
            time.sleep(0.25)
        return False

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        if getattr(self, "_stack", None) is not None:
            self._stack.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def _switchboard() -> str:
    exe = Path(sys.executable).with_name("switchboard")
    return str(exe) if exe.exists() else (shutil.which("switchboard") or "switchboard")


def _free_port() -> int:
    from dashboards.cli import free_port

    return free_port()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("dash-e2e")
    dsn = f"chdb://{root / 'chdb'}"
    database = f"e2e_{uuid.uuid4().hex[:8]}"
    info = fill_store(dsn, database, root / "snapshots", root / "results")
    port = _free_port()
    env = dict(os.environ)
    env["SWITCHBOARD_DASHBOARD__STALE_AFTER_S"] = str(10 * 365 * 86400)
    env["SWITCHBOARD_DASHBOARD__LAG_AFTER_S"] = str(10 * 365 * 86400)
    log = open(root / "dashboard.log", "w")
    proc = subprocess.Popen(
        [
            _switchboard(),
            "dashboard",
            "--port",
            str(port),
            "--dsn",
            dsn,
            "--database",
            database,
            "--snapshots",
            str(root / "snapshots"),
            "--results",
            str(root / "results"),
            "--as-of-ms",
            str(info["as_of_ms"]),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                raise RuntimeError(
                    "dashboard did not start:\n" + (root / "dashboard.log").read_text()[-3000:]
                )
            time.sleep(0.3)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.mark.browser
def test_dashboard_pages_render_in_headless_chromium(server: str) -> None:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} missing: run .ci/ensure-test-tools")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sb-chromium-") as profile:
        browser = Browser(Path(profile))
        try:
            browser.call("Page.enable")
            for name, (path, selector) in PAGES.items():
                browser.call("Page.navigate", url=f"{server}/{path}")
                loaded = browser.wait_for(selector)
                browser.screenshot(ARTIFACTS / f"{name}.png")
                assert loaded, f"{name}: no {selector} within 60 s (see test-artifacts/dashboard)"
                assert not browser.evaluate("!!document.querySelector('[data-testid=\"stException\"]')"), (
                    f"{name}: the page shows an exception box"
                )
                title = browser.evaluate(
                    "document.querySelector('h1') && document.querySelector('h1').innerText"
                )
                assert title, f"{name}: no page title"
                if name in CHARTED:
                    assert browser.wait_for('[data-testid="stVegaLiteChart"]'), (
                        f"{name}: no chart for the store's matured experiment"
                    )
        finally:
            browser.close()
