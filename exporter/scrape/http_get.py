"""HTTP GET for the HTTP sources (vLLM, dcgm-exporter): one kept-alive connection per origin,
a hard deadline over the whole exchange, and nothing the target sends can make it wait longer,
read more, or go elsewhere.

The response is parsed by httptools (llhttp, the C parser of Node.js and uvicorn), fed from a
plain socket (the standard library's ``ssl`` for https). Why not a client library's connection:
measured in bench/ on a real 52 KB vLLM body polled every 250 ms, urllib3's connection (requests'
own transport) costs ~0.7 ms of CPU a poll, its header parsing mostly (http.client's email
parser); the same exchange parsed by httptools costs ~0.2 ms, which is what brings the exporter's
CPU at the fast cadence under its budget. What is ours, because no client library offers it:

* the deadline over the whole exchange: a socket timeout bounds one read, so a target sending
  its headers a byte at a time could hold a poll for minutes. Every socket operation (connect,
  the TLS handshake, each send and read) is given only the time left;
* the body cap, checked while the body streams in, after gzip decoding where the target
  compressed it (a proxy may, though we ask for identity);
* no redirects, ever: a 3xx is an error naming where it pointed to, and the URL is never left.

Every failure is a :class:`FetchError` with a short reason (a metric label) and one line of
detail that never contains the URL's credentials.
"""

from __future__ import annotations

import base64
import select
import socket
import ssl
import time
import zlib
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import httptools


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


CHUNK = 65536


class _Response:
    """What httptools' callbacks collect of one response; the checks run in the read loop
    (an exception raised inside a callback would come back wrapped)."""

    __slots__ = ("chunks", "complete", "head_bytes", "headers", "headers_done", "inflate",
                 "keep_alive", "max_body", "messages", "over", "parser", "size",
                 "status")  # fmt: skip

    def __init__(self, max_body: int) -> None:
        self.headers: dict[str, str] = {}  # lower-case name -> value (the last one kept)
        self.head_bytes = 0
        self.messages = 0  # more than one: bytes followed the answer in the same read
        self.headers_done = False
        self.complete = False
        self.chunks: list[bytes] = []
        self.size = 0
        self.max_body = max_body
        self.over = False  # more than max_body bytes (after decoding)
        self.inflate: zlib._Decompress | None = None
        self.status = 0
        self.keep_alive = False
        # Callbacks and parser refer to each other: _exchange breaks the cycle when done.
        self.parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self.messages += 1

    # The callbacks ignore whatever follows the first message (it is only counted).
    def on_header(self, name: bytes, value: bytes) -> None:
        if self.complete:
            return
        self.head_bytes += len(name) + len(value) + 4
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        if self.complete:
            return
        self.headers_done = True
        # Read here: llhttp resets both once the message is complete.
        if self.parser is not None:
            self.status = self.parser.get_status_code()
            self.keep_alive = self.parser.should_keep_alive()
        encoding = self.headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("gzip", "x-gzip"):
            self.inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def on_body(self, chunk: bytes) -> None:
        if self.over or self.complete:
            return
        if self.inflate is not None:
            chunk = self.inflate.decompress(chunk, self.max_body + 1 - self.size)
            if self.inflate.unconsumed_tail:  # more output than the cap allows
                self.over = True
                return
        self.size += len(chunk)
        if self.size > self.max_body:
            self.over = True
            return
        self.chunks.append(chunk)

    def on_message_complete(self) -> None:
        self.complete = True


MAX_HEAD = 64 * 1024  # status line and headers; a Prometheus target sends well under 1 KB


class HttpGetter:
    """GETs from one origin over one kept-alive connection; not for concurrent use (each source
    polls from its own thread, one poll at a time)."""

    def __init__(self, target: Target, *, deadline: float, max_body: int, accept: str) -> None:
        self.target = target
        self.deadline = deadline
        self.max_body = max_body
        host = f"[{target.host}]" if ":" in target.host else target.host
        default_port = 443 if target.scheme == "https" else 80
        if target.port != default_port:
            host = f"{host}:{target.port}"
        headers = [
            f"Host: {host}",
            f"Accept: {accept}",
            "Accept-Encoding: identity",  # compressing costs the target CPU; we ask for none
            "User-Agent: vllm-profile-exporter",
        ]
        if target.authorization is not None:
            headers.append(f"Authorization: {target.authorization}")
        self._head = ("\r\n".join(headers) + "\r\n\r\n").encode("latin-1")
        self._sock: socket.socket | None = None
        self._tls: ssl.SSLContext | None = None
        self._buf = bytearray(CHUNK)

    def _left(self, until: float) -> float:
        """The time left before ``until`` (monotonic); a timeout once there is none."""
        left = until - time.monotonic()
        if left <= 0:
            raise self._timeout()
        return left

    def _connect(self, until: float) -> socket.socket:
        t = self.target
        try:
            sock = socket.create_connection((t.host, t.port), timeout=self._left(until))
        except OSError as e:  # refused, unreachable, no such name, or no answer in time
            detail = f"{t.shown}: cannot connect ({type(e).__name__})"
            raise FetchError("connection", detail) from None
        self._sock = sock
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if t.scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()
            # The timeout bounds the whole handshake (CPython's ssl counts it down across
            # the handshake's reads), so a handshake trickled in meets the deadline too.
            sock.settimeout(self._left(until))
            sock = self._tls.wrap_socket(sock, server_hostname=t.host)
            self._sock = sock
        return sock

    def _connection(self, until: float) -> tuple[socket.socket, bool]:
        """The kept-alive socket and True, or a new one and False."""
        sock = self._sock
        if sock is not None and select.select([sock], [], [], 0)[0]:
            # Readable while idle: the target closed it (or sent something unasked for).
            self.close()
            sock = None
        if sock is not None:
            return sock, True
        return self._connect(until), False

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def get(self, path: str | None = None) -> bytes:
        """The body of ``GET path`` (default: the target's own path), within the deadline."""
        url = path or self.target.path
        until = time.monotonic() + self.deadline
        try:
            sock, reused = self._connection(until)
            try:
                return self._exchange(sock, url, until)
            except _ClosedBeforeAnswer:
                if not reused:
                    raise
                # A kept-alive connection the target closed as we sent: once more, afresh.
                self.close()
                sock, _ = self._connection(until)
                return self._exchange(sock, url, until)
        except FetchError:
            self.close()
            raise
        except Exception as e:  # noqa: BLE001 - every socket or parser failure becomes a reason
            self.close()
            raise self._reason(e) from None

    def _exchange(self, sock: socket.socket, url: str, until: float) -> bytes:
        resp = _Response(self.max_body)
        parser = resp.parser
        assert parser is not None
        try:
            return self._read(sock, url, until, resp, parser)
        finally:
            resp.parser = None

    def _read(self, sock: socket.socket, url: str, until: float, resp: _Response,
              parser: httptools.HttpResponseParser) -> bytes:  # fmt: skip
        shown = self.target.shown
        try:
            sock.settimeout(self._left(until))
            sock.sendall(f"GET {url} HTTP/1.1\r\n".encode("latin-1") + self._head)
            sock.settimeout(self._left(until))
            n = sock.recv_into(self._buf)
        except ConnectionError:  # reset or broken pipe, before any answer
            raise _ClosedBeforeAnswer from None
        view = memoryview(self._buf)
        received = 0
        checked = False
        while True:
            if n == 0:
                if received == 0:
                    raise _ClosedBeforeAnswer
                if resp.headers_done and _ends_at_close(resp.headers):
                    break  # a body delimited by the end of the connection: it is whole
                raise FetchError("connection", f"{shown} closed the connection mid-answer")
            received += n
            parser.feed_data(view[:n])
            if resp.headers_done:
                if not checked:
                    if resp.head_bytes > MAX_HEAD:
                        raise FetchError("malformed", f"headers over {MAX_HEAD} bytes from {shown}")
                    self._check_head(resp.status, resp.headers)
                    checked = True
                if resp.over:
                    raise FetchError("body_too_large", f"over {self.max_body} bytes from {shown}")
                if resp.complete:
                    break
            elif received > MAX_HEAD:
                raise FetchError("malformed", f"headers over {MAX_HEAD} bytes from {shown}")
            sock.settimeout(self._left(until))
            n = sock.recv_into(self._buf)
        if resp.inflate is not None:
            rest = resp.inflate.flush()
            if not resp.inflate.eof or resp.size + len(rest) > self.max_body:
                raise FetchError("malformed", f"truncated or oversized gzip body from {shown}")
            resp.chunks.append(rest)
        if not resp.complete or not resp.keep_alive:
            self.close()  # the target ends the connection, or the body ended with it
        elif resp.messages > 1 or select.select([sock], [], [], 0)[0]:
            self.close()  # bytes after the answer: nothing on this connection is trusted
        return b"".join(resp.chunks)

    def _check_head(self, status: int, headers: dict[str, str]) -> None:
        shown = self.target.shown
        if 300 <= status < 400:
            where = headers.get("location", "?")
            raise FetchError(
                "redirect",
                f"HTTP {status} to {redact(where)[:200]!r} (redirects are not "
                f"followed; give the final URL)",
            )
        if status != 200:
            raise FetchError("http_status", f"HTTP {status} from {shown}")
        ctype = headers.get("content-type", "")
        if "html" in ctype:
            raise FetchError("bad_content_type", f"{ctype[:100]!r} from {shown}")
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("identity", "gzip", "x-gzip", ""):
            raise FetchError("malformed", f"unsupported Content-Encoding {encoding[:40]!r}")
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise FetchError("body_too_large", f"{length} bytes announced by {shown}")

    def _timeout(self) -> FetchError:
        return FetchError("timeout", f"no complete answer from {self.target.shown} in "
                          f"{self.deadline:g}s")  # fmt: skip

    def _reason(self, e: Exception) -> FetchError:
        shown = self.target.shown
        name = type(e).__name__
        if isinstance(e, _ClosedBeforeAnswer):
            return FetchError("connection", f"{shown} closed the connection without answering")
        if isinstance(e, TimeoutError):
            return FetchError("timeout", f"no answer from {shown} in {self.deadline:g}s")
        if isinstance(e, ssl.SSLError):
            return FetchError("tls", f"{shown}: {name}")
        if isinstance(e, (zlib.error, httptools.HttpParserError)):
            return FetchError("malformed", f"{shown} did not answer with valid HTTP ({name})")
        return FetchError("connection", f"{shown}: {name}")


class _ClosedBeforeAnswer(Exception):
    """The connection ended before any byte of an answer."""


def _ends_at_close(headers: dict[str, str]) -> bool:
    """A response whose body runs until the connection closes (no length, not chunked)."""
    return "content-length" not in headers and "transfer-encoding" not in headers
