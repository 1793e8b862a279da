"""Targets that misbehave at the byte level: stalled and cut bodies, headers sent a byte at a
time, redirects, endless and compressed bodies, slow answers, several processes behind one URL.

Each target is a real TCP server on loopback scripted per connection; the fetchers, the loop
and the pipeline are the real ones. Times in assertions are upper bounds only (what a hostile
target could otherwise hold), generous enough for a loaded machine.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import socket
import socketserver
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from exporter.derive.window import build_window
from exporter.engines.vllm import ENGINE as VLLM
from exporter.engines.vllm.parse import parse_vllm_metrics
from exporter.loop import PollLoop
from exporter.pipeline import Pipeline
from exporter.samples import EngineSample, GpuSample, Histogram, PollError
from exporter.scrape.dcgm import DcgmSelector, DcgmSource
from exporter.scrape.engine_fetch import EngineFetcher
from exporter.scrape.nvml import NvmlSource
from exporter.scrape.source import EnginePoll
from tests.harness import wait_for
from tests.paths import FIX
from tests.test_nvml import FakeNvml

with gzip.open(FIX / "vllm" / "vllm032-cpu-b-underbatch.jsonl.gz", "rt") as _f:
    BODIES = [e["body"] for e in map(json.loads, _f) if "body" in e]
BODY = BODIES[0].encode()
DCGM = (FIX / "dcgm" / "h100-standalone.prom").read_bytes()

Behaviour = Callable[[socket.socket, bytes], None]


def request_heads(conn: socket.socket) -> Iterator[bytes]:
    """Each request head a client sends on one connection, until it closes."""
    while True:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(65536)
            if not chunk:
                return
            head += chunk
        yield head


class RawTarget:
    """A TCP server whose every connection runs ``behaviour(conn, request head)``; counts
    connections and the bytes it managed to send."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.connections = 0
        self.sent = 0
        self.release = threading.Event()  # ends every stall when the test is done
        owner = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                owner.connections += 1
                conn: socket.socket = self.request
                for head in request_heads(conn):
                    try:
                        owner.behaviour(conn, head)
                    except OSError:
                        return
                    if b"close" in head.lower():
                        return

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def send(self, conn: socket.socket, data: bytes) -> None:
        conn.sendall(data)
        self.sent += len(data)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def answer(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@pytest.fixture
def target() -> Iterator[Callable[[Behaviour], RawTarget]]:
    made: list[RawTarget] = []

    def make(behaviour: Behaviour) -> RawTarget:
        t = RawTarget(behaviour)
        made.append(t)
        return t

    yield make
    for t in made:
        t.close()


def poll_once(url: str, **kw: Any) -> EnginePoll:
    f = EngineFetcher(VLLM, url, clock=time.time, **kw)
    try:
        return f.poll()
    finally:
        f.close()


def timed_poll(url: str, **kw: Any) -> tuple[EnginePoll, float]:
    t0 = time.monotonic()
    p = poll_once(url, **kw)
    return p, time.monotonic() - t0


def test_a_stalled_body_is_a_timeout_within_the_deadline(target: Callable[..., RawTarget]) -> None:
    def stall(conn: socket.socket, head: bytes) -> None:
        t.send(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + BODY[:100])
        t.release.wait(30)

    t = target(stall)
    p, took = timed_poll(t.url, deadline=0.5)
    assert isinstance(p.result, PollError) and p.result.reason == "timeout"
    assert took < 5.0  # the deadline (0.5 s) bounds it, not the target


def test_a_cut_body_is_a_connection_error(target: Callable[..., RawTarget]) -> None:
    def cut(conn: socket.socket, head: bytes) -> None:
        t.send(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + BODY[:100])
        conn.shutdown(socket.SHUT_RDWR)
        raise OSError("closed")

    t = target(cut)
    p = poll_once(t.url, deadline=5.0)
    assert isinstance(p.result, PollError) and p.result.reason == "connection", p.result


def test_headers_a_byte_at_a_time_cannot_hold_a_poll(target: Callable[..., RawTarget]) -> None:
    def trickle(conn: socket.socket, head: bytes) -> None:
        t.send(conn, b"HTTP/1.1 200 OK\r\n")
        while not t.release.wait(0.05):  # a header byte every 50 ms, forever
            t.send(conn, b"X")

    t = target(trickle)
    p, took = timed_poll(t.url, deadline=0.5)
    assert isinstance(p.result, PollError) and p.result.reason == "timeout"
    assert took < 5.0  # each read is quick; only the whole-exchange deadline stops this


def run_loop(
    url: str, gpu: Any, *, interval: float, deadline: float, ticks: int
) -> tuple[Pipeline, PollLoop]:
    """The real loop in real time over a fetcher of ``url``, for ``ticks`` ticks."""
    pipeline = Pipeline(horizon_seconds=60, poll_interval=interval)
    fetcher = EngineFetcher(VLLM, url, deadline=deadline, clock=time.time)
    loop = PollLoop(pipeline, fetcher, gpu, interval=interval, deadline=deadline)
    loop.run(max_ticks=ticks)
    loop.stop()
    loop.close_sources()
    return pipeline, loop


class CountingGpu:
    """A GPU source that answers at once and counts its polls."""

    def __init__(self) -> None:
        self.polls = 0

    def poll(self, edge: bool) -> GpuSample | PollError:
        self.polls += 1
        return NvmlSource(clock=time.time, nvml=FakeNvml(count=1)).poll(edge)

    def close(self) -> None:
        pass


def test_a_stuck_vllm_does_not_hold_gpu_polling(target: Callable[..., RawTarget]) -> None:
    def trickle(conn: socket.socket, head: bytes) -> None:
        t.send(conn, b"HTTP/1.1 200 OK\r\n")
        while not t.release.wait(0.05):
            t.send(conn, b"X")

    t = target(trickle)
    gpu = CountingGpu()
    pipeline, loop = run_loop(t.url, gpu, interval=0.05, deadline=0.5, ticks=30)
    assert gpu.polls == 30  # every tick, while vLLM's polls hung until their deadline
    assert loop.stats.polls["vllm"] < 15
    health = pipeline.snapshot.health
    assert health["nvml"].up and not health["vllm"].up
    assert health["vllm"].errors.get("timeout", 0) >= 1


class Exploding:
    """A vLLM source with a bug: its poll raises."""

    def poll(self, want_models: bool, complete: bool = True) -> EnginePoll:
        raise RuntimeError("a bug in a source")

    def close(self) -> None:
        pass


def test_a_source_that_raises_keeps_the_gpu_reading_of_its_tick() -> None:
    gpu = CountingGpu()
    pipeline = Pipeline(horizon_seconds=60, poll_interval=0.25)
    loop = PollLoop(pipeline, Exploding(), gpu, interval=0.25)
    tick = loop.tick()
    assert isinstance(tick.engine, PollError) and tick.engine.reason == "internal"
    assert isinstance(tick.gpu, GpuSample)
    assert pipeline.snapshot.health["nvml"].up


def test_redirects_are_never_followed(target: Callable[..., RawTarget]) -> None:
    elsewhere = target(lambda conn, head: conn.sendall(answer(BODY)))

    def redirect(conn: socket.socket, head: bytes) -> None:
        t.send(conn, answer(b"", f"Location: {elsewhere.url}/metrics", status="302 Found"))

    t = target(redirect)
    p = poll_once(t.url, deadline=2.0)
    assert isinstance(p.result, PollError) and p.result.reason == "redirect"
    assert elsewhere.url in p.result.detail  # says where it pointed, to fix the URL
    dcgm = DcgmSource(t.url + "/metrics", DcgmSelector(), deadline=2.0, clock=time.time)
    err = dcgm.poll(edge=False)
    dcgm.close()
    assert isinstance(err, PollError) and err.reason == "redirect"
    assert elsewhere.connections == 0  # never contacted


def test_an_endless_dcgm_body_is_cut_at_the_cap_while_it_streams(
    target: Callable[..., RawTarget],
) -> None:
    def endless(conn: socket.socket, head: bytes) -> None:
        t.send(conn, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"# " + b"x" * 65530 + b"\n"
        frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
        while not t.release.is_set():  # ~600 MB if nobody stops reading
            t.send(conn, frame)
            if t.sent > 600 * 1024 * 1024:
                return

    t = target(endless)
    cap = 4 * 1024 * 1024
    dcgm = DcgmSource(t.url, DcgmSelector(), deadline=20.0, clock=time.time, max_body=cap)
    err = dcgm.poll(edge=False)
    dcgm.close()
    assert isinstance(err, PollError) and err.reason == "body_too_large"
    # Read no further than the cap: what the target got out is the cap plus socket buffers.
    wait_for(lambda: t.connections == 1, 5, "the connection")
    assert t.sent < cap + 16 * 1024 * 1024


def test_a_gzip_body_is_read_and_a_gzip_bomb_is_capped(target: Callable[..., RawTarget]) -> None:
    packed = gzip.compress(BODY)
    t = target(lambda conn, head: conn.sendall(answer(packed, "Content-Encoding: gzip")))
    p = poll_once(t.url, deadline=2.0)
    assert isinstance(p.result, EngineSample) and p.body == BODY.decode()

    bomb = zlib.compressobj(9, zlib.DEFLATED, 31)
    packed = bomb.compress(b"\n" * (64 * 1024 * 1024)) + bomb.flush()  # 64 MB in ~64 KB
    assert len(packed) < 200_000
    b = target(lambda conn, head: conn.sendall(answer(packed, "Content-Encoding: gzip")))
    p = poll_once(b.url, deadline=5.0, max_body=8 << 20)
    assert isinstance(p.result, PollError) and p.result.reason == "body_too_large"


def test_a_slow_vllm_is_polled_less_often_not_reported_down(
    target: Callable[..., RawTarget],
) -> None:
    def slow(conn: socket.socket, head: bytes) -> None:
        t.release.wait(0.3)  # the answer takes 300 ms: longer than the 250 ms interval
        t.send(conn, answer(BODY))

    t = target(slow)
    pipeline, loop = run_loop(t.url, None, interval=0.25, deadline=1.0, ticks=12)
    health = pipeline.snapshot.health["vllm"]
    assert health.up and dict(health.errors) == {}  # never down, never an error
    assert 2 <= loop.stats.polls["vllm"] < 12  # polled less often than ticks
    assert t.connections == 1  # one kept-alive connection, never abandoned for a new one
    # What is exported is what happened: the polls came at least 300 ms apart, not the 250 ms
    # planned.
    assert health.interval == 0.25
    assert health.measured_interval is not None and health.measured_interval >= 0.3


def test_credentials_in_the_url_are_sent_and_never_shown(target: Callable[..., RawTarget]) -> None:
    expected = "Basic " + base64.b64encode(b"bob:s3cr3t-pw").decode()

    def guarded(conn: socket.socket, head: bytes) -> None:
        ok = f"Authorization: {expected}".encode() in head
        t.send(conn, answer(BODY) if ok else answer(b"no\n", status="401 Unauthorized"))

    t = target(guarded)
    f = EngineFetcher(VLLM, t.url.replace("http://", "http://bob:s3cr3t-pw@"), deadline=2.0,
                    clock=time.time)  # fmt: skip
    assert isinstance(f.poll().result, EngineSample)
    assert "s3cr3t-pw" not in f.shown and "bob:xxxxx@" in f.shown
    f.close()
    wrong = EngineFetcher(VLLM, t.url.replace("http://", "http://bob:s3cr3t-pw2@"), deadline=2.0,
                        clock=time.time)  # fmt: skip
    err = wrong.poll().result
    wrong.close()
    assert isinstance(err, PollError) and err.reason == "http_status"
    assert "s3cr3t-pw" not in err.detail and "bob:xxxxx@" in err.detail


def test_several_model_names_are_not_summed_under_one() -> None:
    body = BODY.decode()
    other = re.sub(r"^process_.*\n", "", body.replace('model_name="', 'model_name="other-'),
                   flags=re.M)  # fmt: skip
    # Two servers' bodies behind one aggregating proxy: every family twice, two names.
    both = body + re.sub(r'engine="0"', 'engine="1"', other)
    s = parse_vllm_metrics(both, 1.0)
    assert s.model_name is None and len(s.model_names) == 2
    single = parse_vllm_metrics(body, 1.0)
    assert single.model_name is not None and single.model_names == (single.model_name,)


def test_a_histogram_sum_going_down_is_a_reset_not_a_negative_mean() -> None:
    bounds = (0.1, 1.0, float("inf"))
    first = Histogram(bounds, (10.0, 20.0, 20.0), 600.0, 20.0)
    # The count goes up but the sum goes down: not one process's histogram.
    last = Histogram(bounds, (11.0, 21.0, 21.0), 8.0, 21.0)
    polls = [EngineSample(0.0, running=1.0, ttft=first), EngineSample(2.0, running=1.0, ttft=last)]
    w = build_window(polls, [], start=0.0, end=2.0)
    assert w.ttft is None and w.ttft_p99 is None
    assert w.ttft_mean == pytest.approx(8.0 / 21.0)  # the last poll's own cumulative mean, ≥ 0


def alternating(bodies_a: list[str], bodies_b: list[str]) -> Callable[[int], str]:
    return lambda i: (bodies_a if i % 2 == 0 else bodies_b)[i // 2 % len(bodies_a)]


@pytest.mark.parametrize("start_times", [True, False])
def test_several_processes_behind_one_url(
    target: Callable[..., RawTarget], start_times: bool
) -> None:
    a = BODIES[:40]
    b = [
        re.sub(
            r"^process_start_time_seconds \S+", "process_start_time_seconds 1.9e+09", x, flags=re.M
        )  # fmt: skip
        for x in BODIES[80:120]  # later in the recording: higher counters
    ]
    if not start_times:
        a = [re.sub(r"^process_start_time_seconds .*\n", "", x, flags=re.M) for x in a]
        b = [re.sub(r"^process_start_time_seconds .*\n", "", x, flags=re.M) for x in b]
    pick = alternating(a, b)
    served = {"metrics": 0, "models": 0}

    def balanced(conn: socket.socket, head: bytes) -> None:
        if b"/v1/models" in head:
            served["models"] += 1
            t.send(conn, answer(b'{"data":[{"id":"m","max_model_len":1024}]}'))
        else:
            t.send(conn, answer(pick(served["metrics"]).encode()))
            served["metrics"] += 1

    t = target(balanced)
    pipeline = Pipeline(horizon_seconds=10, poll_interval=0.25)
    clock = [1_800_000_000.0]
    fetcher = EngineFetcher(VLLM, t.url, deadline=2.0, clock=lambda: clock[0])
    loop = PollLoop(pipeline, fetcher, None, interval=0.25)
    for _ in range(40):
        clock[0] += 0.25
        loop.tick()
    loop.stop()
    loop.close_sources()
    snap = pipeline.snapshot
    assert snap.epoch <= 1  # at most the first switch looked like a restart
    assert served["models"] <= 2  # /v1/models read at start and at most once more
    health = snap.health["vllm"]
    assert not health.up and health.errors["several_servers"] >= 30
    assert "point --vllm-url at one pod" in (health.last_error or "")
    assert snap.agg.generation_tps is None  # nothing computed from mixed processes


def _chunked(body: bytes, size: int) -> bytes:
    parts = [body[i : i + size] for i in range(0, len(body), size)]
    framed = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in parts)
    return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + framed + b"0\r\n\r\n"


def _until_close(conn: socket.socket, data: bytes) -> None:
    conn.sendall(data)
    conn.shutdown(socket.SHUT_RDWR)
    raise OSError("closed by the target")  # RawTarget: end this connection


# Every framing HTTP/1.1 allows a 200 to come in (RFC 9112 §6), and whether the connection may
# be used again after it: (what the target does, connections three polls need).
FRAMINGS: dict[str, tuple[Behaviour, int]] = {
    "content_length": (lambda conn, head: conn.sendall(answer(BODY)), 1),
    "chunked, 1000-byte chunks": (lambda conn, head: conn.sendall(_chunked(BODY, 1000)), 1),
    "chunked, one chunk": (lambda conn, head: conn.sendall(_chunked(BODY, len(BODY))), 1),
    "until the connection closes": (
        lambda conn, head: _until_close(conn, b"HTTP/1.1 200 OK\r\n\r\n" + BODY), 3),
    "HTTP/1.0": (lambda conn, head: _until_close(
        conn, b"HTTP/1.0 200 OK\r\n" + f"Content-Length: {len(BODY)}\r\n\r\n".encode() + BODY), 3),
    "Connection: close": (
        lambda conn, head: _until_close(conn, answer(BODY, "Connection: close")), 3),
    "a byte at a time": (lambda conn, head: [conn.sendall(answer(BODY)[i : i + 1])
                                            for i in range(len(answer(BODY)))], 1),
}  # fmt: skip


@pytest.mark.parametrize("framing", FRAMINGS)
def test_every_http_framing_of_a_good_answer_is_read_whole(
    target: Callable[..., RawTarget], framing: str
) -> None:
    behaviour, connections = FRAMINGS[framing]
    t = target(behaviour)
    f = EngineFetcher(VLLM, t.url, deadline=5.0, clock=time.time)
    try:
        polls = [f.poll() for _ in range(3)]
    finally:
        f.close()
    expected = parse_vllm_metrics(BODY.decode(), 0.0)
    for p in polls:
        assert p.body == BODY.decode()
        assert isinstance(p.result, EngineSample) and p.result.running == expected.running
    assert t.connections == connections


def test_a_kept_alive_connection_closed_by_the_target_is_replaced(
    target: Callable[..., RawTarget],
) -> None:
    """A server closes idle keep-alive connections (uvicorn after 5 s) without saying so in
    its answer: the next poll finds it closed (or has its request reset) and opens a new one."""
    t = target(lambda conn, head: _until_close(conn, answer(BODY)))
    f = EngineFetcher(VLLM, t.url, deadline=5.0, clock=time.time)
    try:
        polls = [f.poll() for _ in range(3)]
    finally:
        f.close()
    for p in polls:
        assert isinstance(p.result, EngineSample), p.result
    assert t.connections == 3


MALFORMED: dict[str, bytes] = {
    "not HTTP": b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
    "a bad status line": b"HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n",
    "a bad chunk size": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n",
    "two lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "headers over 64 KiB": b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"a" * 70_000 + b"\r\n\r\n",
}


@pytest.mark.parametrize("kind", MALFORMED)
def test_an_answer_that_is_not_valid_http_is_malformed(
    target: Callable[..., RawTarget], kind: str
) -> None:
    t = target(lambda conn, head: conn.sendall(MALFORMED[kind]))
    p = poll_once(t.url, deadline=2.0)
    assert isinstance(p.result, PollError) and p.result.reason == "malformed", p.result


def test_bytes_after_the_answer_end_the_connection(target: Callable[..., RawTarget]) -> None:
    """What follows a complete answer unasked for cannot be trusted to frame the next one."""
    smuggled = answer(b"vllm:num_requests_running 999\n")
    t = target(lambda conn, head: conn.sendall(answer(BODY) + smuggled))
    f = EngineFetcher(VLLM, t.url, deadline=2.0, clock=time.time)
    try:
        polls = [f.poll() for _ in range(2)]
    finally:
        f.close()
    assert all(p.body == BODY.decode() for p in polls)
    assert t.connections == 2
