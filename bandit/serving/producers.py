"""Kafka producers for the decision publisher: librdkafka (``confluent-kafka``) when it
is installed, ``kafka-python`` otherwise, behind the small interface the publisher uses.

Why librdkafka: ``KafkaProducer.send`` is pure Python per record and its
network thread encodes batches and completes per-record futures under the GIL, so at
several thousand decisions per second the producer took a large share of the
allocation server's CPU and, holding the GIL in bursts, added to its tail latency. librdkafka
encodes and sends on its own native threads; ``produce`` costs little per call (figures in
docs/serving.md) and delivery
reports are handed to Python only when :meth:`ConfluentProducer.poll` asks for them.

Both are configured alike: ``acks=all``, retries, ``linger 5 ms``, no idempotence (tansu
refuses ``InitProducerId``), and the Java client's murmur2 partitioner, so a
conversation's decisions land on the same partition whichever client wrote them.

The interface (:class:`Producer`): ``send(topic, key=, value=)`` returns a
:class:`Delivery` with ``add_callback(fn, *args)`` (called with the metadata),
``add_errback(fn, *args)`` (called with the exception) and ``get(timeout)``;
``poll(timeout)`` serves delivery reports; ``flush(timeout)``; ``close(timeout)`` (a
zero timeout fails what is still queued, through the errbacks).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["ConfluentProducer", "Delivery", "Producer", "make_producer"]

log = logging.getLogger(__name__)


class Delivery(Protocol):
    def add_callback(self, fn: Callable[..., Any], *args: Any) -> Any: ...

    def add_errback(self, fn: Callable[..., Any], *args: Any) -> Any: ...

    def get(self, timeout: float | None = None) -> Any: ...


class Producer(Protocol):
    def send(self, topic: str, *, key: bytes, value: bytes) -> Delivery: ...

    def poll(self, timeout: float = 0.0) -> None: ...

    def flush(self, timeout: float | None = None) -> Any: ...

    def close(self, timeout: float | None = None) -> None: ...


class DeliveryError(Exception):
    """A record librdkafka could not deliver (``KafkaError`` text in the message)."""


class _ConfluentDelivery:
    """One record's delivery report (resolved from :meth:`ConfluentProducer.poll`).

    Kept small — no ``threading.Event`` per record: it is resolved on the thread that
    polls, and :meth:`get` polls until it is."""

    __slots__ = ("_callbacks", "_done", "_errbacks", "_owner", "error", "metadata")

    def __init__(self, owner: ConfluentProducer) -> None:
        self._owner = owner
        self._callbacks: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self._errbacks: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self._done = False
        self.error: BaseException | None = None
        self.metadata: Any = None

    def add_callback(self, fn: Callable[..., Any], *args: Any) -> _ConfluentDelivery:
        self._callbacks.append((fn, args))
        return self

    def add_errback(self, fn: Callable[..., Any], *args: Any) -> _ConfluentDelivery:
        self._errbacks.append((fn, args))
        return self

    def get(self, timeout: float | None = None) -> Any:
        """Wait for the report (serving delivery reports meanwhile); raise on failure."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._done:
            left = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
            if left <= 0:
                raise TimeoutError("no delivery report in time")
            self._owner.poll(left)
        if self.error is not None:
            raise self.error
        return self.metadata

    def _resolve(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.error = DeliveryError(str(err))
            for fn, args in self._errbacks:
                fn(*args, self.error)
        else:
            self.metadata = (msg.topic(), msg.partition(), msg.offset())
            for fn, args in self._callbacks:
                fn(*args, self.metadata)
        self._done = True


class ConfluentProducer:
    """``confluent_kafka.Producer`` behind the :class:`Producer` interface."""

    def __init__(self, config: dict[str, Any],
                 on_down: Callable[[str], None] | None = None,
                 on_result: Callable[[bytes, str | None], None] | None = None) -> None:
        from confluent_kafka import KafkaError
        from confluent_kafka import Producer as RdProducer

        #: called with a reason when no broker is reachable (or on a fatal error)
        self.on_down = on_down
        #: called with ``(value, error or None)`` for each :meth:`produce`
        self.on_result = on_result

        def error_cb(err: Any) -> None:
            # librdkafka retries by itself; tell the owner only when nothing can be sent
            if err.code() == KafkaError._ALL_BROKERS_DOWN or err.fatal():
                if self.on_down is not None:
                    self.on_down(str(err))
            else:
                log.info("kafka producer: %s", err)

        def on_delivery(err: Any, msg: Any) -> None:
            if self.on_result is not None:
                self.on_result(msg.value(), None if err is None else str(err))

        self._p = RdProducer({**config, "logger": log, "error_cb": error_cb})
        self._on_delivery = on_delivery
        self._lock = threading.Lock()  # poll() may come from get() and the run loop

    def send(self, topic: str, *, key: bytes, value: bytes) -> _ConfluentDelivery:
        delivery = _ConfluentDelivery(self)
        self._p.produce(topic, value=value, key=key, on_delivery=delivery._resolve)
        return delivery

    def produce(self, topic: str, key: bytes, value: bytes) -> None:
        """Send without a per-record delivery object: the outcome goes to ``on_result(value,
        error or None)`` (the publisher's hot path)."""
        if self.on_result is None:
            raise RuntimeError("produce() needs on_result: its outcome would be lost")
        self._p.produce(topic, value=value, key=key, on_delivery=self._on_delivery)

    def poll(self, timeout: float = 0.0) -> None:
        with self._lock:
            self._p.poll(timeout)

    def flush(self, timeout: float | None = None) -> int:
        with self._lock:
            return int(self._p.flush(-1 if timeout is None else timeout))

    def close(self, timeout: float | None = None) -> None:
        """Flush for up to ``timeout`` s, then fail (errbacks) whatever is still queued."""
        if timeout:
            self.flush(timeout)
        with self._lock:
            self._p.purge()
            self._p.flush(0)


def make_producer(bootstrap_servers: str, delivery_timeout_ms: int, *,
                  client: str = "auto", client_id: str = "switchboard-serve",
                  on_down: Callable[[str], None] | None = None,
                  on_result: Callable[[bytes, str | None], None] | None = None
                  ) -> Producer | Any:
    """A producer from ``client``: ``"confluent"`` (librdkafka), ``"kafka-python"``, or
    ``"auto"`` — librdkafka if ``confluent_kafka`` imports, else kafka-python.

    ``on_down(reason)`` is called (from :meth:`ConfluentProducer.poll`) when librdkafka
    reports that no broker is reachable or the producer failed fatally. (kafka-python
    raises from its constructor when it cannot bootstrap instead.) ``on_result(value,
    error)`` receives the outcome of each :meth:`ConfluentProducer.produce`."""
    if client not in ("auto", "confluent", "kafka-python"):
        raise ValueError(f"client must be auto, confluent or kafka-python, got {client!r}")
    request_timeout_ms = min(10_000, delivery_timeout_ms // 2)
    use_kafka_python = client == "kafka-python"
    if client == "auto":
        try:
            import confluent_kafka  # noqa: F401
        except ImportError:
            use_kafka_python = True
    if use_kafka_python:
        from kafka import KafkaProducer

        return KafkaProducer(
            bootstrap_servers=bootstrap_servers, acks="all", retries=5, linger_ms=5,
            enable_idempotence=False, max_block_ms=2_000, bootstrap_timeout_ms=2_000,
            request_timeout_ms=request_timeout_ms, delivery_timeout_ms=delivery_timeout_ms,
            reconnect_backoff_max_ms=1_000, client_id=client_id,
        )
    return ConfluentProducer({
        "bootstrap.servers": bootstrap_servers, "client.id": client_id, "acks": "all",
        "enable.idempotence": False, "linger.ms": 5, "retries": 5,
        "message.timeout.ms": delivery_timeout_ms, "request.timeout.ms": request_timeout_ms,
        "reconnect.backoff.max.ms": 1_000, "partitioner": "murmur2_random",
        "socket.connection.setup.timeout.ms": 2_000,
    }, on_down=on_down, on_result=on_result)
