"""The dcgm-exporter GPU source: parsing, pod selection, and `serve --gpu-source dcgm`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from exporter.samples import GpuSample, PollError
from exporter.scrape.dcgm import DcgmSelector, DcgmSource, parse_dcgm_metrics
from exporter.scrape.text_format import ParseError
from tests.harness import Exporter, QuietHandler, http_server, wait_for
from tests.paths import DCGM as FIX

TWO_PODS = (FIX / "k8s-two-pods.prom").read_text()
OURS = DcgmSelector(pod="mistral-6cfb59d6cd-xbwgd", namespace="default")


def test_pod_attribution_keeps_our_gpu() -> None:
    s = parse_dcgm_metrics(TWO_PODS, 1.0, OURS)
    (g,) = s.gpus
    assert (g.index, g.uuid, g.name) == (
        0,
        "GPU-1c2b08c1-f602-d290-4519-863bc0c96079",
        "NVIDIA L40S",
    )
    assert (g.util_gpu_pct, g.util_mem_pct, g.power_watts) == (97.0, 64.0, 301.5)
    assert (g.temperature_c, g.sm_clock_mhz, g.energy_mj) == (61.0, 2520.0, 912345678.0)
    # MiB → bytes: used 42,410 MiB; total = used + free + reserved = 46,068 MiB.
    assert g.mem_used_bytes == 42410 * 1024**2
    assert g.mem_total_bytes == (42410 + 3120 + 538) * 1024**2
    # DCGM_FI_PROF_DRAM_ACTIVE is a 0-1 ratio; the reading is in percent.
    assert g.dram_bw_util_pct == pytest.approx(73.1)


def test_selection_by_gpu_or_all() -> None:
    assert [g.index for g in parse_dcgm_metrics(TWO_PODS, 1.0, DcgmSelector()).gpus] == [0, 1]
    by_uuid = DcgmSelector(gpus=("GPU-5e0a3b1d-77c2-4e51-a2b4-0c9d6f2e8a11",))
    assert [g.index for g in parse_dcgm_metrics(TWO_PODS, 1.0, by_uuid).gpus] == [1]
    with pytest.raises(ParseError) as e:
        parse_dcgm_metrics(TWO_PODS, 1.0, DcgmSelector(pod="someone-else"))
    assert e.value.reason == "no_gpu_selected"


def test_real_published_lines_parse() -> None:
    h100 = parse_dcgm_metrics((FIX / "h100-standalone.prom").read_text(), 1.0, DcgmSelector())
    assert h100.gpus[0].name == "NVIDIA H100 80GB HBM3" and h100.gpus[0].sm_clock_mhz == 345.0
    l40s = parse_dcgm_metrics((FIX / "l40s-k8s-pod-attribution.prom").read_text(), 1.0, OURS)
    assert l40s.gpus[0].sm_clock_mhz == 2520.0


@pytest.fixture
def dcgm_endpoint() -> Iterator[tuple[str, dict[str, Any]]]:
    state: dict[str, Any] = {"body": TWO_PODS.encode(), "code": 200}

    class Handler(QuietHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.reply(state["code"], state["body"])

    with http_server(Handler) as srv:
        yield f"http://127.0.0.1:{srv.server_address[1]}/metrics", state


def test_source_reports_failures_and_recovers(dcgm_endpoint: tuple[str, dict[str, Any]]) -> None:
    url, state = dcgm_endpoint
    src = DcgmSource(url, OURS, deadline=2.0, clock=lambda: 3.0)
    assert isinstance(src.poll(edge=False), GpuSample)
    state["code"] = 503
    err = src.poll(edge=False)
    assert isinstance(err, PollError) and err.reason == "http_status"
    state["code"] = 200
    assert isinstance(src.poll(edge=True), GpuSample)


@pytest.mark.e2e
def test_serve_with_dcgm_source(dcgm_endpoint: tuple[str, dict[str, Any]]) -> None:
    url, _ = dcgm_endpoint
    exporter = Exporter(
        "--vllm-url", "http://127.0.0.1:9", "--gpu-source", "dcgm", "--dcgm-url", url,
        env={"VLLM_PROFILE_DCGM_POD": "mistral-6cfb59d6cd-xbwgd",
             "VLLM_PROFILE_DCGM_NAMESPACE": "default"},
    )  # fmt: skip
    try:

        def gpu_series() -> str | None:
            text = exporter.metrics()
            return text if "vllm_profile_gpu_memory_total_bytes{" in text else None

        text = wait_for(gpu_series, 15, "GPU series from dcgm-exporter")
        assert 'vllm_profile_up{source="dcgm"} 1.0' in text
        assert 'UUID="GPU-1c2b08c1-f602-d290-4519-863bc0c96079",gpu="0"' in text
        assert "GPU-5e0a3b1d" not in text  # the other pod's GPU
    finally:
        exporter.stop()
