"""The two nginx configurations in deploy/ run in a real nginx, as they are written.

Only what cannot exist on a test machine is substituted: the upstream host names (Docker's
or the pod's DNS) become loopback ports of backends the test starts, the listening port a
free one, the htpasswd path a file the test writes, and nginx's /tmp state a temp folder.
Checked: the dashboard proxy refuses a request without (or with wrong) credentials and
passes one with them, its health paths answer without credentials; the load balancer
hides /metrics, passes the API through and moves on from a replica that answers 503.
Debian's nginx is installed with apt-get when missing, as the alert test does for
promtool.
"""

from __future__ import annotations

import base64
import http.server
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
pytestmark = pytest.mark.integration


def _nginx() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if found:
        return found
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "nginx-light"]):
        proc = subprocess.run(sudo + cmd, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"installing nginx failed: {' '.join(cmd)}: {proc.stderr[-500:]}"
    found = shutil.which("nginx") or "/usr/sbin/nginx"
    assert Path(found).exists(), "nginx is not on PATH after installing Debian's nginx-light"
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Backend(http.server.BaseHTTPRequestHandler):
    status = 200
    name = "backend"

    def do_GET(self) -> None:
        body = f"{self.name} {self.path}".encode()
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args: object) -> None:
        pass


def _backend(name: str, status: int = 200) -> tuple[http.server.ThreadingHTTPServer, int]:
    handler = type(f"Backend_{name}", (_Backend,), {"name": name, "status": status})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, int(srv.server_address[1])


def _get(url: str, auth: tuple[str, str] | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@contextmanager
def _run_nginx(conf_text: str, tmp: Path, port: int) -> Iterator[None]:
    conf = tmp / "nginx.conf"
    conf.write_text(conf_text)
    nginx = _nginx()
    check = subprocess.run([nginx, "-t", "-c", str(conf), "-e", str(tmp / "error.log")],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, f"nginx -t refused {conf_text[:60]!r}...: {check.stderr}"
    # as root, nginx's workers would drop to `nobody`, which cannot read pytest's 0700
    # temp folder; the images run nginx as one unprivileged user throughout
    globals_ = "daemon off;" + (" user root;" if os.geteuid() == 0 else "")
    proc = subprocess.Popen([nginx, "-c", str(conf), "-e", str(tmp / "error.log"),
                             "-g", globals_], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    raise AssertionError(f"nginx exited: {err}") from None
                time.sleep(0.1)
        else:
            raise AssertionError("nginx did not start listening within 60 s")
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_dashboard_proxy_requires_credentials(tmp_path: Path) -> None:
    srv, backend_port = _backend("dashboard")
    port = _free_port()
    htpasswd = tmp_path / "htpasswd"
    # {PLAIN} is nginx's documented scheme for a clear-text test password
    htpasswd.write_text("alice:{PLAIN}correct-horse\n")
    text = (DEPLOY / "dashboard-proxy.conf").read_text().replace("/tmp/", f"{tmp_path}/")
    assert "server dashboard:8501;" in text and "listen 8080;" in text
    text = (text.replace("server dashboard:8501;", f"server 127.0.0.1:{backend_port};")
                .replace("listen 8080;", f"listen 127.0.0.1:{port};")
                .replace("/run/secrets/dashboard-htpasswd", str(htpasswd)))
    try:
        with _run_nginx(text, tmp_path, port):
            base = f"http://127.0.0.1:{port}"
            assert _get(f"{base}/")[0] == 401
            assert _get(f"{base}/", ("alice", "wrong"))[0] == 401
            assert _get(f"{base}/", ("mallory", "correct-horse"))[0] == 401
            assert _get(f"{base}/overview", ("alice", "correct-horse")) == (200, "dashboard /overview")
            assert _get(f"{base}/proxy-health") == (200, "ok\n")
            assert _get(f"{base}/_stcore/health") == (200, "dashboard /_stcore/health")
    finally:
        srv.shutdown()


def test_server_load_balancer_hides_metrics_and_skips_unready_replicas(tmp_path: Path) -> None:
    ready, ready_port = _backend("ready")
    unready, unready_port = _backend("unready", status=503)
    port = _free_port()
    text = (DEPLOY / "nginx.conf").read_text().replace("/tmp/", f"{tmp_path}/")
    line = "server server:8000 max_fails=3 fail_timeout=5s;"
    assert line in text and "listen 8000;" in text
    text = (text.replace(line, f"server 127.0.0.1:{unready_port} max_fails=3 fail_timeout=5s;\n"
                               f"    server 127.0.0.1:{ready_port} max_fails=3 fail_timeout=5s;")
                .replace("listen 8000;", f"listen 127.0.0.1:{port};"))
    try:
        with _run_nginx(text, tmp_path, port):
            base = f"http://127.0.0.1:{port}"
            assert _get(f"{base}/metrics")[0] == 404
            # round robin starts anywhere; a 503 from one replica is retried on the other
            for _ in range(4):
                assert _get(f"{base}/v1/arms") == (200, "ready /v1/arms")
    finally:
        ready.shutdown()
        unready.shutdown()
