"""deploy/prometheus/rules.yaml: promtool-clean, unit-tested, and every link resolves."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from tests.paths import ROOT
from tests.tools import require_tool

RULES = ROOT / "deploy" / "prometheus" / "rules.yaml"
DOC_BASE = "https://github.com/vllm-profile-exporter/vllm-profile-exporter/blob/main/"


def rules() -> list[dict]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def test_promtool_check_rules() -> None:
    promtool = require_tool("promtool")
    r = subprocess.run(
        [promtool, "check", "rules", "--lint=all", "--lint-fatal", str(RULES)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("tests", ["rules_test.yaml", "slo_long_test.yaml"])
def test_promtool_unit_tests(tests: str) -> None:
    promtool = require_tool("promtool")
    r = subprocess.run(
        [promtool, "test", "rules", str(ROOT / "tests" / "deploy" / tests)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_one_alert_per_rule_and_health() -> None:
    exprs = {r["alert"]: r["expr"] for r in rules() if "alert" in r}
    for rule in ("R1", "R2", "R3", "R4", "R5"):
        assert any(f'vllm_profile_rule_significant{{rule="{rule}"}}' in e for e in exprs.values())
    assert any('vllm_profile_up{source="vllm"}' in e for e in exprs.values())
    assert any('direction="worse"' in e for e in exprs.values())


@pytest.mark.parametrize("rule", [r for r in rules() if "alert" in r], ids=lambda r: r["alert"])
def test_alert_conventions(rule: dict) -> None:
    assert re.fullmatch(r"VLLMProfile[A-Z][A-Za-z]+", rule["alert"])
    assert rule["labels"]["severity"] in {"critical", "warning", "info"}
    ann = rule["annotations"]
    summary = ann["summary"]
    if (
        "by (cluster, namespace, model)" in rule["expr"]
        or "cluster_namespace_model:" in rule["expr"]
    ):
        # A service's alert: who is the cluster, the namespace and the model.
        who, _, summary = summary.partition("{{ $labels.model }}: ")
        for part in ("$labels.cluster", "$labels.namespace"):
            assert part in who, who
    elif not rule["expr"].startswith("absent"):  # an absent series has no instance to name
        assert "{{ $labels.instance }}" in ann["description"]
        # Who, first: the cluster, the pod (else the instance) and the model it serves.
        who, _, summary = summary.partition("{{ end }}: ")
        for part in ("$labels.cluster", "$labels.namespace", "$labels.pod", "$labels.instance",
                     'label "model"'):  # fmt: skip
            assert part in who, who
    # A sentence: a capital letter (or the proper name vLLM) and a full stop.
    assert (summary[0].isupper() or summary.startswith("vLLM")) and summary.endswith(".")
    url = ann["runbook_url"]
    assert url.startswith(DOC_BASE)
    path, anchor = url[len(DOC_BASE) :].split("#")
    assert f'<a id="{anchor}"></a>' in (ROOT / path).read_text(), url


@pytest.mark.parametrize("rule", [r for r in rules() if "record" in r], ids=lambda r: r["record"])
def test_recording_rule_names(rule: dict) -> None:
    # level:metric:operations
    assert re.fullmatch(r"[a-z_]+:vllm_profile_[a-z0-9_]+:[a-z0-9_]+", rule["record"])
