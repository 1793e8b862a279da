"""The HTTP/1.1 server and the ``/metrics`` render cache, in process, over real sockets."""

from __future__ import annotations

import gzip
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from exporter.app import make_pipeline, make_registry, make_render_cache
from exporter.config import load_config
from exporter.export import server as server_mod
from exporter.export.collector import ExportSettings
from exporter.export.http import make_handler
from exporter.export.server import HttpServer, Request, Response
from exporter.scrape.replay import replay_ticks

FIX = Path(__file__).parent / "fixtures"


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


def exchange(port: int, data: bytes, until_close: bool = True, timeout: float = 5) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while until_close and (chunk := s.recv(65536)):
            out += chunk
        return out


def statuses(raw: bytes) -> list[int]:
    return [int(m) for m in re.findall(rb"^HTTP/1\.1 (\d{3}) ", raw, re.M)]


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
    assert raw.count(b"Connection: close") == 1
    # requests reuses the kept-alive connection: one TCP connection for three requests.
    with requests.Session() as s:
        for _ in range(3):
            assert s.get(f"http://127.0.0.1:{server.port}/x", timeout=5).text == "GET /x\n"
        assert len(server.connections) == 1


def test_http10_closes_and_head_has_no_body(server: HttpServer) -> None:
    raw = exchange(server.port, b"GET /x HTTP/1.0\r\n\r\n")
    assert statuses(raw) == [200] and raw.endswith(b"GET /x\n")
    raw = exchange(server.port, b"HEAD /x HTTP/1.1\r\nConnection: close\r\n\r\n")
    # HEAD: the length of the body the route made ("HEAD /x\n", 8 bytes), and no body.
    assert b"Content-Length: 8\r\n" in raw and raw.endswith(b"\r\n\r\n")


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /x HTTP/2.0\r\n\r\n", 505),
        (b"GET x HTTP/1.1\r\n\r\n", 400),
        (b"GET /x HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        (b"GET /x HTTP/1.1\r\n folded: header\r\n\r\n", 400),
        (b"POST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", 413),
        (b"GET /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 413),
        (b"GET /x HTTP/1.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n", 431),
    ],
)
def test_bad_requests_get_a_clear_status_and_the_server_lives_on(
    server: HttpServer, request_bytes: bytes, status: int
) -> None:
    raw = exchange(server.port, request_bytes)
    assert statuses(raw) == [status] and b"Connection: close" in raw
    assert requests.get(f"http://127.0.0.1:{server.port}/ok", timeout=5).status_code == 200


def test_a_failing_route_is_a_500_not_a_dead_server(server: HttpServer) -> None:
    raw = exchange(
        server.port,
        b"GET /boom HTTP/1.1\r\n\r\nGET /after HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    assert statuses(raw) == [500, 200] and raw.endswith(b"GET /after\n")


def test_slow_and_idle_clients_are_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_mod, "HEAD_TIMEOUT", 0.5)
    monkeypatch.setattr(server_mod, "IDLE_TIMEOUT", 1.0)
    srv = HttpServer(echo_path, "127.0.0.1:0")
    srv.start()
    try:
        # A head that never completes (slowloris): closed after HEAD_TIMEOUT.
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"GET /x HTTP/1.1\r\nX: ")
            t0 = time.monotonic()
            assert s.recv(100) == b""  # closed without an answer
            assert 0.3 < time.monotonic() - t0 < 3
        # A connection that never sends anything: also HEAD_TIMEOUT.
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            t0 = time.monotonic()
            assert s.recv(100) == b""
            assert 0.3 < time.monotonic() - t0 < 3
        # Idle between requests: kept for IDLE_TIMEOUT, then closed.
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"GET /x HTTP/1.1\r\n\r\n")
            assert statuses(s.recv(1000)) == [200]
            t0 = time.monotonic()
            assert s.recv(100) == b""
            assert 0.8 < time.monotonic() - t0 < 4
    finally:
        srv.stop()


def test_connection_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_mod, "MAX_CONNECTIONS", 2)
    srv = HttpServer(echo_path, "127.0.0.1:0")
    srv.start()
    try:
        held = [socket.create_connection(("127.0.0.1", srv.port), timeout=5) for _ in range(2)]
        time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            with pytest.raises(ConnectionResetError):
                s.sendall(b"GET /x HTTP/1.1\r\n\r\n")
                s.recv(100)
        for s in held:
            s.close()
        time.sleep(0.2)
        assert requests.get(f"http://127.0.0.1:{srv.port}/x", timeout=5).status_code == 200
    finally:
        srv.stop()


def test_a_client_that_does_not_read_is_not_read_from() -> None:
    big = b"x" * 200_000
    srv = HttpServer(lambda r: Response(200, big), "127.0.0.1:0")
    srv.start()
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            s.sendall(b"GET /x HTTP/1.1\r\n\r\n" * 100)  # 20 MB of answers asked for
            time.sleep(1.0)
            (conn,) = srv.connections
            transport = conn._transport
            assert transport is not None
            # Answers wait in the socket, not in an unbounded buffer: once the client stops
            # reading, the server stops answering (one answer over its high-water mark).
            assert transport.get_write_buffer_size() < 2 * len(big)
            s.settimeout(10)
            received = 0
            while received < 100 * len(big):
                chunk = s.recv(1 << 20)
                assert chunk
                received += len(chunk)
        # all 100 answers came once the client read: the bodies plus their heads
        assert received > 100 * len(big)
    finally:
        srv.stop()


class SlowAuth:
    """Accepts 'good' at once once seen; checking a new credential takes a second."""

    def __init__(self) -> None:
        self.seen = {"Basic good"}
        self.started = threading.Event()

    def known(self, authorization: str) -> bool | None:
        return True if authorization in self.seen else None

    def verify(self, authorization: str) -> bool:
        self.started.set()
        time.sleep(1.0)
        return False


def test_a_slow_credential_check_does_not_stall_other_scrapers() -> None:
    auth = SlowAuth()
    srv = HttpServer(echo_path, "127.0.0.1:0", auth=auth, headers={"X-Frame-Options": "deny"})
    srv.start()
    try:
        url = f"http://127.0.0.1:{srv.port}/x"
        result: dict[str, requests.Response] = {}
        slow = threading.Thread(
            target=lambda: result.setdefault(
                "r", requests.get(url, headers={"Authorization": "Basic new"}, timeout=5)
            )
        )
        slow.start()
        assert auth.started.wait(5)
        t0 = time.monotonic()
        ok = requests.get(url, headers={"Authorization": "Basic good"}, timeout=5)
        assert ok.status_code == 200 and time.monotonic() - t0 < 0.5
        assert ok.headers["X-Frame-Options"] == "deny"
        slow.join()
        assert result["r"].status_code == 401 and "WWW-Authenticate" in result["r"].headers
    finally:
        srv.stop()


def test_a_taken_port_fails_at_construction(server: HttpServer) -> None:
    with pytest.raises(OSError):
        HttpServer(echo_path, f"127.0.0.1:{server.port}")


# --- the render cache


def test_cached_renderings_equal_fresh_ones_poll_after_poll() -> None:
    """Through window closings and polls in between, the cached body (split into parts that
    change at different paces) is byte for byte what a fresh rendering of all families gives."""
    cfg = load_config({"max_num_seqs": "64"}, {}, {})
    pipeline = make_pipeline(cfg)
    settings = ExportSettings(version="test", horizon_seconds=60.0, poll_interval=0.25)
    registry = make_registry(pipeline, settings, process=False)
    cache = make_render_cache(pipeline, settings, process=False)
    ticks = replay_ticks(FIX / "vllm" / "vllm032-cpu-b-underbatch.jsonl.gz",
                         FIX / "nvml" / "h200-probe.jsonl.gz")  # fmt: skip
    om = "application/openmetrics-text; version=1.0.0"
    compared = 0
    for i, tick in enumerate(ticks):
        pipeline.add_tick(tick)
        if i % 3:  # every third poll: some polls close a window, most do not
            continue
        text, ctype = cache("", gzip_ok=False)
        assert ctype.startswith("text/plain") and text == generate_latest(registry)
        assert gzip.decompress(cache("", gzip_ok=True)[0]) == text
        body, ctype = cache(om, gzip_ok=False)
        assert ctype.startswith("application/openmetrics-text")
        assert body == generate_openmetrics(registry) and body.count(b"# EOF") == 1
        compared += 1
        if i > 120:
            break
    assert compared > 30


def test_name_filter_and_methods() -> None:
    cfg = load_config({"max_num_seqs": "64"}, {}, {})
    pipeline = make_pipeline(cfg)
    settings = ExportSettings(version="test", horizon_seconds=60.0, poll_interval=0.25)
    registry = make_registry(pipeline, settings, process=False)
    for tick in list(replay_ticks(FIX / "vllm" / "vllm032-cpu-b-underbatch.jsonl.gz"))[:20]:
        pipeline.add_tick(tick)
    handle = make_handler(registry, b"<html/>", ready=lambda: True,
                          cache=make_render_cache(pipeline, settings, process=False))  # fmt: skip

    def get(path: str, query: str = "", method: str = "GET") -> Response:
        return handle(Request(method, path, query, {}))

    body = get("/metrics", "name[]=vllm_profile_up&name[]=vllm_profile_windows").body.decode()
    names = {ln.split("{")[0].split(" ")[0] for ln in body.splitlines() if not ln.startswith("#")}
    assert names == {"vllm_profile_up", "vllm_profile_windows"}
    full = get("/metrics").body.decode()
    assert "vllm_profile_info" in full and "vllm_profile_info" not in body
    assert get("/metrics", method="POST").status == 405
    assert get("/nowhere").status == 404
    assert get("/-/healthy").body == b"OK\n"
