"""The HTTP server, routes and ``/metrics`` render cache, in process, over real sockets.

Attacks by a whole hostile client against the real exporter process are in
``test_hostile_clients.py``; here each mechanism is checked where it decides.
"""

from __future__ import annotations

import asyncio
import gzip
import re
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields, replace

import pytest
import requests
from prometheus_client import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from exporter.app import make_pipeline, make_registry, make_render_cache
from exporter.config import load_config
from exporter.export import server as server_mod
from exporter.export.admission import Admission, Held
from exporter.export.collector import (
    PER_POLL_FIELDS,
    ExportSettings,
    window_families,
    window_key,
)
from exporter.export.credentials import DENIED, OK, TOO_MANY, CredentialChecks
from exporter.export.http import OPENMETRICS, TEXT, gzip_accepted, make_handler, negotiate
from exporter.export.server import HttpServer, Request, Response, WebSettings
from exporter.pipeline import Snapshot
from exporter.scrape.replay import replay_ticks
from tests.harness import wait_for
from tests.paths import FIX

HOST = b"Host: x\r\n"


def echo_path(request: Request) -> Response:
    if request.path == "/boom":
        raise RuntimeError("a bug in a route")
    return Response(200, f"{request.method} {request.path}\n".encode())


@pytest.fixture
def server() -> Iterator[HttpServer]:
    srv = HttpServer(echo_path, "127.0.0.1:0")
    srv.start()
    yield srv
    srv.stop()


def exchange(port: int, data: bytes, timeout: float = 10) -> bytes:
    """Send ``data``, read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def statuses(raw: bytes) -> list[int]:
    return [int(m) for m in re.findall(rb"^HTTP/\d\.\d (\d{3}) ", raw, re.M)]


def test_keep_alive_and_pipelining(server: HttpServer) -> None:
    # Two requests in one packet, answered in order on the same connection; the second asks
    # to close, so the server closes after it.
    raw = exchange(
        server.port,
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    assert statuses(raw) == [200, 200]
    assert raw.index(b"GET /a\n") < raw.index(b"GET /b\n")
    # requests reuses the kept-alive connection: one TCP connection for three requests.
    with requests.Session() as s:
        for _ in range(3):
            assert s.get(f"http://127.0.0.1:{server.port}/x", timeout=5).text == "GET /x\n"
        assert server.admission.count == 1


def test_http10_closes_and_head_has_no_body(server: HttpServer) -> None:
    raw = exchange(server.port, b"GET /x HTTP/1.0\r\n\r\n")
    assert statuses(raw) == [200] and raw.endswith(b"GET /x\n")
    raw = exchange(server.port, b"HEAD /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    # HEAD: the length of the body the route made ("HEAD /x\n", 8 bytes), and no body.
    assert b"Content-Length: 8\r\n" in raw and raw.endswith(b"\r\n\r\n")


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /x HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        (b"GET x HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /x HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        (b"GET /x HTTP/1.1\r\n folded: header\r\n\r\n", 400),
        (b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", 413),
        (b"GET /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 413),
        (b"GET /x HTTP/1.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n", 400),
        (b"GET /x HTTP/1.1\r\n" + b"".join(b"H%d: v\r\n" % i for i in range(100)) + b"\r\n", 400),
        (b"GET /<script>\x01 HTTP/1.1\r\nHost: <b>x</b>\r\n\r\n", 400),
    ],
)
def test_bad_requests_get_a_clear_status_echo_nothing_and_the_server_lives_on(
    server: HttpServer, request_bytes: bytes, status: int
) -> None:
    raw = exchange(server.port, request_bytes)
    assert statuses(raw) == [status]
    body = raw.split(b"\r\n\r\n", 1)[1]
    assert b"script" not in body and b"<b>" not in body and b"aaaa" not in body
    assert b"aiohttp" not in raw  # no server version for scanners
    assert requests.get(f"http://127.0.0.1:{server.port}/ok", timeout=5).status_code == 200


def test_a_failing_route_is_a_500_not_a_dead_server(server: HttpServer) -> None:
    raw = exchange(
        server.port,
        b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n"
        b"Connection: close\r\n\r\n",
    )
    assert statuses(raw) == [500, 200] and raw.endswith(b"GET /after\n")
    assert b"Traceback" not in raw and b"a bug in a route" not in raw


def closed_within(s: socket.socket, limit: float) -> float:
    """Seconds until the server closes ``s`` without answering (fails after ``limit``)."""
    s.settimeout(limit)
    t0 = time.monotonic()
    try:
        data = s.recv(100)
    except ConnectionResetError:
        data = b""
    assert data == b"", data
    return time.monotonic() - t0


def test_a_head_must_arrive_in_time_and_idle_connections_close(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(server_mod, "HEAD_TIMEOUT", 0.5)
    monkeypatch.setattr(server_mod, "IDLE_TIMEOUT", 1.0)
    srv = HttpServer(echo_path, "127.0.0.1:0")
    srv.start()
    try:
        # A head that never completes (slowloris): closed after HEAD_TIMEOUT, not IDLE_TIMEOUT.
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"GET /x HTTP/1.1\r\nX: ")
            assert 0.3 < closed_within(s, 10)
        # A connection that never sends anything: also HEAD_TIMEOUT.
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            assert 0.3 < closed_within(s, 10)
        # After an answer, a new head that stalls: HEAD_TIMEOUT again.
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
            assert statuses(s.recv(1000)) == [200]
            s.sendall(b"GET /y HTTP/1.1\r\nHo")
            assert 0.3 < closed_within(s, 10)
        # Idle between requests: kept for IDLE_TIMEOUT, then closed.
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
            assert statuses(s.recv(1000)) == [200]
            assert 0.8 < closed_within(s, 10)
        wait_for(lambda: srv.admission.count == 0, 10, "every connection released")
    finally:
        srv.stop()


def test_admission_gives_way_longest_idle_first() -> None:
    now = [0.0]
    closed: list[str] = []
    a = Admission(total=3, per_client=2, clock=lambda: now[0])

    def admit(client: str, tag: str) -> object:
        now[0] += 1
        return a.admit(client, lambda: closed.append(tag))

    admit("A", "a1")
    a2 = admit("A", "a2")
    admit("A", "a3")  # A's cap: its longest-idle (a1) gives way
    assert closed == ["a1"] and a.count == 2
    b1 = admit("B", "b1")
    assert b1 is not None and a.count == 3
    assert a2 is not None
    a.busy(a2)  # type: ignore[arg-type]
    admit("C", "c1")  # the global cap: the longest idle of all (a3) goes, not busy a2
    assert closed == ["a1", "a3"]
    a.busy(b1)  # type: ignore[arg-type]
    c2 = a.admit("C", lambda: closed.append("c2"))  # C's cap (2) not reached; global is
    assert c2 is not None and closed == ["a1", "a3", "c1"]
    a.busy(c2)
    assert a.admit("D", lambda: None) is None  # everyone busy: refused
    assert a.refusals == 1 and a.count == 3


class GatedAuth:
    """Accepts 'Basic good' at once; any other credential waits in verify until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.verifying = threading.Semaphore(0)
        self.verified: list[str] = []

    def known(self, authorization: str) -> bool | None:
        if authorization == "Basic good":
            return True
        return False if not authorization else None

    def verify(self, authorization: str) -> bool:
        self.verifying.release()
        self.release.wait(30)
        self.verified.append(authorization)
        return False


def raw_get(port: int, auth: str) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    s.sendall(f"GET /x HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n".encode())
    return s


def test_requests_waiting_on_credential_checks_give_way_to_a_newcomer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two connections whose credentials wait for a (slow) check hold the client's two places:
    # neither has earned trust, so a newcomer is admitted and the one waiting longest closes.
    monkeypatch.setattr(server_mod, "MAX_PER_CLIENT", 2)
    auth = GatedAuth()
    srv = HttpServer(echo_path, "127.0.0.1:0", WebSettings(auth=auth))
    srv.start()
    try:
        held = [raw_get(srv.port, "Basic one"), raw_get(srv.port, "Basic two")]
        assert auth.verifying.acquire(timeout=10)  # the first check runs, the second waits
        wait_for(
            lambda: srv.admission.count == 2 and all(h.checking for h in _held(srv.admission)),
            10,
            "both connections waiting on their checks",
        )
        s = raw_get(srv.port, "Basic good")
        s.settimeout(10)
        assert statuses(s.recv(1000)) == [200]  # admitted and answered
        closed_within(held[0], 10)  # the oldest waiting one made room
        assert srv.admission.evictions == 1 and srv.admission.refusals == 0
        for h in (*held, s):
            h.close()
    finally:
        auth.release.set()
        srv.stop()


def _held(a: Admission) -> list[Held]:
    return [h for hs in a._held.values() for h in hs]


def test_an_untrusted_connection_gives_way_a_trusted_one_never(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(server_mod, "MAX_PER_CLIENT", 2)
    srv = HttpServer(echo_path, "127.0.0.1:0")
    srv.start()
    try:
        # A parked connection that never sent a request, and a scraper's kept-alive one.
        parked = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        scraper = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        scraper.sendall(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert statuses(scraper.recv(1000)) == [200]
        # A third connection: the parked one is closed to make room, the scraper's is not.
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as third:
            third.sendall(b"GET /3 HTTP/1.1\r\nHost: x\r\n\r\n")
            assert statuses(third.recv(1000)) == [200]
        closed_within(parked, 10)
        scraper.sendall(b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert statuses(scraper.recv(1000)) == [200]
        # Two trusted connections (each sent a whole request) fill the client's places: a
        # newcomer, who has not, is refused rather than one of them closed.
        wait_for(lambda: srv.admission.count == 1, 10, "the third connection gone")
        other = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        other.sendall(b"GET /4 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert statuses(other.recv(1000)) == [200]
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(b"GET /5 HTTP/1.1\r\nHost: x\r\n\r\n")
            closed_within(s, 10)
        scraper.sendall(b"GET /6 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert statuses(scraper.recv(1000)) == [200]
        assert srv.admission.refusals == 1
        for sock in (parked, scraper, other):
            sock.close()
    finally:
        srv.stop()


def test_a_client_that_does_not_read_is_not_read_from() -> None:
    big = b"x" * 200_000
    srv = HttpServer(lambda r: Response(200, big), "127.0.0.1:0")
    srv.start()
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=20) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            s.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n" * 100)  # 20 MB of answers asked for
            wait_for(lambda: srv.aio.connections, 10, "the connection")
            # Over two seconds of not reading, answers wait in the socket, not in a buffer that
            # grows: the server writes at most about one answer past the socket's own buffers.
            end = time.monotonic() + 2.0
            while time.monotonic() < end:
                (proto,) = srv.aio.connections
                transport = proto.transport
                assert transport is None or transport.get_write_buffer_size() < 2 * len(big)
                time.sleep(0.05)
            received = 0
            while received < 100 * len(big):
                chunk = s.recv(1 << 20)
                assert chunk
                received += len(chunk)
        assert received > 100 * len(big)  # all 100 answers came once the client read
    finally:
        srv.stop()


def test_a_slow_credential_check_does_not_stall_other_scrapers() -> None:
    auth = GatedAuth()
    srv = HttpServer(echo_path, "127.0.0.1:0", WebSettings(auth=auth, headers={"X-A": "b"}))
    srv.start()
    try:
        slow = raw_get(srv.port, "Basic new")
        assert auth.verifying.acquire(timeout=10)  # the bcrypt check is running
        ok = requests.get(
            f"http://127.0.0.1:{srv.port}/x", headers={"Authorization": "Basic good"}, timeout=5
        )
        assert ok.status_code == 200 and ok.headers["X-A"] == "b"
        assert not auth.verified  # answered while the check was still running
        auth.release.set()
        answer = slow.recv(1000)
        assert statuses(answer) == [401] and b"WWW-Authenticate" in answer
        slow.close()
    finally:
        auth.release.set()
        srv.stop()


class CountingAuth:
    def __init__(self) -> None:
        self.checks: list[str] = []

    def known(self, authorization: str) -> bool | None:
        return None

    def verify(self, authorization: str) -> bool:
        self.checks.append(authorization)
        return authorization == "right"


def test_credential_checks_per_client_are_rate_limited_and_fair() -> None:
    async def scenario() -> None:
        auth = CountingAuth()
        now = [0.0]
        with ThreadPoolExecutor(1) as pool:
            checks = CredentialChecks(auth, pool, burst=3, rate=1.0, clock=lambda: now[0])
            flood = await asyncio.gather(*(checks.check("attacker", f"w{i}") for i in range(20)))
            # The burst is checked (one at a time); the rest answered 429 at once, unchecked.
            assert sorted(flood) == [DENIED] * 3 + [TOO_MANY] * 17
            assert len(auth.checks) == 3
            # Another client is not held back by the attacker's budget.
            assert await checks.check("scraper", "right") == OK
            now[0] += 2.0  # two seconds later: two more checks for the attacker
            again = await asyncio.gather(*(checks.check("attacker", "x") for _ in range(3)))
            assert sorted(again) == [DENIED, DENIED, TOO_MANY]

    asyncio.run(scenario())


def test_a_waiting_check_whose_client_left_never_runs() -> None:
    async def scenario() -> None:
        auth = GatedAuth()
        with ThreadPoolExecutor(1) as pool:
            checks = CredentialChecks(auth, pool)
            first = asyncio.ensure_future(checks.check("c", "Basic a"))
            second = asyncio.ensure_future(checks.check("c", "Basic b"))
            while not auth.verifying.acquire(blocking=False):
                await asyncio.sleep(0.01)
            second.cancel()  # its connection closed while it waited behind the first
            auth.release.set()
            assert await first == DENIED
            with pytest.raises(asyncio.CancelledError):
                await second
            assert auth.verified == ["Basic a"]

    asyncio.run(scenario())


def test_reconfigure_swaps_credentials_and_headers(server: HttpServer) -> None:
    url = f"http://127.0.0.1:{server.port}/x"
    assert requests.get(url, timeout=5).status_code == 200
    server.configure(WebSettings(auth=GatedAuth(), headers={"X-Frame-Options": "deny"}))
    wait_for(lambda: requests.get(url, timeout=5).status_code == 401, 10, "auth required")
    r = requests.get(url, headers={"Authorization": "Basic good"}, timeout=5)
    assert r.status_code == 200 and r.headers["X-Frame-Options"] == "deny"


def test_a_taken_port_fails_at_construction(server: HttpServer) -> None:
    with pytest.raises(OSError):
        HttpServer(echo_path, f"127.0.0.1:{server.port}")


# --- content negotiation, decided in one place


@pytest.mark.parametrize(
    ("accept", "fmt"),
    [
        ("", TEXT),
        ("*/*", TEXT),
        ("text/plain;version=0.0.4", TEXT),
        ("application/openmetrics-text", OPENMETRICS),
        ("application/openmetrics-text; version=1.0.0", OPENMETRICS),
        ("application/openmetrics-text; version=0.0.1", OPENMETRICS),
        ("application/openmetrics-text; version=x.y", TEXT),
        ("application/openmetrics-text; version=2.0.0", TEXT),
        ("application/openmetrics-text;q=0", TEXT),
        ("application/openmetrics-text;q=0.2, text/plain;q=0.5", TEXT),
        ("application/openmetrics-text;q=oops", TEXT),
        # Prometheus 2.x/3.x scrape Accept headers
        ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
         "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1", OPENMETRICS),
        ("application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,"
         "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,*/*;q=0.1", OPENMETRICS),
    ],
)  # fmt: skip
def test_negotiate(accept: str, fmt: object) -> None:
    assert negotiate(accept) is fmt


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        ("", False),
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("GZIP", True),
        ("gzip;q=0", False),
        ("gzip;q=0.0, identity", False),
        ("gzip; q=0.001", True),
        ("*", True),
        ("*;q=0", False),
        ("*, gzip;q=0", False),
        ("identity", False),
        ("deflate", False),
        ("gzip;q=bogus", False),
    ],
)
def test_gzip_accepted(header: str, ok: bool) -> None:
    assert gzip_accepted(header) is ok


def loaded_cache() -> tuple[object, object, object]:
    cfg = load_config({"max_num_seqs": "64"}, {}, {})
    pipeline = make_pipeline(cfg)
    settings = ExportSettings(version="test", horizon_seconds=60.0, poll_interval=0.25)
    registry = make_registry(pipeline, settings, process=False)
    cache = make_render_cache(pipeline, settings, process=False)
    return pipeline, registry, cache


def test_metrics_route_negotiates_without_echo_or_error() -> None:
    pipeline, _, cache = loaded_cache()
    for tick in list(replay_ticks(FIX / "vllm" / "vllm032-cpu-b-underbatch.jsonl.gz"))[:20]:
        pipeline.add_tick(tick)  # type: ignore[attr-defined]
    handle = make_handler(cache, lambda: b"<html/>", ready=lambda: True)  # type: ignore[arg-type]

    def get(**headers: str) -> Response:
        return handle(Request("GET", "/metrics", "", {k.replace("_", "-"): v
                                                     for k, v in headers.items()}))  # fmt: skip

    r = get(accept="application/openmetrics-text; version=x.y")
    assert r.status == 200
    assert dict(r.headers)["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    r = get(accept="application/openmetrics-text; version=1.0.0; charset=evil")
    assert dict(r.headers)["Content-Type"] == OPENMETRICS.content_type
    assert r.body.endswith(b"# EOF\n")
    r = get(accept_encoding="gzip;q=0")
    assert "Content-Encoding" not in dict(r.headers) and r.body.startswith(b"# HELP")
    r = get(accept_encoding="gzip")
    assert dict(r.headers)["Content-Encoding"] == "gzip"
    assert gzip.decompress(r.body).startswith(b"# HELP")


# --- the render cache


def test_cached_renderings_equal_fresh_ones_poll_after_poll() -> None:
    """Through window closings and polls in between, the cached body (split into parts that
    change at different paces) is byte for byte what a fresh rendering of all families gives."""
    pipeline, registry, cache = loaded_cache()
    ticks = replay_ticks(FIX / "vllm" / "vllm032-cpu-b-underbatch.jsonl.gz",
                         FIX / "nvml" / "h200-probe.jsonl.gz")  # fmt: skip
    compared = 0
    for i, tick in enumerate(ticks):
        pipeline.add_tick(tick)  # type: ignore[attr-defined]
        if i % 3:  # every third poll: some polls close a window, most do not
            continue
        text = cache(TEXT, False)  # type: ignore[operator]
        assert text == generate_latest(registry)  # type: ignore[arg-type]
        assert gzip.decompress(cache(TEXT, True)) == text  # type: ignore[operator]
        body = cache(OPENMETRICS, False)  # type: ignore[operator]
        assert body == generate_openmetrics(registry) and body.count(b"# EOF") == 1
        compared += 1
        if i > 120:
            break
    assert compared > 30


def test_the_window_key_covers_everything_the_window_families_read() -> None:
    """The window part is cached by a key derived from the snapshot's record: what it leaves out
    (the per-poll fields) must not change the window families, and every other field is in it."""
    pipeline, _, _ = loaded_cache()
    for tick in replay_ticks(FIX / "vllm" / "vllm032-cpu-b-underbatch.jsonl.gz",
                             FIX / "nvml" / "h200-probe.jsonl.gz"):  # fmt: skip
        pipeline.add_tick(tick)  # type: ignore[attr-defined]
    snap = pipeline.snapshot  # type: ignore[attr-defined]
    settings = ExportSettings(version="t", horizon_seconds=60.0, poll_interval=0.25)
    other = replace(snap, health={}, ticks=snap.ticks + 1000)
    assert window_key(other) == window_key(snap)
    assert window_families(other, settings) == window_families(snap, settings)
    keyed = {f.name for f in fields(Snapshot)} - PER_POLL_FIELDS
    assert len(window_key(snap)) == len(keyed) == len(fields(Snapshot)) - 2
    for name in keyed:  # a change of any of them is a new key
        changed = replace(snap, **{name: object()})
        assert window_key(changed) != window_key(snap), name


def test_name_filter_and_methods() -> None:
    pipeline, _, cache = loaded_cache()
    for tick in list(replay_ticks(FIX / "vllm" / "vllm032-cpu-b-underbatch.jsonl.gz"))[:20]:
        pipeline.add_tick(tick)  # type: ignore[attr-defined]
    handle = make_handler(cache, lambda: b"<html/>", ready=lambda: True)  # type: ignore[arg-type]

    def get(path: str, query: str = "", method: str = "GET") -> Response:
        return handle(Request(method, path, query, {}))

    body = get("/metrics", "name[]=vllm_profile_up&name[]=vllm_profile_windows").body.decode()
    names = {ln.split("{")[0].split(" ")[0] for ln in body.splitlines() if not ln.startswith("#")}
    assert names == {"vllm_profile_up", "vllm_profile_windows"}
    full = get("/metrics").body.decode()
    assert "vllm_profile_info" in full and "vllm_profile_info" not in body
    # Any other query string is the full, cached body (it cannot force a fresh rendering).
    assert get("/metrics", "x=1").body.decode() == full
    assert get("/metrics", "&".join(f"name[]=n{i}" for i in range(100))).status == 400
    assert get("/metrics", method="POST").status == 405
    assert get("/nowhere").status == 404
    assert get("/-/healthy").body == b"OK\n"
