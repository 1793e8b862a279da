"""The exporter's HTTP routes: ``/metrics``, the status page at ``/``, and health endpoints.

The transport lives in :mod:`exporter.export.server`; this module only maps requests to answers.
Routes run on the server's event loop, so every answer here is cheap: ``/metrics`` bodies come
from a cache that renders once per change of what they show.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest as _text_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as _openmetrics_encoder
from prometheus_client.registry import Collector

from exporter.export.server import Handler, Request, Response

OPENMETRICS_EOF = b"# EOF\n"


@dataclass(frozen=True, slots=True)
class Format:
    """An exposition format: what Content-Type says, and how families become bytes."""

    content_type: str
    encode: Callable[[Collector], bytes]


TEXT = Format("text/plain; version=0.0.4; charset=utf-8", _text_encoder)
OPENMETRICS = Format(
    "application/openmetrics-text; version=1.0.0; charset=utf-8", _openmetrics_encoder
)
_OPENMETRICS_VERSIONS = ("", "0.0.1", "1.0.0")  # what the encoder above can honestly claim


def _media_ranges(header: str) -> Iterator[tuple[str, dict[str, str], float]]:
    """``Accept``-style entries → (lower-cased value, parameters, q). A malformed q is 0."""
    for part in header.split(","):
        fields = part.split(";")
        value = fields[0].strip().lower()
        if not value:
            continue
        params: dict[str, str] = {}
        for f in fields[1:]:
            k, _, v = f.partition("=")
            params[k.strip().lower()] = v.strip().strip('"')
        try:
            q = float(params.get("q", "1"))
        except ValueError:
            q = 0.0
        yield value, params, q if 0.0 <= q <= 1.0 else 0.0


def negotiate(accept: str) -> Format:
    """The format to answer an ``Accept`` header with: OpenMetrics 1.0.0 when the client ranks
    it at least as high as plain text, else the text format 0.0.4. Never an error: a client
    asking only for something we cannot produce gets the text format, as Prometheus expects.

    >>> negotiate("application/openmetrics-text;version=1.0.0;q=0.5,text/plain;q=0.4").content_type
    'application/openmetrics-text; version=1.0.0; charset=utf-8'
    >>> negotiate("application/openmetrics-text; version=7.1") is TEXT
    True
    >>> negotiate("") is TEXT
    True
    """
    om = text = 0.0
    for value, params, q in _media_ranges(accept):
        if value == "application/openmetrics-text":
            if params.get("version", "") in _OPENMETRICS_VERSIONS:
                om = max(om, q)
        elif value in ("text/plain", "text/*", "*/*"):
            text = max(text, q)
    return OPENMETRICS if om > 0 and om >= text else TEXT


def gzip_accepted(accept_encoding: str) -> bool:
    """Whether ``Accept-Encoding`` allows gzip (``gzip;q=0`` forbids it; ``*`` allows it unless
    gzip is named).

    >>> gzip_accepted("gzip, deflate"), gzip_accepted("gzip;q=0, identity"), gzip_accepted("*")
    (True, False, True)
    """
    named: float | None = None
    star: float | None = None
    for value, _, q in _media_ranges(accept_encoding):
        if value in ("gzip", "x-gzip"):
            named = q if named is None else max(named, q)
        elif value == "*":
            star = q
    if named is not None:
        return named > 0
    return star is not None and star > 0


class _Fixed(Collector):
    """Families already collected, handed to an encoder."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


class RenderCache:
    """``/metrics`` bodies, rendered once per change of what they show, per format.

    The body is made of parts, each a collector with a key that changes exactly when its output
    may: the poll-health part changes every poll (250 ms), the derived part only when a window
    closes (~2 s). Scrapers arriving together share one rendering, and a poll that only moves
    the health part costs a small rendering, not the whole body's. Filtered scrapes (``name[]``)
    encode only the families asked for, from the same collected families, and the last few
    filters' bodies are kept, so no query string can make every request a full rendering.
    """

    FILTERS_KEPT = 16
    WARM_FOR = 120.0  # seconds a format stays pre-rendered after it was last asked for

    def __init__(
        self,
        parts: Sequence[tuple[Sequence[Collector], Callable[[], object]]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registries = []
        for collectors, _ in parts:
            registry = CollectorRegistry(auto_describe=False)
            for c in collectors:
                registry.register(c)
            self._registries.append(registry)
        self._keys_of = [key for _, key in parts]
        self._lock = threading.Lock()
        self._keys: tuple[object, ...] | None = None
        self._bodies: dict[tuple[Format, bool], bytes] = {}
        self._filtered: OrderedDict[tuple[frozenset[str], Format, bool], bytes] = OrderedDict()
        # per part: (key, its families, its text per format)
        self._part_cache: list[tuple[object, list[Metric] | None, dict[Format, bytes]]] = [
            (None, None, {}) for _ in self._registries
        ]
        self._clock = clock
        self._asked: dict[tuple[Format, bool], float] = {}  # variant → when last asked for

    def _part(self, i: int, key: object) -> tuple[list[Metric], dict[Format, bytes]]:
        cached_key, families, texts = self._part_cache[i]
        if families is None or (cached_key is not key and cached_key != key):
            families, texts = list(self._registries[i].collect()), {}
            self._part_cache[i] = (key, families, texts)
        return families, texts

    def _refresh(self) -> tuple[object, ...]:
        keys = tuple(key() for key in self._keys_of)
        if keys != self._keys:
            self._keys, self._bodies = keys, {}
            self._filtered.clear()
        return keys

    def warm(self) -> None:
        """Render now, off the request path, every variant scraped in the last ``WARM_FOR``
        seconds: called by the poll loop after each poll, so the scrapers that follow find
        their body ready instead of waiting for one of them to render it."""
        now = self._clock()
        for variant, at in list(self._asked.items()):
            if now - at <= self.WARM_FOR:
                self._render(*variant)

    def __call__(self, fmt: Format, gzip_ok: bool) -> bytes:
        self._asked[(fmt, gzip_ok)] = self._clock()
        return self._render(fmt, gzip_ok)

    def _render(self, fmt: Format, gzip_ok: bool) -> bytes:
        with self._lock:
            keys = self._refresh()
            body = self._bodies.get((fmt, gzip_ok))
            if body is None:
                texts = []
                for i, k in enumerate(keys):
                    families, part_texts = self._part(i, k)
                    text = part_texts.get(fmt)
                    if text is None:
                        text = part_texts[fmt] = fmt.encode(_Fixed(families))
                    texts.append(text)
                if texts and texts[-1].endswith(OPENMETRICS_EOF):  # one EOF, at the very end
                    texts = [t.removesuffix(OPENMETRICS_EOF) for t in texts[:-1]] + texts[-1:]
                body = b"".join(texts)
                if gzip_ok:
                    body = gzip.compress(body, compresslevel=1)
                self._bodies[(fmt, gzip_ok)] = body
        return body

    def filtered(self, names: frozenset[str], fmt: Format, gzip_ok: bool) -> bytes:
        """Only the families named (by family or sample name), as ``name[]`` asks."""
        with self._lock:
            keys = self._refresh()
            key = (names, fmt, gzip_ok)
            body = self._filtered.get(key)
            if body is None:
                chosen = [
                    f
                    for i, k in enumerate(keys)
                    for f in self._part(i, k)[0]
                    if f.name in names or any(s.name in names for s in f.samples)
                ]
                body = fmt.encode(_Fixed(chosen))
                if gzip_ok:
                    body = gzip.compress(body, compresslevel=1)
                self._filtered[key] = body
                while len(self._filtered) > self.FILTERS_KEPT:
                    self._filtered.popitem(last=False)
            else:
                self._filtered.move_to_end(key)
        return body


def _text(status: int, body: bytes) -> Response:
    return Response(status, body, (("Content-Type", "text/plain; charset=utf-8"),))


MAX_NAMES = 64  # name[] values in one filtered scrape


def make_handler(
    cache: RenderCache, landing: Callable[[], bytes], ready: Callable[[], bool]
) -> Handler:
    """The routes: ``/metrics`` from ``cache``, ``/`` the status page, health endpoints."""

    def metrics(request: Request) -> Response:
        fmt = negotiate(request.headers.get("accept", ""))
        gzip_ok = gzip_accepted(request.headers.get("accept-encoding", ""))
        names = parse_qs(request.query, max_num_fields=MAX_NAMES).get("name[]", [])
        if names:
            body = cache.filtered(frozenset(names), fmt, gzip_ok)
        else:
            body = cache(fmt, gzip_ok)
        headers = [("Content-Type", fmt.content_type), ("Vary", "Accept, Accept-Encoding")]
        if gzip_ok:
            headers.append(("Content-Encoding", "gzip"))
        return Response(200, body, tuple(headers))

    def handle(request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return Response(405, b"Method not allowed\n",
                            (("Content-Type", "text/plain"), ("Allow", "GET, HEAD")))  # fmt: skip
        path = request.path
        if path == "/metrics":
            try:
                return metrics(request)
            except ValueError:  # more name[] values than MAX_NAMES
                return _text(400, b"Too many query parameters\n")
        if path == "/":
            return Response(200, landing(), (("Content-Type", "text/html; charset=utf-8"),))
        if path == "/-/healthy":
            return _text(200, b"OK\n")
        if path == "/-/ready":
            if ready():
                return _text(200, b"Ready\n")
            return _text(503, b"Not ready: no poll completed yet\n")
        return _text(404, b"Not found\n")

    return handle
