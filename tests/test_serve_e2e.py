"""``serve`` end to end: a loopback endpoint replays a real vLLM recording, the exporter polls it
as a subprocess, and a real Prometheus scrapes the exporter. Then the endpoint dies and returns."""

from __future__ import annotations

import gzip
import json
import signal
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import Exporter, Prometheus, RecordedVllm, wait_for
from tests.paths import H200, UNDERBATCH

pytestmark = pytest.mark.e2e


def recorded_rate() -> float:
    """Generation tokens/s of the whole recording, from its first and last counter values."""
    with gzip.open(UNDERBATCH, "rt") as f:
        polls = [e for e in map(json.loads, f) if e.get("source") == "vllm"]

    def gen(body: str) -> float:
        return sum(
            s.value
            for fam in text_string_to_metric_families(body)
            for s in fam.samples
            if s.name == "vllm:generation_tokens_total"
        )

    return (gen(polls[-1]["body"]) - gen(polls[0]["body"])) / (polls[-1]["t"] - polls[0]["t"])


def exported(text: str, name: str) -> list[float]:
    return [
        s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == name
    ]


def test_serve_scraped_by_prometheus_survives_vllm_outage(tmp_path: Path) -> None:
    vllm = RecordedVllm(UNDERBATCH)
    vllm.start()
    exporter = Exporter(
        "--vllm-url",
        vllm.url,
        "--gpu-replay",
        str(H200),
        "--max-num-seqs",
        "64",
        "--horizon",
        "10s",
    )
    prom = Prometheus(tmp_path, [f"127.0.0.1:{exporter.port}"])
    try:
        # Healthy: Prometheus stores the derived series.
        wait_for(lambda: prom.value('vllm_profile_up{source="vllm"}') == 1, 40, "up=1 in Prom")
        tps = wait_for(
            lambda: prom.value("vllm_profile_generation_tokens_per_second"), 30, "tok/s in Prom"
        )
        # Replayed at the recorded pace, the live rate must match the recording's own rate.
        # Tolerance 25%: a 10 s horizon sees only part of the recording, and requests start and
        # finish in lumps (512-token requests at ~480 tok/s end every ~1 s).
        assert tps == pytest.approx(recorded_rate(), rel=0.25)
        assert prom.value("vllm_profile_active_windows") >= 1
        assert prom.value("vllm_profile_scheduler_occupancy_ratio") < 0.25
        assert prom.value('vllm_profile_gpu_memory_total_bytes{gpu="0"}') == 150754820096
        assert prom.value("vllm_profile_vllm_max_model_len") == 1024

        # vLLM dies: up drops, derived series vanish (not stale), /metrics keeps answering.
        vllm.stop()
        wait_for(lambda: prom.value('vllm_profile_up{source="vllm"}') == 0, 20, "up=0 in Prom")
        gone = wait_for(
            lambda: not exported(exporter.metrics(), "vllm_profile_generation_tokens_per_second"),
            10,
            "derived series to vanish from /metrics",
        )
        assert gone
        text = exporter.metrics()
        assert exported(text, "vllm_profile_requests_running") == []
        assert exported(text, "vllm_profile_poll_errors_total")  # the failures are counted
        wait_for(
            lambda: prom.query("vllm_profile_generation_tokens_per_second") == [],
            10,
            "Prometheus to mark the series stale",
        )
        r = requests.get(exporter.url + "/metrics", timeout=5)
        assert r.status_code == 200

        # vLLM returns: everything recovers by itself.
        vllm.start()
        wait_for(lambda: prom.value('vllm_profile_up{source="vllm"}') == 1, 20, "up=1 again")
        wait_for(lambda: prom.value("vllm_profile_generation_tokens_per_second"), 20, "tok/s again")
        text = exporter.metrics()
        assert all(v >= 0 for v in exported(text, "vllm_profile_generation_tokens_per_second"))
    finally:
        prom.stop()
        log = exporter.stop()
        vllm.stop()
    # The outage was logged once per reason, not once per poll.
    assert log.count("vllm poll failed (connection)") == 1, log


def test_landing_page_and_health(tmp_path: Path) -> None:
    exporter = Exporter("--vllm-url", "http://127.0.0.1:9", "--gpu-source", "none")
    try:
        page = requests.get(exporter.url + "/", timeout=5)
        assert page.status_code == 200 and 'href="/metrics"' in page.text
        assert requests.get(exporter.url + "/-/healthy", timeout=5).status_code == 200
        assert requests.get(exporter.url + "/nope", timeout=5).status_code == 404
        text = exporter.metrics()
        assert exported(text, "vllm_profile_up") == [0.0]  # nothing listens on port 9
        assert exported(text, "vllm_profile_requests_running") == []
    finally:
        exporter.stop()


def test_demo_serves_live_numbers_labelled_as_demo() -> None:
    exporter = Exporter("--demo")
    try:

        def with_throughput() -> str | None:
            t = exporter.metrics()
            return t if exported(t, "vllm_profile_generation_tokens_per_second") else None

        text = wait_for(with_throughput, 20, "demo throughput")
        assert 'mode="demo"' in text
        assert exported(text, "vllm_profile_gpu_memory_total_bytes") == [150754820096.0]
        assert exported(text, "vllm_profile_scheduler_occupancy_ratio")  # demo server ran cap 4
        page = requests.get(exporter.url + "/", timeout=5).text
        assert "<b>Demo.</b>" in page and "Recorded:" in page and "Declared:" in page

        # The headline, live: efficiency against the three ceilings, the cost, what is
        # recoverable, and a significant issue (the recorded server sat at its cap of 4).
        def headline() -> str | None:
            t = exporter.metrics()
            names = ("efficiency_ratio", "decode_stream_ceiling_tokens_per_second",
                     "decode_batch_ceiling_tokens_per_second",
                     "decode_hardware_ceiling_tokens_per_second", "cost_per_hour_dollars",
                     "wall_clock_recoverable_cost_per_hour_dollars")  # fmt: skip
            if not all(exported(t, f"vllm_profile_{n}") for n in names):
                return None
            return t if 'fix="raise_max_num_seqs"' in t else None

        text = wait_for(headline, 60, "the demo's headline figures and issue")
        assert 'model_matched_on="flag"' in text
        assert 'declared="max_num_seqs,model_params"' in text and 'mode="demo"' in text
    finally:
        log = exporter.stop()
    assert "DEMO" in log


def test_sighup_reload_starts_a_new_epoch(tmp_path: Path) -> None:
    vllm = RecordedVllm(UNDERBATCH)
    vllm.start()
    config = tmp_path / "exporter.yaml"
    config.write_text("cost-per-hour: 5\nmax-num-seqs: 64\ngpu-source: none\n")
    exporter = Exporter("--vllm-url", vllm.url, "--config", str(config))

    def cost() -> list[float]:
        return exported(exporter.metrics(), "vllm_profile_cost_per_hour_dollars")

    try:
        assert wait_for(cost, 20, "a cost series") == [5.0]
        assert exported(exporter.metrics(), "vllm_profile_config_epoch") == [0.0]
        config.write_text("cost-per-hour: 7\nmax-num-seqs: 64\ngpu-source: none\n")
        exporter.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: cost() == [7.0], 10, "the reloaded price")
        assert exported(exporter.metrics(), "vllm_profile_config_epoch") == [1.0]
        # A broken file is refused and the running configuration stays (the hostile kinds of
        # file are in test_hostile_inputs.py).
        config.write_text("cost-per-hour: -1\n")
        exporter.proc.send_signal(signal.SIGHUP)
        exporter.wait_log("reload failed, keeping the running configuration", 20)
        assert cost() == [7.0]
        assert exported(exporter.metrics(), "vllm_profile_config_epoch") == [1.0]
        assert exporter.proc.poll() is None
    finally:
        log = exporter.stop()
        vllm.stop()
    assert "reload failed, keeping the running configuration" in log


def test_a_pods_annotations_set_its_own_price_and_a_reload_rereads_them(tmp_path: Path) -> None:
    # One release's flags (cost 5) for every pod; this pod's annotation (9, then 11) wins. The
    # kubelet swaps the file's directory when the pod's annotations change.
    vllm = RecordedVllm(UNDERBATCH)
    vllm.start()
    first, second = tmp_path / "..v1", tmp_path / "..v2"
    first.mkdir()
    second.mkdir()
    (first / "annotations").write_text('team="a"\nvllm-profile-exporter/cost-per-hour="9"\n')
    (second / "annotations").write_text('vllm-profile-exporter/cost-per-hour="11"\n')
    (tmp_path / "..data").symlink_to(first.name)
    (tmp_path / "annotations").symlink_to("..data/annotations")
    exporter = Exporter(
        "--vllm-url",
        vllm.url,
        "--gpu-source=none",
        "--cost-per-hour=5",
        "--pod-annotations",
        str(tmp_path / "annotations"),
    )

    def cost() -> list[float]:
        return exported(exporter.metrics(), "vllm_profile_cost_per_hour_dollars")

    try:
        assert wait_for(cost, 20, "a cost series") == [9.0]
        swapped = tmp_path / "..data.new"
        swapped.symlink_to(second.name)
        swapped.replace(tmp_path / "..data")
        exporter.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: cost() == [11.0], 10, "the annotation's new price")
    finally:
        exporter.stop()
        vllm.stop()


def test_metrics_rendered_once_per_snapshot_match_a_fresh_rendering() -> None:
    exporter = Exporter("--demo")
    try:
        wait_for(
            lambda: "vllm_profile_generation_tokens_per_second" in exporter.metrics(), 20, "data"
        )
        # The cached rendering and a fresh one (a query string bypasses the cache) name the same
        # series; two scrapes within one poll get the very same bytes.
        cached = requests.get(exporter.url + "/metrics", timeout=5)
        fresh = requests.get(exporter.url + "/metrics?fresh=1", timeout=5)

        def series(text: str) -> set[str]:
            return {ln.split(" ")[0] for ln in text.splitlines()
                    if ln and not ln.startswith(("#", "process_"))}  # fmt: skip

        assert series(cached.text) == series(fresh.text)
        gz = requests.get(exporter.url + "/metrics", headers={"Accept-Encoding": "gzip"}, timeout=5)
        assert gz.headers["Content-Encoding"] == "gzip" and "vllm_profile_up" in gz.text
        om = requests.get(
            exporter.url + "/metrics",
            headers={"Accept": "application/openmetrics-text;version=1.0.0"},
            timeout=5,
        )
        assert om.headers["Content-Type"].startswith("application/openmetrics-text")
        assert om.text.rstrip().endswith("# EOF")
    finally:
        exporter.stop()
