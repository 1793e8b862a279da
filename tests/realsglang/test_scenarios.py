"""End to end against a real SGLang server (PyPI's SGLang 0.5.23 serving the tiny local model on
CPU: scripts/setup-sglang), with ``--engine sglang`` scraped by a real Prometheus and every
assertion made through Prometheus's query API; SGLang's own counters are read independently of
the exporter, with prometheus_client's parser.

Each scenario also runs ``vllm-profile-exporter record`` beside the exporter. With
``SGLANG_FIXTURES=DIR`` the recordings, cut to the families the SGLang parser reads, are kept
in DIR: that is how tests/fixtures/sglang/scenarios was made (tests/test_sglang_scenarios.py
replays them in every run).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from exporter.engines.sglang.parse import READS
from tests.harness import wait_for
from tests.realsglang import server as sglang_server
from tests.realsglang.server import SglangServer
from tests.realvllm.loadgen import LoadProcess
from tests.realvllm.server import realtime
from tests.realvllm.stack import Stack
from tests.recordings import trimmed

pytestmark = [pytest.mark.realsglang, pytest.mark.e2e]
ROOT = Path(__file__).resolve().parents[2]
CAP = 8  # --max-running-requests, told to the exporter as --max-num-seqs


@pytest.fixture(scope="module", autouse=True)
def environment() -> None:
    if os.environ.get("SKIP_REAL_SGLANG") == "1":
        pytest.skip("SKIP_REAL_SGLANG=1")
    if not sglang_server.ready():
        msg = "the real-SGLang environment is missing: run scripts/setup-sglang"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SglangServer]:
    s = SglangServer(log=tmp_path_factory.mktemp("sglang") / "server.log", max_running=CAP)
    s.start()
    yield s
    s.stop()


def exporter(stack: Stack, server: SglangServer, horizon: str) -> None:
    stack.exporter_for(server, "--engine", "sglang", "--max-num-seqs", str(CAP),
                       "--horizon", horizon)  # fmt: skip


@contextmanager
def recorded(server: SglangServer, name: str, tmp: Path) -> Iterator[None]:
    """``record`` polls the server while the scenario runs; kept (cut) with SGLANG_FIXTURES."""
    raw = tmp / f"{name}.jsonl.gz"
    proc = subprocess.Popen(
        realtime([sys.executable, "-m", "exporter", "record", "--engine", "sglang",
                  "--vllm-url", server.url, "--gpu-source", "none", "-o", str(raw),
                  "--duration", "900s"]),
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=ROOT,
    )  # fmt: skip
    try:
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    keep = os.environ.get("SGLANG_FIXTURES")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        trimmed(raw, Path(keep) / f"sglang0523-cpu-{name}.jsonl.gz", "sglang", frozenset(READS))


def own(server: SglangServer, name: str, **labels: str) -> float | None:
    """SGLang's own figure: the sum of ``name``'s samples carrying ``labels``, read from its
    /metrics with prometheus_client's parser (not the exporter's)."""
    body = requests.get(server.url + "/metrics", timeout=5).text
    found = [s.value for f in text_string_to_metric_families(body) for s in f.samples
             if s.name == name and labels.items() <= s.labels.items()]  # fmt: skip
    return sum(found) if found else None


def test_idle(stack: Stack, server: SglangServer, tmp_path: Path) -> None:
    with recorded(server, "idle", tmp_path):
        exporter(stack, server, "10s")
        wait_for(lambda: stack.horizon_full(10, active=False), 40, "a full horizon")
        assert stack.value('vllm_profile_info{engine="sglang"}') == 1
        assert stack.value('vllm_profile_up{source="sglang"}') == 1
        assert stack.value("vllm_profile_active_windows") == 0
        assert stack.value("vllm_profile_requests_running") == 0
        assert stack.value("sum(vllm_profile_rule_significant)") == 0
        # Absent, not 0: nothing was generated.
        assert stack.value("vllm_profile_generation_tokens_per_second") is None
        # KV usage: SGLang's exact token counts (what its prefix cache holds while idle).
        used, pool = (
            own(server, "sglang:kv_used_tokens"),
            own(server, "sglang:max_total_num_tokens"),
        )
        assert used is not None and pool
        kv = stack.value("vllm_profile_kv_cache_usage_mean_ratio")
        assert kv == pytest.approx(used / pool, abs=1e-9)


def test_under_batching(stack: Stack, server: SglangServer, tmp_path: Path) -> None:
    """One client: every decode pass makes one token, so the decode batch per step is 1 and
    the engine steps per second are the client's tokens per second less the first tokens."""
    load = LoadProcess(server.url, tmp_path / "load.json", clients=1, prompt_words=40,
                       max_tokens=64)  # fmt: skip
    with recorded(server, "under-batching", tmp_path):
        exporter(stack, server, "20s")
        load.start()
        try:
            wait_for(lambda: stack.horizon_full(20), 90, "a full horizon of active windows")
            batch = stack.value("vllm_profile_decode_batch_per_step")
            steps = stack.value("vllm_profile_engine_steps_per_second")
            tps = stack.value("vllm_profile_generation_tokens_per_second")
            h0 = stack.value("vllm_profile_horizon_start_timestamp_seconds")
            h1 = stack.value("vllm_profile_last_window_timestamp_seconds")
            occupancy = stack.value("vllm_profile_scheduler_occupancy_ratio")
            r1 = stack.rule("R1")
        finally:
            load.stop()
    assert batch == pytest.approx(1.0, abs=0.01)
    assert steps and tps and h0 and h1
    # The client's streamed tokens over the same span: 63 of every 64 are made by decode
    # passes. SGLang counts generated tokens when a request finishes, so the exporter's
    # tokens/s is lumpy at the edges (one 64-token request each way): ±25%; the steps are
    # counted as they run: ±10%.
    c_tps = load.tokens_per_second(h0, h1)
    assert steps == pytest.approx(c_tps * 63 / 64, rel=0.10)
    assert tps == pytest.approx(c_tps, rel=0.25)
    assert occupancy is not None and occupancy < 0.25
    assert r1 == 1  # one request at a time where eight fit: under-batching


def test_prefix_reuse(stack: Stack, server: SglangServer, tmp_path: Path) -> None:
    """A 200-word prefix shared by every prompt: SGLang's radix cache serves most of each
    prompt, and the exporter's hit ratio is SGLang's cached over prompt tokens."""
    load = LoadProcess(server.url, tmp_path / "load.json", clients=4, prompt_words=20,
                       max_tokens=8, shared_prefix_words=200, seed=2)  # fmt: skip
    with recorded(server, "prefix-reuse", tmp_path):
        exporter(stack, server, "20s")
        load.start()
        try:
            wait_for(lambda: stack.horizon_full(20), 90, "a full horizon of active windows")
            cached0 = own(server, "sglang:cached_tokens_total") or 0.0
            prompt0 = own(server, "sglang:prompt_tokens_total") or 0.0
            # Another whole horizon, then SGLang's counters again: the same 20 s span.
            h1 = stack.value("vllm_profile_last_window_timestamp_seconds") or 0.0
            wait_for(lambda: (stack.value("vllm_profile_horizon_start_timestamp_seconds") or 0)
                     >= h1, 60, "a fresh horizon")  # fmt: skip
            cached1 = own(server, "sglang:cached_tokens_total") or 0.0
            prompt1 = own(server, "sglang:prompt_tokens_total") or 0.0
            hit = stack.value("vllm_profile_prefix_cache_hit_ratio")
            r3 = stack.rule("R3")
        finally:
            load.stop()
    own_ratio = (cached1 - cached0) / (prompt1 - prompt0)
    assert own_ratio > 0.6  # 200 of ~225 prompt tokens are shared
    assert hit == pytest.approx(own_ratio, abs=0.1)
    assert r3 == 0


def test_saturation(stack: Stack, server: SglangServer, tmp_path: Path) -> None:
    """Sixteen clients against --max-running-requests 8: the batch sits at the cap while a
    queue waits; R5 says so, and SGLang's own gauges agree."""
    load = LoadProcess(server.url, tmp_path / "load.json", clients=16, prompt_words=40,
                       max_tokens=64, seed=5)  # fmt: skip
    with recorded(server, "saturation", tmp_path):
        exporter(stack, server, "20s")
        load.start()
        try:
            wait_for(lambda: stack.rule("R5") == 1, 120, "R5 significant")
            assert stack.value('vllm_profile_issue_info{group="scheduling",rule="R5"}') == 1
            waiting = stack.value("vllm_profile_requests_waiting")
            assert waiting is not None and waiting >= 2
            queued = own(server, "sglang:num_queue_reqs")
            running = own(server, "sglang:num_running_reqs")
            assert queued is not None and queued >= 1
            assert running is not None and running <= CAP
        finally:
            load.stop()


def test_kv_pressure_retracts(stack: Stack, server: SglangServer, tmp_path: Path) -> None:
    """A 1,536-token KV pool and requests that grow to ~350 tokens: SGLang admits a request that
    may stop early (no ignore_eos) by an estimate of the tokens still to come (by default 0.7 of
    max_tokens, decaying to ~0.1 over 600 steps of steady load); started at 0.1 (its
    SGLANG_INIT_NEW_TOKEN_RATIO), it admits eight that cannot all grow (the tiny model's
    random weights almost never stop early), and retracts requests to free memory. R2 (KV
    pressure) is significant on SGLang's own retraction counter."""
    # One SGLang at a time: an idle one's scheduler still keeps a core busy, and on two cores
    # the other then ran 20x slower (no retraction in 4 minutes).
    server.stop()
    kv = SglangServer("--max-total-tokens", "1536", log=tmp_path / "kv.log", max_running=CAP,
                      env={"SGLANG_INIT_NEW_TOKEN_RATIO": "0.1"})  # fmt: skip
    kv.start()
    load = LoadProcess(kv.url, tmp_path / "load.json", clients=12, prompt_words=40,
                       max_tokens=300, seed=6, ignore_eos=0)  # fmt: skip
    try:
        with recorded(kv, "kv-pressure", tmp_path):
            exporter(stack, kv, "20s")
            load.start()
            try:
                wait_for(lambda: (own(kv, "sglang:num_retracted_requests_total") or 0) > 0, 240,
                         "SGLang to retract")  # fmt: skip
                wait_for(lambda: stack.rule("R2", "main") == 1, 60, "R2 significant")
                preemptions = stack.value("vllm_profile_preemptions_per_second")
                assert preemptions is not None and preemptions > 0
            finally:
                load.stop()
    finally:
        stack.stop_exporter()
        kv.stop()
        server.start()


def test_restart_starts_an_epoch(stack: Stack, server: SglangServer, tmp_path: Path) -> None:
    """SGLang writes no process start time: its restart is seen by its counters falling."""
    load = LoadProcess(server.url, tmp_path / "load.json", clients=1, prompt_words=40,
                       max_tokens=32, seed=4)  # fmt: skip
    with recorded(server, "restart", tmp_path):
        exporter(stack, server, "10s")
        load.start()
        try:
            wait_for(lambda: stack.horizon_full(10), 60, "a full horizon of active windows")
            assert stack.value("vllm_profile_config_epoch") == 0
            load.stop()
            server.stop()
            wait_for(lambda: stack.value('vllm_profile_up{source="sglang"}') == 0, 20, "up=0")
            server.start()
            load.start()
            wait_for(lambda: stack.value("vllm_profile_config_epoch") == 1, 90, "epoch 1")
            rate = stack.value("min_over_time(vllm_profile_generation_tokens_per_second[5m])")
            assert rate is not None and rate >= 0  # never negative across the reset
        finally:
            load.stop()


def test_the_server_was_polled_without_errors(stack: Stack) -> None:
    """Every scenario's polls parsed: no body error of SGLang's parser on a real server."""
    assert stack.value('sum(vllm_profile_poll_errors_total{source="sglang",reason!~'
                       '"connection|timeout"})') == 0  # fmt: skip
