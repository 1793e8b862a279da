"""The status page at ``/`` in a real headless browser (Debian's chromium), per scenario.

Each scenario replays a real recording into a pipeline and serves it, frozen, through the
exporter's own HTTP server: ``/`` and ``/metrics`` then show the same moment, and every figure the
page carries (``data-metric``/``data-value``) must equal the sample ``/metrics`` serves. The
browser runs with JavaScript disabled and every other origin sent to a proxy that records what
reaches it. A PNG per scenario goes to build/screenshots/ (kept by CI).
"""

from __future__ import annotations

import html
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from exporter import __version__ as version
from exporter.app import (
    DEMO_NOTE,
    demo_config,
    export_settings,
    make_render_cache,
    page_context,
)
from exporter.config import load_config
from exporter.export.http import make_handler
from exporter.export.server import HttpServer
from exporter.export.status_page import PageContext, StatusPage, render
from exporter.pipeline import Pipeline
from exporter.runs import run_replay
from tests.paths import H200, ROOT, SATURATION, UNDERBATCH

SHOTS = ROOT / "build" / "screenshots"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# name → (flags, vLLM recording, GPU recording, demo)
SCENARIOS: dict[str, tuple[dict[str, Any], Path | None, Path | None, bool]] = {
    "demo": ({}, None, None, True),
    "no-gpu": ({"max_num_seqs": "64", "gpu_source": "none"}, UNDERBATCH, None, False),
    "unknown-model": ({"max_num_seqs": "64"}, UNDERBATCH, H200, False),
    # The saturated server, with the tiny model's parameter count declared and a price given.
    "saturated": ({"max_num_seqs": "4", "model_params": "425600", "cost_per_hour": "3.5",
                   "slo_ttft": "1s", "slo_tpot": "10ms"},
                  SATURATION, H200, False),
}  # fmt: skip


class Served:
    """A replayed pipeline, frozen, behind the exporter's HTTP server."""

    def __init__(self, name: str) -> None:
        flags, vllm, gpu, demo = SCENARIOS[name]
        cfg = load_config({"horizon": "10m", **flags}, {}, {})
        if demo:
            cfg = demo_config(cfg)
            vllm, gpu = cfg.vllm_replay, cfg.gpu_replay
        self.pipeline: Pipeline = run_replay(cfg, vllm, gpu)
        settings = export_settings(cfg, demo)
        end = self.pipeline.snapshot.agg.horizon_end or 0.0
        ctx = page_context(cfg, demo) if demo else PageContext(version, f"a replay of {vllm.name}")
        page = StatusPage(lambda: self.pipeline.snapshot, lambda: settings, lambda: ctx,
                          clock=lambda: end + 0.5)  # fmt: skip
        cache = make_render_cache(self.pipeline, settings, process=False)
        handler = make_handler(cache, page, ready=lambda: True)
        self.server = HttpServer(handler, "127.0.0.1:0")
        self.server.start()
        self.url = f"http://127.0.0.1:{self.server.port}"

    def metrics(self) -> dict[str, float]:
        text = requests.get(self.url + "/metrics", timeout=10).text
        out = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in s.labels.items())
                out[s.name + (f"{{{labels}}}" if labels else "")] = s.value
        return out

    def stop(self) -> None:
        self.server.stop()


class Proxy:
    """A proxy that answers nothing and records the head of every request that reaches it: the
    browser sends every origin but the page's own loopback one here."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.seen: list[bytes] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    self.seen.append(conn.recv(512))
                except OSError:
                    self.seen.append(b"?")

    def close(self) -> None:
        self.sock.close()


def chromium(url: str, proxy: Proxy, profile: Path, *args: str) -> str:
    assert CHROMIUM is not None
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-default-apps", "--disable-extensions", "--disable-domain-reliability",
        f"--proxy-server=http://127.0.0.1:{proxy.port}",
        f"--user-data-dir={profile}", *args, url,
    ]  # fmt: skip
    # A profile of its own: a second browser on one profile hands its work to the first.
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


@pytest.fixture(scope="module")
def proxy() -> Iterator[Proxy]:
    p = Proxy()
    yield p
    p.close()


def page_figures(dom: str) -> dict[str, float]:
    return {
        html.unescape(m): float(v)
        for m, v in re.findall(r'data-metric="([^"]+)" data-value="([^"]+)"', dom)
    }


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (scripts/test installs it)")
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_status_page_in_a_browser(name: str, proxy: Proxy, tmp_path: Path) -> None:
    served = Served(name)
    try:
        SHOTS.mkdir(parents=True, exist_ok=True)
        dom = chromium(served.url + "/", proxy, tmp_path / "dom", "--dump-dom")
        shot = f"--screenshot={SHOTS / f'{name}.png'}"
        chromium(served.url + "/", proxy, tmp_path / "shot", shot, "--window-size=1400,2300",
                 "--hide-scrollbars")  # fmt: skip
        metrics = served.metrics()
        served_html = requests.get(served.url + "/", timeout=10).text
    finally:
        served.stop()
    assert (SHOTS / f"{name}.png").stat().st_size > 10_000
    # The page holds no script and no event handler: what the browser shows is what the server
    # rendered, with or without JavaScript (headless Chromium's own DOM dump and screenshots
    # need JavaScript on for themselves, so it is not turned off here).
    assert not re.search(r"<script|\son[a-z]+=", served_html)
    assert page_figures(served_html) == page_figures(dom)
    # The figures are in the DOM, each equal to what /metrics serves at the same (frozen) moment.
    shown = page_figures(dom)
    assert len(shown) >= 10, dom[:2000]
    for metric, value in shown.items():
        assert metrics.get(metric) == value, metric
    # Nothing left for another origin: the browser's own background traffic (update checks)
    # reaches the proxy too, but nothing the page asked for (it would name the page's origin).
    origin = served.url.encode()
    assert [r for r in proxy.seen if origin in r] == []
    expect = EXPECTED[name]
    for metric in expect["shown"]:
        assert metric in shown, metric
    for text in expect["text"]:
        assert text in dom, text
    for metric in expect.get("absent", []):
        assert metric not in shown and metric not in metrics, metric


EXPECTED: dict[str, dict[str, list[str]]] = {
    "demo": {
        # Every headline figure: efficiency against the three ceilings, the cost and what is
        # recoverable, and a significant issue with its fix; and the demo says what it declares.
        "shown": ["vllm_profile_efficiency_ratio",
                  "vllm_profile_decode_stream_ceiling_tokens_per_second",
                  "vllm_profile_decode_batch_ceiling_tokens_per_second",
                  "vllm_profile_decode_hardware_ceiling_tokens_per_second",
                  'vllm_profile_cost_per_hour_dollars{price_source="catalog_on_demand"}',
                  'vllm_profile_wall_clock_recoverable_cost_per_hour_dollars'
                  '{price_source="catalog_on_demand"}'],
        "text": ['class="issue" data-rule="R5"', "<b>Fix:</b>", "Declared: --max-num-seqs 4",
                 "<svg", "measured"],
    },
    "no-gpu": {
        "shown": ["vllm_profile_generation_tokens_per_second", 'vllm_profile_up{source="vllm"}'],
        "text": ['data-reason="no_gpu_data"', "check --gpu-source", "No roofline picture"],
        "absent": ["vllm_profile_efficiency_ratio"],
    },
    "unknown-model": {
        "shown": ["vllm_profile_generation_tokens_per_second",
                  'vllm_profile_cost_per_hour_dollars{price_source="catalog_on_demand"}'],
        "text": ['data-reason="unknown_model"', "--catalog-file or give --model-params",
                 "not in the catalog"],
        "absent": ["vllm_profile_efficiency_ratio"],
    },
    "saturated": {
        "shown": ["vllm_profile_efficiency_ratio", "vllm_profile_requests_waiting",
                  'vllm_profile_wall_clock_cost_per_million_tokens_dollars{price_source="flag"}',
                  "vllm_profile_slo_ttft_attainment_ratio",
                  "vllm_profile_slo_tpot_attainment_ratio",
                  "vllm_profile_goodput_tokens_per_second"],
        "text": ['class="issue" data-rule="R5"', "Concurrency Saturation", "<svg"],
    },
}  # fmt: skip


def test_everything_from_a_target_is_escaped() -> None:
    # A model name (and a served-name root) carrying markup and quotes renders as text.
    cfg = load_config({"max_num_seqs": "64", "gpu_source": "none"}, {}, {})
    pipeline = run_replay(cfg, UNDERBATCH, None)
    evil = "<script>alert('x')</script>\"><img src=x onerror=alert(1)>"
    snap = pipeline.snapshot
    snap = replace(snap, agg=replace(snap.agg, model_name=evil, model_names=(evil,)))
    page = render(snap, export_settings(cfg), PageContext("v", 'http://h"<b>'), 0.0).decode()
    assert "<script" not in page and "<img" not in page and 'h"<b>' not in page
    assert html.escape(evil, quote=True) in page
    # No script, stylesheet, font or image is fetched: nothing refers to another resource.
    assert not re.search(r"<(script|link|img|iframe)|@import|url\(|<[^>]*\s(src|srcset)=", page)


def test_the_demo_note_says_what_is_recorded_and_declared() -> None:
    assert "Recorded:" in DEMO_NOTE and "Declared:" in DEMO_NOTE
    cfg = demo_config(load_config({}, {}, {}))
    assert (cfg.max_num_seqs, cfg.model_params) == (4, (425_600.0, None))
    # What the user gives wins over what the demo declares.
    own = demo_config(load_config({"max_num_seqs": "8", "model_params": "8e9"}, {}, {}))
    assert (own.max_num_seqs, own.model_params) == (8, (8e9, None))
