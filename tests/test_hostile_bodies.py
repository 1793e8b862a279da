"""Targets whose bodies are valid text but whose sizes are hostile: labels that grow or change
every poll, a 7 MB model name, tens of thousands of buckets. The real exporter process polls a
real HTTP server on loopback every 250 ms while a legitimate scraper keeps scraping: each attack
must leave it answering at least 95% of scrapes within 1 s, its resident memory no more than
64 MiB above where it started, and the poll refused with its own counted reason.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import Exporter, free_port, wait_for
from tests.paths import FIX
from tests.test_hostile_clients import attack_window

pytestmark = pytest.mark.e2e
with gzip.open(FIX / "vllm" / "vllm032-cpu-c-saturation.jsonl.gz", "rt") as _f:
    BODY = next(e["body"] for e in map(json.loads, _f) if "body" in e)

Body = Callable[[int], bytes]


class BodyServer:
    """vLLM's /metrics as ``body(n)`` makes it for the n-th request; /v1/models as vLLM's."""

    def __init__(self, body: Body) -> None:
        self.body, self.requests = body, 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:  # noqa: N802
                if self.path.startswith("/v1/models"):
                    data = b'{"data": [{"id": "tiny-llama", "max_model_len": 1024}]}'
                    ctype = "application/json"
                else:
                    owner.requests += 1
                    data, ctype = owner.body(owner.requests), "text/plain; version=0.0.4"
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hostile() -> Iterator[Callable[[Body], Exporter]]:
    made: list[tuple[BodyServer, Exporter]] = []

    def make(body: Body) -> Exporter:
        server = BodyServer(body)
        exp = Exporter("--vllm-url", f"http://127.0.0.1:{server.port}", "--gpu-source", "none",
                       "--calm-poll-interval", "250ms", "--max-num-seqs", "4")  # fmt: skip
        made.append((server, exp))
        return exp

    yield make
    for server, exp in made:
        exp.stop()
        server.stop()


def errors(exp: Exporter, reason: str) -> float:
    text = requests.get(exp.url + "/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "vllm_profile_poll_errors_total" and s.labels == {
                "source": "vllm",
                "reason": reason,
            }:
                return s.value
    raise AssertionError(f"no poll_errors_total for {reason}")


def attacked(exp: Exporter, reason: str, polls: int = 40) -> None:
    """``polls`` hostile bodies refused with ``reason`` while a scraper scrapes (the 95% / 1 s
    and +64 MiB promises are checked by attack_window)."""
    with attack_window(exp):
        wait_for(lambda: errors(exp, reason) >= polls, 60, f"{polls} polls refused: {reason}")
    text = requests.get(exp.url + "/metrics", timeout=5).text
    assert 'vllm_profile_up{source="vllm"} 0.0' in text
    assert len(text) < 200_000  # nothing of the hostile body is exported


def test_a_huge_label_changing_every_poll(hostile: Callable[[Body], Exporter]) -> None:
    # Every histogram bucket carries a 256 KiB label whose value changes at each poll.
    def body(n: int) -> bytes:
        big = f"{n}-" + "x" * (256 * 1024)
        return BODY.replace('model_name="tiny-llama"', f'model_name="{big}"', 30).encode()

    attacked(hostile(body), "line_too_long")


def test_a_seven_megabyte_model_name(hostile: Callable[[Body], Exporter]) -> None:
    name = "m" * 7_000_000
    line = f'vllm:num_requests_running{{engine="0",model_name="{name}"}} 1.0\n'
    data = (BODY.replace('vllm:num_requests_running{engine="0",model_name="tiny-llama"} ', "#")
            + line).encode()  # fmt: skip
    attacked(hostile(lambda n: data), "line_too_long", polls=20)


def test_eighty_thousand_buckets(hostile: Callable[[Body], Exporter]) -> None:
    lines = "".join(
        f'vllm:time_to_first_token_seconds_bucket{{engine="0",le="{i}",model_name="m"}} {i}\n'
        for i in range(1, 80_000)
    )
    data = (lines + BODY).encode()
    assert len(data) < 8 * 1024 * 1024  # a valid body under the size cap
    attacked(hostile(lambda n: data), "too_many_series", polls=20)


def test_a_body_of_the_right_size_is_still_read(hostile: Callable[[Body], Exporter]) -> None:
    exp = hostile(lambda n: BODY.encode())
    wait_for(lambda: 'vllm_profile_up{source="vllm"} 1.0' in exp.metrics(), 30, "vLLM up")
    for reason in ("line_too_long", "label_too_long", "too_many_series"):
        assert errors(exp, reason) == 0


def test_a_target_answering_near_the_deadline_shows_its_real_cadence(
    hostile: Callable[[Body], Exporter],
) -> None:
    """Each answer takes 0.9 s, under the 1 s poll deadline (4 x 250 ms, at least 1 s): every poll
    succeeds, but one starts only after the last ended, so polls come every 0.9 s or more. The
    exported interval says so; the 250 ms planned is the schedule."""

    def slow(n: int) -> bytes:
        time.sleep(0.9)
        return BODY.encode()

    exp = hostile(slow)

    def figures() -> dict[str, float] | None:
        values = {}
        for family in text_string_to_metric_families(exp.metrics()):
            for s in family.samples:
                if s.labels.get("source") == "vllm" and "reason" not in s.labels:
                    values[s.name] = s.value
        return values if values.get("vllm_profile_polls_total", 0) >= 10 else None

    got = wait_for(figures, 60, "ten polls of the slow target")
    assert got["vllm_profile_up"] == 1.0
    assert got["vllm_profile_poll_schedule_seconds"] == 0.25
    assert got["vllm_profile_poll_interval_seconds"] >= 0.9, got
    assert errors(exp, "timeout") == 0
