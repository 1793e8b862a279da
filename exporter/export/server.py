"""The exporter's HTTP server: aiohttp's low-level server on one event loop in one thread.

aiohttp parses HTTP (llhttp), keeps connections alive, queues at most 32 pipelined requests per
connection before it stops reading, and applies flow control to slow readers; asyncio does TLS
(``start_tls`` with an ``ssl`` context). What is ours, because neither library has it:

* admission (:mod:`exporter.export.admission`): at most ``MAX_PER_CLIENT`` connections per IP
  address and ``MAX_CONNECTIONS`` in all; at a cap the longest-idle connection gives way;
* a deadline for a request head: aiohttp only bounds idle time, so a client trickling a head
  would otherwise hold its connection for the whole idle timeout;
* credential checks (:mod:`exporter.export.credentials`): bcrypt off the loop, fair per client;
* rate-limited logs, and error answers that never repeat what the client sent.

Connections are admitted before the TLS handshake, so a client that opens connections and never
finishes a handshake counts against its own cap like any other.

Routes are plain functions from :class:`Request` to :class:`Response` (:mod:`exporter.export.http`);
they run on the event loop and must be fast (``/metrics`` answers from a render cache).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from asyncio import sslproto
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from exporter.export.admission import Admission, Held
from exporter.export.credentials import OK, TOO_MANY, Authenticator, CredentialChecks
from exporter.option_values import parse_listen_address
from exporter.ratelog import rate_limited

log = rate_limited(__name__)

# asyncio gives every TLS connection a 256 KiB read buffer (SSLProtocol.max_size, a class
# attribute, the only knob: start_tls builds the protocol itself): 512 connections, or a churn of
# handshakes, then hold over 128 MiB. A TLS record is at most 16 KiB; 32 KiB reads lose nothing.
# Measured here: 7,000 connect-and-close before the handshake took the resident size from 43 to
# 330 MiB with the default.
sslproto.SSLProtocol.max_size = 32 * 1024
MAX_HANDSHAKES = 64  # TLS handshakes in progress at once
HEAD_TIMEOUT = 10.0  # to finish the TLS handshake, and to send a whole request head
IDLE_TIMEOUT = 300.0  # a kept-alive connection between requests; longer than scrape intervals
CHECK_WAIT = 10.0  # a request waits this long at most for its credential check (then 429)
MAX_CONNECTIONS = 512
# Well above what one legitimate host opens (a Prometheus keeps one connection per target; a
# load test or a NAT gateway, a few dozen), well below the total: one address cannot fill it.
MAX_PER_CLIENT = 128
MAX_HEADERS = 40  # Prometheus sends about 6, browsers about 15
MAX_FIELD = 8190
SERVER = "vllm-profile-exporter"  # no version: nothing for a scanner to match


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str  # percent-decoded
    query: str
    headers: Mapping[str, str]  # case-insensitive: get("accept") finds "Accept"


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


Handler = Callable[[Request], Response]


@dataclass(frozen=True)
class WebSettings:
    """What ``--web.config.file`` sets, swapped whole on a reload."""

    ssl_context: ssl.SSLContext | None = None
    auth: Authenticator | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


def _plain(status: int, text: str, *headers: tuple[str, str]) -> Response:
    plain = ("Content-Type", "text/plain; charset=utf-8")
    return Response(status, text.encode(), (plain, *headers))


_UNAUTHORIZED = _plain(401, "Unauthorized\n", ("WWW-Authenticate", 'Basic realm="vllm-profile"'))
_TOO_MANY = _plain(429, "Too many credential checks; retry later\n", ("Retry-After", "1"))
_NO_BODY = _plain(413, "Request bodies are not accepted\n")
_BAD_VERSION = _plain(505, "HTTP/1.0 and HTTP/1.1 only\n")


class _Protocol(RequestHandler):
    """aiohttp's per-connection protocol, plus the admission record and the head deadline."""

    def __init__(self, owner: HttpServer, held: Held, **kwargs: Any) -> None:
        super().__init__(owner.aio, loop=owner.loop, **kwargs)
        self.owner, self.held = owner, held
        self._head_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.owner.loop.call_later(HEAD_TIMEOUT, self._head_expired)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_expired(self) -> None:
        self._head_timer = None
        if self.held.busy == 0:
            log.debug("closing a connection from %s: no complete request in time", self.held.client)
            self.force_close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()  # the first request must arrive in time

    def data_received(self, data: bytes) -> None:
        if self.held.busy == 0:
            self._arm()  # a new head begins: it must be complete in time
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        self.owner.admission.release(self.held)
        super().connection_lost(exc)

    def started(self) -> None:
        self._disarm()
        self.owner.admission.busy(self.held)

    def finished(self) -> None:
        self.owner.admission.idle(self.held)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # A malformed request: one rate-limited line, and an answer that repeats nothing of it.
        log.warning("bad request from %s: %d %s", self.held.client, status, type(exc).__name__)
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        resp = web.Response(status=status, text=f"{status} {phrase}\n", content_type="text/plain")
        resp.headers["Server"] = SERVER
        resp.force_close()
        return resp


class _Accepted(asyncio.Protocol):
    """A connection just accepted: admitted or refused, then handed to :class:`_Protocol` —
    after a TLS handshake when TLS is on."""

    def __init__(self, owner: HttpServer) -> None:
        self.owner = owner
        self.held: Held | None = None
        self.transport: asyncio.Transport | None = None
        self.early: list[bytes] = []  # plaintext that arrived before the hand-over

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # a listener's connections are streams
        self.transport = transport
        peer = transport.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        ctx = self.owner.settings.ssl_context
        # Evictable from the start: a handshake is idle until it brings a request.
        self.held = self.owner.admission.admit(client, transport.abort)
        if self.held is None:
            log.warning("refusing a connection from %s: at its connection limit", client)
            transport.abort()
            return
        self.held.abort = transport.abort
        if ctx is None:
            self._attach(transport)
        else:
            pending = self.owner.pending
            if len(pending) >= MAX_HANDSHAKES:
                # Each pending handshake holds OpenSSL's and asyncio's buffers: the oldest
                # (a silent or stalled client; a scraper's takes milliseconds) gives way.
                oldest = next(iter(pending))
                pending.pop(oldest).close()
                self.owner.admission.evictions += 1
            task = self.owner.loop.create_task(self._handshake(transport, ctx))
            self.owner.handshakes.add(task)  # held, so it is not collected mid-handshake
            task.add_done_callback(self.owner.handshakes.discard)
            pending[task] = self.held

    async def _handshake(self, transport: asyncio.Transport, ctx: ssl.SSLContext) -> None:
        assert self.held is not None
        try:
            await self._start_tls(transport, ctx)
        finally:
            task = asyncio.current_task()
            if task is not None:
                self.owner.pending.pop(task, None)

    async def _start_tls(self, transport: asyncio.Transport, ctx: ssl.SSLContext) -> None:
        assert self.held is not None
        if transport.is_closing():
            # Gone before its handshake began (a connect-and-close): asyncio would still run a
            # handshake on the closed transport and keep its buffers until the handshake timeout.
            self.owner.admission.release(self.held)
            return
        try:
            tls = await self.owner.loop.start_tls(
                transport, self, ctx, server_side=True, ssl_handshake_timeout=HEAD_TIMEOUT
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as e:
            log.debug("TLS handshake with %s failed: %s", self.held.client, e)
            transport.abort()
            self.owner.admission.release(self.held)
            return
        if tls is None or self.held.released:
            transport.abort()
            self.owner.admission.release(self.held)
            return
        self.held.idle_since = time.monotonic()  # evictable from now on
        self._attach(tls)

    def _attach(self, transport: asyncio.Transport) -> None:
        assert self.held is not None
        proto = _Protocol(self.owner, self.held, **self.owner.protocol_options)
        self.held.close = proto.force_close
        transport.set_protocol(proto)
        proto.connection_made(transport)
        for data in self.early:
            proto.data_received(data)
        self.early.clear()

    def data_received(self, data: bytes) -> None:
        self.early.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.held is not None:
            self.owner.admission.release(self.held)


class HttpServer:
    """Binds at construction (so a taken port fails the caller at once), serves after
    :meth:`start` in a background thread; ``port`` is the bound port."""

    def __init__(
        self,
        handler: Handler,
        listen: str,
        settings: WebSettings | None = None,
    ) -> None:
        host, port = parse_listen_address(listen)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.create_server((host, port), family=family, backlog=128)
        self.port: int = self._sock.getsockname()[1]
        self._handler = handler
        self.settings = settings or WebSettings()
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(self._loop_error)
        self.admission = Admission(MAX_CONNECTIONS, MAX_PER_CLIENT, time.monotonic)
        self.handshakes: set[asyncio.Task[None]] = set()
        # TLS handshakes in progress, oldest first, with what closes each (at most MAX_HANDSHAKES)
        self.pending: dict[asyncio.Task[None], Held] = {}
        self._auth_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="auth")
        self._checks = self._make_checks(self.settings.auth)
        self.protocol_options: dict[str, Any] = {
            "keepalive_timeout": IDLE_TIMEOUT,
            "max_headers": MAX_HEADERS,
            "max_field_size": MAX_FIELD,
            "max_line_size": MAX_FIELD,
            "lingering_time": 0.0,  # a body we refused is not read: the connection closes
            "auto_decompress": False,
            "access_log": None,
            "logger": log,
        }
        self.aio = web.Server(self._serve, handler_cancellation=True, loop=self.loop)
        self._server = self.loop.run_until_complete(
            self.loop.create_server(lambda: _Accepted(self), sock=self._sock)
        )
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)

    def _make_checks(self, auth: Authenticator | None) -> CredentialChecks | None:
        return None if auth is None else CredentialChecks(auth, self._auth_pool)

    @property
    def credential_checks(self) -> CredentialChecks | None:
        return self._checks

    def configure(self, settings: WebSettings) -> None:
        """Apply a reloaded web configuration (thread-safe). New credentials and headers apply
        to the next request on every connection; when TLS changes, open connections close
        after their current request, and new ones get the new TLS settings."""

        def apply() -> None:
            tls_changed = settings.ssl_context is not self.settings.ssl_context
            self.settings = settings
            self._checks = self._make_checks(settings.auth)
            if tls_changed:
                for proto in list(self.aio.connections):
                    busy = isinstance(proto, _Protocol) and proto.held.busy > 0
                    proto.close() if busy else proto.force_close()

        self.loop.call_soon_threadsafe(apply)

    async def _serve(self, request: web.BaseRequest) -> web.StreamResponse:
        proto = request.protocol
        assert isinstance(proto, _Protocol)
        proto.started()
        try:
            return await self._answer(request, proto.held)
        finally:
            proto.finished()

    async def _answer(self, request: web.BaseRequest, held: Held) -> web.StreamResponse:
        settings, checks, client = self.settings, self._checks, held.client
        if request.version not in ((1, 0), (1, 1)):
            return self._reply(_BAD_VERSION, settings, close=True)
        if request.body_exists:
            return self._reply(_NO_BODY, settings, close=True)
        if checks is not None:
            held.checking = True  # untrusted and waiting: may give way to a newcomer
            try:
                verdict = await asyncio.wait_for(
                    checks.check(client, request.headers.get("Authorization", "")), CHECK_WAIT
                )
            except TimeoutError:
                verdict = TOO_MANY  # the checks are backed up: try again later
            finally:
                held.checking = False
            if verdict != OK:
                log.info("refused credentials from %s (%d)", client, verdict)
                return self._reply(_TOO_MANY if verdict == TOO_MANY else _UNAUTHORIZED, settings)
        held.trusted = True
        ours = Request(request.method, request.path, request.query_string, request.headers)
        try:
            response = self._handler(ours)
        except Exception:  # noqa: BLE001 - one bad request must not end the server
            log.exception("error answering %s %s", ours.method, ours.path)
            response = _plain(500, "Internal server error\n")
        return self._reply(response, settings)

    @staticmethod
    def _reply(response: Response, settings: WebSettings, close: bool = False) -> web.Response:
        headers = {**dict(response.headers), **settings.headers, "Server": SERVER}
        resp = web.Response(status=response.status, body=response.body, headers=headers)
        if close:
            resp.force_close()
        return resp

    @staticmethod
    def _loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, (ConnectionError, TimeoutError, ssl.SSLError)):
            log.debug("connection error: %s", context.get("message"))
        else:
            log.error("event loop error: %s (%r)", context.get("message"), exc)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        self._server.close()
        for proto in list(self.aio.connections):
            proto.force_close()
        for held in self.admission.held():  # the sockets themselves: TLS closes take a loop turn
            (held.abort or held.close)()
        for task in list(self.handshakes):
            task.cancel()
        if self.handshakes:
            self.loop.run_until_complete(asyncio.gather(*self.handshakes, return_exceptions=True))
        self.loop.run_until_complete(self._server.wait_closed())
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
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
        self._auth_pool.shutdown(wait=False, cancel_futures=True)
