"""The exporter's HTTP face: ``/metrics``, a landing page at ``/``, and health endpoints."""

from __future__ import annotations

import gzip
import html
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import choose_encoder

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def landing_page(version: str, vllm_url: str, demo: bool) -> bytes:
    note = (
        "<p><b>Demo mode:</b> serving a bundled recording of a real vLLM server, "
        "not a live endpoint.</p>"
        if demo
        else ""
    )
    return (
        "<!doctype html><html><head><title>vllm-profile-exporter</title></head><body>"
        f"<h1>vllm-profile-exporter {html.escape(version)}</h1>{note}"
        f"<p>Profiling vLLM at <code>{html.escape(vllm_url)}</code>.</p>"
        '<p><a href="/metrics">Metrics</a></p></body></html>'
    ).encode()


class RenderCache:
    """Renders ``/metrics`` once per snapshot and format: the snapshot changes once per poll,
    and 20 scrapers arriving within the same 250 ms share one rendering instead of queueing
    behind 20 (a rendering costs a few milliseconds of Python; a cache hit, microseconds)."""

    def __init__(self, registry: CollectorRegistry, key: Callable[[], object]) -> None:
        self._registry, self._key = registry, key
        self._lock = threading.Lock()
        self._current: object = None  # the snapshot the cached renderings belong to
        self._cache: dict[tuple[str, bool], bytes] = {}

    def __call__(self, accept: str, gzip_ok: bool) -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept)
        snapshot = self._key()
        with self._lock:
            if snapshot is not self._current:
                self._current, self._cache = snapshot, {}
            body = self._cache.get((content_type, gzip_ok))
            if body is None:
                body = encoder(self._registry)
                if gzip_ok:
                    body = gzip.compress(body, compresslevel=1)
                self._cache[(content_type, gzip_ok)] = body
        return body, content_type


def make_app(
    registry: CollectorRegistry,
    landing: bytes,
    ready: Callable[[], bool],
    snapshot_key: Callable[[], object] | None = None,
) -> WsgiApp:
    metrics = make_wsgi_app(registry)
    cached = RenderCache(registry, snapshot_key) if snapshot_key is not None else None

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path == "/metrics":
            if cached is None or environ.get("QUERY_STRING"):
                body: Iterable[bytes] = metrics(environ, start_response)  # name[] filters
                return body
            gzip_ok = "gzip" in environ.get("HTTP_ACCEPT_ENCODING", "")
            data, content_type = cached(environ.get("HTTP_ACCEPT", ""), gzip_ok)
            headers = [("Content-Type", content_type), ("Content-Length", str(len(data)))]
            if gzip_ok:
                headers.append(("Content-Encoding", "gzip"))
            start_response("200 OK", headers)
            return [data]
        if path == "/":
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
            return [landing]
        if path == "/-/healthy":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"OK\n"]
        if path == "/-/ready":
            ok = ready()
            start_response(
                "200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")]
            )
            return [b"Ready\n" if ok else b"Not ready: no poll completed yet\n"]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"Not found\n"]

    return app


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog of 5 makes the 6th simultaneous connection wait for a SYN
    # retransmit (1 s) — a scrape latency cliff with a handful of concurrent scrapers.
    request_queue_size = 128


class _ThreadingServer6(_ThreadingServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s " + format, self.address_string(), *args)


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


class HttpServer:
    """A threaded WSGI server in a background thread; ``port`` is the bound port."""

    def __init__(
        self, app: WsgiApp, listen: str, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        host, port = parse_listen_address(listen)
        cls = _ThreadingServer6 if ":" in host else _ThreadingServer
        self._server = make_server(host, port, app, server_class=cls, handler_class=_QuietHandler)
        if ssl_context is not None:
            # The handshake happens in the request's thread on its first read, so a slow or
            # broken client cannot stall the accept loop.
            self._server.socket = ssl_context.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False
            )
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
