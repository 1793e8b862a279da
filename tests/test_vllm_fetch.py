"""The vLLM fetcher against a real loopback HTTP server misbehaving in each way it can."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from typing import Any

import pytest

from exporter.engines.vllm import ENGINE as VLLM
from exporter.samples import EngineSample, PollError
from exporter.scrape.engine_fetch import EngineFetcher, split_metrics_url
from tests.harness import QuietHandler, free_port

GOOD = b'vllm:num_requests_running{engine="0",model_name="m"} 2.0\n'
MODELS = b'{"object":"list","data":[{"id":"m","max_model_len":4096}]}'


class Handler(QuietHandler):
    def do_GET(self) -> None:  # noqa: N802
        mode = self.server.mode  # type: ignore[attr-defined]
        self.server.accept_headers.append(self.headers.get("Accept"))  # type: ignore[attr-defined]
        if self.path == "/v1/models":
            return self.reply(200, MODELS, "application/json")
        if mode == "ok":
            return self.reply(200, GOOD)
        if mode == "500":
            return self.reply(500, b"internal error\n")
        if mode == "html":
            return self.reply(200, b"<html>login</html>\n", "text/html")
        if mode == "huge":
            return self.reply(200, GOOD * 100_000)  # ~5.7 MB
        if mode == "hang":
            time.sleep(2.0)  # beyond the fetcher's 0.5 s deadline
            return self.reply(200, GOOD)
        if mode == "trickle":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            for _ in range(40):  # 2 s of trickle, beyond the 0.5 s deadline
                self.wfile.write(b"# x\n")
                self.wfile.flush()
                time.sleep(0.05)
            return None
        raise AssertionError(mode)


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    srv = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    srv.daemon_threads = True
    srv.mode = "ok"  # type: ignore[attr-defined]
    srv.accept_headers = []  # type: ignore[attr-defined]
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def fetcher(srv: ThreadingHTTPServer, **kw: Any) -> EngineFetcher:
    port = srv.server_address[1]
    return EngineFetcher(
        VLLM, f"http://127.0.0.1:{port}/metrics", deadline=0.5, clock=lambda: 7.0, **kw
    )


def test_good_poll_and_models(server: ThreadingHTTPServer) -> None:
    f = fetcher(server)
    p = f.poll()
    s = p.result
    assert isinstance(s, EngineSample) and s.running == 2.0 and s.observed_at == 7.0
    assert p.body == GOOD.decode() and p.models is None  # the raw text, for recordings
    assert server.accept_headers[-1] == "text/plain;version=0.0.4"  # type: ignore[attr-defined]
    p = f.poll(want_models=True)
    m = p.models
    assert m is not None and m.max_model_len == 4096 and m.model_ids == ("m",)
    assert p.models_body == MODELS.decode()


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("500", "http_status"),
        ("html", "bad_content_type"),
        ("hang", "timeout"),
        ("trickle", "timeout"),
    ],
)
def test_failures_become_poll_errors_then_recover(
    server: ThreadingHTTPServer, mode: str, reason: str
) -> None:
    f = fetcher(server)
    server.mode = mode  # type: ignore[attr-defined]
    err = f.poll().result
    assert isinstance(err, PollError) and err.reason == reason, err
    server.mode = "ok"  # type: ignore[attr-defined]
    assert isinstance(f.poll().result, EngineSample)


def test_body_size_cap(server: ThreadingHTTPServer) -> None:
    server.mode = "huge"  # type: ignore[attr-defined]
    f = EngineFetcher(VLLM, 
        f"http://127.0.0.1:{server.server_address[1]}", deadline=5, clock=time.time,
        max_body=1 << 20,
    )  # fmt: skip
    err = f.poll().result
    assert isinstance(err, PollError) and err.reason == "body_too_large"


def test_connection_refused() -> None:
    f = EngineFetcher(VLLM, f"http://127.0.0.1:{free_port()}", deadline=0.5, clock=time.time)
    p = f.poll(want_models=True)
    assert isinstance(p.result, PollError) and p.result.reason == "connection"
    assert p.models is None and p.body is None


def test_url_forms() -> None:
    assert split_metrics_url("http://h:8000") == ("http://h:8000", "http://h:8000/metrics")
