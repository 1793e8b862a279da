"""The fault matrix: every way a source can misbehave, each through the real fetcher, pipeline
and collector, against a real loopback HTTP endpoint serving recorded vLLM bodies.

For each fault: good polls, then the fault, then good polls again. Nothing crashes, the right
up / error series appear, no derived value is negative, NaN or stale, and everything recovers.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from exporter.engines.vllm import ENGINE as VLLM
from exporter.export.collector import ExportSettings, metric_families
from exporter.loop import PollLoop
from exporter.pipeline import Pipeline
from exporter.scrape.engine_fetch import EngineFetcher
from exporter.scrape.nvml import NoGpuSource, NvmlSource
from tests.harness import QuietHandler, http_server
from tests.paths import VLLM as FIX
from tests.test_nvml import FakeNvml

with gzip.open(FIX / "vllm032-cpu-b-underbatch.jsonl.gz", "rt") as _f:
    BODIES = [e["body"] for e in map(json.loads, _f) if "body" in e]


@dataclass
class Endpoint:
    """What the loopback vLLM does next; the test changes it between phases."""

    mode: str = "ok"
    index: int = 0
    transform: Callable[[str], str] = field(default=lambda b: b)

    def body(self) -> str:
        b = BODIES[self.index % len(BODIES)]
        self.index += 1
        return self.transform(b)


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def endpoint() -> Iterator[tuple[str, Endpoint]]:
    ep = Endpoint()

    class Handler(QuietHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/v1/models":
                return self.reply(200, b'{"data":[{"id":"m","max_model_len":1024}]}')
            mode = ep.mode
            if mode == "hang":
                time.sleep(1.0)
                return self.reply(200, ep.body().encode())
            if mode == "500":
                return self.reply(500, b"internal error\n")
            if mode == "html":
                return self.reply(200, b"<html><body>login</body></html>", "text/html")
            if mode == "html_as_text":
                return self.reply(200, b"<html><body>login</body></html>\n")
            if mode == "huge":
                return self.reply(200, b"# " + b"x" * (50 * 1024 * 1024) + b"\n")
            return self.reply(200, ep.body().encode())

    with http_server(Handler) as srv:
        yield f"http://127.0.0.1:{srv.server_address[1]}", ep


class Rig:
    """Fetcher + pipeline + loop, ticked by hand in simulated time (250 ms a tick)."""

    def __init__(self, url: str, gpu: Any = None) -> None:
        self.clock = Clock()
        self.fetcher = EngineFetcher(VLLM, url, deadline=0.5, clock=self.clock)
        self.pipeline = Pipeline(horizon_seconds=10.0, poll_interval=0.25)
        self.loop = PollLoop(self.pipeline, self.fetcher, gpu, interval=0.25)

    def ticks(self, n: int, step: float = 0.25) -> None:
        for _ in range(n):
            self.clock.t += step
            self.loop.tick()

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        settings = ExportSettings("t", 10.0, 0.25)
        out = {}
        for fam in metric_families(self.pipeline.snapshot, settings):
            for s in fam.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def value(self, name: str, **labels: str) -> float | None:
        return self.metrics().get((name, tuple(sorted(labels.items()))))


def sane(m: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> None:
    """No NaN anywhere, nothing negative except headroom-like figures that may be."""
    for (name, _), v in m.items():
        assert not math.isnan(v), name
        if not name.endswith(("kv_headroom_bytes", "_delta_ratio")):
            assert v >= 0, (name, v)


THROUGHPUT = "vllm_profile_generation_tokens_per_second"

# fault mode -> (the error reason counted, or None when the body is valid but odd)
HTTP_FAULTS = {
    "refused": "connection",
    "hang": "timeout",
    "500": "http_status",
    "html": "bad_content_type",
    "html_as_text": "no_vllm_metrics",
    "huge": "body_too_large",
}
BODY_FAULTS: dict[str, tuple[Callable[[str], str], str]] = {
    "truncated": (lambda b: b[: len(b) // 2], "truncated"),
    "nan": (
        lambda b: re.sub(r"(vllm:num_requests_running\{[^}]*\}) \S+", r"\1 NaN", b),
        "non_finite",
    ),
    "duplicated": (
        lambda b: b + next(x for x in b.splitlines() if x.startswith("vllm:num_requests_running"))
        + "\n",
        "duplicate_series",
    ),
}  # fmt: skip


def run_fault(rig: Rig, ep: Endpoint, start: Callable[[], None], stop: Callable[[], None]) -> None:
    rig.ticks(17)  # two windows of good data
    assert rig.value(THROUGHPUT) is not None and rig.value("vllm_profile_up", source="vllm") == 1
    start()
    rig.ticks(17)
    stop()


@pytest.mark.parametrize("mode", HTTP_FAULTS)
def test_http_faults(endpoint: tuple[str, Endpoint], mode: str) -> None:
    url, ep = endpoint
    if mode == "refused":
        url = "http://127.0.0.1:9"  # nothing listens on the discard port
    rig = Rig(endpoint[0])

    def start() -> None:
        if mode == "refused":  # vLLM moves to a port where nothing listens
            rig.loop.replace_sources(EngineFetcher(VLLM, url, deadline=0.5, clock=rig.clock), None)
        ep.mode = mode

    def stop() -> None:
        m = rig.metrics()
        sane(m)
        assert m[("vllm_profile_up", (("source", "vllm"),))] == 0
        reason = HTTP_FAULTS[mode]
        assert m[("vllm_profile_poll_errors_total", (("reason", reason), ("source", "vllm")))] >= 17
        assert (THROUGHPUT, ()) not in m  # vanished, not stale
        if mode == "refused":
            rig.loop.replace_sources(
                EngineFetcher(VLLM, endpoint[0], deadline=0.5, clock=rig.clock), None
            )
        ep.mode = "ok"

    run_fault(rig, ep, start, stop)
    rig.ticks(17)
    sane(rig.metrics())
    assert rig.value("vllm_profile_up", source="vllm") == 1
    assert rig.value(THROUGHPUT) is not None


@pytest.mark.parametrize("fault", BODY_FAULTS)
def test_bad_bodies(endpoint: tuple[str, Endpoint], fault: str) -> None:
    url, ep = endpoint
    rig = Rig(url)
    transform, reason = BODY_FAULTS[fault]

    def start() -> None:
        ep.transform = transform

    def stop() -> None:
        m = rig.metrics()
        sane(m)
        assert m[("vllm_profile_up", (("source", "vllm"),))] == 0
        assert m[("vllm_profile_poll_errors_total", (("reason", reason), ("source", "vllm")))] >= 17
        assert (THROUGHPUT, ()) not in m
        ep.transform = lambda b: b

    run_fault(rig, ep, start, stop)
    rig.ticks(17)
    assert rig.value("vllm_profile_up", source="vllm") == 1 and rig.value(THROUGHPUT) is not None


def test_counters_going_backwards_and_a_restart(endpoint: tuple[str, Endpoint]) -> None:
    url, ep = endpoint
    rig = Rig(url)
    rig.ticks(40)
    epoch = rig.value("vllm_profile_config_epoch")
    ep.index -= 30  # counters step back: a reset as far as anyone can tell
    rig.ticks(3)
    sane(rig.metrics())
    assert rig.value("vllm_profile_config_epoch") == epoch + 1  # type: ignore[operator]
    # A real restart: a new process start time and counters from zero.
    ep.transform = lambda b: re.sub(
        r"^process_start_time_seconds \S+", "process_start_time_seconds 1.9e+09", b, flags=re.M
    )
    rig.ticks(3)
    assert rig.value("vllm_profile_config_epoch") == epoch + 2  # type: ignore[operator]
    assert rig.pipeline.models_wanted is False  # /v1/models was read again at once
    rig.ticks(17)
    m = rig.metrics()
    sane(m)
    assert m[(THROUGHPUT, ())] > 0


def test_buckets_changing_between_polls(endpoint: tuple[str, Endpoint]) -> None:
    url, ep = endpoint
    rig = Rig(url)
    rig.ticks(17)
    # vLLM restarted with custom TTFT buckets: the 0.02 s bound becomes 0.03 s.
    ep.transform = lambda b: b.replace(
        'vllm:time_to_first_token_seconds_bucket{engine="0",le="0.02"',
        'vllm:time_to_first_token_seconds_bucket{engine="0",le="0.03"',
    )
    rig.ticks(12)
    sane(rig.metrics())
    rig.ticks(40)  # the old-bounds windows leave the 10 s horizon
    m = rig.metrics()
    sane(m)
    p99 = m[("vllm_profile_time_to_first_token_p99_seconds", ())]
    # The same bodies served with the new bounds from the start give the same p99: nothing
    # from the old-bounds windows is left in it (their buckets cannot be merged with the new).
    twin_ep = Endpoint(transform=ep.transform)
    with_new_bounds = twin_run(twin_ep, ticks=17 + 12 + 40)
    assert p99 == pytest.approx(with_new_bounds)
    assert p99 > 0


def twin_run(ep: Endpoint, ticks: int) -> float:
    """The TTFT p99 after ``ticks`` polls of a fresh rig serving ``ep``."""

    class Handler(QuietHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/v1/models":
                return self.reply(200, b'{"data":[{"id":"m","max_model_len":1024}]}')
            return self.reply(200, ep.body().encode())

    with http_server(Handler) as srv:
        rig = Rig(f"http://127.0.0.1:{srv.server_address[1]}")
        rig.ticks(ticks)
        rig.loop.close_sources()
        value = rig.value("vllm_profile_time_to_first_token_p99_seconds")
    assert value is not None
    return value


def test_nvml_faults(endpoint: tuple[str, Endpoint]) -> None:
    url, _ = endpoint
    fake = FakeNvml(count=2)
    rig = Rig(url, gpu=NvmlSource(clock=Clock(), nvml=fake))
    rig.pipeline = Pipeline(horizon_seconds=10.0, poll_interval=0.25)
    rig.loop = PollLoop(rig.pipeline, rig.fetcher, NvmlSource(clock=rig.clock, nvml=fake),
                        interval=0.25)  # fmt: skip
    rig.ticks(17)
    gpu0 = (("UUID", "GPU-0000"), ("gpu", "0"))
    assert rig.value("vllm_profile_gpu_sm_clock_hertz", UUID="GPU-0000", gpu="0") == 1980e6
    # Each phase runs 17 ticks: a change shows within one full window (8 ticks) after the
    # window it started in.
    # One field raising: only that field is absent.
    fake.failing.add((0, "clock"))
    rig.ticks(17)
    m = rig.metrics()
    assert ("vllm_profile_gpu_sm_clock_hertz", gpu0) not in m
    assert m[("vllm_profile_gpu_memory_total_bytes", gpu0)] == 150754820096
    assert m[("vllm_profile_up", (("source", "nvml"),))] == 1
    # One GPU vanishing: its series go, the other GPU's stay.
    fake.failing.add((0, "*"))
    rig.ticks(17)
    m = rig.metrics()
    assert ("vllm_profile_gpu_memory_total_bytes", gpu0) not in m
    assert m[("vllm_profile_gpu_memory_total_bytes", (("UUID", "GPU-0001"), ("gpu", "1")))] > 0
    # Every GPU gone: nvml is down, vLLM figures carry on; then everything comes back.
    fake.failing.add((1, "*"))
    rig.ticks(17)
    m = rig.metrics()
    assert m[("vllm_profile_up", (("source", "nvml"),))] == 0
    assert not any(n.startswith("vllm_profile_gpu_") for n, _ in m)
    assert m[(THROUGHPUT, ())] > 0
    fake.failing.clear()
    rig.ticks(17)
    assert rig.value("vllm_profile_gpu_sm_clock_hertz", UUID="GPU-0000", gpu="0") == 1980e6


def test_driver_missing(endpoint: tuple[str, Endpoint]) -> None:
    url, _ = endpoint
    rig = Rig(url)
    rig.loop = PollLoop(rig.pipeline, rig.fetcher,
                        NoGpuSource(rig.clock, "unavailable", "NVML Shared Library Not Found"),
                        interval=0.25)  # fmt: skip
    rig.ticks(17)
    m = rig.metrics()
    sane(m)
    assert m[("vllm_profile_up", (("source", "nvml"),))] == 0
    assert m[("vllm_profile_poll_errors_total", (("reason", "unavailable"), ("source", "nvml")))]
    assert m[(THROUGHPUT, ())] > 0


def test_wall_clock_jumps(endpoint: tuple[str, Endpoint]) -> None:
    url, _ = endpoint
    rig = Rig(url)
    rig.ticks(17)
    rig.clock.t -= 3600  # NTP steps the clock back an hour
    rig.ticks(17)
    m = rig.metrics()
    sane(m)
    assert m[("vllm_profile_windows", ())] <= 5  # the "future" windows left
    rig.clock.t += 7200  # and forward two hours
    rig.ticks(17)
    m = rig.metrics()
    sane(m)
    assert m[(THROUGHPUT, ())] > 0
    assert m[("vllm_profile_windows", ())] <= 5
