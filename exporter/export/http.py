"""The exporter's HTTP routes: ``/metrics``, a landing page at ``/``, and health endpoints.

The transport lives in :mod:`exporter.export.server`; this module only maps requests to answers.
"""

from __future__ import annotations

import gzip
import html
import threading
from collections.abc import Callable, Iterator, Sequence
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from exporter.export.server import Handler, Request, Response

OPENMETRICS_EOF = b"# EOF\n"


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
    """``/metrics`` bodies, rendered once per change of what they show, per format.

    The body is made of parts, each a collector with a key that changes exactly when its output
    may: the poll-health part changes every poll (250 ms), the derived part only when a window
    closes (~2 s). Scrapers arriving together share one rendering, and a poll that only moves
    the health part costs a small rendering, not the whole body's (a few ms of Python).
    """

    def __init__(self, parts: Sequence[tuple[Sequence[Collector], Callable[[], object]]]) -> None:
        self._registries = []
        for collectors, _ in parts:
            registry = CollectorRegistry(auto_describe=False)
            for c in collectors:
                registry.register(c)
            self._registries.append(registry)
        self._keys_of = [key for _, key in parts]
        self._lock = threading.Lock()
        self._keys: tuple[object, ...] | None = None
        self._bodies: dict[tuple[str, bool], bytes] = {}
        self._part_cache: list[tuple[object, dict[str, bytes]]] = [
            (None, {}) for _ in self._registries
        ]

    def _render_part(
        self, i: int, key: object, content_type: str, encoder: Callable[..., bytes]
    ) -> bytes:
        cached_key, texts = self._part_cache[i]
        if cached_key is not key and cached_key != key:
            texts = {}
            self._part_cache[i] = (key, texts)
        text = texts.get(content_type)
        if text is None:
            text = texts[content_type] = encoder(self._registries[i])
        return text

    def __call__(self, accept: str, gzip_ok: bool) -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept)
        keys = tuple(key() for key in self._keys_of)
        with self._lock:
            if keys != self._keys:
                self._keys, self._bodies = keys, {}
            body = self._bodies.get((content_type, gzip_ok))
            if body is None:
                texts = [self._render_part(i, k, content_type, encoder) for i, k in enumerate(keys)]
                if texts and texts[-1].endswith(OPENMETRICS_EOF):  # one EOF, at the very end
                    texts = [t.removesuffix(OPENMETRICS_EOF) for t in texts[:-1]] + texts[-1:]
                body = b"".join(texts)
                if gzip_ok:
                    body = gzip.compress(body, compresslevel=1)
                self._bodies[(content_type, gzip_ok)] = body
        return body, content_type


class _Only(Collector):
    """The families named in ``name[]`` (by family or sample name). prometheus_client's own
    restricted registry finds collectors by the names they describe, and ours describe none
    (their families come and go with the data)."""

    def __init__(self, registry: CollectorRegistry, names: set[str]) -> None:
        self._registry, self._names = registry, names

    def collect(self) -> Iterator[Metric]:
        for family in self._registry.collect():
            if family.name in self._names or any(s.name in self._names for s in family.samples):
                yield family


def _text(status: int, body: bytes) -> Response:
    return Response(status, body, (("Content-Type", "text/plain; charset=utf-8"),))


def make_handler(
    registry: CollectorRegistry,
    landing: bytes,
    ready: Callable[[], bool],
    cache: RenderCache | None = None,
) -> Handler:
    """Routes. ``registry`` holds every family (used for ``name[]`` filtered scrapes, and for
    all scrapes without a ``cache``)."""

    def metrics(request: Request) -> Response:
        accept = request.headers.get("accept", "")
        gzip_ok = "gzip" in request.headers.get("accept-encoding", "")
        if request.query or cache is None:  # name[] filters; any query string skips the cache
            names = parse_qs(request.query).get("name[]")
            encoder, content_type = choose_encoder(accept)
            body = encoder(_Only(registry, set(names)) if names else registry)
            if gzip_ok:
                body = gzip.compress(body, compresslevel=1)
        else:
            body, content_type = cache(accept, gzip_ok)
        headers = [("Content-Type", content_type)]
        if gzip_ok:
            headers.append(("Content-Encoding", "gzip"))
        return Response(200, body, tuple(headers))

    def handle(request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return Response(405, b"Method not allowed\n",
                            (("Content-Type", "text/plain"), ("Allow", "GET, HEAD")))  # fmt: skip
        path = request.path
        if path == "/metrics":
            return metrics(request)
        if path == "/":
            return Response(200, landing, (("Content-Type", "text/html; charset=utf-8"),))
        if path == "/-/healthy":
            return _text(200, b"OK\n")
        if path == "/-/ready":
            if ready():
                return _text(200, b"Ready\n")
            return _text(503, b"Not ready: no poll completed yet\n")
        return _text(404, b"Not found\n")

    return handle
