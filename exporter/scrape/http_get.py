"""HTTP GET for the HTTP sources (vLLM, dcgm-exporter): one kept-alive connection per origin,
a hard deadline over the whole exchange, and nothing the target sends can make it wait longer,
read more, or go elsewhere.

Built on urllib3's connection (requests' own transport, used directly: one origin and one
connection need none of requests' session machinery, and a poll costs less CPU without it). What
is ours, because no client library offers it:

* the deadline: socket timeouts bound each read, not the exchange, so a target sending its
  headers a byte at a time could hold a poll for minutes. A watchdog thread shuts the socket
  down when the deadline passes, whatever the poll is waiting for;
* the body cap, checked while the body streams in, after gzip decoding where the target
  compressed it (a proxy may, though we ask for identity);
* no redirects, ever: a 3xx is an error naming where it pointed to, and the URL is never left.

Every failure is a :class:`FetchError` with a short reason (a metric label) and one line of
detail that never contains the URL's credentials.
"""

from __future__ import annotations

import base64
import heapq
import http.client
import itertools
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection


class FetchError(Exception):
    """A failed GET: ``reason`` is a short stable token (a metric label)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Target:
    """A validated http(s) URL, split into what a connection needs."""

    scheme: str
    host: str
    port: int
    path: str  # with its query, if any
    authorization: str | None  # from user:password@ in the URL
    shown: str  # the URL with its password replaced, safe for pages, logs and recordings


def parse_target(url: str) -> Target:
    """Validate an http(s) URL; a ValueError says what is wrong (credentials redacted).

    >>> t = parse_target("http://bob:s3cret@vllm:8000/metrics")
    >>> t.host, t.port, t.path, t.shown
    ('vllm', 8000, '/metrics', 'http://bob:xxxxx@vllm:8000/metrics')
    >>> parse_target("ftp://h/")
    Traceback (most recent call last):
    ...
    ValueError: not an http:// or https:// URL
    """
    try:
        split = urlsplit(url.strip())
        port = split.port
    except ValueError as e:
        raise ValueError(f"not a valid URL: {e}") from None
    if split.scheme not in ("http", "https") or not split.hostname:
        raise ValueError("not an http:// or https:// URL")
    if any(c.isspace() or not c.isprintable() for c in url.strip()):
        raise ValueError("the URL contains spaces or control characters")
    if split.fragment:
        raise ValueError("the URL has a #fragment, which HTTP never sends")
    auth = None
    if split.username is not None:
        user, password = unquote(split.username), unquote(split.password or "")
        auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    path = (split.path or "/") + (f"?{split.query}" if split.query else "")
    port = port or (443 if split.scheme == "https" else 80)
    return Target(split.scheme, split.hostname, port, path, auth, redact(url))


def redact(url: str) -> str:
    """The URL with any password replaced by ``xxxxx`` (as Go's URL.Redacted does).

    >>> redact("http://u:p@h:1/x"), redact("http://h/x"), redact("http://tok@h/")
    ('http://u:xxxxx@h:1/x', 'http://h/x', 'http://tok@h/')
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, tail = rest.partition("/")
    userinfo, at, hostport = authority.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:xxxxx@{hostport}{slash}{tail}"


class Watchdog:
    """Calls each armed function once its deadline passes; one thread for the whole process."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._cancelled: set[int] = set()
        self._ids = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def arm(self, at: float, fn: Callable[[], None]) -> int:
        with self._cond:
            token = next(self._ids)
            heapq.heappush(self._heap, (at, token, fn))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="deadline", daemon=True)
                self._thread.start()
            if self._heap[0][1] == token:  # the earliest deadline now: the thread must know
                self._cond.notify()
            return token

    def disarm(self, token: int) -> None:
        with self._cond:
            self._cancelled.add(token)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cancelled.clear()
                    self._cond.wait()
                at, token, fn = self._heap[0]
                now = time.monotonic()
                if token in self._cancelled:
                    heapq.heappop(self._heap)
                    self._cancelled.discard(token)
                    continue
                if at > now:
                    self._cond.wait(at - now)
                    continue
                heapq.heappop(self._heap)
            try:
                fn()
            except Exception:  # noqa: BLE001, S110 - an abort that fails changes nothing
                pass


WATCHDOG = Watchdog()
CHUNK = 65536


class HttpGetter:
    """GETs from one origin over one kept-alive connection; not for concurrent use (each source
    polls from its own thread, one poll at a time)."""

    def __init__(
        self,
        target: Target,
        *,
        deadline: float,
        max_body: int,
        accept: str,
        watchdog: Watchdog = WATCHDOG,
    ) -> None:
        self.target = target
        self.deadline = deadline
        self.max_body = max_body
        self._headers = {
            "Accept": accept,
            "Accept-Encoding": "identity",  # compressing costs the target CPU; we ask for none
            "User-Agent": "vllm-profile-exporter",
        }
        if target.authorization is not None:
            self._headers["Authorization"] = target.authorization
        self._watchdog = watchdog
        self._conn: HTTPConnection | None = None
        self._lock = threading.Lock()
        self._aborted = False
        self._exchanges = 0  # which exchange an abort is meant for

    def _connection(self) -> HTTPConnection:
        conn = self._conn
        if conn is not None and not conn.is_connected:  # the target closed it while idle
            conn.close()
            conn = None
        if conn is None:
            cls = HTTPSConnection if self.target.scheme == "https" else HTTPConnection
            conn = cls(self.target.host, self.target.port, timeout=self.deadline)
            self._conn = conn
        return conn

    def _abort(self, exchange: int) -> None:
        """Called by the watchdog: cut the exchange in progress, whatever it waits for."""
        with self._lock:
            if exchange != self._exchanges:
                return  # that exchange ended in time; a late watchdog must not cut the next one
            self._aborted = True
            sock = self._conn.sock if self._conn is not None else None
        if sock is not None:
            try:
                # The plain socket's shutdown, also for TLS: it wakes a blocked read at once
                # without touching the TLS state another thread is using.
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def get(self, path: str | None = None) -> bytes:
        """The body of ``GET path`` (default: the target's own path), within the deadline."""
        url = path or self.target.path
        with self._lock:
            self._aborted = False
            self._exchanges += 1
            exchange = self._exchanges
        token = self._watchdog.arm(time.monotonic() + self.deadline, lambda: self._abort(exchange))
        try:
            return self._exchange(url)
        except FetchError:
            self.close()
            raise
        except Exception as e:  # noqa: BLE001 - every client-library failure becomes a reason
            self.close()
            raise self._reason(e) from None
        finally:
            self._watchdog.disarm(token)
            with self._lock:
                self._exchanges += 1  # no abort meant for this exchange applies any more

    def _exchange(self, url: str) -> bytes:
        conn = self._connection()
        conn.request("GET", url, headers=self._headers, preload_content=False,
                     decode_content=False)  # fmt: skip
        resp = conn.getresponse()
        shown = self.target.shown
        if 300 <= resp.status < 400:
            where = resp.headers.get("Location", "?")
            raise FetchError(
                "redirect",
                f"HTTP {resp.status} to {redact(where)[:200]!r} (redirects are not "
                f"followed; give the final URL)",
            )
        if resp.status != 200:
            raise FetchError("http_status", f"HTTP {resp.status} from {shown}")
        ctype = resp.headers.get("Content-Type", "")
        if "html" in ctype:
            raise FetchError("bad_content_type", f"{ctype[:100]!r} from {shown}")
        encoding = resp.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("identity", "gzip", "x-gzip", ""):
            raise FetchError("malformed", f"unsupported Content-Encoding {encoding[:40]!r}")
        length = resp.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise FetchError("body_too_large", f"{length} bytes announced by {shown}")
        gz = encoding in ("gzip", "x-gzip")
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS) if gz else None
        chunks: list[bytes] = []
        size = 0
        while chunk := resp.read1(CHUNK):
            if inflate is not None:
                chunk = inflate.decompress(chunk, self.max_body + 1 - size)
                if inflate.unconsumed_tail:  # more output than the cap allows
                    size = self.max_body + 1
            size += len(chunk)
            if size > self.max_body:
                raise FetchError("body_too_large", f"over {self.max_body} bytes from {shown}")
            chunks.append(chunk)
        if self._aborted:
            raise FetchError("timeout", f"no complete answer from {shown} in {self.deadline:g}s")
        if inflate is not None:
            rest = inflate.flush()
            if not inflate.eof or size + len(rest) > self.max_body:
                raise FetchError("malformed", f"truncated or oversized gzip body from {shown}")
            chunks.append(rest)
        resp.release_conn()
        return b"".join(chunks)

    def _reason(self, e: Exception) -> FetchError:
        shown = self.target.shown
        name = type(e).__name__
        if self._aborted:
            return FetchError("timeout", f"no complete answer from {shown} in {self.deadline:g}s")
        if isinstance(e, urllib3.exceptions.NewConnectionError):  # also a ConnectTimeoutError
            return FetchError("connection", f"{shown}: cannot connect ({name})")
        if isinstance(e, (TimeoutError, urllib3.exceptions.TimeoutError)):
            return FetchError("timeout", f"no answer from {shown} in {self.deadline:g}s")
        if isinstance(e, (ssl.SSLError, urllib3.exceptions.SSLError)):
            return FetchError("tls", f"{shown}: {name}")
        if isinstance(e, zlib.error):
            return FetchError("malformed", f"bad gzip body from {shown}")
        if isinstance(e, (http.client.LineTooLong, http.client.BadStatusLine)) and not isinstance(
            e, http.client.RemoteDisconnected
        ):
            return FetchError("malformed", f"{shown} did not answer with valid HTTP ({name})")
        if isinstance(e, (http.client.HTTPException, urllib3.exceptions.HTTPError, OSError)):
            return FetchError("connection", f"{shown}: {name}")
        return FetchError("connection", f"{shown}: {name}")
