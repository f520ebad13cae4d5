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
}
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
        finally:
            browser.close()


DEMO_ARTIFACTS = ARTIFACTS.parent / "demo"
_NO_EXCEPTION = "!document.querySelector('[data-testid=\"stException\"]')"
#: every static table fits its container (nothing cut off or scrolled away)
_NOTHING_CUT = (
    "[...document.querySelectorAll('[data-testid=\"stTable\"]')]"
    ".every(t => t.scrollWidth <= t.clientWidth + 1)"
)


def _offline_run(results: Path) -> None:
    """One offline run for the offline page (a summary and a plot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = results / "simulate-e2e"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"command": "simulate", "regret": 1.0}))
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1], [0, 1])
    fig.savefig(run / "regret.png")
    plt.close(fig)


class _Lines:
    """The demo's output lines, read by a thread (the test polls them)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        import threading

        self.lines: list[str] = []
        self._t = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._t.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def day(self) -> int:
        import re

        days = [int(m.group(1)) for line in self.lines if (m := re.search(r"day (\d+)/\d+ ·", line))]
        return max(days, default=0)

    def has(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def wait(self, cond: Any, timeout_s: float, proc: subprocess.Popen[str]) -> None:
        deadline = time.monotonic() + timeout_s
        while not cond():
            if proc.poll() is not None:
                raise AssertionError("demo exited early:\n" + "\n".join(self.lines[-30:]))
            if time.monotonic() > deadline:
                raise AssertionError("demo too slow:\n" + "\n".join(self.lines[-30:]))
            time.sleep(0.5)


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.xdist_group("demo")  # never beside the busy-cores demo (tests/test_demo.py)
def test_live_demo_pages_render_at_every_moment(tmp_path: Path) -> None:
    """``switchboard demo`` with a 5 s store TTL: every page in headless Chromium at the
    start (empty store), at two moments mid-run (partial cohorts, reopened snapshots of
    the store the learner owns) and after the last simulated day — never an exception box,
    and from mid-run on the chart each page exists for."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} missing: run .ci/ensure-test-tools")
    DEMO_ARTIFACTS.mkdir(parents=True, exist_ok=True)
    _offline_run(tmp_path / "results")
    env = {
        **os.environ,
        "SWITCHBOARD_DASHBOARD__STORE_TTL_S": "5",
        "SWITCHBOARD_DASHBOARD__RESULTS_DIR": str(tmp_path / "results"),
        "SWITCHBOARD_DASHBOARD__STALE_AFTER_S": str(10 * 365 * 86400),
        "SWITCHBOARD_DASHBOARD__LAG_AFTER_S": str(10 * 365 * 86400),
    }
    proc = subprocess.Popen(
        [_switchboard(), "demo", "--users", "120", "--days", "10", "--seconds-per-day", "15",
         "--workdir", str(tmp_path / "demo")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    out = _Lines(proc)
    started: dict[str, int] = {}
    try:
        out.wait(lambda: out.has("dashboard http://") and out.has("experiment id"), 240, proc)
        line = next(x for x in out.lines if "dashboard http://" in x)
        url = line.split("dashboard ", 1)[1].split()[0]
        with tempfile.TemporaryDirectory(prefix="sb-chromium-") as profile:
            browser = Browser(Path(profile))
            try:
                browser.call("Page.enable")
                # a 1280 px wide laptop screen: no column of the results may be cut off
                browser.call("Emulation.setDeviceMetricsOverride", width=1280, height=1600,
                             deviceScaleFactor=1, mobile=False)
                last_day = -1
                for moment in ("start", "mid-1", "mid-2", "after"):
                    if moment == "after":
                        out.wait(lambda: out.has("done simulating"), 600, proc)
                    elif moment != "start":
                        out.wait(lambda d=last_day: out.day() > d or out.has("done simulating"), 300, proc)
                    last_day = out.day()
                    started[moment] = -1 if out.has("done simulating") else last_day
                    for name, (path, selector) in PAGES.items():
                        browser.call("Page.navigate", url=f"{url}/{path}")
                        # after the run every page has its chart. Mid-run, how much the learner
                        # has stored depends on the machine's speed, not the simulated day: at
                        # mid-2 a page shows its chart or says in words why not yet (st.info)
                        if moment == "after":
                            want = selector
                        elif moment == "mid-2" and name != "overview":
                            want = f'{selector}, [data-testid="stAlert"], [data-testid="stAlertContainer"]'
                        else:
                            want = "h1"
                        loaded = browser.wait_for(want, timeout_s=90)
                        browser.screenshot(DEMO_ARTIFACTS / f"{moment}-{name}.png")
                        assert browser.evaluate(_NO_EXCEPTION), f"{moment}/{name}: exception box"
                        assert loaded, f"{moment}/{name}: no {want} (see test-artifacts/demo)"
                        assert browser.evaluate(_NOTHING_CUT), f"{moment}/{name}: a table is cut off"
                        if moment == "after" and name == "overview":
                            assert browser.evaluate(
                                "!!document.querySelector('[data-testid=\"stTable\"]')"
                            ), "after/overview: no results table"
            finally:
                browser.close()
        # three moments began while days were still being simulated
        assert all(started[m] >= 0 for m in ("start", "mid-1", "mid-2")), started
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # one Ctrl-C stops the demo and its services
            try:
                proc.wait(timeout=180)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert proc.returncode == 0, "\n".join(out.lines[-30:])
    assert "Traceback" not in "\n".join(out.lines)
