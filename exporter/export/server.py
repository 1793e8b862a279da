"""A small HTTP/1.1 server for the exporter's GET endpoints: one asyncio event loop, one thread.

Why not the standard library's WSGI server: it speaks HTTP/1.0 and starts a thread per
connection, so 20 scrapers at once queue behind thread start-ups and the GIL (p99 22 ms on
the benchmark machine). Here connections are kept alive, requests are answered in the order they
arrive, and an answer from the render cache costs tens of microseconds. Only the bcrypt check of
a credential not seen before runs elsewhere (a worker thread), so it cannot stall other scrapers.

Limits that keep a misbehaving client from holding resources: a request head has
``HEAD_TIMEOUT`` seconds to arrive and at most ``MAX_HEAD`` bytes; an idle kept-alive connection
is closed after ``IDLE_TIMEOUT``; at most ``MAX_CONNECTIONS`` are open; request bodies are refused;
a client that stops reading its answers is not read from until it catches up.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

log = logging.getLogger(__name__)

MAX_HEAD = 16 * 1024
HEAD_TIMEOUT = 10.0
IDLE_TIMEOUT = 300.0  # longer than any sane scrape interval, so Prometheus reuses connections
MAX_CONNECTIONS = 512


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str  # percent-decoded
    query: str
    headers: Mapping[str, str]  # names lower-cased


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


Handler = Callable[[Request], Response]


class Authenticator(Protocol):
    def known(self, authorization: str) -> bool | None:
        """True: accepted before; False: can never be valid; None: needs :meth:`verify`."""

    def verify(self, authorization: str) -> bool:
        """The slow check (bcrypt); runs in a worker thread."""


def parse_listen_address(addr: str) -> tuple[str, int]:
    """``:9709`` → all interfaces; ``127.0.0.1:9709``; ``[::1]:9709``.

    >>> parse_listen_address(":9709"), parse_listen_address("[::1]:80")
    (('0.0.0.0', 9709), ('::1', 80))
    """
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"invalid listen address {addr!r}: expected [HOST]:PORT")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse_head(head: bytes) -> tuple[Request, bool]:
    """A request head (without the blank line) → (request, keep the connection alive).

    >>> r, keep = parse_head(b"GET /metrics?name%5B%5D=x HTTP/1.1\\r\\nHost: h\\r\\nAccept: */*")
    >>> r.method, r.path, r.query, r.headers["accept"], keep
    ('GET', '/metrics', 'name%5B%5D=x', '*/*', True)
    """
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[0].isupper():
        raise _BadRequest(400, "malformed request line")
    method, target, version = (p.decode("latin-1") for p in parts)
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise _BadRequest(505 if version.startswith("HTTP/") else 400, "unsupported version")
    headers: dict[str, str] = {}
    for raw in lines[1:]:
        name, sep, value = raw.partition(b":")
        if not sep or not name or name != name.strip() or b" " in name:
            raise _BadRequest(400, "malformed header")  # folded lines included (obsolete)
        key = name.decode("latin-1").lower()
        text = value.strip().decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    if "transfer-encoding" in headers or headers.get("content-length", "0") != "0":
        raise _BadRequest(413, "request bodies are not accepted")
    if target.startswith("/"):
        path, _, query = target.partition("?")
    elif target.startswith(("http://", "https://")):
        split = urlsplit(target)
        path, query = split.path or "/", split.query
    else:
        raise _BadRequest(400, "malformed request target")
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    keep = "close" not in tokens if version == "HTTP/1.1" else "keep-alive" in tokens
    return Request(method, unquote(path), query, headers), keep


class _Date:
    """The ``Date`` header, formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def __call__(self) -> str:
        now = int(time.time())
        if now != self._second:
            self._second, self._text = now, formatdate(now, usegmt=True)
        return self._text


_UNAUTHORIZED = Response(
    401,
    b"Unauthorized\n",
    (("Content-Type", "text/plain"), ("WWW-Authenticate", 'Basic realm="vllm-profile"')),
)


class _Tls:
    """Server-side TLS over memory buffers. Doing it here rather than through asyncio's own
    TLS transport lets a failed handshake send its alert before the connection closes, so a
    client without the required certificate is told why ("certificate required"), not just cut
    off."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._obj = context.wrap_bio(self._in, self._out, server_side=True)
        self._handshaken = False

    def decrypt(self, data: bytes) -> bytes:
        """Bytes from the wire → the plaintext they complete. Raises ssl.SSLError."""
        self._in.write(data)
        if not self._handshaken:
            try:
                self._obj.do_handshake()
            except ssl.SSLWantReadError:
                return b""
            self._handshaken = True
        chunks = []
        while True:
            try:
                chunk = self._obj.read(65536)
            except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def encrypt(self, data: bytes) -> None:
        self._obj.write(data)

    def wire(self) -> bytes:
        """What is due to the peer: handshake records, alerts, encrypted answers."""
        return self._out.read()


class _Connection(asyncio.Protocol):
    def __init__(self, server: HttpServer) -> None:
        self._srv = server
        self._loop = server.loop
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tls = _Tls(server.ssl_context) if server.ssl_context is not None else None
        self._waiting_auth = False  # a credential is being checked in the worker thread
        self._paused = False  # the client is not reading its answers
        self._closed = False
        self._idle = False  # between requests on a kept-alive connection

    # -- asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        if len(self._srv.connections) >= MAX_CONNECTIONS:
            log.warning("over %d open connections: refusing one", MAX_CONNECTIONS)
            self._closed = True
            transport.abort()
            return
        self._srv.connections.add(self)
        self._arm(HEAD_TIMEOUT)  # the TLS handshake and first request must come in time

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._srv.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        if self._idle:
            self._idle = False
            self._arm(HEAD_TIMEOUT)  # a request begins: its head must arrive in time
        if self._tls is not None:
            try:
                data = self._tls.decrypt(data)
            except ssl.SSLError as e:
                log.debug("TLS error from a client: %s", e)
                self._write(b"")  # the alert
                self.close()
                return
            self._write(b"")  # handshake records
        self._buf += data
        self._process()

    def _write(self, data: bytes) -> None:
        assert self._transport is not None
        if self._tls is None:
            self._transport.write(data)
            return
        if data:
            self._tls.encrypt(data)
        wire = self._tls.wire()
        if wire:
            self._transport.write(wire)

    def eof_received(self) -> bool:
        return False  # close our side too

    def pause_writing(self) -> None:
        self._paused = True
        assert self._transport is not None
        self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused = False
        assert self._transport is not None
        if not self._closed:
            self._transport.resume_reading()
            self._process()

    # -- request handling
    def _arm(self, seconds: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(seconds, self._expire)

    def _expire(self) -> None:
        self.close()

    def close(self) -> None:
        if not self._closed and self._transport is not None:
            self._closed = True
            self._transport.close()

    def _process(self) -> None:
        while not (self._waiting_auth or self._paused or self._closed):
            end = self._buf.find(b"\r\n\r\n")
            if end == -1 or end > MAX_HEAD:
                if len(self._buf) > MAX_HEAD:
                    self._reject(431, "request head too large")
                return
            head = bytes(self._buf[:end])
            del self._buf[: end + 4]
            try:
                request, keep = parse_head(head)
            except _BadRequest as e:
                self._reject(e.status, str(e))
                return
            self._handle(request, keep)

    def _reject(self, status: int, message: str) -> None:
        body = f"{HTTPStatus(status).phrase}: {message}\n".encode()
        self._send("GET", Response(status, body, (("Content-Type", "text/plain"),)), False)

    def _handle(self, request: Request, keep: bool) -> None:
        auth = self._srv.auth
        if auth is not None:
            credential = request.headers.get("authorization", "")
            verdict = auth.known(credential)
            if verdict is None:
                self._waiting_auth = True
                checked = self._srv.auth_pool().submit(auth.verify, credential)
                checked.add_done_callback(lambda f: self._back_on_loop(request, keep, f))
                return
            if not verdict:
                self._send(request.method, _UNAUTHORIZED, keep)
                return
        self._send(request.method, self._srv.answer(request), keep)

    def _back_on_loop(self, request: Request, keep: bool, checked: Future[bool]) -> None:
        try:
            self._loop.call_soon_threadsafe(self._authenticated, request, keep, checked)
        except RuntimeError:
            pass  # the server stopped while the credential was being checked

    def _authenticated(self, request: Request, keep: bool, checked: Future[bool]) -> None:
        self._waiting_auth = False
        if self._closed:
            return
        ok = not checked.cancelled() and checked.exception() is None and checked.result()
        self._send(request.method, self._srv.answer(request) if ok else _UNAUTHORIZED, keep)
        self._process()

    def _send(self, method: str, response: Response, keep: bool) -> None:
        lines = [
            f"HTTP/1.1 {response.status} {HTTPStatus(response.status).phrase}",
            f"Date: {self._srv.date()}",
            f"Content-Length: {len(response.body)}",
        ]
        lines += [f"{k}: {v}" for k, v in response.headers]
        lines += self._srv.extra_headers
        if not keep:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self._write(head if method == "HEAD" else head + response.body)
        if keep:
            self._idle = not self._buf
            self._arm(IDLE_TIMEOUT if self._idle else HEAD_TIMEOUT)
        else:
            self.close()


class HttpServer:
    """Binds at construction (so a taken port fails the caller at once), serves after
    :meth:`start` in a background thread; ``port`` is the bound port."""

    def __init__(
        self,
        handler: Handler,
        listen: str,
        ssl_context: ssl.SSLContext | None = None,
        auth: Authenticator | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        host, port = parse_listen_address(listen)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # socket.create_server sets SO_REUSEADDR; a backlog of 128 lets a burst of scrapers in.
        self._sock = socket.create_server((host, port), family=family, backlog=128)
        self.port: int = self._sock.getsockname()[1]
        self._handler = handler
        self.ssl_context = ssl_context
        self.auth = auth
        self.extra_headers = [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.date = _Date()
        self.connections: set[_Connection] = set()
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(self._loop_error)
        self._pool: ThreadPoolExecutor | None = None
        # Set up here, in the caller's thread; the loop runs in its own thread once started.
        self._server = self.loop.run_until_complete(
            self.loop.create_server(lambda: _Connection(self), sock=self._sock)
        )
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)

    def auth_pool(self) -> ThreadPoolExecutor:
        # One worker: a flood of new credentials costs one core at most, not all of them.
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="auth")
        return self._pool

    def answer(self, request: Request) -> Response:
        try:
            return self._handler(request)
        except Exception:  # noqa: BLE001 - one bad request must not end the server
            log.exception("error answering %s %s", request.method, request.path)
            return Response(500, b"Internal server error\n", (("Content-Type", "text/plain"),))

    @staticmethod
    def _loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, (ConnectionError, TimeoutError)):
            # A client that drops its connection: its problem, not the server's.
            log.debug("connection error: %s", context.get("message"))
        else:
            loop.default_exception_handler(context)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        self._server.close()
        for conn in list(self.connections):
            conn.close()
        self.loop.run_until_complete(self._server.wait_closed())
        self.loop.close()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)
        elif not self.loop.is_closed():
            self._server.close()
            self.loop.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
