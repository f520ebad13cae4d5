"""uvicorn's httptools protocol with ``POST /v1/allocate`` (and the event endpoints
``/v1/feedback``, ``/v1/engagement``, ``/v1/exposures``) answered inline.

uvicorn serves every request as an ASGI task: a scope dict, a ``RequestResponseCycle``
with an ``asyncio.Event``, a task on the loop, ``receive``/``send`` coroutines and a
header check per response line. For the allocation endpoint that machinery costs more
CPU than the allocation itself (``docs/serving.md``, Request path, has the figures).
:class:`AllocateFastProtocol` answers a plain POST to one of those paths as soon as its
body is complete, from the parser callback: it hands the header and body bytes to the
app's :class:`~bandit.serving.allocator.Allocator` (:meth:`~Allocator.post_now`, the
code every FastAPI route calls too) and writes the reply with uvicorn's own status line
and default headers.

The allocator comes from the app explicitly: :func:`bandit.serving.app.create_app`'s
lifespan yields it into the ASGI lifespan state under
:data:`~bandit.serving.allocator.ALLOCATOR_STATE_KEY`, which uvicorn passes to every
connection. With no allocator there (lifespan off, another app) every request takes the
ordinary ASGI path.

Anything unusual goes the ordinary ASGI way, through :class:`bandit.serving.app.Edge`
and FastAPI, unchanged: another path or method, HTTP/1.0, ``Connection: close``,
``Expect: 100-continue``, chunked or missing ``Content-Length``, a body over
``serve.max_body_bytes`` (the edge answers 413), a request queued behind a pipelined one
still running, access logging or a concurrency limit switched on, and text requests
that must await the batching encoder.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from bandit.serving.allocator import ALLOCATOR_STATE_KEY, POST_KINDS, Allocator

__all__ = ["AllocateFastProtocol"]

log = logging.getLogger(__name__)

#: paths answered inline: allocation and the event endpoints
_INLINE = {path.encode(): path for path in POST_KINDS}
_JSON_HEADERS = b"content-type: application/json\r\ncontent-length: "


class AllocateFastProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` that serves plain allocation and event posts without an ASGI
    task, through the allocator the app put in the lifespan state."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._inline = False
        self._chunks: list[bytes] = []
        self._t0 = 0.0

    def _allocator(self) -> Allocator | None:
        found = self.app_state.get(ALLOCATOR_STATE_KEY)
        return found if isinstance(found, Allocator) else None

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._inline = False

    def on_headers_complete(self) -> None:
        allocator = self._allocator() if self.url in _INLINE else None
        if allocator is not None and self._can_inline(allocator.max_body_bytes):
            self._inline = True
            self._chunks = []
            self._t0 = time.perf_counter()
            return
        super().on_headers_complete()

    def _can_inline(self, max_bytes: int) -> bool:
        parser = self.parser
        if parser.get_method() != b"POST" or parser.get_http_version() != "1.1" \
                or not parser.should_keep_alive() or self.expect_100_continue:
            return False
        if self.pipeline or (self.cycle is not None and not self.cycle.response_complete):
            return False  # keep responses in request order
        if self.access_log or self.limit_concurrency is not None or self.flow.write_paused:
            return False  # logging, 503s and back-pressure are uvicorn's business
        length = None
        for name, value in self.headers:
            if name == b"content-length":
                if length is not None:
                    return False
                try:
                    length = int(value)
                except ValueError:
                    return False
            elif name == b"transfer-encoding":
                return False
        return length is not None and 0 <= length <= max_bytes

    def on_body(self, body: bytes) -> None:
        if self._inline:
            self._chunks.append(body)
        else:
            super().on_body(body)

    def on_message_complete(self) -> None:
        allocator = self._allocator() if self._inline else None
        if allocator is None:
            super().on_message_complete()
            return
        self._inline = False
        body = b"".join(self._chunks)
        self._chunks = []
        authorization = None
        for name, value in self.headers:
            if name == b"authorization":
                authorization = value.decode("latin-1")
                break
        path = _INLINE[self.url]
        try:
            reply = allocator.post_now(path, authorization, body)
        except Exception:  # a bug: answer like uvicorn does for a failing ASGI app
            log.exception("Exception in the inline %s handler", path)
            self.transport.write(b"".join([
                STATUS_LINE[500], *(n + b": " + v + b"\r\n"
                                    for n, v in self.server_state.default_headers),
                b"content-type: text/plain; charset=utf-8\r\ncontent-length: 21\r\n"
                b"connection: close\r\n\r\nInternal Server Error"]))
            allocator.metrics.request(path, 500, time.perf_counter() - self._t0)
            self.transport.close()
            return
        if reply is None:
            # needs an await (batching text encoder): replay it on the ASGI path
            super().on_headers_complete()
            super().on_body(body)
            super().on_message_complete()
            return
        status, content, extra = reply
        parts = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            parts += [name, b": ", value, b"\r\n"]
        parts += [_JSON_HEADERS, str(len(content)).encode(), b"\r\n"]
        if extra:
            for key, val in extra.items():
                parts += [key.lower().encode(), b": ", val.encode(), b"\r\n"]
        parts += [b"\r\n", content]
        self.transport.write(b"".join(parts))
        allocator.metrics.request(path, status, time.perf_counter() - self._t0)
        self.on_response_complete()
