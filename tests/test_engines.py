"""The engine seam: a second engine, registered from the tests alone (tests/toy_engine.py and
one map line), runs through serve, record and replay with nothing else of the exporter touched."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from exporter import engines
from exporter.app import export_settings
from exporter.config import Config, ConfigError, load_config
from exporter.runs import metrics_text, record, run_replay
from exporter.service import start_service
from tests import toy_engine
from tests.harness import QuietHandler, http_server, wait_for
from tests.helpers import cli_in_process

STATUS = json.loads((Path(__file__).parent / "fixtures" / "toy" / "status.json").read_text())
RATE = 100.0  # the toy server generates tokens at this rate, by its own clock
MODELS = {"data": [{"id": "toy-7b", "root": "org/toy-7b", "max_model_len": 4096}]}


@pytest.fixture
def toy() -> Iterator[str]:
    """The engine registered, and a toy server: its status counters grow at RATE tokens/s."""
    start = time.time()

    class Handler(QuietHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/v1/models":
                self.reply(200, json.dumps(MODELS).encode())
                return
            if self.path != "/status":
                self.reply(404, b"")
                return
            elapsed = time.time() - start
            body = dict(STATUS, counters={"generated": RATE * elapsed, "prompt": 25.0 * elapsed,
                                          "finished": elapsed})  # fmt: skip
            self.reply(200, json.dumps(body).encode())

    with pytest.MonkeyPatch.context() as mp, http_server(Handler) as srv:
        mp.setitem(engines.ENGINES, "toy", toy_engine.ENGINE)  # the one map line
        yield f"http://127.0.0.1:{srv.server_address[1]}"


def families(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def check_profiled(text: str) -> None:
    """The toy server as the exporter profiles it: up under its own kind, its model, its rate."""
    f = families(text)
    assert ({"source": "toy"}, 1.0) in f["vllm_profile_up"]
    assert "vllm" not in {labels["source"] for labels, _ in f["vllm_profile_up"]}
    assert {"source": "toy", "reason": "no_toy_status"} in [
        labels for labels, _ in f["vllm_profile_poll_errors_total"]
    ]
    (info,) = [labels for labels, _ in f["vllm_profile_info"]]
    assert info["model"] == "toy-7b"
    ((_, tps),) = f["vllm_profile_generation_tokens_per_second"]
    assert tps == pytest.approx(RATE, rel=0.05)
    ((_, running),) = f["vllm_profile_requests_running"]
    assert running == 4.0


def config(url: str, **more: object) -> Config:
    flags = {"engine": "toy", "vllm_url": url, "gpu_source": "none", "poll_interval": "250ms",
             "web_listen_address": "127.0.0.1:0", **more}  # fmt: skip
    return load_config(flags, {}, {})


def test_an_unknown_engine_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"--engine: invalid value 'tgi'.*one of: vllm"):
        load_config({"engine": "tgi"}, {}, {})


def test_serve_reads_a_registered_engine(toy: str) -> None:
    service = start_service(config(toy))
    url = f"http://127.0.0.1:{service.server.port}/metrics"
    try:

        def profiled() -> str | None:
            text = requests.get(url, timeout=5).text
            return text if "vllm_profile_generation_tokens_per_second" in text else None

        check_profiled(wait_for(profiled, 30, "the toy engine's figures"))
    finally:
        service.stop()


def test_record_and_replay_through_a_registered_engine(toy: str, tmp_path: Path) -> None:
    path = tmp_path / "toy.jsonl.gz"
    cfg = config(toy)
    ticks = record(cfg, path, duration=8.0)
    assert ticks > 0
    with gzip.open(path, "rt") as f:
        lines = [json.loads(line) for line in f]
    assert lines[0]["engine"] == "toy"
    sources = {e.get("source") for e in lines[1:]}
    assert {"toy", "toy_models"} <= sources and "vllm" not in sources
    # Replay knows the engine from the recording, whatever --engine says.
    pipeline = run_replay(replace(cfg, engine="vllm"), path, None)
    check_profiled(metrics_text(pipeline, export_settings(cfg)))
    # So does diagnose's report, which names it.
    report = cli_in_process("replay", str(path), "--diagnose")
    assert "Engine     toy\n" in report and "Model      toy-7b" in report
