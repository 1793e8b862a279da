"""What the real-engine scenarios share: one exporter port scraped by a real Prometheus
throughout, with exporters coming and going on it, and a reader of /metrics texts."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import Exporter, Prometheus, free_port, wait_for
from tests.realvllm.server import realtime


class Engine(Protocol):
    """A real engine server (vLLM's or SGLang's)."""

    @property
    def url(self) -> str: ...


class Stack:
    """One exporter port that Prometheus scrapes throughout; exporters come and go on it."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.prom = Prometheus(tmp, [f"127.0.0.1:{self.port}"], wrap=realtime)
        self.exporter: Exporter | None = None

    def exporter_for(self, engine: Engine, *args: str) -> Exporter:
        self.stop_exporter()
        gpu = () if "--gpu-replay" in args else ("--gpu-source", "none")  # no GPU here
        self.exporter = Exporter(
            "--vllm-url", engine.url, *gpu, *args, port=self.port, wrap=realtime
        )
        # Prometheus has scraped this exporter instance once it reports its horizon.
        wait_for(lambda: self.value("vllm_profile_horizon_seconds"), 30, "Prometheus scraping")
        return self.exporter

    def stop_exporter(self) -> None:
        if self.exporter is not None:
            self.exporter.stop()
            self.exporter = None
            time.sleep(1.5)  # one failed scrape: the old instance's series go stale

    def value(self, expr: str) -> float | None:
        return self.prom.value(expr)

    def horizon_full(self, seconds: float, active: bool = True) -> bool:
        """The horizon spans (nearly) its length, and every window in it is active (or, with
        ``active=False``, evaluable). Counted by span, not by windows: a starved poll loop makes
        windows longer, and fewer."""
        start = self.value("vllm_profile_horizon_start_timestamp_seconds")
        end = self.value("vllm_profile_last_window_timestamp_seconds")
        total = self.value("vllm_profile_windows")
        kind = self.value(f"vllm_profile_{'active' if active else 'evaluable'}_windows")
        if None in (start, end, total, kind):
            return False
        return end - start >= seconds - 2.5 and kind == total  # type: ignore[operator]

    def rule(self, rule: str, variant: str = "") -> float | None:
        return self.value(f'vllm_profile_rule_significant{{rule="{rule}",variant="{variant}"}}')

    def stop(self) -> None:
        self.stop_exporter()
        self.prom.stop()


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of the series of ``name`` carrying (at least) ``labels`` in a /metrics text."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return float(sample.value)
    return None


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One Stack for a test module's scenarios."""
    s = Stack(tmp_path_factory.mktemp("stack"))
    yield s
    s.stop()
