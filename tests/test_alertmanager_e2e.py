"""The shipped alert rules end to end: the exporter replays a real KV-pressure recording, a real
Prometheus evaluates deploy/prometheus/rules.yaml, a real Alertmanager routes the alert, and a
local webhook receives it with its labels and rendered annotations."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.harness import Exporter, Prometheus, QuietHandler, free_port, http_server, wait_for
from tests.paths import KV_PRESSURE, ROOT
from tests.tools import require_tool

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "deploy" / "prometheus"))
import generate as rules_generator  # noqa: E402

pytestmark = pytest.mark.e2e


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
    with run_alertmanager(tmp_path, webhook[0], ["alertname", "instance"]) as am:
        yield am


@contextmanager
def run_alertmanager(
    tmp_path: Path, url: str, group_by: list[str], inhibit_rules: list[Any] | None = None
) -> Iterator[str]:
    """A real Alertmanager sending every notification to ``url``; its host:port."""
    binary = require_tool("prometheus-alertmanager")
    port = free_port()
    cfg = {
        "route": {"receiver": "hook", "group_by": group_by,
                  "group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"},
        "receivers": [{"name": "hook", "webhook_configs": [{"url": url, "send_resolved": True}]}],
        "inhibit_rules": inhibit_rules or [],
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
    exporter = Exporter("--vllm-replay", str(KV_PRESSURE), "--gpu-source", "none", *exporter_args)
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


def documented_inhibit_rules() -> tuple[list[Any], list[Any]]:
    """docs/operations.md's inhibition rules for our pairs, and its narrowed InfoInhibitor rule:
    the YAML blocks of its #inhibition section, as an operator would copy them."""
    text = (ROOT / "docs" / "operations.md").read_text()
    section = text[text.index('<a id="inhibition"></a>') : text.index('<a id="exporter-down"></a>')]
    pairs, info = [yaml.safe_load(b.split("```")[0]) for b in section.split("```yaml")[1:]]
    return pairs, info


# kube-prometheus-stack's default Alertmanager inhibition of info alerts (its values.yaml).
STACK_INFO_RULE = {
    "source_matchers": ['alertname="InfoInhibitor"'],
    "target_matchers": ['severity="info"'],
    "equal": ["namespace"],
}


def severity(alert: str) -> str:
    """The severity the shipped rules give ``alert``."""
    for group in rules_generator.groups(rules_generator.Settings()):
        for rule in group["rules"]:
            if rule.get("alert") == alert:
                return str(rule["labels"]["severity"])
    raise AssertionError(f"no shipped alert {alert}")


def posted(name: str, **labels: str) -> dict[str, Any]:
    sev = labels.pop("severity", None) or severity(name)
    base = {"cluster": "east", "namespace": "inference", "job": "inference/vllm-profile"}
    return {"labels": {"alertname": name, "severity": sev, **base, **labels}}


# One alert set, as the shipped rules and kube-prometheus-stack would label it, and whether the
# documented inhibition lets it reach the receiver.
ALERTS: list[tuple[dict[str, Any], bool]] = [
    (
        posted("VLLMProfileKVCachePressure", instance="10.0.0.1:9709", rule="R2", variant="main"),
        True,
    ),
    (posted("VLLMProfileSustainedPreemptions", instance="10.0.0.1:9709"), False),
    (posted("VLLMProfileSustainedPreemptions", instance="10.0.0.2:9709"), True),  # another server
    (posted("VLLMProfileConcurrencySaturation", instance="10.0.0.3:9709", rule="R5"), True),
    (posted("VLLMProfileLongQueueTime", instance="10.0.0.3:9709"), False),
    (posted("VLLMProfileLongQueueTime", instance="10.0.0.3:9709", cluster="west"), True),
    (posted("VLLMProfileExporterDown", instance="10.0.0.4:9709"), True),
    (posted("TargetDown", severity="warning", service="vllm"), False),
    (posted("TargetDown", severity="warning", job="inference/other"), True),
    (posted("InfoInhibitor", severity="none"), True),
    (posted("VLLMProfileUnderBatching", instance="10.0.0.5:9709", rule="R1"), True),
    (posted("KubeSomethingInfo", severity="info"), False),  # the stack's own advice, held back
]


def test_documented_inhibition_holds_back_the_effect_and_keeps_the_cause(
    tmp_path: Path, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = webhook
    pairs, info = documented_inhibit_rules()
    assert severity("VLLMProfileUnderBatching") == "info"
    with run_alertmanager(tmp_path, url, [], pairs + info) as am:
        r = requests.post(f"http://{am}/api/v2/alerts", json=[a for a, _ in ALERTS], timeout=5)
        assert r.ok, r.text
        # One group (group_by: []), so the first notification holds every alert not inhibited.
        first = wait_for(lambda: received[0] if received else None, 30, "a notification")
        delivered = sorted(
            (a["labels"]["alertname"], a["labels"].get("instance", ""), a["labels"]["cluster"],
             a["labels"]["job"]) for a in first["alerts"]
        )  # fmt: skip
        expected = sorted(
            (a["labels"]["alertname"], a["labels"].get("instance", ""), a["labels"]["cluster"],
             a["labels"]["job"]) for a, reaches in ALERTS if reaches
        )  # fmt: skip
        assert delivered == expected
        state = requests.get(f"http://{am}/api/v2/alerts", timeout=5).json()
        held = sorted(a["labels"]["alertname"] for a in state if a["status"]["inhibitedBy"])
        assert held == sorted(a["labels"]["alertname"] for a, reaches in ALERTS if not reaches)


def test_without_the_narrowed_rule_the_stack_holds_our_advice_back(
    tmp_path: Path, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    """Why the documentation narrows kube-prometheus-stack's rule: its own holds back the
    under-batching advice while nothing worse fires in the namespace."""
    url, _ = webhook
    pairs, _ = documented_inhibit_rules()
    with run_alertmanager(tmp_path, url, [], pairs + [STACK_INFO_RULE]) as am:
        advice = posted("VLLMProfileUnderBatching", instance="10.0.0.5:9709", rule="R1")
        alerts = [posted("InfoInhibitor", severity="none"), advice]
        assert requests.post(f"http://{am}/api/v2/alerts", json=alerts, timeout=5).ok

        def under_batching() -> dict[str, Any] | None:
            for a in requests.get(f"http://{am}/api/v2/alerts", timeout=5).json():
                if a["labels"]["alertname"] == "VLLMProfileUnderBatching":
                    return a if a["status"]["inhibitedBy"] else None
            return None

        held = wait_for(under_batching, 30, "the advice held back by InfoInhibitor")
        assert held["status"]["state"] == "suppressed"
