"""The shipped alert rules end to end: the exporter replays a real KV-pressure recording, a real
Prometheus evaluates deploy/prometheus/rules.yaml, a real Alertmanager routes the alert, and a
local webhook receives it with its labels and rendered annotations."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.harness import Exporter, Prometheus, QuietHandler, free_port, http_server, wait_for
from tests.tools import require_tool

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "deploy" / "prometheus"))
import generate as rules_generator  # noqa: E402

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parent.parent
KV = ROOT / "tests" / "fixtures" / "vllm" / "vllm032-cpu-d-kvpressure.jsonl.gz"


def fast_rules(tmp: Path) -> Path:
    """The shipped rules with `for:` shortened to 1 s for a live test (promtool tests keep the
    real durations), and a service's burn rate counted from its first request (the recording is
    short: the shipped minimum of 100 requests an hour is tested by promtool)."""
    settings = rules_generator.Settings(slo_min_requests=1)
    doc = yaml.safe_load(rules_generator.render(settings))
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "1s"
            rule.pop("keep_firing_for", None)
    out = tmp / "rules-fast.yaml"
    out.write_text(yaml.safe_dump(doc))
    return out


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Handler(QuietHandler):
        def do_POST(self) -> None:  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.reply(200, b"")

    with http_server(Handler) as srv:
        yield f"http://127.0.0.1:{srv.server_address[1]}/alerts", received


@pytest.fixture
def alertmanager(tmp_path: Path, webhook: tuple[str, list]) -> Iterator[str]:
    binary = require_tool("prometheus-alertmanager")
    url, _ = webhook
    port = free_port()
    cfg = {
        "route": {"receiver": "hook", "group_by": ["alertname", "instance"],
                  "group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"},
        "receivers": [{"name": "hook", "webhook_configs": [{"url": url, "send_resolved": True}]}],
    }  # fmt: skip
    (tmp_path / "am.yml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen(
        [binary, f"--config.file={tmp_path / 'am.yml'}", f"--storage.path={tmp_path / 'am'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    am = f"127.0.0.1:{port}"
    try:
        wait_for(lambda: requests.get(f"http://{am}/-/ready", timeout=2).ok, 30, "Alertmanager")
        yield am
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# Scraped as prometheus-operator would: the alerts' summaries name the namespace and pod.
K8S_LABELS = {"namespace": "inference", "pod": "vllm-0"}


def first_alert(
    tmp_path: Path,
    alertmanager: str,
    received: list[dict[str, Any]],
    name: str,
    *exporter_args: str,
) -> tuple[dict[str, Any], str]:
    """The first ``name`` alert the webhook receives, and the exporter's instance label."""
    exporter = Exporter("--vllm-replay", str(KV), "--gpu-source", "none", *exporter_args)
    prom = Prometheus(
        tmp_path, [f"127.0.0.1:{exporter.port}"], rule_files=[fast_rules(tmp_path)],
        alertmanagers=[alertmanager], labels=K8S_LABELS,
    )  # fmt: skip
    try:

        def arrived() -> dict[str, Any] | None:
            for payload in received:
                for alert in payload["alerts"]:
                    if alert["labels"]["alertname"] == name:
                        return alert
            return None

        return wait_for(arrived, 90, f"the {name} alert at the webhook", every=0.5), (
            f"127.0.0.1:{exporter.port}"
        )
    finally:
        prom.stop()
        exporter.stop()


def test_kv_pressure_alert_reaches_the_receiver(
    tmp_path: Path, alertmanager: str, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    alert, instance = first_alert(tmp_path, alertmanager, webhook[1],
                                  "VLLMProfileKVCachePressure", "--max-num-seqs", "8",
                                  "--horizon", "10s")  # fmt: skip
    assert alert["status"] == "firing"
    labels = alert["labels"]
    assert labels["severity"] == "warning"
    assert (labels["rule"], labels["variant"]) == ("R2", "main")
    assert labels["instance"] == instance and labels["job"] == "vllm-profile"
    ann = alert["annotations"]
    # Who: the pod, and the model vLLM serves (tiny-llama in this recording).
    assert ann["summary"] == "inference/vllm-0 (tiny-llama): vLLM's KV cache is under pressure."
    # The recording's KV usage reaches 100% with preemptions: the text quotes both, and the fix.
    assert "KV peak 100%" in ann["description"]
    assert "preemptions/s" in ann["description"]
    assert ann["description"].endswith("Fix: reduce --max-num-seqs or --max-model-len.")
    assert ann["runbook_url"].endswith("docs/rules.md#r2")


def test_an_slo_fast_burn_pages(
    tmp_path: Path, alertmanager: str, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    """A TTFT objective of 1 ms, which no request on this CPU server meets: every request is an
    error, 100 x the 1% budget, far over the 14.4 x of a fast burn, so the page goes out."""
    alert, instance = first_alert(tmp_path, alertmanager, webhook[1],
                                  "VLLMProfileTTFTBudgetFastBurn", "--slo-ttft", "1ms")  # fmt: skip
    assert alert["status"] == "firing"
    # A page for the service (the model in its namespace), not for one pod.
    assert alert["labels"] == {"alertname": "VLLMProfileTTFTBudgetFastBurn",
                               "severity": "critical", "namespace": "inference",
                               "model": "tiny-llama"}  # fmt: skip
    ann = alert["annotations"]
    assert ann["summary"] == (
        "inference/tiny-llama: Requests miss the TTFT objective fast enough to spend the month's "
        "error budget in two days."
    )
    assert ann["description"].startswith(
        "100% of the requests of the last 1h (and of the last 5m) missed the time to first token "
        "objective, across every server of this model in this namespace"
    )
    assert ann["runbook_url"].endswith("docs/operations.md#slo-burn")
